"""Numerical extremes of one trial end in the outcome the mathematics says they must, with a reason that says why.

The default cell is a whitened teacher–student problem (Σ_xx = I) with the first layer free and the network started
at the teacher perturbed to relative distance δ = model.init_delta. On whitened inputs the free layer alone is plain
gradient descent on ½‖P − W*‖_F², whose error contracts by |1 − μ| per step: the relative excess by (1 − μ)².
"""
from __future__ import annotations

import math

import pytest
import torch

from orthoscale import data, init, optim, train
from orthoscale.network import Architecture
from orthoscale.study.compose import plan
from orthoscale.study.config import Config
from orthoscale.study.results import TrialResult
from orthoscale.study.trial import problem_for, run_trial

BASE = ["optim.protocol=fixed", "stop.max_iters=400"]


def trial(*overrides: str) -> tuple[TrialResult, Config]:
    (_, _, cells), = plan([*BASE, *overrides], grid=False)
    cfg = cells[0].cfg
    return run_trial(cfg), cfg


# ---------------------------------------------------------------- too large a step: diverged

@pytest.mark.parametrize("override", [["optim.lr=1e3"], ["optim.retraction=qr", "optim.lr=1e3"],
                                      ["optim.retraction=cayley", "optim.lr=50"]])
def test_a_huge_step_diverges_while_the_orthonormal_layers_stay_on_the_manifold(override):
    """μ ≫ 2: the free layer's error grows by |1 − μ| per step, so the loss passes diverge_factor · L_0 within a
    few steps; every retraction (polar, QR, Cayley) still returns orthonormal layers."""
    res, cfg = trial(*override)
    assert res.outcome == "diverged", res.reason
    assert "× initial" in res.reason or "non-finite" in res.reason or "retraction failed" in res.reason
    mu, factor = cfg.optim.lr, cfg.stop.diverge_factor
    assert res.steps <= math.ceil(math.log(factor) / math.log((mu - 1) ** 2)) + 1
    assert res.ortho_error < 1e-10
    assert res.objective == 1 + 2 * cfg.search.penalty  # the diverged score, worse than any short run


def test_euclidean_gradient_descent_with_a_huge_step_diverges_off_the_manifold():
    res, _ = trial("optim.method=gd", "optim.lr=1e3")
    assert res.outcome == "diverged", res.reason
    assert res.ortho_error > 1  # no retraction: the constrained layers leave the Stiefel manifold


# ---------------------------------------------------------------- too small a step: stalled

def test_a_tiny_step_stalls_at_the_first_window_without_moving():
    """μ = 1e-12 moves the loss by ~1e-12 relative per step, far below stall_improvement over a window."""
    res, cfg = trial("optim.lr=1e-12")
    assert res.outcome == "stalled" and "no progress" in res.reason
    assert res.steps == cfg.stop.stall_window  # the first step at which the stall rule can fire
    assert res.final_rel_excess == pytest.approx(res.curves["rel_excess"][0], rel=1e-8)
    assert 1 < res.objective < 1 + cfg.search.penalty  # short of tol, some way left to go


def test_a_step_beyond_the_stable_range_of_a_deep_network_makes_no_progress():
    """At depth 128 the stable range of μ at the teacher shrinks below the fixed μ = 0.1 (the exact local rate is
    > 1), so the run cannot converge; the free layer's own rate (1 − μ)² < 1 keeps the loss bounded, so it does not
    diverge either: the excess wanders at O(1) until the stall rule or the budget ends it (which of the two comes
    first depends on rounding in that chaotic phase)."""
    res, cfg = trial("model.depth=128")
    mu = cfg.optim.lr
    assert res.theory_mu_max is not None and res.theory_mu_max < mu and res.theory_rate > 1
    assert res.outcome in ("stalled", "budget"), res.reason
    assert min(res.curves["rel_excess"]) > 0.1 and res.observed_rate is None


# ---------------------------------------------------------------- converged, at the rate the mathematics gives

