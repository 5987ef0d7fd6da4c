"""A study's analysis from planted result records: the best trial per cell, counts per outcome, edge flags, the
power laws in depth, the table and the files of report.write."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import pytest

from orthoscale.study.cells import Cell
from orthoscale.study.config import Config, ModelCfg, OptimCfg
from orthoscale.study.report import cell_rows, scaling, table, write
from orthoscale.study.results import TrialResult

DEPTHS = (2, 4, 8, 16)
K_RATE, C_RATE = -1.0, 0.5   # planted: 1 − ρ_best = 0.5 · N^-1
K_LR, C_LR = -0.5, 0.4       # planted: μ_best = 0.4 · N^-0.5


def cell(index: int, depth: int, seed: int = 0, protocol: str = "tuned", series: str | None = None) -> Cell:
    cfg = replace(Config(), model=ModelCfg(depth=depth), seed=seed, optim=OptimCfg(protocol=protocol))
    values = (("model.depth", depth), ("seed", seed)) + ((("variant", series),) if series else ())
    return Cell(index, values, (("model.depth", depth), ("seed", seed)), cfg)


def record(c: Cell, n: int, status: str = "FINISHED", **result) -> dict:
    res = None
    if result:
        lr = result.setdefault("lr", 0.01)
        res = TrialResult(**{"curve_steps": [0, 1], "curves": {"rel_excess": [1.0, 0.5]}, **result}).to_dict()
    else:
        lr = 0.01
    return {"key": f"{c.index}-{n}", "cell_index": c.index, "trial_number": n, "status": status, "lr": lr,
            "result": res}


def planted(c: Cell) -> list[dict]:
    """Six trials of a cell: the best (least objective), a worse converged one, stalled, diverged, pruned, failed."""
    N = c.get("model.depth")
    rho, mu = 1 - C_RATE * N ** K_RATE, C_LR * N ** K_LR
    worse = 1 - 0.5 * (1 - rho)
    return [
        record(c, 0, outcome="converged", lr=mu / 3, rate=worse, objective=worse, theory_rate=worse),
        record(c, 1, outcome="converged", lr=mu, rate=rho, objective=rho, iters_to_tol=40, theory_rate=rho,
               theory_rate_opt=1 - (1 - rho) / 0.8),
        record(c, 2, outcome="stalled", lr=1e-3 * 1.5, rate=0.999, objective=1.8),
        record(c, 3, outcome="diverged", lr=2.5, rate=None, objective=3.0),
        record(c, 4, status="KILLED", outcome="pruned", lr=0.02, objective=1.9),
        record(c, 5, status="FAILED"),
    ]


@pytest.fixture
def study():
    cells = [cell(i, N) for i, N in enumerate(DEPTHS)]
    return cells, [r for c in cells for r in planted(c)]


def test_the_best_trial_of_a_cell_is_the_finished_one_with_the_least_objective(study):
    cells, records = study
    rows = cell_rows(cells, records)
    assert [r["cell"] for r in rows] == [c.id for c in cells]
    for c, row in zip(cells, rows):
        N = c.get("model.depth")
        assert row["depth"] == N and row["seed"] == 0
        assert row["best_lr"] == pytest.approx(C_LR * N ** K_LR) and row["best_key"] == f"{c.index}-1"
        assert row["best_rate"] == pytest.approx(1 - C_RATE * N ** K_RATE) and row["best_iters"] == 40
        assert row["min_rate"] == row["best_rate"]  # the worse converged trial has a larger rate
        assert row["rate_ratio"] == pytest.approx(1.0) and row["search_gap"] == pytest.approx(0.8)


def test_counts_per_outcome_with_killed_as_pruned_and_missing_results_as_failed(study):
    cells, records = study
    for row in cell_rows(cells, records):
        assert row["trials"] == 6
        assert (row["converged"], row["stalled"], row["diverged"], row["budget"], row["pruned"], row["failed"]) == \
               (2, 1, 1, 0, 1, 1)


def test_a_cell_without_finished_trials_has_no_best():
    c = cell(0, 4)
    rows = cell_rows([c, cell(1, 8)], [record(c, 0, status="FAILED"), record(c, 1, status="KILLED")])
    for row in rows:
        assert row["best_lr"] is None and row["best_rate"] is None and row["best_key"] is None
        assert row["lr_on_edge"] == "" and row["min_rate"] is None
    assert (rows[0]["trials"], rows[0]["failed"], rows[0]["pruned"]) == (2, 1, 1)
    assert rows[1]["trials"] == 0


@pytest.mark.parametrize("lr,protocol,edge", [(1.05e-3, "tuned", "low"), (2.9, "tuned", "high"),
                                              (0.05, "tuned", ""), (1.05e-3, "fixed", "")])
def test_a_best_step_within_five_percent_of_a_bound_of_the_log_range_is_flagged(lr, protocol, edge):
    c = cell(0, 4, protocol=protocol)  # search range [1e-3, 3]: 5 % of its log width is a factor ≈ 1.49
    (row,) = cell_rows([c], [record(c, 0, outcome="converged", lr=lr, rate=0.5, objective=0.5)])
    assert row["lr_on_edge"] == edge


def test_scaling_recovers_the_planted_power_laws_per_series(study):
    cells, records = study
    laws = scaling(cells, cell_rows(cells, records))
    assert set(laws) == {"all"}
    rate, lr = laws["all"]["one_minus_rate"], laws["all"]["best_lr"]
    assert rate["exponent"] == pytest.approx(K_RATE, abs=1e-9) and rate["prefactor"] == pytest.approx(C_RATE)
    assert lr["exponent"] == pytest.approx(K_LR, abs=1e-9) and lr["prefactor"] == pytest.approx(C_LR)
    assert rate["points"] == len(DEPTHS) and rate["ci95"][0] <= K_RATE <= rate["ci95"][1]


def test_scaling_needs_two_depths_with_a_rate_and_keeps_series_apart():
    a = [cell(i, N, series="a") for i, N in enumerate((2, 8))]
    b = [cell(2, 4, series="b"), cell(3, 16, series="b")]
    records = [r for c in a for r in planted(c)] + planted(b[0])  # series b: one depth has trials
    laws = scaling(a + b, cell_rows(a + b, records))
    assert set(laws) == {"variant=a"}
    assert laws["variant=a"]["one_minus_rate"]["exponent"] == pytest.approx(K_RATE, abs=1e-9)


def test_table_has_a_line_per_cell_and_dashes_for_missing_values(study):
    cells, records = study
    c = cell(len(cells), 32)
    lines = table(cell_rows(cells + [c], records)).splitlines()
    assert len(lines) == 2 + len(cells) + 1 and set(lines[1]) == {"-"}
    for line, cl in zip(lines[2:], cells + [c]):
        assert line.startswith(cl.id)
    assert "—" in lines[-1] and "—" not in lines[2].split()[7]  # no best μ without trials; a best μ with


def test_write_leaves_the_table_the_laws_and_the_plots(study, tmp_path):
    cells, records = study
    edge = cell(len(cells), 32, seed=1)
    records = records + [record(edge, 0, outcome="converged", lr=2.95, rate=0.99, objective=0.99)]
    out = write(tmp_path / "report", cells + [edge], records)
    folder = tmp_path / "report"
    rows = list(csv.DictReader(open(folder / "cells.csv")))
    assert [r["cell"] for r in rows] == [c.id for c in cells + [edge]]
    assert [float(r["best_lr"]) for r in rows] == pytest.approx([r["best_lr"] for r in out["rows"]])
    assert json.loads((folder / "scaling.json").read_text()) == json.loads(json.dumps(out["scaling"]))
    summary = (folder / "summary.txt").read_text()
    assert summary.strip() == out["text"].strip()
    exponent = out["scaling"]["all"]["one_minus_rate"]["exponent"]
    assert f"[all] 1−ρ ∝ N^{exponent:.3f}" in summary and not math.isclose(exponent, K_RATE)  # the edge cell counts
    assert f"best μ on the edge of its range (after search.edge_rounds re-searches) in: {edge.id}" in summary
    assert "search vs theory" in summary and "0.800 … 0.800 over 4 cells" in summary
    for png in ("rate_vs_depth.png", "lr_vs_depth.png", "curves.png", "landscape.png"):
        assert (folder / png).stat().st_size > 1000
    assert set(out["figure_seconds"]) == {p.name for p in folder.glob("*.png")}   # each figure timed, once
    assert all(0 < s < 30 for s in out["figure_seconds"].values())


def test_the_landscape_has_one_panel_per_cell_up_to_its_seed():
    from orthoscale.study.plots import seed_panels

    cells = [cell(i, depth, seed, series=s) for i, (depth, seed, s) in
             enumerate([(2, 0, "a"), (2, 1, "a"), (4, 0, "a"), (2, 0, "b"), (4, 1, "a")])]
    assert seed_panels(cells) == {"depth=2,variant=a": [0, 1], "depth=4,variant=a": [2, 4], "depth=2,variant=b": [3]}
