"""One trial: a pure function of (cell config, μ) → compact result, with the core's ``train`` inside.

Nothing here knows about Ray; the runner passes a ``report`` function that forwards progress.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import socket
from pathlib import Path

import numpy as np
import torch

from .. import data, init, mnist, rates, theory
from ..network import Architecture, stack
from ..optim import Optimizer
from ..train import StopRules, Trajectory, train
from .config import Config, SearchCfg, step_size, widths
from .results import FINAL, TrialResult


def pick_device(how: str) -> str:
    """'auto' → cuda when this process sees a GPU, else cpu."""
    if how == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if how == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("optim.device=cuda but this process sees no GPU")
    return how


def generator(seed: int, stream: int) -> torch.Generator:
    """Independent CPU streams per purpose (0 data, 1 initialisation) of one seed."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@functools.lru_cache(maxsize=8)
def _problem(key: str) -> data.Problem:
    spec = json.loads(key)
    d, dtype = spec["data"], getattr(torch, spec["data"]["dtype"])
    arch = Architecture(tuple(spec["widths"]), spec["free_layer"], spec["orientation"])
    g = generator(spec["seed"], 0)
    act = spec["activation"] if d["teacher_activation"] == "model" else "identity"
    if d["kind"] == "teacher":
        return data.teacher_student(arch, samples=d["samples"], condition=d["condition"], scale=d["scale"],
                                    noise=d["noise"], teacher_free_layer=d["teacher_free_layer"], activation=act,
                                    generator=g, dtype=dtype, device=spec["device"])
    return mnist.mnist_problem(Path(d["root"]), samples=d["samples"] or None, whiten_mode=d["whiten"],
                               whiten_eps=d["whiten_eps"], targets=d["targets"], arch=arch,
                               condition=d["condition"], activation=act, generator=g, dtype=dtype,
                               device=spec["device"])


def problem_key(cfg: Config, device: str) -> str:
    """What a cell's problem depends on, as a cache key (a string: a cached problem is found by value)."""
    m = cfg.model
    return json.dumps({"data": dataclasses.asdict(cfg.data), "widths": widths(cfg), "free_layer": m.free_layer,
                       "orientation": m.orientation, "activation": m.activation, "seed": cfg.seed,
                       "device": device}, sort_keys=True)


def problem_for(cfg: Config, device: str) -> data.Problem:
    """The cell's problem, cached per process (trials of one cell share it; reused actors keep it)."""
    return _problem(problem_key(cfg, device))


def objective(traj: Trajectory, stop: StopRules, search: SearchCfg, rho: float | None,
              value: float | None = None) -> float:
    """What a cell's search minimises. search.objective = edge: −``value`` (the searched key's) when the run
    converged to tolerance, else 0, so the best trial is the largest value that still converges (search.edge =
    rising: −1/``value``, the smallest).
    rate: the observed loss rate ``rho`` < 1
    (:func:`rates.estimate_rate`); steps: steps to tolerance, in units of max_iters. Short of either, a trial
    scores 1 + penalty · f, f ∈ [0, 1] the share of the log-distance to tol still to go (f = 2 when
    diverged), so a search sees progress, not a flat wall, and every measured rate ranks above it."""
    penalty = search.penalty
    if search.objective == "edge":
        if traj.outcome != "converged" or value is None:
            return 0.0
        return -1 / float(value) if search.edge == "rising" else -float(value)
    if search.objective == "rate":
        if rho is not None and rho < 1:
            return rho
    else:
        hit = rates.iterations_to(traj.rel_excess, stop.tol)
        if hit is not None:
            return hit / stop.max_iters
    if traj.outcome == "diverged":
        return 1 + 2 * penalty
    best = min((v for v in traj.rel_excess if math.isfinite(v) and v > 0), default=1.0)
    return 1 + penalty * min(max(math.log(best / stop.tol) / math.log(1 / stop.tol), 0.0), 1.0)


def estimate(traj: Trajectory, stop: StopRules, fit: rates.RateFit) -> rates.RateEstimate | None:
    """The loss rate a finished trial shows (rates.estimate_rate from its ``fit``), only if it contracted to
    its end (converged, or still on its way when the budget ran out): a stalled or diverged run's early
    linear phase is no rate, and neither is a run that started at the solution (nothing to contract)."""
    if traj.outcome not in ("converged", "budget") or at_solution(traj, stop):
        return None
    return rates.estimate_rate(traj.rel_excess, stop.tol, fit)


def at_solution(traj: Trajectory, stop: StopRules) -> bool:
    """The start is already within tolerance of the optimum: relative excess e_0 ≤ stop.tol."""
    return bool(traj.rel_excess) and traj.rel_excess[0] <= stop.tol