def test_depth_one_is_plain_least_squares_with_rate_one_minus_mu_squared():
    """N = 1 with the layer free: no orthonormal layer, and the relative excess starts at δ² and contracts by
    exactly (1 − μ)² per step, so the steps to tol follow."""
    res, cfg = trial("model.depth=1")
    mu, delta, tol = cfg.optim.lr, cfg.model.init_delta, cfg.stop.tol
    assert res.outcome == "converged" and "relative excess ≤" in res.reason
    assert res.ortho_error == 0.0
    assert res.curves["rel_excess"][0] == pytest.approx(delta ** 2, rel=1e-12)
    assert res.observed_rate == pytest.approx((1 - mu) ** 2, rel=1e-9)
    assert res.theory_rate == pytest.approx((1 - mu) ** 2, rel=1e-9)
    assert res.steps == math.ceil(math.log(tol / delta ** 2) / math.log((1 - mu) ** 2))
    assert res.objective == pytest.approx(res.observed_rate)  # search.objective=rate: the observed rate


def test_an_ill_conditioned_teacher_still_converges_at_the_free_layers_rate():
    """Whitened inputs make the free layer's curvature the identity whatever the teacher's condition number, so
    condition 1e8 still converges, at the exact local rate (1 − μ)² of the theory."""
    res, cfg = trial("data.condition=1e8")
    mu = cfg.optim.lr
    assert res.outcome == "converged" and res.final_rel_excess <= cfg.stop.tol
    assert res.theory_rate == pytest.approx((1 - mu) ** 2, rel=1e-6)
    assert res.observed_rate == pytest.approx(res.theory_rate, abs=0.01)


def test_width_one_converges_to_its_rank_one_teacher():
    """A 1-wide network is rank one, and so is its teacher (same widths): W* is representable and reached."""
    res, cfg = trial("model.width=1", "data.input_dim=16", "data.output_dim=16")
    assert res.outcome == "converged" and res.final_rel_excess <= cfg.stop.tol
    assert res.ortho_error < 1e-10


# ---------------------------------------------------------------- not representable: stalled at the floor

def test_a_single_orthonormal_layer_stalls_at_the_procrustes_distance_of_the_teacher():
    """model.free_layer=none, N = 1: the network is one orthogonal Q, the teacher is not orthogonal (condition 2),
    so the least relative excess is min_Q ‖Q − W*‖²/‖W*‖² = Σ(σ_i − 1)²/Σσ_i²; the run ends stalled there."""
    res, cfg = trial("model.free_layer=none", "model.depth=1")
    s = torch.linalg.svdvals(problem_for(cfg, "cpu").target)
    floor = float(((s - 1) ** 2).sum() / (s ** 2).sum())
    assert floor > 0.1  # far from tol: the teacher is not orthogonal
    assert res.outcome == "stalled" and "no progress" in res.reason
    assert res.final_rel_excess >= floor * (1 - 1e-9)
    assert res.final_rel_excess == pytest.approx(floor, rel=1e-6)


# ---------------------------------------------------------------- budget

def test_a_time_limit_ends_in_budget_naming_the_time_limit():
    res, cfg = trial("stop.max_seconds=0.05", "model.depth=128", "stop.tol=1e-300")
    assert res.outcome == "budget" and "time limit" in res.reason
    assert res.steps < cfg.stop.max_iters


def test_non_finite_values_are_a_clear_error_or_a_diverged_outcome():
    arch = Architecture((4,) * 4)
    g = torch.Generator().manual_seed(0)
    prob = data.teacher_student(arch, samples=8, generator=g)
    X = prob.X.clone()
    X[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        data.second_moments(X, prob.Y)
    blocks = init.random_blocks(arch, generator=g)
    blocks[0] = blocks[0].clone()
    blocks[0][0, 0, 0] = float("inf")
    traj, _ = train.train(prob, arch, blocks, optim.Optimizer(0.1))
    assert traj.outcome == "diverged" and "non-finite" in traj.reason and traj.steps == 0
