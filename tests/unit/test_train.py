"""One RGD/GD step and whole training runs: stacked code against the per-layer loop, convergence,
the all-orthonormal baseline, determinism, stop outcomes and input validation."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from orthoscale import data, init, losses, network, optim, rates, spectral, specs, stiefel, train
from tests import loop
from orthoscale.architecture import ORIENTATIONS, Architecture
from orthoscale.optim import Optimizer
from orthoscale.train import StopRules
from orthoscale.workspace import Workspace

F64 = torch.float64
STEP_ARCHS = [((5, 6, 6, 6, 8, 8, 9), "columns", "last"), ((5, 6, 6, 6, 8, 8, 9), "columns", "first"),
              ((9, 8, 8, 6, 6, 5), "rows", "first"), ((9, 8, 8, 6, 6, 5), "rows", "none"),
              ((6,) * 5, "columns", "first"), ((6,) * 5, "columns", "last"), ((6,) * 5, "rows", "none")]


def stack_like(per_layer, arch):
    """Per-layer tensors W_1 … W_N → the stacked layout of arch.blocks()."""
    return [torch.stack(per_layer[b.start:b.start + b.count]) for b in arch.blocks()]


def problem_and_start(arch, generator, samples=40, condition=3.0):
    prob = data.teacher_student(arch, samples=samples, condition=condition, noise=0.05, generator=generator)
    return prob, init.random_blocks(arch, scale=1.2, generator=generator)


# ---------------------------------------------------------------- one step

@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
@pytest.mark.parametrize("balance", specs.BALANCES)
@pytest.mark.parametrize("widths,orientation,free", STEP_ARCHS)
def test_stacked_step_equals_loop_step(retraction, balance, widths, orientation, free, gen):
    arch = Architecture(widths, free, orientation)
    prob, blocks = problem_and_start(arch, gen(1))
    _, grads = loop.gradients(network.layers(blocks), prob)  # the per-layer reference gradients
    opt = Optimizer(0.3, retraction=retraction, balance=balance)
    new = optim.step(blocks, stack_like(grads, arch), arch, opt)
    ref = loop.step(network.layers(blocks), grads, arch, opt)
    assert [B.shape for B in new] == [B.shape for B in blocks]
    new_layers = network.layers(new)
    assert len(new_layers) == len(ref) == arch.depth
    for W, R, W0 in zip(new_layers, ref, network.layers(blocks)):
        assert float((W - R).abs().max()) <= 1e-12
        assert float((W - W0).abs().max()) > 1e-6  # every layer moved
    assert network.orthonormality_error(new, arch) <= 1e-12


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("widths", [(7,) * 31, (5,) * 101])  # prefixes by doubling; chunked (k > scan.SHORT)
def test_framed_step_equals_loop_step(retraction, orientation, widths, gen):
    """A deep orthogonal run updated in its frame (polar: one polar factor; qr: qr(C_j A C_{j−1}ᵀ)) or,
    for the other retractions, from the frame's gradient: every layer within 1e-12 of the per-layer loop."""
    arch = Architecture(widths, "first", orientation)
    prob, blocks = problem_and_start(arch, gen(6))
    ev = losses.squared_fast(blocks, prob)
    assert ev.frames[1] is not None
    opt = Optimizer(0.3, retraction=retraction)
    new = optim.step(blocks, ev.block_grads, arch, opt, ev.frames)
    Ws = network.layers(blocks)
    ref = loop.step(Ws, loop.gradients(Ws, prob)[1], arch, opt)
    for W, R, W0 in zip(network.layers(new), ref, Ws):
        assert float((W - R).abs().max()) <= 1e-12
        assert float((W - W0).abs().max()) > 1e-6
    assert network.orthonormality_error(new, arch) <= 1e-12