def downsample(values: list[float], points: int) -> tuple[list[int], list[float]]:
    """≤ ``points`` (step, value) pairs: log-spaced steps, first and last always kept."""
    n = len(values)
    if n <= points:
        return list(range(n)), [float(v) for v in values]
    idx = np.unique(np.concatenate([[0, n - 1], np.geomspace(1, n - 1, points - 1).astype(int)]))
    return idx.tolist(), [float(values[i]) for i in idx]


def build(cfg: Config, device: str):
    """(problem, architecture, initial blocks) of a cell config."""
    m, dtype = cfg.model, getattr(torch, cfg.data.dtype)
    problem = problem_for(cfg, device)
    arch = Architecture(widths(cfg, problem.X.shape[0]), m.free_layer, m.orientation, m.activation)
    g = generator(cfg.seed, 1)
    if m.init == "teacher_perturbed":
        if problem.teacher is None:
            raise ValueError("model.init=teacher_perturbed needs a problem with a teacher")
        teacher_arch = Architecture(arch.widths, cfg.data.teacher_free_layer if cfg.data.kind == "teacher"
                                    else "first", arch.orientation)
        blocks = init.perturb(stack(list(problem.teacher), teacher_arch), arch, delta=m.init_delta, generator=g)
    elif m.init in ("spectral", "spectral_perturbed"):
        blocks = init.spectral_blocks(arch, problem.moments.p_star, generator=g)
        if m.init == "spectral_perturbed":
            blocks = init.perturb(blocks, arch, delta=m.init_delta, generator=g)
    else:
        blocks = init.random_blocks(arch, scale=m.init_scale, generator=g, dtype=dtype, device=device)
    return problem, arch, [B.to(device) for B in blocks]


def local_spectrum(cfg: Config, problem: data.Problem, arch: Architecture, device: str) -> theory.LocalSpectrum | None:
    """The exact local spectrum at the teacher, once per (problem, method, balance) in this process; None
    where the theory does not apply (no teacher, nonlinear network, other loss, teacher not representable)."""
    o, limit = cfg.optim, cfg.study.theory_max_dim
    if problem.teacher is None or not arch.linear or o.loss != "squared" or arch.widths[0] * arch.widths[-1] > limit:
        return None
    return _spectrum(problem_key(cfg, device), arch, o.method, o.balance)


@functools.lru_cache(maxsize=32)
def _spectrum(key: str, arch: Architecture, method: str, balance: str) -> theory.LocalSpectrum | None:
    problem = _problem(key)
    try:
        return theory.local_spectrum(stack(list(problem.teacher), arch), arch, problem.moments, method=method,
                                     balance=balance)
    except theory.NotApplicable:
        return None


def run_trial(cfg: Config, lr: float | None = None, report=None, threads: int | None = None) -> TrialResult:
    """Train one network of the validated cell config ``cfg``; ``report(metrics)`` is called every
    ``search.report_every`` steps (it may return True to stop the trial early). Returns summary metrics and
    downsampled curves."""
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    device = pick_device(cfg.optim.device)
    problem, arch, blocks = build(cfg, device)
    spectrum = local_spectrum(cfg, problem, arch, device)
    mu = step_size(cfg, lr, spectrum.mu_opt if spectrum else None)
    if mu is None:
        raise ValueError("optim.protocol=theory: the exact local rate does not apply to this cell")
    start = [B.clone() for B in blocks]
    o, rules, search = cfg.optim, cfg.stop, cfg.search

    def progress(offset: int):
        def call(t: int, traj: Trajectory):
            if report is None:
                return False
            return bool(report({"step": offset + t, "rel_excess": traj.rel_excess[-1], "loss": traj.loss[-1],
                                "log10_rel_excess": math.log10(max(traj.rel_excess[-1], 1e-300)),
                                "objective": objective(traj, rules, search, None, searched_value(cfg, mu)),
                                FINAL: False}))
        return call

    opt = Optimizer(mu, o.method, o.retraction, o.balance)
    traj, blocks = train(problem, arch, blocks, opt, rules, loss=o.loss, path=o.path, callback=progress(0),
                         callback_every=search.report_every)
    while (more := extension(traj, rules, o.loss)):  # still contracting at the budget: as long as its rate needs
        rest = dataclasses.replace(rules, max_iters=more, max_seconds=max(rules.max_seconds - traj.seconds, 1e-3))
        tail, blocks = train(problem, arch, blocks, opt, rest, loss=o.loss, path=o.path,
                             callback=progress(traj.steps), callback_every=search.report_every)
        traj = joined(traj, tail)
    result = summarize(traj, cfg, mu, device, spectrum)
    return where_it_went(result, cfg, problem, arch, start, blocks, traj)


def searched_value(cfg: Config, mu: float) -> float:
    """The value of the cell's searched key (search.key) in this trial: μ for optim.lr."""
    key = cfg.search.key
    return mu if key == "optim.lr" else float(functools.reduce(getattr, key.split("."), cfg))


