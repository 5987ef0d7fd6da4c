"""Past one machine: a real multi-node Ray (ray.cluster_utils.Cluster), node loss, and an MLflow server."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from .conftest import TINY, MlflowServer, free_port, plan_and_run, runs

pytestmark = pytest.mark.integration
LONG = ["model.width=16", "model.depth=16", "stop.tol=1e-300", "stop.max_iters=1500", "stop.stall_window=2000",
        "search.pruner=none", "tracking.curve_points=20"]


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _children(res):
    _, all_runs = runs(res.tracking_uri, "orthoscale-depth")
    return [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]


def test_trials_spread_over_several_nodes(cluster, tmp_path):
    res = plan_and_run(["model.depth=2,3", "seed=0", "search.trials=4", "ray.max_concurrent=3", *TINY], tmp_path)
    kids = _children(res)
    assert len(kids) == 8
    nodes = Counter(k.data.tags["orthoscale.node_id"] for k in kids)
    assert len(nodes) >= 2, nodes


def test_losing_a_worker_node_loses_no_trial(cluster, tmp_path):
    c, workers = cluster
    box = {}
    args = ["model.depth=16", "seed=0,1", "search.trials=3", "ray.max_concurrent=3", "ray.max_failures=3", *LONG]
    thread = threading.Thread(target=lambda: box.setdefault("res", plan_and_run(args, tmp_path)))
    thread.start()
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list(tmp_path.glob("studies/*/results.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 1:
            break
        time.sleep(0.2)
    c.remove_node(workers[0])  # a worker node disappears while trials run on it
    thread.join(timeout=600)
    assert not thread.is_alive() and "res" in box
    kids = _children(box["res"])
    keys = Counter(k.data.tags["orthoscale.trial"] for k in kids)
    assert len(keys) == 6 and set(keys.values()) == {1}, keys
    assert all(k.info.status in ("FINISHED", "KILLED") for k in kids)


def test_study_logs_through_an_mlflow_server(ray_local, tmp_path):
    server = MlflowServer(tmp_path, free_port())
    try:
        uri = server.uri
        res = plan_and_run(["model.depth=2", "seed=0", "search.trials=2", f"tracking.uri={uri}", *TINY],
                           tmp_path / "state")
        client, all_runs = runs(uri, "orthoscale-depth")
        kids = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
        assert len(kids) == 2
        parent = client.get_run(res.parent_run_id)
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
        assert "cells.csv" in {a.path for a in client.list_artifacts(res.parent_run_id)}
        assert list((tmp_path / "server-artifacts").rglob("cells.csv"))  # written by the server process
        assert not (tmp_path / "state" / "artifacts").exists()           # and not by the driver
    finally:
        server.stop()