@pytest.mark.parametrize("retraction", ["polar", "qr"])
@pytest.mark.parametrize("widths", [(70,) * 6, (5,) * 101])  # framed runs: sequential and chunked prefixes
@pytest.mark.parametrize("orientation", ORIENTATIONS)  # the QR writes column-major buffers
def test_workspace_steps_are_bit_identical_and_never_overwrite_their_input(retraction, widths, orientation, gen):
    """Steps that write into a Workspace give exactly the fresh-tensor results; the iterate being read
    (the caller's, then the workspace's two buffers in turn) is never written. (Frobenius balance: the
    spectral one starts warm from a workspace, the next test.)"""
    arch = Architecture(widths, "first", orientation)
    prob, blocks = problem_and_start(arch, gen(7), samples=80)
    opt, ws = Optimizer(0.3, retraction=retraction, balance="frobenius"), Workspace()
    fresh, reused = blocks, blocks
    for _ in range(4):
        before = [B.clone() for B in reused]
        ev_fresh, ev_ws = losses.squared_fast(fresh, prob), losses.squared_fast(reused, prob, ws)
        assert ev_ws.frames[1] is not None and torch.equal(ev_ws.frames[1].C, ev_fresh.frames[1].C)
        fresh = optim.step(fresh, ev_fresh.block_grads, arch, opt, ev_fresh.frames)
        new = optim.step(reused, ev_ws.block_grads, arch, opt, ev_ws.frames, ws)
        assert all(torch.equal(A, B) for A, B in zip(new, fresh))
        assert all(torch.equal(A, B) for A, B in zip(reused, before))
        reused = new


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_workspace_run_takes_its_spectral_balance_warm(dtype, gen):
    """A run with a Workspace takes s² = λ_max(W_1 W_1ᵀ) from the last step's top eigenvector once its steps
    are small (spectral.Warm): most late steps are answered warm, and the run stays within rounding of the
    same steps taken fresh (cold λ_max every step)."""
    arch, g = Architecture((30, 12, 12, 12), "first"), gen(8)
    prob = data.teacher_student(arch, samples=120, condition=3.0, noise=0.05, generator=g, dtype=dtype)
    blocks = init.random_blocks(arch, scale=1.2, generator=g, dtype=dtype)
    opt, ws = Optimizer(0.3), Workspace()
    fresh, reused, hits = blocks, blocks, []
    for _ in range(150):
        ev_fresh, ev_ws = losses.squared_fast(fresh, prob), losses.squared_fast(reused, prob, ws)
        fresh = optim.step(fresh, ev_fresh.block_grads, arch, opt, ev_fresh.frames)
        warm = ws.keep("balance", spectral.Warm)
        before = warm.hits
        reused = optim.step(reused, ev_ws.block_grads, arch, opt, ev_ws.frames, ws)
        hits.append(warm.hits - before)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert all(float((A - B).abs().max()) <= tol for A, B in zip(fresh, reused))
    assert hits[0] == 0 and sum(hits[-50:]) >= 40


@pytest.mark.parametrize("widths,orientation,free", STEP_ARCHS)
def test_gd_step_equals_loop_step(widths, orientation, free, gen):
    arch = Architecture(widths, free, orientation)
    prob, blocks = problem_and_start(arch, gen(2))
    _, grads = loop.gradients(network.layers(blocks), prob)
    opt = Optimizer(0.05, method="gd")
    new = optim.step(blocks, stack_like(grads, arch), arch, opt)
    for W, R, W0, G in zip(network.layers(new), loop.step(network.layers(blocks), grads, arch, opt),
                           network.layers(blocks), grads):
        assert float((W - R).abs().max()) <= 1e-15
        assert float((W - (W0 - 0.05 * G)).abs().max()) <= 1e-15


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
def test_step_update_rules(retraction, gen):
    """Free layer: W − μG. Orthonormal layers: Retr(−(μ/s²) P(G)) with s² = ‖W_free‖₂² (spectral)."""
    arch = Architecture((5, 6, 6, 6), "first")
    prob, blocks = problem_and_start(arch, gen(3))
    _, grads = loop.gradients(network.layers(blocks), prob)
    mu = 0.2
    new = optim.step(blocks, stack_like(grads, arch), arch, Optimizer(mu, retraction=retraction))
    W1 = blocks[0][0]
    assert float((new[0][0] - (W1 - mu * grads[0])).abs().max()) <= 1e-15
    s2 = float(torch.linalg.matrix_norm(W1, ord=2)) ** 2
    assert float(optim.balance(W1, "spectral")) == pytest.approx(s2, rel=1e-12)
    assert float(optim.balance(W1.mT, "spectral")) == pytest.approx(s2, rel=1e-12)
    assert float(optim.balance(W1, "frobenius")) == pytest.approx(float((W1 ** 2).sum()), rel=1e-14)
    assert optim.balance(W1, "none") == 1.0 and optim.balance(None, "spectral") == 1.0
    assert blocks[1].shape[0] == 2
    for k in range(2):
        V, G = blocks[1][k], grads[1 + k]
        expected = stiefel.retract(V, -(mu / s2) * stiefel.project(V, G), retraction)
        assert float((new[1][k] - expected).abs().max()) <= 1e-12


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
def test_zero_gradient_is_a_fixed_point(retraction, gen):
    arch = Architecture((9, 8, 8, 6, 6, 5), "last", "rows")
    blocks = init.random_blocks(arch, generator=gen(4))
    new = optim.step(blocks, [torch.zeros_like(B) for B in blocks], arch, Optimizer(0.5, retraction=retraction))
    for B, N in zip(blocks, new):
        assert float((B - N).abs().max()) <= 1e-14


