"""A study logging through a real `mlflow server` (multi-host studies: test_hosts.py)."""
from __future__ import annotations

import pytest

from .conftest import TINY, MlflowServer, free_port, plan_and_run, runs

pytestmark = pytest.mark.integration


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
