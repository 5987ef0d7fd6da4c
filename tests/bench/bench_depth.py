"""Deep and narrow: one RGD step of a square width-d network of depth N, stacked core vs per-layer code.

Widths (d,)*(N+1), free first layer, N−1 orthonormal d×d layers (columns), polar retraction, spectral
balance, lr = LR; a whitened teacher–student problem (data.teacher_student). Timed side by side from the
same iterate (the squared loss through the second moments everywhere, so all three solve the same problem):

  stacked  losses.squared_fast + optim.step on the stacked blocks, as train.train runs them: the
           orthogonal run held by its prefix products and updated in that frame (network.Frame), the
           frame carried from step to step (carry.py); timed in steady state, as consecutive steps of a
           run from the iterate, the mean over whole cycles of carry.REORTHO steps (one of which takes the
           frame's Newton–Schulz step); the checks compare the first step from the iterate (a scanned frame)
  loop     loop.gradients + loop.step on the list network.layers(blocks) (a Python loop over layers)
  geoopt   per-layer parameters: nn.Parameter (free layer) and ManifoldParameters on
           geoopt.Stiefel(canonical=False), RiemannianSGD, loss L* + ½‖P − P*‖² by autograd through
           P = W_N ··· W_1 (QR retraction and no s² balancing: geoopt has neither polar nor balance)

followed by where the time of the stacked step goes at the largest depth (d = 10, float64).

    .venv/bin/python tests/bench/bench_depth.py [--quick] [--profile]
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common import (DTYPES, CpuLoad, GeooptRGD, Timing, fast_step, count_aten_ops, fmt_check, fmt_ms,
                    fmt_ratio, footer_load, header, max_abs_diff, median_time, moments_loss, ns_iterations,
                    parse_args, profile_table)
from orthoscale import carry, data, init, losses, optim, stiefel
from tests import loop
from orthoscale.network import Architecture, hidden_products, layers
from orthoscale.data import Problem
from orthoscale.workspace import Workspace

LR = 0.1
NOISE = 0.1
PROFILE_D, PROFILE_DTYPE = 10, "f64"
TARGET_MS = {10: 1.5, 32: 10.0}  # ms per step at N = 1024, by width d


def samples_for(d: int) -> int:
    return 20 * d  # only the moments enter the step; m just has to whiten exactly (m ≥ d)


def setup(d: int, N: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    arch = Architecture((d,) * (N + 1))
    problem = data.teacher_student(arch, samples=samples_for(d), noise=NOISE, generator=g, dtype=dtype)
    blocks = init.random_blocks(arch, generator=g, dtype=dtype)
    return arch, problem, blocks


def per_step(t: Timing) -> Timing:
    """A timing of :func:`cycle`-like calls (carry.REORTHO steps each) as the mean per step."""
    return Timing(t.seconds / carry.REORTHO, t.reps, t.clean, t.faults / carry.REORTHO)


def one_thread(fn):
    """fn() under torch.set_num_threads(1), the thread count restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(n)


