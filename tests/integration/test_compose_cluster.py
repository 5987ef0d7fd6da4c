"""The deployment files as built and run: `make images`, then docker/compose.yaml (a Ray head, two workers, an
MLflow server on PostgreSQL) on a real Docker engine, a study submitted with `make sweep-cluster`, one worker
killed and the tracking server restarted while it runs. One cluster for the whole module; it is torn down with
`docker compose down -v` whatever happens, and a Docker engine this module started is stopped again."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
STATE = "/home/ray/orthoscale/.orthoscale"   # the state volume, mounted by every Ray container
EXPERIMENT = "orthoscale-depth"
CELLS, TRIALS = 4, 4                         # model.depth=2,3 × seed=0,1, search.trials=4
OUTAGE = 50     # s: longer than the driver retries a record (3 tries of MLflow's 3 HTTP retries with backoff)
STUDY = ["model.depth=2,3", "seed=0,1", f"search.trials={TRIALS}", "ray.max_concurrent=2", "ray.max_failures=3",
         "model.width=16", "stop.tol=1e-300", "stop.max_iters=1500", "stop.stall_window=2000", "search.pruner=none",
         "tracking.curve_points=20", "search.edge_rounds=0", "tracking.uri=http://mlflow:5000",
         f"study.state_dir={STATE}"]


def run(cmd: list[str], timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)
    assert not check or proc.returncode == 0, \
        f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# ---------------------------------------------------------------------------------------- engine and images

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """This host's Docker engine, or dockerd started here (and stopped after the module)."""
    missing = [tool for tool in ("docker", "dockerd") if not shutil.which(tool)]
    assert not missing, f"{', '.join(missing)} not installed: `make docker` installs Debian's docker.io"
    assert run(["docker", "compose", "version"], check=False).returncode == 0, \
        "the `docker compose` plugin is missing: `make docker` installs it"
    if run(["docker", "info"], check=False, timeout=60).returncode == 0:
        yield None
        return
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    proc = subprocess.Popen(["dockerd", "--storage-driver=overlay2"], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while run(["docker", "info"], check=False, timeout=60).returncode != 0:
            assert proc.poll() is None and time.time() < deadline, \
                f"dockerd did not start (it needs root):\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@dataclass
class Built:
    image: str
    postgres: str
    token: str
    seconds: float
    output: str


@pytest.fixture(scope="module")
def built(engine):
    """`make images`, run with a Ray token in its environment (which must reach no image)."""
    token = secrets.token_hex(32)
    start = time.monotonic()
    proc = run(["make", "images"], timeout=1800, env={**os.environ, "RAY_AUTH_TOKEN": token})
    env = dict(line.split("=", 1) for line in (ROOT / ".build" / "images.env").read_text().split())
    print(f"make images: {time.monotonic() - start:.0f} s\n{proc.stdout[-600:]}")
    return Built(env["ORTHOSCALE_IMAGE"], env["POSTGRES_IMAGE"], token, time.monotonic() - start, proc.stdout)


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_image_carries_exactly_the_locked_versions_and_runs_as_non_root(built):
    assert run(["docker", "image", "inspect", "-f", "{{.Config.User}}", built.image]).stdout.strip() == "ray"
    proc = run(["docker", "run", "--rm", "--network", "none", built.image, "bash", "-c",
                "id -u && python -m pip list --format=json 2>/dev/null && "
                "python -c 'import orthoscale.sweep, ray, mlflow, optuna, hydra, torch, psycopg2; "
                "print(torch.__version__)'"])
    uid, packages, torch = proc.stdout.strip().splitlines()
    assert uid == "1000", "the image runs as Ray's non-root user"
    assert torch == lock()["torch"] + "+cpu", "the CPU image has the CPU build of the locked torch"
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in json.loads(packages)}
    pins = lock()
    off = {n: (v, pins.get(n)) for n, v in installed.items() if n in pins and v.split("+")[0] != pins[n]}
    assert not off, f"installed versions differ from constraints.txt: {off}"
    unlocked = set(installed) - set(pins) - {"pip", "setuptools", "orthoscale"}
    assert not unlocked, f"packages in the image that the lock does not pin: {sorted(unlocked)}"
    assert {"ray", "torch", "mlflow", "optuna", "hydra-core", "psycopg2-binary"} <= set(installed)


