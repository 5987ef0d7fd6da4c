"""Nothing lost, nobody in: tracking outages, worker crashes, bad input, secrets (numerical faults of one trial:
tests/unit/test_outcomes.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from .conftest import ROOT, TINY, MlflowServer, free_port, plan_and_run, run_cli, runs, sweep_cmd

pytestmark = pytest.mark.integration
LONG = ["model.width=16", "model.depth=16", "stop.tol=1e-300", "stop.max_iters=2500", "stop.stall_window=3000",
        "search.pruner=none", "tracking.curve_points=20"]


def test_unreachable_tracking_keeps_results_and_sync_replays_them_once(ray_local, tmp_path):
    port = free_port()  # nothing listens there yet
    uri = f"http://127.0.0.1:{port}"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        res = plan_and_run(["model.depth=2", "seed=0", "search.trials=3", f"tracking.uri={uri}", *TINY],
                           tmp_path / "state")
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert res.parent_run_id is None and len(res.unlogged) >= 3
    lines = (res.folder / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    server = MlflowServer(tmp_path, port)
    try:
        for _ in range(2):  # a second sync must not duplicate anything
            out = subprocess.run([sys.executable, "-m", "orthoscale", "sync", res.name,
                                  f"study.state_dir={tmp_path / 'state'}", f"tracking.uri={uri}"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
        _, all_runs = runs(uri, "orthoscale-depth")
        parents = [r for r in all_runs if r.data.tags.get("orthoscale.role") == "study"]
        kids = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(k.data.tags["orthoscale.trial"] for k in kids) == sorted(json.loads(x)["key"] for x in lines)
    finally:
        server.stop()


def _command(p: psutil.Process) -> str:
    """The command line of ``p`` ('' once it has exited or is a zombie)."""
    try:
        return " ".join(p.cmdline() or [p.name()])
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _kill_a_trial_worker_when_running(deadline: float, root: int | None = None) -> int | None:
    """SIGKILL the first trial worker among the descendants of ``root`` (this process by default)."""
    me = psutil.Process(root or os.getpid())
    while time.time() < deadline:
        workers = [p for p in me.children(recursive=True) if "ImplicitFunc" in _command(p)]
        if workers:
            time.sleep(1.0)  # let it get into the trial
            workers[0].send_signal(signal.SIGKILL)
            return workers[0].pid
        time.sleep(0.1)
    return None


@pytest.mark.parametrize("failures,status", [(0, "FAILED"), (2, "FINISHED")])
def test_killed_worker_is_retried_or_recorded_failed(ray_local, tmp_path, failures, status):
    box = {}
    args = ["model.depth=16", "seed=0", "search.trials=2", "ray.max_concurrent=1", f"ray.max_failures={failures}",
            *LONG]
    thread = threading.Thread(target=lambda: box.setdefault("res", plan_and_run(args, tmp_path)))
    thread.start()
    assert _kill_a_trial_worker_when_running(time.time() + 120) is not None
    thread.join(timeout=600)
    res = box["res"]
    recs = [json.loads(x) for x in (res.folder / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and len({r["key"] for r in recs}) == 2
    first = min(recs, key=lambda r: r["trial_number"])
    assert first["status"] == status
    if status == "FAILED":
        assert first["error"]  # the reason is recorded
    _, all_runs = runs(res.tracking_uri, "orthoscale-depth")
    kids = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
    assert sorted(k.info.status for k in kids) == sorted(r["status"] for r in recs)


def test_a_study_whose_trials_all_failed_exits_non_zero(tmp_path):
    args = ["model.depth=16", "seed=0", "search.trials=1", "ray.max_failures=0", "ray.num_cpus=1", *LONG,
            f"study.state_dir={tmp_path}"]
    proc = subprocess.Popen(sweep_cmd(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _kill_a_trial_worker_when_running(time.time() + 120, proc.pid) is not None
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert "every trial of study" in err and "failed; first error:" in err
    recs = [json.loads(x) for x in next(tmp_path.glob("studies/*/results.jsonl")).read_text().splitlines()]
    assert [r["status"] for r in recs] == ["FAILED"]


def test_gpu_request_without_gpus_exits_2(tmp_path):
    out = run_cli(["model.depth=2", "seed=0", "search.trials=1", "ray.gpus_per_trial=1", "ray.num_cpus=1",
                   f"study.state_dir={tmp_path}"])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("orthoscale: invalid config: ray.gpus_per_trial=1")


def test_missing_mnist_is_a_config_error_before_any_trial(tmp_path):
    out = run_cli(["family=mnist", f"data.root={tmp_path / 'nowhere'}", f"study.state_dir={tmp_path}"])
    assert out.returncode == 2 and "make data" in out.stderr and "Traceback" not in out.stderr


def test_planted_secret_reaches_no_param_tag_artifact_or_log(ray_local, tmp_path, capsys):
    secret = "Sup3rSecretPw"
    port = free_port()
    server = MlflowServer(tmp_path, port)
    try:
        uri = f"http://orthoscale:{secret}@127.0.0.1:{port}"
        res = plan_and_run(["model.depth=2", "seed=0", "search.trials=2", f"tracking.uri={uri}", *TINY],
                           tmp_path / "state")
        assert res.parent_run_id
        out = subprocess.run([sys.executable, "-m", "orthoscale", "rerun", "model.depth=2", "optim.protocol=fixed",
                              f"tracking.uri={uri}", f"study.state_dir={tmp_path / 'state'}", *TINY],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert secret not in out.stdout + out.stderr + capsys.readouterr().out
    finally:
        server.stop()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks, leaks  # server DB, artifacts, study folder, Ray's trial configs, server log


def test_an_actor_that_dies_while_reset_for_a_pending_trial_counts_one_failure(ray_local, tmp_path):
    """Tune reuses actors; the reused actor dies in the reset of its next, still PENDING trial. With
    ``max_failures=1`` that trial is retried on a fresh actor and ends TERMINATED, not ERROR."""
    from ray import tune

    from orthoscale.study.runner import _one_failure_per_death

    class DiesInItsFirstReset(tune.Trainable):
        def step(self):
            return {"done": True, "pid": os.getpid()}

        def save_checkpoint(self, checkpoint_dir):  # Tune saves a class trainable at its end; nothing to keep
            return None

        def load_checkpoint(self, checkpoint):
            pass

        def reset_config(self, new_config):
            marker = tmp_path / "died"
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return True

    tuner = tune.Tuner(
        DiesInItsFirstReset, param_space={"i": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)))
    with _one_failure_per_death():
        grid = tuner.fit()
    assert (tmp_path / "died").exists()  # the actor did die in a reset
    assert grid.num_errors == 0 and [r.metrics["done"] for r in grid] == [True] * 3, grid.errors
