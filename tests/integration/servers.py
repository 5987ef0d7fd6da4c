"""Servers the integration tests start for real: a private PostgreSQL (Debian's packages, `make postgres`) and an
`mlflow server` on it that proxies artifacts."""
from __future__ import annotations

import glob
import os
import pwd
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PG_USER = "orthoscale"


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    assert found, "PostgreSQL server binaries missing under /usr/lib/postgresql/*/bin: run `make postgres`"
    return Path(found[-1]).parent


def as_postgres(cmd: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run its tools as Debian's `postgres` system user."""
    out = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], cwd=cwd, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd[0]} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


class Traversable:
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


class Postgres:
    """A private PostgreSQL cluster owned by `postgres`, on 127.0.0.1:<port> only, its socket in its own folder."""

    def __init__(self, root: Path, port: int, password: str):
        self.bin, self.root, self.port, self.password = pg_bin(), root, port, password
        self.data, self.sock, self.log = root / "data", root / "sock", root / "postgres.log"
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            raise AssertionError("no `postgres` system user: install Debian's postgresql package "
                                 "(`make postgres`)") from None
        root.mkdir(mode=0o700)
        self.sock.mkdir(mode=0o700)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        for p in (root, self.sock, pwfile):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        os.chmod(pwfile, 0o600)
        self.started = False
        as_postgres([self.bin / "initdb", "-D", self.data, "-U", PG_USER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync"], cwd=root, timeout=120)
        pwfile.unlink()

    def start(self):
        self.started = True  # from here on, `stop` is attempted
        as_postgres([self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o",
                      f"-h 127.0.0.1 -p {self.port} -k {self.sock}", "-w", "-t", "60", "start"], cwd=self.root,
                     timeout=90)

    def connect(self, dbname: str):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=self.password,
                                dbname=dbname, connect_timeout=10)

    def create_database(self, dbname: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        conn = self.connect("postgres")
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {dbname}")
        conn.close()
        return self.url(dbname)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def stop(self):
        if self.started:
            self.started = False
            as_postgres([self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"],
                         cwd=self.root, timeout=90)


class MlflowOnPostgres:
    """`mlflow server` on ``backend`` at http://<host>:<port> (127.0.0.1 unless told), artifacts proxied into
    ``root``/artifacts; ``allowed_hosts`` are the Host headers it accepts besides its own address."""

    def __init__(self, root: Path, port: int, backend: str, host: str = "127.0.0.1"):
        self.uri, self.artifacts, self.log = f"http://{host}:{port}", root / "artifacts", root / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
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
