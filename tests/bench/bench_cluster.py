"""Fan-out on real hosts: one study of ≥ 60 trials of ≈ 1 s submitted with `make sweep-cluster` to a head and 1, 2
and 3 worker hosts of one CPU each (network namespaces with their own address and Ray temp dir, as in
tests/integration/test_hosts.py), then the default `make sweep` study on the embedded local Ray.
Prints, side by side: trials/min over the trial phase and over the whole submission, the speed-up against one host,
and mean concurrency against the slots, all read from each study's own records (report/fanout.json).
This machine has 2 cores: 3 worker hosts oversubscribe it (and the head, the driver and the tracking writer share
those cores too), so 3 hosts cannot beat 2 here; the row shows what contention costs, not extra capacity.
Needs root (namespaces). Run: .venv/bin/python tests/bench/bench_cluster.py [--quick]"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.hosts import Hosts, namespaces_available

QUICK = "--quick" in sys.argv
TRIAL_SECONDS = 1.0


def steps_for(seconds: float) -> int:
    """Steps of the bench's trial (depth 8, width 16, no early stop) that take ``seconds`` on one core here."""
    from orthoscale.study.compose import plan
    from orthoscale.study.trial import run_trial

    (_, _, cells), = plan(["model.depth=8", "model.width=16", "stop.tol=1e-300", "stop.stall_window=100000",
                           "stop.max_iters=300", "optim.protocol=fixed", "optim.lr=0.2"])
    run_trial(cells[0].cfg, threads=1)  # warm-up
    res = run_trial(cells[0].cfg, threads=1)
    return max(50, int(seconds / res.seconds_per_step))


def study_args(steps: int, state: Path) -> list[str]:
    trials = 4 if QUICK else 12
    return [f"study.name=bench-{state.name}", "model.depth=4,8", "seed=0,1,2", f"search.trials={trials}",
            "model.width=16", "stop.tol=1e-300", "stop.stall_window=100000", f"stop.max_iters={steps}",
            "tracking.curve_points=20", f"study.state_dir={state}"]


def on_hosts(workers: int, steps: int, tmp: Path) -> dict:
    hosts = Hosts(tmp / f"cluster{workers}", workers, cpus=1)
    try:
        state = tmp / f"hosts{workers}"
        env = {**hosts.env, "RAY_ADDRESS": hosts.jobs_url}
        start = time.perf_counter()
        out = subprocess.run(["make", "-s", "sweep-cluster", f"ARGS={' '.join(study_args(steps, state))}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        if out.returncode:
            raise RuntimeError(f"study on {workers} host(s) failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        fanout = json.loads(next(state.glob("studies/*/report/fanout.json")).read_text())
        return {**fanout, "wall": wall}
    finally:
        hosts.close()


def default_sweep(tmp: Path) -> dict:
    """`make sweep` as a user runs it (default family, 2 cores), into a state dir of its own."""
    state = tmp / "default"
    start = time.perf_counter()
    args = ["search.trials=4"] if QUICK else []
    out = subprocess.run([sys.executable, "-m", "orthoscale.sweep", *args, f"study.state_dir={state}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"default study failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    records = [json.loads(line) for line in next(state.glob("studies/*/results.jsonl")).read_text().splitlines()]
    compute = sum((r["result"] or {}).get("seconds", 0.0) for r in records)
    fanout = json.loads(next(state.glob("studies/*/report/fanout.json")).read_text())
    return {**fanout, "wall": wall, "compute": compute}


def main() -> None:
    why = namespaces_available()
    if why:
        sys.exit(f"bench_cluster: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="orthoscale-bench-cluster-"))
    steps = steps_for(TRIAL_SECONDS)
    print(f"trial: depth 4 or 8, width 16, {steps} steps (≈ {TRIAL_SECONDS:.1f} s of one core at depth 8); "
          f"{os.cpu_count()} cores on this machine")
    print(f"{'hosts':>5} {'slots':>5} {'trials':>6} {'phase s':>8} {'trials/min':>10} {'wall s':>7} "
          f"{'wall t/min':>10} {'speed-up':>8} {'mean conc':>9} {'conc/slots':>10}  hosts used")
    base = None
    for workers in (1, 2, 3):
        r = on_hosts(workers, steps, tmp)
        rate = 60 * r["trials"] / r["trial_phase_seconds"]
        base = base or rate
        print(f"{workers:>5} {r['slots']:>5} {r['trials']:>6} {r['trial_phase_seconds']:>8.1f} {rate:>10.1f} "
              f"{r['wall']:>7.1f} {60 * r['trials'] / r['wall']:>10.1f} {rate / base:>7.2f}× "
              f"{r['concurrency_mean']:>9.2f} {r['concurrency_mean'] / r['slots']:>9.0%}  "
              f"{r['hosts_used']}/{r['hosts_in_cluster']}")
    d = default_sweep(tmp)
    print(f"\ndefault `make sweep` (local Ray, {d['slots']} slots, {d['trials']} trials): mean concurrency "
          f"{d['concurrency_mean']:.2f} of {d['slots']} ({d['concurrency_mean'] / d['slots']:.0%}), peak "
          f"{d['concurrency_peak']}; command wall {d['wall']:.1f} s against Σ trial compute / slots = "
          f"{d['compute'] / d['slots']:.1f} s ({d['wall'] / (d['compute'] / d['slots']):.2f}×)")


if __name__ == "__main__":
    main()