def breakdown_carried(arch: Architecture, problem: Problem, blocks: list[torch.Tensor], lr: float, *, budget: float,
              min_reps: int, profile: bool = False) -> None:
    """Median time and ATen call count of each phase of the fast (stacked) step, each phase run alone: the
    steady state (an iterate carrying its frame from the step before, carry.py) and, for comparison, the
    first step of a run (the frame from a prefix scan, the update with a Newton–Schulz step).

    Layout assumed: blocks[0] the free first layer, blocks[1] the stack of orthonormal layers.
    """
    opt, ws = optim.Optimizer(lr), Workspace()
    ev0 = losses.squared_fast(blocks, problem)
    cur = optim.step(blocks, ev0.block_grads, arch, opt, ev0.frames)  # carries its frame (age 0)
    ev = losses.squared_fast(cur, problem)
    V, G, W1 = cur[1], ev.grads[1], cur[0][0]
    xi = -(lr / optim.balance(W1, "spectral")) * stiefel.project(V, G)
    S = -(lr / optim.balance(W1, "spectral")) * (ev.frames[1].M - ev.frames[1].M.mT) / 2
    state = [cur]

    def cycle():
        for _ in range(carry.REORTHO):
            state[0] = fast_step(state[0], problem, arch, opt, ws)

    phases = [
        ("network.hidden_products (carried frame)", lambda: hidden_products(cur), 1),
        ("losses.squared_fast (whole gradient)", lambda: losses.squared_fast(cur, problem), 1),
        ("optim.balance (spectral s², cold)", lambda: optim.balance(W1, "spectral"), 1),
        ("optim.step, carried frame (whole update)", lambda: optim.step(cur, ev.block_grads, arch, opt, ev.frames), 1),
        ("  of which carry.skew_schur (d×d)", lambda: carry.skew_schur(S), 1),
        ("first step: hidden_products (prefix scan)", lambda: hidden_products(blocks), 1),
        ("first step: optim.step (+ Newton–Schulz)", lambda: optim.step(blocks, ev0.block_grads, arch, opt,
                                                                        ev0.frames), 1),
        ("  per layer instead: stiefel.project", lambda: stiefel.project(V, G), 1),
        (f"  per layer instead: retract polar ({ns_iterations(V, xi)} NS it)",
         lambda: stiefel.retract(V, xi, "polar"), 1),
        (f"full step, mean of a run's {carry.REORTHO}", cycle, carry.REORTHO),
    ]
    results = [(name, median_time(fn, warmup=2, min_reps=min_reps, max_reps=500 // per, budget_s=budget),
                count_aten_ops(fn) / per, per) for name, fn, per in phases]
    total = results[-1][1].seconds / results[-1][3]
    print(f"{'phase':>46}  {'ms':>8}  {'% step':>6}  {'ATen calls':>10}  {'pf/call':>7}")
    for name, t, n, per in results:
        print(f"{name:>46}  {fmt_ms(t.seconds / per) + ('' if t.clean else '*'):>8}  "
              f"{100 * t.seconds / per / total:>5.0f}%  {n:>10.0f}  {t.faults / per:>7.0f}")
    if profile:
        profile_table(lambda: fast_step(state[0], problem, arch, opt, ws), total, budget,
                      "steps from a carried frame")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--profile", action="store_true", help="also print a torch.profiler table of the largest stacked step"))
    quick = args.quick
    ds = [10] if quick else [10, 32]
    Ns = [8, 1024] if quick else [8, 64, 256, 1024]
    budget = 0.3 if quick else 1.0
    min_reps = 3 if quick else 5
    header("bench_depth: one RGD step, widths (d,)*(N+1), free first layer, columns, polar, spectral", quick)
    print(f"lr = {LR}, whitened teacher–student (m = 20·d, noise {NOISE}); loop and geoopt: median of ≥{min_reps} "
          f"timed steps after warm-up from the same iterate; stacked: median of ≥{min_reps} cycles of "
          f"{carry.REORTHO} consecutive steps of a run from it, per step\n", flush=True)
    load = CpuLoad()

    cols = ("dtype", "d", "N", "stacked ms", "1 thread", "NS it", "ATen/step", "pf/step", "loop ms", "loop/stacked",
            "geoopt ms", "geo/stacked", "chk loop", "chk geo")
    widths = (5, 3, 5, 10, 8, 5, 9, 7, 9, 12, 9, 11, 11, 11)
    line = lambda vals: "  ".join(str(v).rjust(w) for v, w in zip(vals, widths))
    print(line(cols))
    print(line(["-" * w for w in widths]), flush=True)
    start = time.perf_counter()
    rows = []
    for name, dtype in DTYPES.items():
        for d in ds:
            for N in Ns:
                arch, problem, blocks = setup(d, N, dtype, seed=N * 1000 + d)
                Ws = layers(blocks)
                opt = optim.Optimizer(LR)
                opt_geo = optim.Optimizer(LR, retraction="qr", balance="none")

                ws = Workspace()

                state = [blocks]

                def stacked():  # one step of the run, from the last one's iterate (and its carried frame)
                    state[0] = fast_step(state[0], problem, arch, opt, ws)
                    return state[0]

                def cycle():  # carry.REORTHO consecutive steps: the frame's Newton–Schulz step once
                    for _ in range(carry.REORTHO):
                        stacked()

                def per_layer():
                    return loop.step(Ws, loop.gradients(Ws, problem)[1], arch, opt)

                geo, loss = GeooptRGD(Ws, LR), moments_loss(problem)

                # same-step checks (also the warm-up of each implementation)
                out_stacked = fast_step(blocks, problem, arch, opt, Workspace())  # the first step, scanned frame
                diff_loop = max_abs_diff(layers(out_stacked), per_layer())
                ref = optim.step(blocks, losses.squared_fast(blocks, problem).grads, arch, opt_geo)
                geo.step(loss)
                diff_geo = max_abs_diff(layers(ref), geo.layers())
                ev = losses.squared_fast(blocks, problem)
                xi = -(LR / optim.balance(blocks[0][0], "spectral")) * stiefel.project(blocks[1], ev.grads[1])
                n_it = ns_iterations(blocks[1], xi)
                stacked()  # the run's first step scans the frame; ATen calls of the next (carried) one
                n_ops = count_aten_ops(stacked)

                tm_st = per_step(median_time(cycle, warmup=1, min_reps=min_reps, max_reps=50, budget_s=budget))
                tm_st1 = per_step(one_thread(lambda: median_time(cycle, warmup=1, min_reps=min_reps, max_reps=50,
                                                                 budget_s=budget)))
                tm_loop = median_time(per_layer, warmup=1, min_reps=min_reps, max_reps=200, budget_s=budget)
                tm_geo = median_time(lambda: geo.step(loss), setup=lambda: geo.load(Ws), warmup=1,
                                     min_reps=min_reps, max_reps=200, budget_s=budget)
                t_st, t_loop, t_geo = tm_st.seconds, tm_loop.seconds, tm_geo.seconds
                clean = tm_st.clean and tm_st1.clean and tm_loop.clean and tm_geo.clean
                rows.append(dict(dtype=name, d=d, N=N, st=t_st, loop=t_loop / t_st, geo=t_geo / t_st))
                print(line((name + ("" if clean else "*"), d, N, fmt_ms(t_st), fmt_ms(tm_st1.seconds), n_it, n_ops,
                            f"{tm_st.faults:.0f}", fmt_ms(t_loop),
                            fmt_ratio(t_loop / t_st), fmt_ms(t_geo), fmt_ratio(t_geo / t_st),
                            fmt_check(diff_loop, dtype), fmt_check(diff_geo, dtype))), flush=True)

    print()
    print("stacked: losses.squared_fast + optim.step; loop: loop.gradients + loop.step on network.layers(blocks);")
    print("geoopt: RiemannianSGD, Stiefel(canonical=False) per layer, loss through the second moments by autograd")
    print("  (QR retraction, no s² balancing). NS it: Newton–Schulz iterations a per-layer polar retraction takes")
    print("  here (the framed update needs one d×d polar factor and one Newton–Schulz step);")
    print("  1 thread: the stacked step again under torch.set_num_threads(1) (a narrow step's kernels are small:")
    print("  where other processes hold the cores, every parallel region waits for a descheduled peer);")
    print("  stacked ms: the mean step of a run over whole cycles of carry.REORTHO steps (median of cycles);")
    print("  ATen/step: ATen operator calls of one stacked step from a carried frame (views included); pf/step:")
    print("  minor page faults per stacked step (fresh pages the allocator got from the kernel).")
    print("chk loop: max |Δ| of the layers after one step, stacked vs loop (same algorithm); chk geo: geoopt vs")
    print("  optim.step(retraction='qr', balance='none') on the stacked gradients; tolerance 1e-8 (f64), 1e-3 (f32).")
    print(f"grid time {time.perf_counter() - start:.0f} s")

    print("\ntargets (stated for f64; f32 rows for comparison):")
    for r in rows:
        target = TARGET_MS.get(r["d"]) if r["N"] == 1024 else None
        if target is not None:
            verdict = "PASS" if r["st"] < target / 1e3 else "MISS"
            print(f"  {verdict}  {r['dtype']} N=1024 d={r['d']}: stacked {fmt_ms(r['st'])} ms per step "
                  f"(target < {target:g} ms), loop/stacked {fmt_ratio(r['loop'])}, "
                  f"geoopt/stacked {fmt_ratio(r['geo'])}")

    arch, problem, blocks = setup(PROFILE_D, max(Ns), DTYPES[PROFILE_DTYPE], seed=1)
    print(f"\nwhere the stacked step's time goes: d = {PROFILE_D}, N = {max(Ns)}, {PROFILE_DTYPE} "
          "(each phase timed alone)")
    breakdown_carried(arch, problem, blocks, LR, budget=budget, min_reps=min_reps, profile=args.profile)
    footer_load(load)


if __name__ == "__main__":
    main()
