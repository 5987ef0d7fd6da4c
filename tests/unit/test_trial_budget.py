"""A trial's budget follows its rate: a run still contracting at stop.max_iters goes on (stop.extend_to)."""
from __future__ import annotations

import pytest

from orthoscale.study.compose import plan
from orthoscale.study.trial import run_trial as run_typed


def run_trial(config, lr):
    """The trial's result as its durable record holds it (TrialResult.to_dict)."""
    return run_typed(config, lr).to_dict()


def cell(*overrides):
    (_, _, cells), = plan(["model.depth=4", "model.width=8", "data.input_dim=8", "data.output_dim=8",
                           "data.samples=64", "seed=0", "stop.tol=1e-9", "tracking.curve_points=10000", *overrides],
                          grid=False)
    return cells[0].cfg


def test_a_run_out_of_budget_goes_on_as_its_rate_needs_and_matches_one_long_run():
    mu = 0.03  # slow: ~10³ steps to 1e-9
    short = run_trial(cell("stop.max_iters=100"), mu)
    assert short["outcome"] == "budget" and short["steps"] == 100 and short["steps_needed"] > 100
    extended = run_trial(cell("stop.max_iters=100", "stop.extend_to=20000"), mu)
    whole = run_trial(cell("stop.max_iters=20000"), mu)
    assert extended["outcome"] == whole["outcome"] == "converged"
    assert extended["steps"] == whole["steps"] > 100
    assert extended["curves"]["rel_excess"] == pytest.approx(whole["curves"]["rel_excess"], rel=1e-9)
    assert "extension" in extended["reason"]


def test_no_extension_past_the_cap_or_for_a_run_that_stalls():
    mu = 0.03
    capped = run_trial(cell("stop.max_iters=100", "stop.extend_to=150"), mu)  # needs far more than 150
    assert capped["outcome"] == "budget" and capped["steps"] == 100 and capped["tail_rate"] < 1
    unstable = run_trial(cell("stop.max_iters=100", "stop.extend_to=20000", "stop.stall_window=50"), 5.0)
    assert unstable["outcome"] in ("diverged", "stalled") and unstable["steps"] <= 100