def test_images_hold_no_token_in_history_or_layers(built):
    """The token was in the environment of `make images`; it must be in no build step and no file of the image."""
    for image in (built.image, built.postgres):
        history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image]).stdout
        assert built.token not in history and not re.search(r"(TOKEN|PASSWORD)=\S", history), image
        env = run(["docker", "image", "inspect", "-f", "{{json .Config.Env}}", image]).stdout
        assert built.token not in env and not re.search(r"TOKEN|PASSWORD", env), env
    needle, found, names, scanned = built.token.encode(), [], [], 0

    def scan(stream, where: str) -> None:
        nonlocal scanned
        tail = b""
        while chunk := stream.read(1 << 22):
            scanned += len(chunk)
            if needle in tail + chunk:
                found.append(where)
            tail = chunk[-len(needle):]

    save = subprocess.Popen(["docker", "save", built.image], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=save.stdout, mode="r|") as archive:   # docker save: layer tars, configs
            for member in archive:
                if not member.isfile():
                    continue
                blob = archive.extractfile(member)
                head = blob.read(512)
                if head[257:262] != b"ustar":                           # a config or manifest
                    scan(_Chain(head, blob), member.name)
                    continue
                with tarfile.open(fileobj=_Chain(head, blob), mode="r|") as layer:
                    for entry in layer:
                        names.append(entry.name)
                        if entry.isfile():
                            scan(layer.extractfile(entry), f"{member.name}:{entry.name}")
    finally:
        save.stdout.close()
        save.wait(timeout=120)
    assert scanned > 500e6, f"only {scanned} bytes of layer files scanned: the layers were not read"
    assert not found, f"the Ray token is in the image: {found}"
    assert not [n for n in names if n.endswith(("auth_token", ".env"))], "a token file is in the image"


class _Chain:
    """A read-only stream: ``head`` bytes, then the rest of ``stream``."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(size)
        if size < 0:
            out, self.head = self.head + self.stream.read(), b""
            return out
        out, self.head = self.head[:size], self.head[size:]
        return out + (self.stream.read(size - len(out)) if len(out) < size else b"")


def test_gpu_image_refuses_without_rays_gpu_base(engine):
    """GPU=1 needs Ray's official GPU image; where it cannot be had, nothing is built and no CUDA wheel fetched."""
    start = time.monotonic()
    proc = run(["make", "images", "GPU=1"], check=False, timeout=300,
               env={**os.environ, "GPU_BASE": f"orthoscale-test/absent-{secrets.token_hex(4)}:gpu"})
    assert proc.returncode != 0
    assert "GPU=1 needs Ray's official GPU base" in proc.stderr and "is not built" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 120
    assert not list((ROOT / ".build" / "wheels").glob("nvidia_*"))


# ---------------------------------------------------------------------------------------- the compose cluster

