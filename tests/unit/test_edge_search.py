"""The per-cell search widens its μ range when the best μ lies on an edge, and re-searches (real Optuna studies)."""
from __future__ import annotations

import math

from orthoscale.study.compose import plan
from orthoscale.study.search import CellSearch
from orthoscale.study.trial import FINAL


def loss_rate(mu: float, a: float, b: float) -> float:
    return max(abs(1 - mu * a), abs(1 - mu * b)) ** 2


def drive(search: CellSearch, curvature: dict[int, tuple[float, float]]) -> list[dict]:
    """Run the searcher to the end at concurrency 1 on planted rates r(μ)² per cell; returns the suggestions."""
    seen = []
    for n in range(1000):
        s = search.suggest(f"t{n}")
        if s == "FINISHED":
            return seen
        assert s is not None  # nothing is live, so the searcher never has to wait
        rho = loss_rate(s["lr"], *curvature[s["cell_index"]])
        ok = rho < 1
        search.on_trial_complete(f"t{n}", {"objective": rho if ok else 3.0, FINAL: True, "outcome":
                                           "converged" if ok else "diverged", "observed_rate": rho if ok else None})
        seen.append(s)
    raise AssertionError("the search did not finish")


def test_edge_of_range_best_step_widens_the_range_and_re_searches():
    (cfg, _, cells), = plan(["model.depth=2,4", "seed=0", "search.trials=6", "search.lr_min=0.01",
                             "search.lr_max=0.5", "search.edge_rounds=3", "search.edge_factor=4"])
    outside, inside = (0.5, 0.7), (2.0, 6.0)        # μ* = 2/(a + b): 1.67 (outside), 0.25 (inside)
    search = CellSearch(cells, {**cfg.search.__dict__})
    seen = drive(search, {0: outside, 1: inside})
    by_cell = {c: [s["lr"] for s in seen if s["cell_index"] == c] for c in (0, 1)}
    mu_star = 2 / sum(outside)
    # the cell whose optimum lies outside was widened upwards and found it
    assert search.rounds[0] >= 1 and search.ranges[0][1] > mu_star and search.ranges[0][0] == 0.01
    assert len(by_cell[0]) == 6 + 4 * search.rounds[0]
    best = min(by_cell[0], key=lambda mu: loss_rate(mu, *outside))
    best_inside_first_range = loss_rate(0.5, *outside)
    assert loss_rate(best, *outside) < best_inside_first_range
    assert (1 - math.sqrt(loss_rate(best, *outside))) / (1 - math.sqrt(loss_rate(mu_star, *outside))) >= 0.9
    assert max(by_cell[0]) > best > min(by_cell[0])        # it stopped once tried μ bracketed the best
    # the other cell's optimum is inside: no widening, its budget only
    assert search.rounds[1] == 0 and search.ranges[1] == (0.01, 0.5) and len(by_cell[1]) == 6


def test_no_widening_when_switched_off_and_a_low_edge_widens_downwards():
    (cfg, _, cells), = plan(["model.depth=2", "seed=0", "search.trials=5", "search.lr_min=0.5",
                             "search.lr_max=3.0", "search.edge_rounds=0"])
    off = CellSearch(cells, {**cfg.search.__dict__})
    assert len(drive(off, {0: (20.0, 30.0)})) == 5 and off.ranges[0] == (0.5, 3.0)
    on = CellSearch(cells, {**cfg.search.__dict__, "edge_rounds": 2})
    assert on.reserve() == 2 * 4
    drive(on, {0: (20.0, 30.0)})                    # μ* = 0.04, below the range: every μ ≥ 0.5 diverges
    assert on.rounds[0] >= 1 and on.ranges[0][0] < 0.5 and on.ranges[0][1] == 3.0


def test_resume_restores_a_widened_range():
    (cfg, _, cells), = plan(["model.depth=2", "seed=0", "search.trials=4", "search.lr_min=0.01",
                             "search.lr_max=0.5"])
    first = CellSearch(cells, {**cfg.search.__dict__})
    seen = drive(first, {0: (0.5, 0.7)})
    records = [{"cell_index": 0, "trial_number": s["trial_number"], "tuned": True, "lr": s["lr"],
                "status": "FINISHED", "result": {"objective": loss_rate(s["lr"], 0.5, 0.7),
                                                 "observed_rate": loss_rate(s["lr"], 0.5, 0.7)}} for s in seen]
    again = CellSearch(cells, {**cfg.search.__dict__}, records)
    assert again.rounds == first.rounds and again.budget == first.budget
    assert again.ranges[0][0] == 0.01 and again.ranges[0][1] >= max(s["lr"] for s in seen)
    assert again.remaining() == 0
