"""A production-shaped tracking stack: a private PostgreSQL (Debian's packages, `make postgres`) behind a real
`mlflow server` that proxies artifacts. A small study logs through it with credentials planted in the tracking
URI; they must reach nothing that is stored or logged, and the runs must really be in PostgreSQL."""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import TINY, free_port, plan_and_run, runs

pytestmark = pytest.mark.integration
PG_USER = "orthoscale"
EXPERIMENT = "orthoscale-depth"


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    assert found, "PostgreSQL server binaries missing under /usr/lib/postgresql/*/bin: run `make postgres`"
    return Path(found[-1]).parent


def _as_postgres(cmd: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run its tools as Debian's `postgres` system user."""
    out = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], cwd=cwd, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd[0]} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


class _Traversable:
    """Let the `postgres` user reach a folder under pytest's private (0700) temp root: o+x (no listing) on each
    parent, restored afterwards."""

    def __init__(self, path: Path):
        self.modes = {}
        for p in [path, *path.parents]:
            mode = p.stat().st_mode
            if not mode & stat.S_IXOTH:
                self.modes[p] = stat.S_IMODE(mode)
                os.chmod(p, stat.S_IMODE(mode) | stat.S_IXOTH)

    def restore(self):
        for p, mode in self.modes.items():
            os.chmod(p, mode)


class _Postgres:
    """A private PostgreSQL cluster owned by `postgres`, on 127.0.0.1:<port> only, its socket in its own folder."""

    def __init__(self, root: Path, port: int, password: str):
        self.bin, self.root, self.port, self.password = _pg_bin(), root, port, password
        self.data, self.sock, self.log = root / "data", root / "sock", root / "postgres.log"
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            raise AssertionError("no `postgres` system user: install Debian's postgresql package (`make postgres`)")
        root.mkdir(mode=0o700)
        self.sock.mkdir(mode=0o700)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        for p in (root, self.sock, pwfile):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        os.chmod(pwfile, 0o600)
        self.started = False
        _as_postgres([self.bin / "initdb", "-D", self.data, "-U", PG_USER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync"], cwd=root, timeout=120)
        pwfile.unlink()

    def start(self):
        self.started = True  # from here on, `stop` is attempted
        _as_postgres([self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o",
                      f"-h 127.0.0.1 -p {self.port} -k {self.sock}", "-w", "-t", "60", "start"], cwd=self.root,
                     timeout=90)

    def connect(self, dbname: str):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=self.password,
                                dbname=dbname, connect_timeout=10)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def stop(self):
        if self.started:
            self.started = False
            _as_postgres([self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"],
                         cwd=self.root, timeout=90)


class _MlflowOnPostgres:
    def __init__(self, root: Path, port: int, backend: str):
        self.uri, self.artifacts, self.log = f"http://127.0.0.1:{port}", root / "artifacts", root / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", backend, "--artifacts-destination", str(self.artifacts)],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, f"mlflow server exited:\n{self.log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"mlflow server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def test_study_tracks_into_postgres_through_a_proxying_server(ray_local, tmp_path):
    secret = f"Pl4nted{secrets.token_hex(8)}"    # the tracking URI's password: must be stored nowhere
    pg_password = f"pg{secrets.token_hex(12)}"   # the database's own password
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    access = _Traversable(tmp_path)
    pg = None
    try:
        pg = _Postgres(tmp_path / "pg", free_port(), pg_password)
        pg.start()
        conn = pg.connect("postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        server = _MlflowOnPostgres(tmp_path, free_port(), pg.url("mlflow"))
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
