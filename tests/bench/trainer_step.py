"""The fast step as a trial takes it: train.train (what orthoscale's trainable runs), its seconds per step exactly
as a trial records them (traj.seconds / traj.steps: TrialResult.seconds_per_step), against the grid's step.

Per step the trainer adds to the step itself: the loss and relative excess as floats, the finiteness check of the
loss and gradients (losses.Evaluation.finite), the stop rules, and every stop.measure_every steps the
orthonormality error of every orthonormal layer (network.orthonormality_error: one Gram product per layer, k·2d³
flops). bench_core.py prints this beside its grid; the orthonormality error is also timed alone, being the one
part that grows with the stack."""
from __future__ import annotations

import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DTYPES, median_time, regression_problem  # noqa: E402
from core_flops import D0, LR, NOISE, run_flops  # noqa: E402
from orthoscale import carry, init, network, optim, train  # noqa: E402
from orthoscale.network import Architecture  # noqa: E402


def trainer(rows: list[dict], X: torch.Tensor, peaks: dict, budget: float, min_reps: int) -> None:
    """One line per row of ``rows`` (dtype, N, d, ms and peak of the grid): train.train's recorded seconds per
    step over a run of ≥ 4 carry.REORTHO steps (≈ ``budget`` seconds), median of ``min_reps`` runs."""
    g = torch.Generator().manual_seed(7)
    print("\nthe same rows as a trial runs them (train.train, one trial alone on every core): ms/step as the trial "
          "records it (TrialResult.seconds_per_step), median of runs; %peak of its useful flops; ortho: "
          f"network.orthonormality_error alone, which the trainer measures every stop.measure_every = "
          f"{train.StopRules().measure_every} steps")
    print("  dtype    N     d   grid ms  trainer ms  trainer/grid  grid %peak  trainer %peak  ortho ms")
    for r in rows:
        dtype = DTYPES[r["dtype"]]
        prob = regression_problem(X, r["d"], noise=NOISE, generator=g, dtype=dtype)
        arch = Architecture((D0,) + (r["d"],) * r["N"])
        blocks = init.random_blocks(arch, generator=g, dtype=dtype)
        steps = max(4 * carry.REORTHO, int(budget / (1e-3 * r["ms"])))
        stop = train.StopRules(tol=1e-300, max_iters=steps, stall_window=10 * steps, max_seconds=1e9)
        runs = [train.train(prob, arch, blocks, optim.Optimizer(LR), stop) for _ in range(min_reps)]
        per_step = statistics.median(traj.seconds / traj.steps for traj, _ in runs)
        last = runs[-1][1]
        flops = run_flops(last, prob)[2]
        ortho = median_time(lambda: network.orthonormality_error(last, arch), min_reps=min_reps, budget_s=budget / 4)
        r["trainer"], r["trainer_x"] = flops / per_step / peaks[r["dtype"]], 1e3 * per_step / r["ms"]
        print(f"  {r['dtype']:>5} {r['N']:4d} {r['d']:5d}  {r['ms']:8.3f}  {1e3 * per_step:10.3f}  "
              f"{r['trainer_x']:11.2f}x  {100 * r['peak']:9.0f}%  {100 * r['trainer']:12.0f}%  "
              f"{1e3 * ortho.seconds:8.3f}", flush=True)
    worst = max(rows, key=lambda r: r["trainer_x"])
    print(f"  the trainer's step is at most {worst['trainer_x']:.2f}× the grid's "
          f"({worst['dtype']} N={worst['N']} d={worst['d']})")
