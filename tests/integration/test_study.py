"""End-to-end studies on a real local Ray, a real MLflow SQLite store and real Optuna."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from orthoscale.study.store import ResultStore

from .conftest import ROOT, TINY, plan_and_run, run_cli, runs, sweep_cmd

pytestmark = pytest.mark.integration


def test_study_records_one_parent_and_one_child_per_trial(ray_local, tmp_path):
    res = plan_and_run(["model.depth=2,3", "seed=0", "search.trials=4", *TINY], tmp_path)
    client, all_runs = runs(res.tracking_uri, "orthoscale-depth")
    parents = [r for r in all_runs if r.data.tags.get("orthoscale.role") == "study"]
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 8
    keys = [c.data.tags["orthoscale.trial"] for c in children]
    assert len(set(keys)) == 8
    for c in children:
        assert c.info.status in ("FINISHED", "KILLED")
        assert "lr" in c.data.params and "cfg.model.depth" in c.data.params
        assert c.data.tags["orthoscale.outcome"] in ("converged", "diverged", "stalled", "budget", "pruned")
        assert c.data.tags["orthoscale.rerun"].startswith("python -m orthoscale rerun")
        if c.info.status == "FINISHED":  # a whole trial: summary and curves
            assert c.data.tags["orthoscale.outcome"] != "pruned" and "objective" in c.data.metrics
            assert "steps" in c.data.metrics and "seconds" in c.data.metrics
            history = client.get_metric_history(c.info.run_id, "rel_excess")
            assert len(history) >= 2 and history[0].step == 0
        else:  # stopped early by its cell's pruner
            assert c.data.tags["orthoscale.outcome"] == "pruned"
    artifacts = {a.path for a in client.list_artifacts(res.parent_run_id)}
    assert {"cells.csv", "scaling.json", "rate_vs_depth.png", "lr_vs_depth.png", "curves.png"} <= artifacts
    assert "all" in res.scaling and "exponent" in res.scaling["all"]["one_minus_rate"]
    # the best μ of each cell is the μ of its best child (least objective among finished children)
    for row in res.rows:
        mine = [c for c in children if c.data.tags["orthoscale.cell"] == row["cell"] and c.info.status == "FINISHED"]
        best = min(mine, key=lambda c: c.data.metrics["objective"])
        assert float(best.data.params["lr"]) == pytest.approx(row["best_lr"], rel=1e-12)
    # the report re-renders from the MLflow record alone, to the same table
    import csv

    from orthoscale.cli import main as cli

    out = tmp_path / "from-mlflow"
    assert cli(["report", res.name, f"study.state_dir={tmp_path}", "--out", str(out)]) == 0
    again = list(csv.DictReader(open(out / "cells.csv")))
    assert [float(r["best_lr"]) for r in again] == pytest.approx([r["best_lr"] for r in res.rows], rel=1e-12)
    assert [r["converged"] for r in again] == [str(r["converged"]) for r in res.rows]
    assert all((out / png).stat().st_size > 1000 for png in ("rate_vs_depth.png", "curves.png", "landscape.png"))


def test_diverging_step_range_is_a_recorded_outcome(ray_local, tmp_path):
    res = plan_and_run(["model.depth=2", "seed=0", "search.trials=3", "search.lr_min=50", "search.lr_max=1000",
                        "search.pruner=none", "search.edge_rounds=0", *TINY], tmp_path)  # no re-search below
    _, all_runs = runs(res.tracking_uri, "orthoscale-depth")
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
    assert len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["orthoscale.outcome"] for c in children} == {"diverged"}
    assert res.rows[0]["diverged"] == 3 and res.rows[0]["best_rate"] is None


def test_fixed_seed_at_concurrency_one_is_reproducible(ray_local, tmp_path):
    args = ["model.depth=2", "seed=0,1", "search.trials=4", "ray.max_concurrent=1", "search.seed=7", *TINY]
    a = plan_and_run(args, tmp_path / "a")
    b = plan_and_run(args, tmp_path / "b")
    key = lambda rec: (rec["key"], rec["lr"], (rec["result"] or {}).get("objective"))
    ra = sorted(map(key, ResultStore(a.folder).load()))
    rb = sorted(map(key, ResultStore(b.folder).load()))
    assert ra == rb and len(ra) == 8


def test_override_changes_the_grid_and_bad_values_exit_2():
    from orthoscale.study.compose import plan

    (cfg, _, cells), = plan(["model.depth=2,4,8", "seed=5"])
    assert [c.get("model.depth") for c in cells] == [2, 4, 8] and {c.get("seed") for c in cells} == {5}
    for bad, key in (["model.depth=0"], "model.depth"), (["optim.retraction=polr"], "optim.retraction"), \
                    (["family=nope"], "family"), (["search.lr_min=10", "search.lr_max=1"], "search.lr_min"):
        out = run_cli(bad)
        assert out.returncode == 2, out.stderr
        lines = [ln for ln in out.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and key in lines[0] and "Traceback" not in out.stderr


def _children(state, parent=None):
    uri = f"sqlite:///{state / 'mlflow.db'}"
    _, all_runs = runs(uri, "orthoscale-depth")
    kids = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in all_runs if r.data.tags.get("orthoscale.role") == "study"]
    return kids, parents


def test_interrupted_study_resumes_without_duplicates(tmp_path):
    args = ["model.depth=2,3", "seed=0", "search.trials=5", "ray.max_concurrent=1", "search.pruner=none",
            "ray.num_cpus=1", *TINY]
    whole = tmp_path / "whole"
    assert run_cli(args + [f"study.state_dir={whole}"]).returncode == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen(sweep_cmd(args + [f"study.state_dir={cut}"]), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list((cut / "studies").glob("*/results.jsonl")) if (cut / "studies").exists() else []
        if found and len(found[0].read_text().splitlines()) >= 3:
            results = found[0]
            break
        time.sleep(0.2)
    assert results is not None, "the study never finished three trials"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray die together, mid-study
    proc.wait()
    lines_before = len(results.read_text().splitlines())
    done_before = len(ResultStore(results.parent).load())  # complete records, one per trial
    assert 3 <= done_before < 10
    rerun = run_cli(args + [f"study.state_dir={cut}"])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    counts = re.search(r"(\d+) trials to run, (\d+) already done", rerun.stdout)
    assert counts, rerun.stdout[-2000:]
    assert (int(counts[1]), int(counts[2])) == (10 - done_before, done_before)
    kids_whole, _ = _children(whole)
    kids_cut, parents_cut = _children(cut)
    assert len(parents_cut) == 1 and parents_cut[0].info.status == "FINISHED"
    keys_cut = [k.data.tags["orthoscale.trial"] for k in kids_cut]
    assert len(keys_cut) == len(set(keys_cut)) == 10
    lr = lambda kids: {k.data.tags["orthoscale.trial"]: float(k.data.params["lr"]) for k in kids}
    assert lr(kids_cut) == lr(kids_whole)
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert len({x["key"] for x in lines}) == len(lines) == 10
    assert len(lines) - lines_before == 10 - done_before  # the resumed run ran exactly the remaining trials


def test_rate_search_reaches_the_optimal_rate_within_5_percent(ray_local, tmp_path):
    """The default search (rate-model sampler, objective = observed rate) on teacher–student cells where the
    theory gives ρ_opt: Optuna's best μ reaches ≥ 95 % of the optimal 1 − ρ, and lies next to μ_opt."""
    res = plan_and_run(["model.depth=4,8", "seed=0", "model.width=6", "search.trials=12", "ray.max_concurrent=1",
                        "tracking.curve_points=20"], tmp_path)
    assert len(res.rows) == 2
    for row in res.rows:
        assert row["search_gap"] is not None and row["search_gap"] >= 0.95, row
        assert row["best_lr"] == pytest.approx(row["theory_mu_opt"], rel=0.05)