def where_it_went(result: TrialResult, cfg: Config, problem: data.Problem, arch: Architecture,
                  start: list[torch.Tensor], end: list[torch.Tensor], traj: Trajectory) -> TrialResult:
    """Distances from the start to the last iterate and to the teacher, and (study.theory_at_solution) the exact
    local rate at the solution a converged run reached: where the local theory is asked to hold."""
    result.start_distance = init.relative_distance(start, end)
    if problem.teacher is not None:
        try:
            result.teacher_distance = init.relative_distance(start, stack(list(problem.teacher), arch))
        except (RuntimeError, ValueError):  # a teacher of another layout: no layer-wise distance
            result.teacher_distance = None
    o = cfg.optim
    if cfg.study.theory_at_solution and traj.outcome == "converged" and arch.linear and o.loss == "squared":
        try:  # a run stopped at relative excess tol is a solution to ~√tol in P
            at = theory.local_spectrum(end, arch, problem.moments, method=o.method, balance=o.balance,
                                       tol=max(10 * math.sqrt(cfg.stop.tol), 1e-6))
            result.solution_rate, result.solution_rate_opt = at.loss_rate(result.lr), at.loss_rate_opt
        except theory.NotApplicable:
            pass
    return result


def extension(traj: Trajectory, stop: StopRules, loss: str) -> int:
    """More steps for a run that used up its budget while still contracting: the steps its tail rate needs to
    reach stop.tol (rates.steps_to), plus a quarter — only if that fits within stop.extend_to steps in all
    (0: never extend); a run predicted to need more stops here, its prediction on record. Squared loss only
    (its relative excess keeps the same reference in a continued run)."""
    if traj.outcome != "budget" or loss != "squared" or traj.seconds >= stop.max_seconds or \
            traj.reason.startswith("time limit"):
        return 0
    need = rates.steps_to(traj.rel_excess, stop.tol)
    more = int(need * 1.25) + 1 if need else 0
    return more if more and traj.steps + more <= stop.extend_to else 0


def joined(head: Trajectory, tail: Trajectory) -> Trajectory:
    """One trajectory from a run and its continuation (whose record 0 is the run's last)."""
    return Trajectory(head.loss + tail.loss[1:], head.rel_excess + tail.rel_excess[1:],
                      head.e2e_error + tail.e2e_error[1:], head.ortho_error + tail.ortho_error[1:],
                      tail.outcome, f"{tail.reason} of the extension from step {head.steps}",
                      head.seconds + tail.seconds)


def summarize(traj: Trajectory, cfg: Config, mu: float, device: str,
              spectrum: theory.LocalSpectrum | None = None) -> TrialResult:
    fit = rates.fit_rate(traj.rel_excess)
    est = estimate(traj, cfg.stop, fit)
    rho = est.conservative if est else None
    points = cfg.tracking.curve_points
    steps, rel = downsample(traj.rel_excess, points)
    curves = {"rel_excess": rel, "loss": [traj.loss[i] for i in steps],
              "ortho_error": [traj.ortho_error[i] for i in steps]}
    if traj.e2e_error:
        curves["e2e_error"] = [traj.e2e_error[i] for i in steps]
    hit = rates.iterations_to(traj.rel_excess, cfg.stop.tol)
    return TrialResult(
        lr=mu, outcome=traj.outcome, reason=traj.reason, steps=traj.steps, iters_to_tol=hit,
        objective=objective(traj, cfg.stop, cfg.search, rho, searched_value(cfg, mu)), observed_rate=rho,
        rate=fit.rate, value=searched_value(cfg, mu), success=traj.outcome == "converged",
        rate_r2=fit.r2 if fit.found else None, rate_window=[fit.start, fit.end], rate_note=fit.reason,
        linear_start=fit.start if fit.found else None,
        final_rel_excess=traj.rel_excess[-1], final_loss=traj.loss[-1], ortho_error=max(traj.ortho_error),
        e2e_error=traj.e2e_error[-1] if traj.e2e_error else None, seconds=traj.seconds,
        seconds_per_step=traj.seconds / max(traj.steps, 1), device=device, node=socket.gethostname(),
        pid=os.getpid(), python=platform.python_version(), curve_steps=steps, curves=curves,
        rate_estimate=est.rate if est else None, rate_kind=est.kind if est else None,
        rate_ci=[est.low, est.high] if est else None, rate_points=est.points if est else None,
        start_rel_excess=traj.rel_excess[0], at_solution=at_solution(traj, cfg.stop),
        tail_rate=rates.tail_rate(traj.rel_excess),
        steps_needed=rates.steps_to(traj.rel_excess, cfg.stop.tol) if traj.outcome == "budget" else None,
        # the exact local rate of the loss at this μ and the best one over μ (theory.py), where it applies
        theory_rate=spectrum.loss_rate(mu) if spectrum else None,
        theory_mu_opt=spectrum.mu_opt if spectrum else None,
        theory_rate_opt=spectrum.loss_rate_opt if spectrum else None,
        theory_mu_max=spectrum.mu_max if spectrum else None)
