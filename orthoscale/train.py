"""The training loop: a pure function of (problem, network, optimiser, stop rules) → Trajectory.

Record t is the state after t steps. The tracked error is the relative excess loss
r_t = (L_t − L*) / (L(0) − L*) (for the squared loss, with L* = 0 for nonlinear networks; the excess at
t = 0 for other losses), which for a whitened
teacher–student problem is ‖P_t − W*‖_F² / ‖W*‖_F².
Stop rules, in order: diverged (non-finite, or L_t > factor · L_0), converged (r_t ≤ tol),
stalled (the best excess fell by less than a fraction ``stall_improvement`` over ``stall_window`` steps),
budget (``max_iters`` steps or ``max_seconds`` taken), pruned (the callback asked to stop).
The diagnostics ‖W_iᵀW_i − I‖_F and ‖P − W*‖_F, which no stop rule reads (a Gram product per layer: 10–15 %
of a step at d ≥ 128), are measured every ``measure_every`` steps and at the last record; the records in
between repeat the last measurement.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .data import Problem
from .losses import evaluate
from .specs import resolve_path
from .network import Architecture, check_blocks, orthonormality_error
from .optim import Optimizer, step
from .specs import StopRules
from .workspace import Workspace

@dataclass
class Trajectory:
    """Per-record values (index t = after t steps) and how the run ended."""
    loss: list[float] = field(default_factory=list)
    rel_excess: list[float] = field(default_factory=list)
    e2e_error: list[float] = field(default_factory=list)      # ‖P − W*‖_F / ‖W*‖_F, empty without a teacher
    ortho_error: list[float] = field(default_factory=list)    # max_i ‖W_iᵀW_i − I‖_F (both: see measure_every)
    outcome: str = "budget"
    reason: str = ""
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.loss) - 1


Callback = Callable[[int, Trajectory], bool | None]


def train(problem: Problem, arch: Architecture, blocks: list[torch.Tensor], opt: Optimizer,
          stop: StopRules = StopRules(), *, loss: str = "squared", path: str = "auto",
          callback: Callback | None = None, callback_every: int = 50) -> tuple[Trajectory, list[torch.Tensor]]:
    """Run the optimiser from ``blocks`` until a stop rule fires; returns (trajectory, final blocks)."""
    path = resolve_path(arch, loss, path)
    check_blocks(blocks, arch)
    if (problem.X.shape[0], problem.Y.shape[0]) != (arch.widths[0], arch.widths[-1]):
        raise ValueError(f"the problem maps d_0={problem.X.shape[0]} to d_N={problem.Y.shape[0]} but the network's "
                         f"widths are {list(arch.widths)}")
    traj, start = Trajectory(), time.perf_counter()
    target = problem.target
    target_norm = float(torch.linalg.matrix_norm(target)) if target is not None else None
    reference, best = None, []
    ws = Workspace()  # this loop owns the iterates: large buffers are reused, not reallocated, every step

    def measure(blocks: list[torch.Tensor], ev) -> tuple[float, float | None]:
        """(max_i ‖W_iᵀW_i − I‖_F, ‖P − W*‖_F / ‖W*‖_F or None) of an iterate: a Gram product per layer."""
        P = ev.product if target is not None else None
        return orthonormality_error(blocks, arch), \
            None if P is None else float(torch.linalg.matrix_norm(P - target)) / target_norm

    for t in range(stop.max_iters + 1):
        ev = evaluate(blocks, arch, problem, loss, path, ws)
        value, excess = float(ev.loss), float(ev.excess)
        if reference is None:
            reference = problem.moments.loss_zero - float(ev.loss - ev.excess) if loss == "squared" else excess
            reference = reference if reference > 0 else 1.0
        traj.loss.append(value)
        traj.rel_excess.append(excess / reference)
        if t % stop.measure_every == 0:
            ortho, e2e = measure(blocks, ev)
        traj.ortho_error.append(ortho)
        if e2e is not None:
            traj.e2e_error.append(e2e)
        best.append(min(excess, best[-1]) if best else excess)
        finite = math.isfinite(value) and ev.finite()
        if not finite:
            traj.outcome, traj.reason = "diverged", f"non-finite loss or gradient at step {t}"
        elif value > stop.diverge_factor * traj.loss[0]:
            traj.outcome, traj.reason = "diverged", f"loss {value:.3g} > {stop.diverge_factor:g} × initial at step {t}"
        elif traj.rel_excess[-1] <= stop.tol:
            traj.outcome, traj.reason = "converged", f"relative excess ≤ {stop.tol:g} at step {t}"
        elif t >= stop.stall_window and best[-1] > (1 - stop.stall_improvement) * best[t - stop.stall_window]:
            traj.outcome, traj.reason = "stalled", f"no progress over {stop.stall_window} steps at step {t}"
        elif t == stop.max_iters:
            traj.outcome, traj.reason = "budget", f"{stop.max_iters} steps taken"
        elif time.perf_counter() - start > stop.max_seconds:
            traj.outcome, traj.reason = "budget", f"time limit of {stop.max_seconds:g} s reached at step {t}"
        elif callback is not None and t % callback_every == 0 and t > 0 and callback(t, traj):
            traj.outcome, traj.reason = "pruned", f"stopped by the caller at step {t}"
        else:
            try:
                blocks = step(blocks, ev.block_grads, arch, opt, ev.frames, ws)
                continue
            except torch.linalg.LinAlgError as err:  # a retraction of a huge or non-finite step
                traj.outcome, traj.reason = "diverged", f"retraction failed at step {t}: {err}"
        break
    if t % stop.measure_every:  # the last record is always a measurement of its own iterate
        ortho, e2e = measure(blocks, ev)
        traj.ortho_error[-1] = ortho
        if e2e is not None:
            traj.e2e_error[-1] = e2e
    traj.seconds = time.perf_counter() - start
    return traj, blocks

