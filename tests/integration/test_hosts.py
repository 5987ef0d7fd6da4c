"""A real multi-host Ray cluster: a head and three 1-CPU worker hosts, each its own network namespace with its own
address and its own Ray temp dir; studies submitted with `make sweep-cluster` through the Jobs API, tracking into
an `mlflow server` on a private PostgreSQL. Measured from the record: every host ran trials, concurrency filled
the slots, every trial is in MLflow once, the report reached the parent run, MNIST present only on the driver's
host reached every trial, and a whole host lost mid-study loses nothing and is named."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import ROOT, free_port, runs
from .hosts import Hosts, namespaces_available
from .servers import MlflowOnPostgres, Postgres

pytestmark = pytest.mark.integration
WORKERS = 3
# trials of fixed length (≈ 1 s on one core): no tolerance stop, no stall stop
STEADY = ["model.width=16", "stop.tol=1e-300", "stop.stall_window=100000", "tracking.curve_points=20",
          "search.edge_rounds=0"]  # fixed trial counts: no re-search of a range edge


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = namespaces_available()
    if why:
        pytest.fail(f"multi-host test cannot run: {why}")
    root = tmp_path_factory.mktemp("hosts")
    mnist = root / "mnist"  # MNIST on the driver's host only: worker hosts see an empty folder here
    mnist.mkdir()
    for f in (ROOT / ".orthoscale" / "data" / "mnist").glob("train-*-ubyte"):
        shutil.copy(f, mnist)
    assert len(list(mnist.iterdir())) == 2, "MNIST missing: run `make data`"
    # PostgreSQL's own user must reach its folder: one of its own under /tmp, not under pytest's private root
    pg_root = Path(tempfile.mkdtemp(prefix="orthoscale-pg-"))
    pg_root.chmod(0o711)
    pg, server, hosts = None, None, None
    try:
        hosts = Hosts(root / "cluster", WORKERS, cpus=1, hidden=(mnist,))
        pg = Postgres(pg_root / "pg", free_port(), secrets.token_hex(12))
        pg.start()
        server = MlflowOnPostgres(root, free_port(), pg.create_database("mlflow"), host=hosts.bridge_ip)
        yield hosts, server, pg, root
    finally:
        for part in (server, pg, hosts):
            if part is not None:
                try:
                    part.stop() if hasattr(part, "stop") else part.close()
                except Exception as err:  # tear down the rest whatever one part does
                    print(f"teardown of {type(part).__name__} failed: {err}")
        shutil.rmtree(pg_root, ignore_errors=True)


def submit(hosts: Hosts, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """`make sweep-cluster ARGS=…` as a user on this machine types it, against the head's Jobs API."""
    env = {**hosts.env, "RAY_ADDRESS": hosts.jobs_url}
    return subprocess.run(["make", "-s", "sweep-cluster", f"ARGS={' '.join(args)}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def study(uri: str, experiment: str, name_part: str):
    """(parent run, child runs) of the one study in ``experiment`` whose name contains ``name_part``."""
    client, all_runs = runs(uri, experiment)
    parents = [r for r in all_runs if r.data.tags.get("orthoscale.role") == "study"
               and name_part in r.data.tags["orthoscale.study"]]
    assert len(parents) == 1, [p.data.tags.get("orthoscale.study") for p in parents]
    kids = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return client, parents[0], kids


def concurrency(kids) -> float:
    """Mean trials running at once over the trial phase, from the child runs' own start and end times."""
    spans = [(k.info.start_time, k.info.end_time) for k in kids]
    return sum(e - s for s, e in spans) / (max(e for _, e in spans) - min(s for s, _ in spans))


def test_a_submitted_study_fills_every_host(cluster):
    hosts, server, pg, root = cluster
    args = ["study.name=fill", "model.depth=4,8", "seed=0,1,2", "search.trials=8", "stop.max_iters=700",
            *STEADY, f"tracking.uri={server.uri}", f"study.state_dir={root / 'state'}"]
    out = submit(hosts, args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "concurrency: mean" in out.stdout, out.stdout[-2000:]
    assert f"worker hosts used {WORKERS}/{WORKERS}" in out.stdout, out.stdout[-2000:]
    assert f"results and report: {root / 'state'}" in out.stdout  # the record is named where it really is

    client, parent, kids = study(server.uri, "orthoscale-depth", "fill")
    assert parent.info.status == "FINISHED"
    keys = Counter(k.data.tags["orthoscale.trial"] for k in kids)
    assert len(keys) == 48 and set(keys.values()) == {1}, keys                  # every trial once
    used = Counter(k.data.tags["orthoscale.host"] for k in kids)
    assert set(used) == set(hosts.worker_ips.values()), used                      # on every worker host
    assert parent.data.metrics["slots"] == WORKERS
    assert parent.data.metrics["hosts_used"] == WORKERS == parent.data.metrics["hosts_in_cluster"]
    assert parent.data.metrics["concurrency_mean"] >= 0.8 * WORKERS, parent.data.metrics
    assert concurrency(kids) >= 0.8 * WORKERS                                     # the same, from the children
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"cells.csv", "scaling.json", "fanout.json", "rate_vs_depth.png"} <= names, names
    with pg.connect("mlflow") as conn, conn.cursor() as cur:                     # really in PostgreSQL
        cur.execute("SELECT count(*) FROM tags WHERE key = 'orthoscale.trial'")
        assert cur.fetchone()[0] >= 48


def test_mnist_reaches_hosts_that_lack_it(cluster):
    hosts, server, pg, root = cluster
    args = ["study.name=mnist-hosts", "family=mnist", "model.depth=2,4", "search.trials=3", "search.edge_rounds=0",
            "data.samples=2000",
            f"data.root={root / 'mnist'}", "stop.max_iters=300", f"tracking.uri={server.uri}",
            f"study.state_dir={root / 'state'}"]
    out = submit(hosts, args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    _, parent, kids = study(server.uri, "orthoscale-mnist", "mnist-hosts")
    assert len(kids) == 12 and all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    assert len({k.data.tags["orthoscale.host"] for k in kids}) >= 2
    assert all(k.data.tags["orthoscale.outcome"] in ("converged", "budget", "stalled", "diverged") for k in kids)


def test_losing_a_whole_host_loses_no_trial(cluster):
    hosts, server, pg, root = cluster
    victim = next(iter(hosts.worker_ips))
    args = ["study.name=loss", "model.depth=8", "seed=0,1,2", "search.trials=10", "stop.max_iters=1500",
            "ray.max_failures=3", *STEADY, f"tracking.uri={server.uri}", f"study.state_dir={root / 'state'}"]
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", submit(hosts, args)))
    thread.start()
    results = root / "state" / "studies" / "loss" / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (results.exists() and len(results.read_text().splitlines()) >= 2):
        time.sleep(0.3)
    assert results.exists(), "the study did not start"
    hosts.kill(victim)                                                            # the host dies mid-study
    thread.join(timeout=900)
    assert not thread.is_alive() and "out" in box
    out = box["out"]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"lost during the study: {hosts.worker_ips[victim]}" in out.stdout, out.stdout[-2000:]
    _, parent, kids = study(server.uri, "orthoscale-depth", "loss")
    keys = Counter(k.data.tags["orthoscale.trial"] for k in kids)
    assert len(keys) == 30 and set(keys.values()) == {1}, keys
    assert all(k.info.status == "FINISHED" for k in kids), Counter(k.info.status for k in kids)
    assert parent.data.tags["orthoscale.lost_hosts"] == hosts.worker_ips[victim]
    fanout = json.loads((results.parent / "report" / "fanout.json").read_text())
    assert fanout["lost_hosts"] == [hosts.worker_ips[victim]] and fanout["trials"] == 30


def test_a_job_without_a_lasting_record_stops_before_any_trial(cluster):
    hosts, *_ = cluster
    out = submit(hosts, ["model.depth=2", "search.trials=1"], timeout=300)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "invalid config: tracking.uri / study.state_dir" in text, text[-2000:]
    assert "trials to run" not in text
