"""The fast step as a study runs it: one thread per trial (ray.cpus_per_trial = 1), one trial per core, every
core busy at once. Each core is a spawned process with torch.set_num_threads(1); all of them time the same row's
steady steps over one window (they start together at a barrier), and their useful flops per second add up.

bench_core.py prints this beside its grid, whose step is one trial alone on all cores."""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DTYPES, fast_step, regression_problem, whitened_inputs  # noqa: E402
from core_flops import D0, LR, NOISE, run_flops  # noqa: E402
from orthoscale import carry, init, optim  # noqa: E402
from orthoscale.network import Architecture  # noqa: E402
from orthoscale.workspace import Workspace  # noqa: E402

_barrier = None


def _start(barrier) -> None:
    global _barrier
    _barrier = barrier
    torch.set_num_threads(1)


def _row(task: tuple) -> tuple[float, int]:
    """(median seconds per step over whole carry.REORTHO cycles, useful flops of a step) of one core's trial."""
    name, N, d, seed, budget, min_cycles = task
    g = torch.Generator().manual_seed(seed)
    prob = regression_problem(whitened_inputs(D0, 2 * D0, generator=g), d, noise=NOISE, generator=g,
                              dtype=DTYPES[name])   # the fast path's work does not depend on m
    arch = Architecture((D0,) + (d,) * N)
    state, opt, ws = init.random_blocks(arch, generator=g, dtype=DTYPES[name]), optim.Optimizer(LR), Workspace()

    def cycle(blocks):
        for _ in range(carry.REORTHO):
            blocks = fast_step(blocks, prob, arch, opt, ws)
        return blocks

    state = cycle(state)  # from the iterate into a run (the first step scans the frame)
    _barrier.wait()
    times, end = [], time.perf_counter() + budget
    while len(times) < min_cycles or time.perf_counter() < end:
        t = time.perf_counter()
        state = cycle(state)
        times.append((time.perf_counter() - t) / carry.REORTHO)
    _barrier.wait()  # no core times alone: each goes on until all have their window
    return statistics.median(times), run_flops(state, prob)[2]


def _peak(task: tuple) -> float:
    """FLOP/s of one core's 2048³ matmul in ``dtype`` while every core runs one (best of a window; not
    common.matmul_peak, whose quiet guard would take the other cores' matmuls for outside load)."""
    name, seconds = task
    g = torch.Generator().manual_seed(1234)
    A, B = (torch.randn(2048, 2048, generator=g, dtype=DTYPES[name]) for _ in range(2))
    A @ B
    _barrier.wait()
    best, end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t)
    _barrier.wait()
    return 2.0 * 2048 ** 3 / best


def per_core(rows: list[dict], peaks: dict, budget: float, min_cycles: int) -> None:
    """One line per row of ``rows`` (dtype, N, d, ms and peak of the grid): every core running its own trial."""
    cores = torch.get_num_threads()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(cores)
    print(f"\nthe same rows as a study runs them: {cores} trials at once, one per core, 1 thread each "
          "(ray.cpus_per_trial = 1); ms: the slowest core's median step; GF/s: their useful flops per second "
          "together; %peak against the higher of the grid's matmul peak and the sum of one 2048³ matmul per core, "
          "all at once (best of 3 s)")
    with ctx.Pool(cores, initializer=_start, initargs=(barrier,)) as pool:
        for name in sorted({r["dtype"] for r in rows}):
            at_once = sum(pool.map(_peak, [(name, 3.0)] * cores, chunksize=1))
            print(f"  matmul peak {name}: one per core at once {at_once / 1e9:.1f} GFLOP/s, the grid's "
                  f"{peaks[name] / 1e9:.1f}")
            peaks = {**peaks, name: max(peaks[name], at_once)}
        print("  dtype    N     d   grid ms  grid %peak   1-thread ms  GF/s all cores  %peak  trials×steps/s vs grid")
        for r in rows:
            out = pool.map(_row, [(r["dtype"], r["N"], r["d"], 100 + c, budget, min_cycles) for c in range(cores)],
                           chunksize=1)
            rate = sum(flops / t for t, flops in out)
            slowest = max(t for t, _ in out)
            r["per_core"] = rate / peaks[r["dtype"]]
            print(f"  {r['dtype']:>5} {r['N']:4d} {r['d']:5d}  {r['ms']:8.3f}  {100 * r['peak']:9.0f}%  "
                  f"{1e3 * slowest:12.3f}  {rate / 1e9:14.1f}  {100 * r['per_core']:4.0f}%  "
                  f"{cores * r['ms'] / (1e3 * slowest):10.2f}x", flush=True)
    low = min(rows, key=lambda r: r["per_core"])
    bad = [r for r in rows if r["per_core"] < 0.5]
    print(f"  {'below' if bad else 'at or above'} 50 % of matmul peak with one trial per core: min "
          f"{100 * low['per_core']:.0f}% ({low['dtype']} N={low['N']} d={low['d']})"
          + ("; below on " + ", ".join(f"{r['dtype']} N={r['N']} d={r['d']}" for r in bad) if bad else ""))