def test_median_pruner_stops_hopeless_trials(ray_local, tmp_path):
    """search.pruner=median: trials whose intermediate excess is worse than the cell's median are stopped,
    recorded as pruned, and their cell still has a best μ."""
    res = plan_and_run(["model.depth=3", "seed=0", "search.trials=8", "search.pruner=median", "search.sampler=random",
                        "search.startup_trials=2", "search.lr_min=1e-4", "search.lr_max=1e-2", "ray.max_concurrent=1",
                        "search.edge_rounds=0", *TINY], tmp_path)  # the range is low on purpose: no re-search
    client, all_runs = runs(res.tracking_uri, "orthoscale-depth")
    outcomes = [c.data.tags["orthoscale.outcome"] for c in all_runs
                if c.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
    assert len(outcomes) == 8 and outcomes.count("pruned") >= 1
    assert res.rows[0]["best_lr"] is not None


def test_a_local_study_runs_a_trial_per_core(ray_local, tmp_path):
    res = plan_and_run(["model.depth=4,8", "seed=0,1", "search.trials=8", "search.edge_rounds=0", "model.width=16",
                        "stop.tol=1e-300",
                        "stop.stall_window=100000", "stop.max_iters=600", "tracking.curve_points=20"], tmp_path)
    from orthoscale.study.capacity import measure

    recs = ResultStore(res.folder).load()
    assert len(recs) == 32 and res.fanout["slots"] == 2 and res.fanout["concurrency_peak"] == 2
    assert len({r["result"]["pid"] for r in recs}) == 2                   # two worker processes, one per core
    assert measure(recs).mean >= 0.8 * 2, res.fanout                      # measured from the durable records
    assert res.fanout["concurrency_mean"] == pytest.approx(measure(recs).mean)
    assert res.fanout["warning"] is None and "concurrency: mean" in res.text


def ray_processes(temp: str) -> list[int]:
    """Live processes whose environment names ``temp`` as Ray's temp dir: an embedded Ray's and its children's."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"RAY_TMPDIR={temp}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                alive.append(int(proc.name))
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return alive


def test_a_study_of_short_trials_run_as_a_command_keeps_both_cores_busy(tmp_path):
    """Trials of ~0.2 s in packs, through the user's command and its own embedded Ray: both slots stay in use,
    measured from the study's durable records (a Tune setting once cut such a study to one trial at a time);
    the command leaves no process of its Ray behind (it shuts Ray down on a thread while it writes the report)."""
    from orthoscale.study.capacity import measure

    temp = tempfile.mkdtemp(prefix="or", dir="/tmp")  # short: Ray puts socket paths under it
    out = run_cli(["model.depth=2,4,8,16", "seed=0,1", "search.trials=8", "model.width=8", "stop.max_iters=400",
                   "search.pruner=none", "search.sampler=tpe", "search.edge_rounds=0", "tracking.enabled=false",
                   f"study.state_dir={tmp_path}"], env={**os.environ, "RAY_TMPDIR": temp})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "WARNING" not in out.stderr and "Token authentication" not in out.stderr, out.stderr[-2000:]
    recs = ResultStore(next(tmp_path.glob("studies/*/results.jsonl")).parent).load()
    conc = measure(recs)
    assert len(recs) == 64 and conc.peak == 2 and len({r["result"]["pid"] for r in recs}) == 2
    assert conc.mean >= 1.4, out.stdout[-2000:]
    assert next(Path(temp).glob("ray/session_*/logs/raylet.out"))  # the study's Ray did run there
    time.sleep(1)  # its processes' last exits
    assert ray_processes(temp) == []


def test_tracking_off_keeps_results_and_report(ray_local, tmp_path):
    res = plan_and_run(["model.depth=2,3", "seed=0", "search.trials=2", "tracking.enabled=false", *TINY], tmp_path)
    assert res.parent_run_id is None and not res.unlogged and res.trials_logged == 0
    assert not (tmp_path / "mlflow.db").exists()                        # no MLflow store was made
    from orthoscale.study.store import ResultStore

    assert len(ResultStore(res.folder).load()) == 4
    assert {"cells.csv", "scaling.json", "fanout.json"} <= {p.name for p in (res.folder / "report").iterdir()}
    assert len(res.rows) == 2 and all(r["trials"] == 2 for r in res.rows)
