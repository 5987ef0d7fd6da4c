"""family=basin end to end on a real local Ray, a real MLflow SQLite store and real Optuna: the searched key reaches
the trials, the durable records and the child runs, and the parent run holds the edge table, its plots and the law."""
from __future__ import annotations

import json

import pytest

from orthoscale.study.store import ResultStore

from .conftest import run_cli, runs

pytestmark = pytest.mark.integration


def test_basin_family_records_the_searched_delta_the_plots_and_the_law(tmp_path):
    out = run_cli(["family=basin", "model.depth=2,4", "seed=0,1", "search.trials=4",
                   "family.grid.variant=[{name: gd, optim.method: gd}]", f"study.state_dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "edge of success in model.init_delta" in out.stdout and "init_delta₅₀ ∝ N^−β" in out.stdout
    folder = next((tmp_path / "studies").iterdir())
    records = ResultStore(folder).load()
    assert len(records) == 16
    for rec in records:  # the searched δ is what the trial ran with, and μ = μ_opt of its depth
        assert rec["param"] == "model.init_delta" and rec["cfg"]["model"]["init_delta"] == rec["value"]
        assert rec["result"]["value"] == rec["value"] and rec["lr"] == pytest.approx(rec["result"]["theory_mu_opt"])
        assert f"model.init_delta={rec['value']!r}" in rec["rerun"]
        assert rec["result"]["teacher_distance"] > 0
    assert any(r["result"]["outcome"] == "converged" for r in records)
    assert any(r["result"]["outcome"] != "converged" for r in records)
    client, all_runs = runs(f"sqlite:///{tmp_path}/mlflow.db", "orthoscale-basin")
    parent = next(r for r in all_runs if r.data.tags.get("orthoscale.role") == "study")
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 16
    for c in children:
        assert c.data.params["searched_key"] == "model.init_delta"
        assert float(c.data.params["searched_value"]) == pytest.approx(float(c.data.params["cfg.model.init_delta"]))
        assert "teacher_distance" in c.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"edges.json", "basin_success.png", "basin_edge.png", "basin_distance.png", "landscape.png"} <= artifacts
    law = json.loads(parent.data.tags["orthoscale.edge_law.variant:gd"])
    assert law["points"] == 2 and "beta" in law and "edge_beta.variant:gd" in parent.data.metrics
    edges = json.loads((folder / "report" / "edges.json").read_text())
    assert {e["depth"] for e in edges["edges"]} == {2, 4} and edges["bins"]
