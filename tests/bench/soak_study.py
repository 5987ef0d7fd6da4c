"""Soak: one study of ≥ 2 000 tiny trials on the local Ray. Reports wall time, trials per minute and the
driver's peak RSS (sampled, and sampled again at the end of each quarter), then checks that the
durable store and MLflow each hold every trial exactly once. Run: make soak  (or --trials N)."""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import ray

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from orthoscale.study.compose import plan
from orthoscale.study.driver import run_study
from orthoscale.study.store import ResultStore


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--cells", type=int, default=20)
    args = ap.parse_args()
    per_cell = -(-args.trials // args.cells)
    state = Path(tempfile.mkdtemp(prefix="orthoscale-soak-"))
    me = psutil.Process()
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.monotonic(), me.memory_info().rss))
            time.sleep(0.5)

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    overrides = ["model.depth=2,3", f"seed=range({args.cells // 2})", f"search.trials={per_cell}", "model.width=2",
                 "stop.max_iters=30", "search.report_every=10", "tracking.curve_points=10", "search.sampler=random",
                 "study.progress_every=30", f"study.state_dir={state}"]
    (cfg, ov, cells), = plan(overrides)
    threading.Thread(target=sample, daemon=True).start()
    start = time.monotonic()
    res = run_study(cfg, cells, ov)
    wall = time.monotonic() - start
    stop.set()
    ray.shutdown()
    recs = ResultStore(res.folder).load()
    lines = (res.folder / "results.jsonl").read_text().splitlines()
    from mlflow import MlflowClient

    client = MlflowClient(res.tracking_uri)
    kids, token = [], None
    while True:
        page = client.search_runs([res.experiment_id], f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'",
                                  max_results=1000, page_token=token)
        kids += [r.data.tags["orthoscale.trial"] for r in page]
        token = page.token
        if not token:
            break
    dup = [k for k, n in Counter(kids).items() if n > 1]
    n = len(recs)
    rss = [r for _, r in samples]
    q = len(rss) // 4 or 1
    quarters = [max(rss[i * q:(i + 1) * q] or [0]) / 2 ** 20 for i in range(4)]
    print(f"\nsoak: {n} trials in {wall:.0f} s ({60 * n / wall:.0f} trials/min) on 2 workers")
    print(f"driver RSS: start {rss[0] / 2 ** 20:.0f} MiB, peak {max(rss) / 2 ** 20:.0f} MiB; peak per quarter "
          + " / ".join(f"{x:.0f}" for x in quarters) + " MiB")
    print(f"durable store: {len(lines)} lines, {n} unique trials; MLflow: {len(kids)} child runs, "
          f"{len(dup)} duplicated; tracking thread {res.logging_seconds:.0f} s busy, {len(res.unlogged)} not logged")
    ok = n == len(lines) == len(kids) == cells.__len__() * per_cell and not dup and not res.unlogged
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
