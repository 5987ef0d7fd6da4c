"""Real Ray (one embedded instance per test session), real MLflow SQLite stores, real Optuna."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TINY = ["model.width=4", "stop.max_iters=300", "stop.stall_window=60", "search.report_every=20",
        "tracking.curve_points=50"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    yield ray
    ray.shutdown()


def plan_and_run(args: list[str], state: Path):
    from orthoscale.study.compose import plan
    from orthoscale.study.driver import run_study

    (cfg, overrides, cells), = plan(args + [f"study.state_dir={state}"])
    return run_study(cfg, cells, overrides + [f"study.state_dir={state}"], out=open(os.devnull, "w"))


def runs(uri: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=5000)


def sweep_cmd(args: list[str]) -> list[str]:
    return [PY, "-m", "orthoscale.sweep", *args]


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(args), cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store and artifact folder."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.uri = root, port, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination",
             str(root / "server-artifacts")],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=open(root / "server.log", "w"),
            stderr=subprocess.STDOUT)
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