# ---------------------------------------------------------------- whole trajectories

def reference_run(prob, arch, blocks, opt, steps):
    """The training loop written per layer with loop.gradients / loop.step."""
    mom = prob.moments
    reference = mom.loss_zero - mom.loss_star
    Ws, loss, rel = network.layers(blocks), [], []
    for t in range(steps + 1):
        excess, grads = loop.gradients(Ws, prob)
        loss.append(mom.loss_star + float(excess))
        rel.append(float(excess) / reference)
        if t < steps:
            Ws = loop.step(Ws, grads, arch, opt)
    return loss, rel, Ws


FIXED_STEPS = StopRules(tol=1e-300, max_iters=50, stall_window=10_000)


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
@pytest.mark.parametrize("widths,orientation,free", [((6,) * 5, "columns", "first"),
                                                     ((9, 8, 8, 8, 8, 5), "rows", "last"),
                                                     ((5, 6, 6, 6, 8, 8, 9), "columns", "last"),
                                                     ((9, 8, 8, 6, 6, 5), "rows", "first")])
def test_trajectory_equals_per_layer_loop(retraction, widths, orientation, free, gen):
    arch = Architecture(widths, free, orientation)
    prob, blocks = problem_and_start(arch, gen(5))
    opt = Optimizer(0.2, retraction=retraction, balance="spectral")
    traj, final = train.train(prob, arch, blocks, opt, FIXED_STEPS)
    assert traj.outcome == "budget" and traj.steps == 50
    assert len(traj.rel_excess) == len(traj.ortho_error) == len(traj.e2e_error) == 51
    loss, rel, Ws = reference_run(prob, arch, blocks, opt, 50)
    for a, b in zip(traj.loss, loss):
        assert abs(a - b) <= 1e-12 * loss[0]
    for a, b in zip(traj.rel_excess, rel):
        assert abs(a - b) <= 1e-12
    for W, R in zip(network.layers(final), Ws):
        assert float((W - R).abs().max()) <= 1e-12
    assert traj.loss[-1] < 0.5 * traj.loss[0]
    assert max(traj.ortho_error) <= 1e-12
    target_norm = float(torch.linalg.matrix_norm(prob.target))
    assert traj.e2e_error[-1] == pytest.approx(
        float(torch.linalg.matrix_norm(network.end_to_end(final) - prob.target)) / target_norm, rel=1e-12)


