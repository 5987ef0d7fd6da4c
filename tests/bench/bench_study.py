"""Throughput of the study service against plain in-process Optuna, and Ray/tracking overhead per trial.

A: a 64-trial study of small cells (8 cells × 8 trials) through Ray Tune + per-cell Optuna + MLflow,
   against the same cells searched by plain Optuna in one loop in this process.
B: 1-second trials (fixed μ, fixed number of steps): the share of trial wall time lost to Ray and
   tracking = 1 − Σ(trial compute seconds) / (study wall seconds × concurrency).
Run: .venv/bin/python tests/bench/bench_study.py [--quick]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import ray
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from orthoscale.study.compose import plan  # noqa: E402
from orthoscale.study.driver import run_study  # noqa: E402
from orthoscale.study.store import ResultStore  # noqa: E402
from orthoscale.study.trial import run_trial  # noqa: E402

QUICK = "--quick" in sys.argv
CPUS = 2


def study(args: list[str], state: Path):
    (cfg, overrides, cells), = plan(args + [f"study.state_dir={state}"])
    start = time.perf_counter()
    res = run_study(cfg, cells, overrides, out=open(os.devnull, "w"))
    wall = time.perf_counter() - start
    recs = ResultStore(res.folder).load()
    compute = sum((r["result"] or {}).get("seconds", 0.0) for r in recs)
    return cells, res, recs, wall, compute


def plain_optuna(cells, trials: int, lo: float, hi: float) -> tuple[float, int]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    start, n = time.perf_counter(), 0
    for cell in cells:
        s = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cell.index,
                                                                                        n_startup_trials=4))
        s.optimize(lambda t: run_trial(cell.cfg, t.suggest_float("lr", lo, hi, log=True)).objective,
                   n_trials=trials)
        n += trials
    return time.perf_counter() - start, n


def main():
    ray.init(address="local", num_cpus=CPUS, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    print(f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}, {CPUS} CPUs for Ray")
    tmp = Path(tempfile.mkdtemp(prefix="orthoscale-bench-"))
    depths = "2,4" if QUICK else "2,4,8,16"
    trials = 4 if QUICK else 8
    small = [f"model.depth={depths}", "seed=0,1", f"search.trials={trials}", "model.width=8", "stop.max_iters=400",
             "search.pruner=none"]
    # warm the workers once so both sides start with imported torch (Ray's one-off start is reported apart)
    t0 = time.perf_counter()
    study(["model.depth=2", "seed=0", "search.trials=2", "model.width=4", "stop.max_iters=50"], tmp / "warm")
    warm = time.perf_counter() - t0
    cells, res, recs, wall, compute = study(small, tmp / "a")
    wall_plain, n_plain = plain_optuna(cells, trials, 1e-3, 3.0)
    n = len(recs)
    print("\nA. small cells, whole study (Ray Tune + per-cell Optuna + MLflow SQLite) vs plain Optuna loop")
    print(f"{'':34} {'trials':>6} {'wall s':>8} {'trials/min':>10} {'compute s':>10}")
    print(f"{'orthoscale study (2 workers)':34} {n:>6} {wall:>8.1f} {60 * n / wall:>10.1f} {compute:>10.1f}")
    print(f"{'plain Optuna, one process':34} {n_plain:>6} {wall_plain:>8.1f} {60 * n_plain / wall_plain:>10.1f}")
    print(f"ratio study/plain throughput: {(n / wall) / (n_plain / wall_plain):.2f}×  "
          f"(first start of Ray and its workers, excluded above: {warm:.1f} s)")
    print(f"median trial compute {sorted((r['result'] or {}).get('seconds', 0) for r in recs)[n // 2] * 1e3:.1f} ms; "
          f"tracking thread busy {res.logging_seconds:.2f} s for {res.trials_logged} child runs "
          f"({1e3 * res.logging_seconds / max(res.trials_logged, 1):.1f} ms each, off the trials' path)")

    # B: ≈1 s trials — fixed μ, fixed number of steps (tolerance out of reach, no stall rule)
    steps = 600
    one = ["model.depth=32", "model.width=32", "seed=0", "optim.protocol=fixed", "optim.lr=0.05", "stop.tol=1e-300",
           f"stop.max_iters={steps}", f"stop.stall_window={steps + 1}", "search.pruner=none"]
    probe = run_trial(plan(one, grid=False)[0][2][0].cfg).seconds
    steps = max(50, int(steps / probe))  # rescale to ≈ 1 s on this machine
    one = [a if not a.startswith(("stop.max_iters", "stop.stall_window")) else a for a in one]
    one = [a for a in one if not a.startswith(("stop.max_iters", "stop.stall_window"))] + [
        f"stop.max_iters={steps}", f"stop.stall_window={steps + 1}"]
    seeds = "range(4)" if QUICK else "range(16)"
    _, res_b, recs_b, wall_b, compute_b = study([a if a != "seed=0" else f"seed={seeds}" for a in one], tmp / "b")
    lost = 1 - compute_b / (wall_b * CPUS)
    print(f"\nB. {len(recs_b)} trials of ≈1 s ({steps} steps, depth 32, width 32), 2 workers")
    print(f"mean trial compute {compute_b / len(recs_b):.2f} s; study wall {wall_b:.1f} s; "
          f"share of worker time lost to Ray + tracking: {100 * lost:.1f} %")
    ray.shutdown()


if __name__ == "__main__":
    main()