@dataclass
class Cluster:
    project: str
    env: dict
    mlflow: str
    dashboard: str

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker", "compose", "-f", str(COMPOSE), "-p", self.project, *args], timeout=timeout,
                   check=check, env=self.env)

    def ids(self, service: str) -> list[str]:
        return self.compose("ps", "-a", "-q", service).stdout.split()

    def sql(self, query: str) -> list[str]:
        out = self.compose("exec", "-T", "postgres", "psql", "-U", "mlflow", "-d", "mlflow", "-tAc", query).stdout
        return [line for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def cluster(built):
    project = f"orthoscale-test-{secrets.token_hex(3)}"
    mlflow_port, dashboard_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_TOKEN": built.token, "POSTGRES_PASSWORD": secrets.token_hex(16),
           "ORTHOSCALE_IMAGE": built.image, "POSTGRES_IMAGE": built.postgres, "RAY_WORKER_CPUS": "1",
           "MLFLOW_PORT": str(mlflow_port), "RAY_DASHBOARD_PORT": str(dashboard_port)}
    c = Cluster(project, env, f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{dashboard_port}")
    try:
        start = time.monotonic()
        up = c.compose("up", "-d", "--wait", "--wait-timeout", "420", "--scale", "ray-worker=2", timeout=600,
                       check=False)
        if up.returncode != 0:
            logs = c.compose("logs", "--tail", "40", check=False).stdout
            pytest.fail(f"docker compose up failed:\n{up.stderr[-3000:]}\n{logs[-6000:]}")
        print(f"compose up: {time.monotonic() - start:.0f} s")
        yield c
    finally:
        down = c.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"], check=False)
        assert down.returncode == 0 and not left.stdout.strip(), f"teardown failed:\n{down.stderr[-2000:]}"


def test_published_ports_are_loopback_only(cluster):
    published = []
    for cid in cluster.compose("ps", "-q").stdout.split():
        ports = json.loads(run(["docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", cid]).stdout) or {}
        name = run(["docker", "inspect", "-f", "{{index .Config.Labels \"com.docker.compose.service\"}}", cid]).stdout
        for inner, bindings in ports.items():
            for b in bindings or []:
                published.append((name.strip(), inner, b["HostIp"], int(b["HostPort"])))
    assert sorted(p[:2] for p in published) == [("mlflow", "5000/tcp"), ("ray-head", "8265/tcp")], published
    assert all(ip == "127.0.0.1" for _, _, ip, _ in published), published
    urllib.request.urlopen(f"{cluster.mlflow}/health", timeout=10)
    # The dashboard answers on the loopback port, and only with the token.
    req = urllib.request.Request(f"{cluster.dashboard}/api/version")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, timeout=10)
    assert denied.value.code in (401, 403)
    req.add_header("Authorization", f"Bearer {cluster.env['RAY_AUTH_TOKEN']}")
    assert json.load(urllib.request.urlopen(req, timeout=10))["ray_version"] == lock()["ray"]