def test_diagnostics_are_measured_every_measure_every_steps_and_at_the_last_record(gen):
    """GD leaves the manifold a little more every step, so each measurement differs: with measure_every = 7
    over 50 steps, record t holds the measurement of step 7⌊t/7⌋, the last record (50) its own; the run itself
    (losses, final layers) is the one measured every step."""
    arch = Architecture((6,) * 5)
    prob, blocks = problem_and_start(arch, gen(5))
    opt = Optimizer(0.05, method="gd")
    every, full = train.train(prob, arch, blocks, opt, dataclasses.replace(FIXED_STEPS, measure_every=1))
    sparse, final = train.train(prob, arch, blocks, opt, dataclasses.replace(FIXED_STEPS, measure_every=7))
    assert sparse.loss == every.loss and all(torch.equal(a, b) for a, b in zip(final, full))
    assert len(set(every.ortho_error)) == 51  # a new value at every step
    for t in range(51):
        src = t if t == 50 else t - t % 7
        assert sparse.ortho_error[t] == every.ortho_error[src] and sparse.e2e_error[t] == every.e2e_error[src]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_deep_trajectory_in_the_frame_equals_per_layer_loop(orientation, gen):
    """N = 200: the stacked fast path updates the orthogonal run in its frame (no per-layer projection or
    Newton–Schulz); 40 steps stay within 1e-12 of the per-layer loop, and on the manifold."""
    arch = Architecture((5,) * 201, "first", orientation)
    prob, blocks = problem_and_start(arch, gen(8), samples=30, condition=2.0)
    opt = Optimizer(0.002, balance="spectral")
    ev = losses.squared_fast(blocks, prob)
    assert ev.frames[1] is not None and ev.block_grads[1] is None  # the orthogonal run is framed
    traj, final = train.train(prob, arch, blocks, opt, StopRules(tol=1e-300, max_iters=40, stall_window=10_000))
    assert traj.steps == 40 and traj.loss[-1] < traj.loss[0]
    loss, rel, Ws = reference_run(prob, arch, blocks, opt, 40)
    for a, b in zip(traj.rel_excess, rel):
        assert abs(a - b) <= 1e-12
    for W, R in zip(network.layers(final), Ws):
        assert float((W - R).abs().max()) <= 1e-12
    assert max(traj.ortho_error) <= 1e-13


def test_generic_path_trajectory_equals_fast_path(gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(6))
    opt = Optimizer(0.2)
    fast, bf = train.train(prob, arch, blocks, opt, FIXED_STEPS, path="fast")
    slow, bs = train.train(prob, arch, blocks, opt, FIXED_STEPS, path="generic")
    for a, b in zip(fast.loss, slow.loss):
        assert abs(a - b) <= 1e-10 * fast.loss[0]
    for a, b in zip(bf, bs):
        assert float((a - b).abs().max()) <= 1e-10


# ---------------------------------------------------------------- convergence

def local_start(arch, condition, seed, delta=0.1):
    """teacher_student seeds its teacher first from the generator: rebuild the same teacher, then perturb."""
    prob = data.teacher_student(arch, samples=60, condition=condition, generator=torch.Generator().manual_seed(seed))
    teacher = init.teacher_blocks(arch, condition=condition, generator=torch.Generator().manual_seed(seed))
    assert float((network.end_to_end(teacher) - prob.target).abs().max()) == 0.0
    start = init.perturb(teacher, arch, delta=delta, generator=torch.Generator().manual_seed(seed + 1))
    return prob, teacher, start


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
def test_rgd_converges_linearly_with_a_stable_rate(retraction):
    arch = Architecture((6,) * 5, "first")
    prob, teacher, start = local_start(arch, condition=3, seed=3)
    dist = [float(torch.linalg.matrix_norm(S - T).max() / torch.linalg.matrix_norm(T).max())
            for S, T in zip(start, teacher)]
    assert 0.05 < max(dist) < 0.2  # the start is really perturbed, at relative distance ≈ δ
    traj, final = train.train(prob, arch, start, Optimizer(0.5, retraction=retraction),
                              StopRules(tol=1e-26, max_iters=1000))
    assert traj.outcome == "converged", traj.reason
    assert traj.e2e_error[-1] <= 1e-12
    assert traj.rel_excess[-1] <= 1e-26
    assert max(traj.ortho_error) <= 1e-12
    assert rates.iterations_to(traj.rel_excess, 1e-26) == traj.steps
    fit = rates.fit_rate(traj.rel_excess)
    assert fit.found, fit.reason
    assert 0 < fit.rate < 0.9
    assert fit.end - fit.start >= 40 and fit.r2 >= 0.999
    mid = (fit.start + fit.end) // 2
    first = rates.fit_rate(traj.rel_excess[fit.start:mid + 1])
    second = rates.fit_rate(traj.rel_excess[mid:fit.end + 1])
    assert first.found and second.found
    assert abs(first.rate - second.rate) <= 0.03 * fit.rate
    # the fitted rate predicts the drop over the window
    drop = traj.rel_excess[fit.end] / traj.rel_excess[fit.start]
    assert math.log(drop) == pytest.approx((fit.end - fit.start) * math.log(fit.rate), rel=0.1)


