"""What a cell's search minimises (trial.objective), the step size of a trial (trial.step_size), and the rate a
finished trial shows (trial.estimate and summarize), on small synthetic trajectories."""
from __future__ import annotations

import dataclasses
import math

import pytest

from orthoscale import rates
from orthoscale.study.config import Config, ModelCfg, OptimCfg, SearchCfg
from orthoscale.study.config import step_size
from orthoscale.study.trial import estimate, objective, summarize
from orthoscale.train import StopRules, Trajectory

STOP = StopRules(tol=1e-10, max_iters=1000)
RATE = SearchCfg(objective="rate", penalty=1.0)
STEPS = SearchCfg(objective="steps", penalty=1.0)


def traj(rel: list[float], outcome: str = "budget") -> Trajectory:
    return Trajectory(loss=list(rel), rel_excess=list(rel), ortho_error=[0.0] * len(rel), outcome=outcome,
                      reason="synthetic", seconds=0.01)


def geometric(rho: float, steps: int, start: float = 1.0) -> list[float]:
    return [start * rho ** t for t in range(steps + 1)]


# ---------------------------------------------------------------- search.objective = rate

def test_a_measured_rate_is_the_objective():
    assert objective(traj(geometric(0.8, 200), "converged"), STOP, RATE, 0.8) == 0.8


@pytest.mark.parametrize("best,share", [(1.0, 1.0), (1e-5, 0.5), (1e-10, 0.0), (1e-12, 0.0), (10.0, 1.0)])
def test_without_a_rate_the_score_is_one_plus_penalty_times_the_log_distance_left(best, share):
    """f = log(best/tol)/log(1/tol), clipped to [0, 1]: halfway to tol in decades is f = ½."""
    for penalty in (1.0, 0.25):
        search = dataclasses.replace(RATE, penalty=penalty)
        score = objective(traj([1.0, best, 2 * best], "stalled"), STOP, search, None)
        assert score == pytest.approx(1 + penalty * share)


def test_a_rate_of_one_or_more_is_no_rate():
    t = traj([1.0, 1e-5], "stalled")
    assert objective(t, STOP, RATE, 1.0) == objective(t, STOP, RATE, None) == pytest.approx(1.5)


def test_diverged_scores_worst_and_non_finite_values_are_skipped():
    assert objective(traj([1.0, 1e-3, math.inf], "diverged"), STOP, RATE, None) == 3.0
    assert objective(traj([1.0, 1e-3, math.inf], "diverged"), STOP, dataclasses.replace(RATE, penalty=0.5), None) == 2.0
    # a run that ended on NaN but is not diverged: its best finite value counts
    assert objective(traj([1.0, 1e-5, math.nan], "stalled"), STOP, RATE, None) == pytest.approx(1.5)
    assert objective(traj([0.0, math.nan], "stalled"), STOP, RATE, None) == 2.0  # nothing usable: f = 1


def test_every_measured_rate_ranks_above_every_short_run_and_progress_ranks_above_none():
    rates_seen = [objective(traj([1.0], "converged"), STOP, RATE, r) for r in (0.1, 0.9, 0.999999)]
    short = [objective(traj([1.0, b], "stalled"), STOP, RATE, None) for b in (1e-9, 1e-4, 0.5)]
    diverged = objective(traj([1.0, 2.0], "diverged"), STOP, RATE, None)
    assert max(rates_seen) < min(short) and max(short) < diverged
    assert short == sorted(short)  # closer to tol scores better: the search sees progress


# ---------------------------------------------------------------- search.objective = steps

def test_steps_to_tol_in_units_of_max_iters():
    t = traj(geometric(0.5, 40), "converged")  # 0.5^34 ≈ 5.8e-11 ≤ 1e-10 < 0.5^33
    assert objective(t, STOP, STEPS, 0.5) == pytest.approx(34 / STOP.max_iters)
    assert objective(t, STOP, STEPS, 0.5) == rates.iterations_to(t.rel_excess, STOP.tol) / STOP.max_iters


def test_steps_objective_short_of_tol_is_penalised_whatever_the_rate():
    t = traj(geometric(0.9, 100), "budget")  # 0.9^100 ≈ 2.7e-5: short of tol
    share = math.log(0.9 ** 100 / 1e-10) / math.log(1e10)
    assert objective(t, STOP, STEPS, 0.9) == pytest.approx(1 + share)


# ---------------------------------------------------------------- the rate the search learns from

def test_only_a_run_that_contracted_to_its_end_shows_a_rate():
    values = geometric(0.7, 60)
    fit = rates.fit_rate(values)
    assert fit.found
    for outcome in ("converged", "budget"):
        assert estimate(traj(values, outcome), STOP, fit).conservative == pytest.approx(0.7, rel=1e-9)
    for outcome in ("stalled", "diverged", "pruned"):
        assert estimate(traj(values, outcome), STOP, fit) is None


def test_summarize_scores_a_trajectory_by_its_observed_rate():
    cfg = Config()
    t = traj(geometric(0.6, 50), "converged")
    res = summarize(t, cfg, mu=0.1, device="cpu")
    assert res.outcome == "converged" and res.lr == 0.1 and res.steps == 50
    assert res.observed_rate == pytest.approx(0.6, rel=1e-9) and res.objective == res.observed_rate
    assert res.iters_to_tol == rates.iterations_to(t.rel_excess, cfg.stop.tol)
    assert res.curve_steps[0] == 0 and res.curve_steps[-1] == 50 and res.theory_rate is None


# ---------------------------------------------------------------- μ of a trial

@pytest.mark.parametrize("protocol,lr,expected", [("tuned", 0.37, 0.37), ("tuned", None, 0.2), ("fixed", 0.37, 0.2),
                                                  ("fixed", None, 0.2), ("inverse_depth", 0.37, 0.2 / 8),
                                                  ("inverse_depth", None, 0.2 / 8)])
def test_step_size_follows_the_protocol(protocol, lr, expected):
    cfg = Config(optim=OptimCfg(protocol=protocol, lr=0.2), model=ModelCfg(depth=8))
    assert step_size(cfg, lr) == pytest.approx(expected)
    assert type(step_size(cfg, lr)) is float


# ---------------------------------------------------------------- search.objective = edge

@pytest.mark.parametrize("edge, best", [("falling", 2.0), ("rising", 0.5)])
def test_edge_objective_ranks_the_value_at_the_edge_best_and_every_failure_last(edge, best):
    search = SearchCfg(objective="edge", edge=edge)
    scores = {v: objective(traj(geometric(0.5, 40), "converged"), STOP, search, None, v) for v in (0.5, 1.0, 2.0)}
    assert min(scores, key=scores.get) == best and max(scores.values()) < 0
    assert objective(traj(geometric(0.99, 40), "stalled"), STOP, search, None, best) == 0.0
