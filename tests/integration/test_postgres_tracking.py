"""A production-shaped tracking stack: a private PostgreSQL (Debian's packages, `make postgres`) behind a real
`mlflow server` that proxies artifacts. A small study logs through it with credentials planted in the tracking
URI; they must reach nothing that is stored or logged, and the runs must really be in PostgreSQL."""
from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from .conftest import TINY, free_port, plan_and_run, runs
from .servers import PG_USER, MlflowOnPostgres, Postgres, Traversable

pytestmark = pytest.mark.integration
EXPERIMENT = "orthoscale-depth"


def test_study_tracks_into_postgres_through_a_proxying_server(ray_local, tmp_path):
    secret = f"Pl4nted{secrets.token_hex(8)}"    # the tracking URI's password: must be stored nowhere
    pg_password = f"pg{secrets.token_hex(12)}"   # the database's own password
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    access = Traversable(tmp_path)
    pg = None
    try:
        pg = Postgres(tmp_path / "pg", free_port(), pg_password)
        pg.start()
        server = MlflowOnPostgres(tmp_path, free_port(), pg.create_database("mlflow"))
        try:
            uri = server.uri
            planted = uri.replace("http://", f"http://{PG_USER}:{secret}@")
            res = plan_and_run(["model.depth=2,3", "seed=0", "search.trials=2", f"tracking.uri={planted}", *TINY],
                               tmp_path / "state")
            assert res.parent_run_id and not res.unlogged, res
            assert secret not in res.tracking_uri

            client, all_runs = runs(uri, EXPERIMENT)
            parents = [r for r in all_runs if r.data.tags.get("orthoscale.role") == "study"]
            kids = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
            assert [p.info.run_id for p in parents] == [res.parent_run_id]
            assert parents[0].info.status == "FINISHED"
            assert len(kids) == 4 and len(all_runs) == 5, [r.info.run_name for r in all_runs]
            assert sorted(k.data.params["cfg.model.depth"] for k in kids) == ["2", "2", "3", "3"]
            assert all(k.info.status == "FINISHED" and k.data.params and k.data.metrics for k in kids)
            assert parents[0].data.params and parents[0].data.metrics

            # Artifacts go through the server (proxied) into its destination folder.
            assert parents[0].info.artifact_uri.startswith("mlflow-artifacts:"), parents[0].info.artifact_uri
            names = {a.path for a in client.list_artifacts(res.parent_run_id)}
            assert {"cells.csv", "rate_vs_depth.png"} <= names, names
            assert list(server.artifacts.rglob("cells.csv")) and list(server.artifacts.rglob("rate_vs_depth.png"))

            # The planted secret: in no param or tag (keys or values) of any run, nor in any artifact file.
            for r in all_runs:
                fields = [*r.data.params.items(), *r.data.tags.items(), (r.info.run_name, "")]
                assert not [kv for kv in fields if secret in kv[0] or secret in kv[1]], r.info.run_id
            downloaded = []
            for r in all_runs:
                dst = tmp_path / "downloads" / r.info.run_id
                dst.mkdir(parents=True)
                client.download_artifacts(r.info.run_id, "", str(dst))
                downloaded += [p for p in dst.rglob("*") if p.is_file()]
            assert {"cells.csv", "rate_vs_depth.png"} <= {p.name for p in downloaded}
            assert not [p for p in downloaded if secret.encode() in p.read_bytes()]

            # The runs really are in PostgreSQL, and the secret is nowhere in the database.
            with pg.connect("mlflow") as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM runs")
                assert cur.fetchone()[0] == 5
                cur.execute("SELECT run_uuid FROM runs WHERE status = 'FINISHED' AND run_uuid = %s",
                            (res.parent_run_id,))
                assert cur.fetchone() is not None
                cur.execute("SELECT count(*) FROM params")
                assert cur.fetchone()[0] > 0
            conn.close()
            dump = subprocess.run([pg.bin / "pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", PG_USER,
                                   "mlflow"], env={**os.environ, "PGPASSWORD": pg_password}, capture_output=True,
                                  timeout=60)
            assert dump.returncode == 0, dump.stderr[-2000:]
            assert b"CREATE TABLE public.runs" in dump.stdout and secret.encode() not in dump.stdout
        finally:
            server.stop()
        assert secret not in server.log.read_text(errors="replace")
        assert not [p for p in server.artifacts.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    finally:
        try:
            if pg is not None:
                pg.stop()
                assert secret not in pg.log.read_text(errors="replace")
        finally:
            access.restore()
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
