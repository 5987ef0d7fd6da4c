"""Throughput of one study on 1, 2 and 3 simulated Ray nodes (one CPU each, ray.cluster_utils.Cluster),
and where the time goes (trial compute vs Ray + tracking). This machine has 2 cores, so 3 nodes is
oversubscribed: the third node shows the cost of contention, not extra capacity.
Run: .venv/bin/python tests/bench/bench_cluster.py [--quick]"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orthoscale.study.compose import plan  # noqa: E402
from orthoscale.study.driver import run_study  # noqa: E402
from orthoscale.study.store import ResultStore  # noqa: E402

QUICK = "--quick" in sys.argv


def one(nodes: int, tmp: Path) -> tuple[float, int, float]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        args = ["model.depth=4,8", "seed=0,1", f"search.trials={3 if QUICK else 8}", "model.width=16",
                "stop.max_iters=600", "search.pruner=none", f"study.state_dir={tmp / str(nodes)}"]
        (cfg, ov, cells), = plan(args)
        start = time.perf_counter()
        res = run_study(cfg, cells, ov, out=open(os.devnull, "w"))
        wall = time.perf_counter() - start
        recs = ResultStore(res.folder).load()
        return wall, len(recs), sum((r["result"] or {}).get("seconds", 0.0) for r in recs)
    finally:
        ray.shutdown()
        cluster.shutdown()


def main():
    tmp = Path(tempfile.mkdtemp(prefix="orthoscale-bench-cluster-"))
    print(f"{'nodes':>5} {'trials':>6} {'wall s':>8} {'trials/min':>10} {'vs 1 node':>9} {'compute share':>13}")
    base = None
    for nodes in (1, 2, 3):
        wall, n, compute = one(nodes, tmp)
        rate = 60 * n / wall
        base = base or rate
        print(f"{nodes:>5} {n:>6} {wall:>8.1f} {rate:>10.1f} {rate / base:>8.2f}× {compute / (wall * nodes):>12.0%}")


if __name__ == "__main__":
    main()