def test_linear_rate_does_not_depend_on_the_retraction():
    """All retractions agree to first order, so the local rate (the linearised map) is the same."""
    arch = Architecture((6,) * 5, "first")
    prob, _, start = local_start(arch, condition=3, seed=3)
    fitted = []
    for retraction in stiefel.RETRACTIONS:
        traj, _ = train.train(prob, arch, start, Optimizer(0.5, retraction=retraction),
                              StopRules(tol=1e-26, max_iters=1000))
        fitted.append(rates.fit_rate(traj.rel_excess).rate)
    assert max(fitted) - min(fitted) <= 0.02 * min(fitted), fitted


def test_all_orthonormal_baseline_stalls_while_free_layer_converges(gen):
    """A teacher with condition number 4 is no product of orthonormal matrices: free_layer=none cannot fit it."""
    none = Architecture((6,) * 5, "none")
    first = Architecture((6,) * 5, "first")
    prob = data.teacher_student(none, samples=40, condition=4, teacher_free_layer="first", generator=gen(5))
    sv = torch.linalg.svdvals(prob.target)
    assert float(sv[0] / sv[-1]) == pytest.approx(4.0, rel=1e-10)
    stop = StopRules(tol=1e-20, max_iters=1500)
    base, base_blocks = train.train(prob, none, init.random_blocks(none, generator=gen(11)), Optimizer(0.5), stop)
    assert base.outcome == "stalled", base.reason
    assert min(base.rel_excess) > 1e-2 and base.rel_excess[-1] > 1e-2
    # the best any orthogonal P can do: ‖Q − W*‖² ≥ Σ(σ_j − 1)² (von Neumann)
    floor = float(((sv - 1) ** 2).sum() / (sv ** 2).sum())
    assert min(base.rel_excess) >= floor * (1 - 1e-9)
    assert max(base.ortho_error) <= 1e-12
    free, _ = train.train(prob, first, init.random_blocks(first, generator=gen(11)), Optimizer(0.5), stop)
    assert free.outcome == "converged", free.reason
    assert free.rel_excess[-1] <= 1e-20


def test_plain_gd_reduces_the_loss(gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(6))
    traj, final = train.train(prob, arch, blocks, Optimizer(0.05, method="gd"), StopRules(max_iters=200))
    assert traj.outcome in ("budget", "converged", "stalled")
    assert traj.loss[-1] < 0.05 * traj.loss[0]
    assert traj.ortho_error[0] <= 1e-12 and traj.ortho_error[-1] > 1e-4  # GD does not keep the constraint
    assert all(math.isfinite(v) for v in traj.loss)


# ---------------------------------------------------------------- determinism and outcomes

def run_once(seed):
    g = torch.Generator().manual_seed(seed)
    arch = Architecture((5, 6, 6, 6), "first")
    prob = data.teacher_student(arch, samples=30, condition=3, noise=0.01, generator=g)
    blocks = init.perturb(init.random_blocks(arch, generator=g), arch, delta=0.3, generator=g)
    return train.train(prob, arch, blocks, Optimizer(0.3, retraction="cayley"), StopRules(max_iters=120))


def test_runs_are_bit_identical():
    (t1, b1), (t2, b2) = run_once(9), run_once(9)
    for field in ("loss", "rel_excess", "e2e_error", "ortho_error"):
        assert getattr(t1, field) == getattr(t2, field)
    assert (t1.outcome, t1.reason) == (t2.outcome, t2.reason)
    assert all(torch.equal(x, y) for x, y in zip(b1, b2))
    t3, _ = run_once(10)
    assert t3.loss != t1.loss


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
def test_huge_step_is_a_recorded_outcome(retraction, gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(7))
    traj, _ = train.train(prob, arch, blocks, Optimizer(1e3, retraction=retraction), StopRules(max_iters=500))
    assert traj.outcome in ("diverged", "stalled"), traj.reason
    assert traj.reason.startswith(("loss ", "non-finite", "retraction failed", "no progress")), traj.reason


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
def test_tiny_step_stalls_or_uses_the_budget(retraction, gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(8))
    traj, final = train.train(prob, arch, blocks, Optimizer(1e-12, retraction=retraction),
                              StopRules(max_iters=300, stall_window=100))
    assert traj.outcome in ("stalled", "budget"), traj.reason
    assert traj.loss[-1] <= traj.loss[0]
    assert abs(traj.loss[-1] - traj.loss[0]) <= 1e-6 * traj.loss[0]


