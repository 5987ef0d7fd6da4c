"""What a cell shows when its runs are fast or degenerate: a short-run rate checked against the exact local
rate, a start at the solution flagged instead of tabulated, and the report's reason for every missing rate."""
from __future__ import annotations

import pytest

from orthoscale.study import report
from orthoscale.study.compose import plan
from orthoscale.study.trial import run_trial as run_typed


def run_trial(config, lr):
    """The trial's result as its durable record holds it (TrialResult.to_dict)."""
    return run_typed(config, lr).to_dict()


def teacher_cell(*overrides):
    (_, _, cells), = plan(["model.depth=2", "model.width=8", "data.input_dim=8", "data.output_dim=8",
                           "data.samples=64", "seed=0", "stop.tol=1e-8", *overrides], grid=False)
    return cells[0]


def record(cell, result, k=0):
    return {"cell_index": cell.index, "trial_number": k, "key": f"{cell.id}#{k}", "lr": result["lr"],
            "status": "FINISHED", "result": result, "tuned": True}


def test_a_fast_converger_at_the_best_step_has_a_short_run_rate_within_2_percent_of_the_theory():
    cell = teacher_cell()
    mu_opt = run_trial(cell.cfg, 0.1)["theory_mu_opt"]
    res = run_trial(cell.cfg, mu_opt)
    assert res["outcome"] == "converged" and res["iters_to_tol"] < 10   # too few steps for a linear-phase fit
    assert res["rate"] is None and res["rate_kind"] == "short" and res["rate_points"] == res["iters_to_tol"]
    assert abs((1 - res["rate_estimate"]) / (1 - res["theory_rate"]) - 1) <= 0.02
    lo, hi = res["rate_ci"]
    assert lo <= res["rate_estimate"] <= hi and res["observed_rate"] == hi  # the search ranks by the upper end
    row, = report.cell_rows([cell], [record(cell, res)])
    assert row["best_rate"] == res["rate_estimate"] and row["rate_kind"] == "short" and row["note"] == ""
    assert report.rate_label(row).startswith("≈ ") and f"from {res['rate_points']} steps" in report.rate_label(row)
    assert "1 of 1 cells have a rate (0 fitted on a linear phase, 1 estimated from a short run)" == \
        report.rate_count([row])


def test_a_start_at_the_solution_is_flagged_not_tabulated():
    cell = teacher_cell("model.init_delta=0")              # the teacher itself: excess 0 at step 0
    res = run_trial(cell.cfg, 0.5)
    assert res["at_solution"] and res["start_rel_excess"] <= 1e-8
    assert res["rate_estimate"] is None and res["observed_rate"] is None and res["objective"] >= 1
    row, = report.cell_rows([cell], [record(cell, res)])
    assert row["best_rate"] is None and report.rate_label(row) == "—"
    assert row["note"].startswith("start already at the solution")
    assert report.rate_count([row]).startswith("0 of 1 cells have a rate")


@pytest.mark.parametrize("mu,words", [(50.0, "diverged at every μ tried"), (1e-4, "no linear phase in 40 steps")])
def test_every_missing_rate_says_why(mu, words):
    cell = teacher_cell("stop.max_iters=40")
    res = run_trial(cell.cfg, mu)
    row, = report.cell_rows([cell], [record(cell, res)])
    assert row["best_rate"] is None and words in row["note"]
