"""A study's MLflow calls run in a child process, so their CPU is not the driver's (real SQLite store)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from orthoscale.study.tracking import Tracker, TrackerProcess, TrackingError, TrackingWriter


def record(key: str, **extra) -> dict:
    return {"key": key, "cell": "depth=2", "rerun": "python -m orthoscale rerun", "status": "FINISHED",
            "lr": 0.1, "trial_number": 0, "cfg": {"model": {"depth": 2}}, "started": 1.0, "ended": 2.0,
            "result": {"outcome": "converged", "objective": 0.5, "steps": 10, "curve_steps": [0, 5, 10],
                       "curves": {"rel_excess": [1.0, 0.1, 0.01]}}, **extra}


def test_child_runs_are_logged_by_a_process_once_each_and_failures_are_counted(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = TrackerProcess(uri, "writer", (tmp_path / "artifacts").as_uri())  # not ./mlruns of the caller
    parent, _ = tracker.open_parent("s", params={}, tags={})
    writer = TrackingWriter(tracker, parent, "s", retries=1)
    for rec in (record("a"), record("b"), record("a"), record("bad", cfg=None)):
        writer.submit(rec)
    writer.close()
    assert writer.logged == 2 and writer.failed == ["bad"] and tracker.proc.poll() is None
    (tmp_path / "report.txt").write_text("r")
    tracker.close_study(parent, [str(tmp_path / "report.txt")], {"rate_exponent": -1.0}, {"orthoscale.x": "y"})
    tracker.close()
    assert tracker.proc.poll() == 0
    mine = Tracker(uri, "writer")  # what the process wrote, read in this one
    assert mine.logged_trials(parent) == {"a", "b"}
    run = mine.client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics == {"rate_exponent": -1.0}
    assert run.data.tags["orthoscale.x"] == "y"
    assert [a.path for a in mine.client.list_artifacts(parent)] == ["report.txt"]


def test_a_store_the_tracking_process_cannot_open_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TrackingError, match="Error"):
        TrackerProcess(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}", "x")


def test_the_logging_process_loads_no_torch():
    code = "import sys, orthoscale.study.tracking; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_a_new_sqlite_store_is_a_copy_of_one_template_made_by_mlflow(tmp_path, monkeypatch):
    from orthoscale.study.tracking import schema_template

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "one")
    template = schema_template()
    made = template.stat().st_mtime_ns
    second = Tracker(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", "two")
    assert template.stat().st_mtime_ns == made  # built once, then copied
    for tracker, name in ((first, "one"), (second, "two")):  # each copy is a working store of its own
        run, _ = tracker.open_parent("s", params={"p": 1}, tags={})
        assert {e.name for e in tracker.client.search_experiments()} == {"Default", name}
        assert tracker.client.get_run(run).data.params == {"p": "1"}