def test_stall_rule(gen):
    """No relative improvement ≥ stall_improvement over stall_window steps: stalled exactly at the window."""
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(8))
    traj, _ = train.train(prob, arch, blocks, Optimizer(1e-12), StopRules(max_iters=300, stall_window=100))
    assert traj.outcome == "stalled" and traj.steps == 100 and "100 steps" in traj.reason
    moving, _ = train.train(prob, arch, blocks, Optimizer(0.05), StopRules(max_iters=150, stall_window=100))
    assert moving.outcome == "budget" and moving.steps == 150


def test_callback_prunes(gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(9))
    seen = []

    def callback(t, traj):
        seen.append((t, len(traj.loss)))
        return t >= 20

    traj, _ = train.train(prob, arch, blocks, Optimizer(0.1), StopRules(max_iters=500), callback=callback,
                          callback_every=10)
    assert traj.outcome == "pruned" and traj.steps == 20
    assert seen == [(10, 11), (20, 21)]


def test_time_limit_ends_in_budget(gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(10))
    traj, _ = train.train(prob, arch, blocks, Optimizer(0.1), StopRules(max_iters=10**6, max_seconds=1e-9))
    assert traj.outcome == "budget" and "time limit" in traj.reason
    assert traj.steps < 10


def test_stop_rules_outcomes(gen):
    arch = Architecture((6,) * 5, "first")
    prob, blocks = problem_and_start(arch, gen(10))
    traj, _ = train.train(prob, arch, blocks, Optimizer(0.1), StopRules(max_iters=7))
    assert traj.outcome == "budget" and traj.steps == 7 and "7 steps" in traj.reason
    traj, _ = train.train(prob, arch, blocks, Optimizer(0.1), StopRules(tol=0.5, max_iters=500))
    assert traj.outcome == "converged"
    assert traj.rel_excess[-1] <= 0.5 < min(traj.rel_excess[:-1])


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0), r"optim\.lr=.*: must be > 0"), (dict(lr=-0.1), r"optim\.lr=.*: must be > 0"),
    (dict(lr=float("nan")), r"optim\.lr=.*: must be > 0"),
    (dict(lr=0.1, retraction="exp"), r"optim\.retraction='exp'"),
    (dict(lr=0.1, method="adam"), r"optim\.method='adam'"),
    (dict(lr=0.1, balance="max"), r"optim\.balance='max'"),
])
def test_optimizer_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Optimizer(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tol=0), r"stop\.tol=0: must be > 0"), (dict(tol=1), r"stop\.tol=1: must be < 1"),
    (dict(tol=-1e-3), r"stop\.tol=.*: must be > 0"), (dict(tol=float("nan")), r"stop\.tol=nan: must be > 0"),
    (dict(max_iters=0), r"stop\.max_iters=.*: must be ≥ 1"),
    (dict(diverge_factor=1.0), r"stop\.diverge_factor=.*: must be > 1"),
    (dict(stall_window=0), r"stop\.stall_window=.*: must be ≥ 1"),
    (dict(stall_improvement=1.0), r"stop\.stall_improvement=.*: must be < 1"),
    (dict(stall_improvement=-0.1), r"stop\.stall_improvement=.*: must be ≥ 0"),
    (dict(max_seconds=0), r"stop\.max_seconds=.*: must be > 0"),
])
def test_stop_rules_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StopRules(**kwargs)