def _submit(cluster: Cluster, log: Path) -> subprocess.Popen:
    env = {**cluster.env, "RAY_ADDRESS": cluster.dashboard}
    return subprocess.Popen(["make", "sweep-cluster", f"ARGS={' '.join(STUDY)}"], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _children(client, experiment_id: str) -> list:
    return [r for r in client.search_runs([experiment_id], max_results=5000) if r.data.tags.get("mlflow.parentRunId")]


def _durable(cluster: Cluster) -> list[dict]:
    """The study's durable records, read from the shared state volume on the head."""
    out = cluster.compose("exec", "-T", "ray-head", "bash", "-c",
                          f"cat {STATE}/studies/depth-*/results.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_study_survives_a_killed_worker_and_a_restarted_tracking_server(cluster, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(cluster.mlflow)
    workers = cluster.ids("ray-worker")
    assert len(workers) == 2
    hostnames = {cid[:12] for cid in workers}   # a container's hostname is its short id
    log = tmp_path / "sweep-1.log"
    job = _submit(cluster, log)
    events: dict[str, float] = {}

    def fail(why: str):
        job.kill()
        pytest.fail(f"{why}\n--- job log:\n{log.read_text()[-5000:]}")

    try:
        # 1. Both workers have finished trials: kill one of them (SIGKILL, no restart).
        deadline = time.time() + 600
        while True:
            if job.poll() is not None:
                fail("the study ended before both workers had run a trial")
            if time.time() > deadline:
                fail("no trial finished on both workers within 10 minutes")
            exp = client.get_experiment_by_name(EXPERIMENT)
            nodes = Counter(r.data.tags.get("orthoscale.node") for r in _children(client, exp.experiment_id)) \
                if exp else Counter()
            if hostnames <= set(nodes):
                break
            time.sleep(1)
        victim = workers[0]
        run(["docker", "kill", victim])
        events["killed"] = time.time()
        logged_at_kill = sum(nodes.values())

        # 2. The study goes on without it; once a trial has finished since, stop the MLflow server. Keep it down
        #    until a trial has ended during the outage and the driver has had time to give up logging it
        #    (OUTAGE seconds), then start it again.
        while len(_children(client, exp.experiment_id)) <= logged_at_kill + 1:
            if job.poll() is not None or time.time() > deadline:
                fail("the study ended, or stalled, right after the worker was killed")
            time.sleep(1)
        cluster.compose("stop", "mlflow")
        events["tracking_down"] = time.time()
        while job.poll() is None and time.time() < deadline:
            during = [r["ended"] for r in _durable(cluster) if r["ended"] > events["tracking_down"]]
            if during and time.time() > min(during) + OUTAGE:
                break
            time.sleep(2)
        cluster.compose("start", "mlflow")
        events["tracking_up"] = time.time()
        job.wait(timeout=900)
    finally:
        if job.poll() is None:
            job.kill()
    out1 = log.read_text()
    assert job.returncode == 0, f"the study failed:\n{out1[-5000:]}"
    assert "succeeded" in out1
    # The worker is gone for good (a killed container is not restarted) and the study finished after that.
    state = run(["docker", "inspect", "-f", "{{.State.Running}}", victim]).stdout.strip()
    assert state == "false"

    # 3. The same command again: nothing is run twice, whatever did not reach MLflow is replayed.
    cluster.compose("up", "-d", "--wait", "--wait-timeout", "300", "mlflow", timeout=400)
    exp = client.get_experiment_by_name(EXPERIMENT)
    before_rerun = Counter(k.data.tags["orthoscale.trial"] for k in _children(client, exp.experiment_id))
    assert set(before_rerun.values()) <= {1}, f"logged twice during the study: {before_rerun}"
    log2 = tmp_path / "sweep-2.log"
    rerun = _submit(cluster, log2)
    rerun.wait(timeout=900)
    out2 = log2.read_text()
    assert rerun.returncode == 0, f"the rerun failed:\n{out2[-5000:]}"

    # Every trial is in the durable store and in MLflow, exactly once.
    records = _durable(cluster)
    keys = Counter(r["key"] for r in records)
    assert len(keys) == CELLS * TRIALS and set(keys.values()) == {1}, keys
    kids = _children(client, exp.experiment_id)
    logged = Counter(k.data.tags["orthoscale.trial"] for k in kids)
    assert set(logged) == set(keys) and set(logged.values()) == {1}, \
        f"MLflow has {logged} for the durable {sorted(keys)}\n{out1[-3000:]}\n{out2[-3000:]}"
    cells = {k.data.tags["orthoscale.cell"] for k in kids}
    assert Counter(k.data.tags["orthoscale.cell"] for k in kids) == Counter({c: TRIALS for c in cells})
    assert all(k.info.status == "FINISHED" for k in kids), Counter(k.info.status for k in kids)
    # Trials ran in both worker containers (and nowhere else: the head offers no CPUs).
    nodes = Counter(k.data.tags["orthoscale.node"] for k in kids)
    assert set(nodes) == hostnames, (nodes, hostnames)
    # Both faults hit the study while it ran: trials ended after the kill, and while the tracking server was
    # down; those are in MLflow now, once each (logged late by the driver, or replayed by the rerun).
    ended = {r["key"]: r["ended"] for r in records}
    assert sum(t > events["killed"] for t in ended.values()) >= 2, (events, ended)
    during = [k for k, t in ended.items() if events["tracking_down"] < t < events["tracking_up"]]
    assert during and all(logged[k] == 1 for k in during), (events, ended)
    replayed = sorted(set(keys) - set(before_rerun))

    # One parent run, finished, with its report, all in PostgreSQL.
    parents = client.search_runs([exp.experiment_id], "tags.`orthoscale.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parent}
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"cells.csv", "config.json"} <= artifacts, artifacts
    assert parents[0].data.metrics.get("rate_exponent") is not None
    stored = cluster.compose("exec", "-T", "mlflow", "find", "/artifacts", "-name", "cells.csv").stdout.split()
    assert len(stored) == 1, stored
    assert cluster.sql(f"SELECT count(*) FROM runs WHERE experiment_id = {exp.experiment_id}") == [str(len(kids) + 1)]
    assert cluster.sql("SELECT value FROM tags WHERE key = 'orthoscale.trial' GROUP BY value HAVING count(*) > 1") == []
    assert cluster.sql(f"SELECT status FROM runs WHERE run_uuid = '{parent}'") == ["FINISHED"]
    print(f"study: tracking down {events['tracking_up'] - events['tracking_down']:.0f} s, {len(during)} trial(s) ended "
          f"meanwhile, {len(replayed)} replayed by the rerun; trials per worker {dict(nodes)}")