def test_init_validation(gen):
    arch = Architecture((6,) * 4, "first")
    blocks = init.random_blocks(arch, generator=gen(0))
    with pytest.raises(ValueError, match=r"model\.init_delta=-0\.1: must be ≥ 0"):
        init.perturb(blocks, arch, delta=-0.1, generator=gen(0))
    with pytest.raises(ValueError, match=r"model\.init_scale=0: must be > 0"):
        init.random_blocks(arch, scale=0, generator=gen(0))
    with pytest.raises(ValueError, match=r"data\.condition=0\.5: must be ≥ 1"):
        data.teacher_student(arch, samples=8, condition=0.5, generator=gen(0))
    with pytest.raises(ValueError, match=r"model\.init_delta=-1: must be ≥ 0"):
        init.InitSpec(init_delta=-1)
    with pytest.raises(ValueError, match=r"a spectral start needs a free layer"):
        init.spectral_blocks(Architecture((6,) * 4, "none"), torch.eye(6, dtype=F64), generator=gen(0))
    with pytest.raises(ValueError, match=r"data\.samples=3 must be ≥ d_0=6"):
        data.whitened_gaussian(6, 3, generator=gen(0))
    with pytest.raises(ValueError, match=r"model\.activation='gelu'"):
        Architecture((6,) * 4, activation="gelu")
    prob, _ = problem_and_start(arch, gen(1))
    with pytest.raises(ValueError, match=r"optim\.loss='l1'"):
        train.train(prob, arch, blocks, Optimizer(0.1), loss="l1")


def test_train_rejects_blocks_not_laid_out_for_the_architecture(gen):
    """Blocks stacked for free_layer=first, trained as free_layer=last: the layouts differ ([1, 3] vs [1, 2, 1]
    layers per block), so the last layer would be retracted as orthonormal. This must be refused."""
    first, last = Architecture((6,) * 5, "first"), Architecture((6,) * 5, "last")
    prob, blocks = problem_and_start(first, gen(12))
    with pytest.raises(ValueError, match=r"not laid out for widths \[6, 6, 6, 6, 6\] with free_layer=last"):
        train.train(prob, last, blocks, Optimizer(0.1), StopRules(max_iters=5))


def test_train_rejects_problem_of_other_widths(gen):
    arch = Architecture((6,) * 5, "first")
    other = data.teacher_student(Architecture((5, 6, 6, 6, 6)), samples=30, generator=gen(13))
    blocks = init.random_blocks(arch, generator=gen(14))
    with pytest.raises(ValueError, match=r"maps d_0=5 to d_N=6 but the network's widths are \[6, 6, 6, 6, 6\]"):
        train.train(other, arch, blocks, Optimizer(0.1), StopRules(max_iters=5))


def test_perturb_moves_to_relative_distance_delta(gen):
    arch = Architecture((5, 6, 6, 6), "first")
    blocks = init.random_blocks(arch, generator=gen(15))
    same = init.perturb(blocks, arch, delta=0.0, generator=gen(16))
    assert all(float((a - b).abs().max()) <= 1e-14 for a, b in zip(same, blocks))
    moved = init.perturb(blocks, arch, delta=0.05, generator=gen(16))
    d = float(torch.linalg.matrix_norm(moved[0] - blocks[0]).max() / torch.linalg.matrix_norm(blocks[0]).max())
    assert d == pytest.approx(0.05, rel=1e-12)  # the free layer is not projected
    assert network.orthonormality_error(moved, arch) <= 1e-12
    assert float((moved[1] - blocks[1]).abs().max()) > 1e-3


def test_perturb_restacks_a_teacher_of_another_kind(gen):
    """teacher_perturbed: a free-first teacher perturbed for a free-last student is laid out for the student,
    with the student's orthonormal layers (layer 1 included) projected onto the manifold."""
    teacher_arch, student = Architecture((6,) * 5, "first"), Architecture((6,) * 5, "last")
    teacher = init.teacher_blocks(teacher_arch, condition=3, generator=gen(17))
    out = init.perturb(teacher, student, delta=0.01, generator=gen(18))
    assert [tuple(B.shape) for B in out] == [(b.count, b.rows, b.cols) for b in student.blocks()]
    assert network.orthonormality_error(out, student) <= 1e-12
    layers_t, layers_s = network.layers(teacher), network.layers(out)
    for i in range(2, 5):  # orthonormal in both: moved by ≈ δ only
        assert 1e-4 < float(torch.linalg.matrix_norm(layers_s[i - 1] - layers_t[i - 1])) < 0.1
