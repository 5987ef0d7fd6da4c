"""Per-iteration time of one full RGD step (gradient + update) on an MNIST-sized regression problem.

Network widths (784, d, …, d): free first layer d×784, N−1 orthonormal d×d layers (column orientation),
polar retraction, spectral balance, lr = LR. Data: Gaussian inputs whitened so that Σ_xx = I (as the
project does with MNIST), Y = W* X + 0.1·noise. Implementations timed side by side, same iterate:

  fast     losses.squared_fast (second moments, independent of m) + optim.step (polar retraction), timed as
           a run takes it: consecutive steps from the iterate, each carrying its frame to the next (carry.py),
           the mean over whole cycles of carry.REORTHO steps (one of which takes the frame's Newton–Schulz
           step); its checks compare the first step from the iterate (a scanned frame)
  fast-qr  the same with optim.retraction=qr (geoopt's retraction)
  generic  losses.generic(…, 'squared') on the m samples by autograd + optim.step
  geoopt   the same algorithm in geoopt: Stiefel(canonical=False) ManifoldParameters, RiemannianSGD,
           loss ½/m‖P X − Y‖² by autograd on the samples (QR retraction, no s² balancing: geoopt has none)

and the achieved GFLOP/s of the fast path against a 2048³ matmul measured in the same run. All but fast are
timed as single steps from the same iterate. The grid's step is one trial alone on every core; per_core.py then
times the d ≥ 128 rows as a study runs them, one single-threaded trial per core, all cores at once, and
trainer_step.py as a trial takes them (train.train, with its per-step records and checks).

    .venv/bin/python tests/bench/bench_core.py [--quick]
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from core_flops import D0, LR, NOISE, run_flops, useful_flops
from per_core import per_core
from trainer_step import trainer
from common import (DTYPES, CpuLoad, GeooptRGD, Timing, breakdown, fast_step, counted_matmul_flops, fmt_check,
                    fmt_ms, fmt_ratio, footer_load, header, matmul_peak, max_abs_diff,
                    median_time, parse_args, regression_problem, samples_loss, whitened_inputs)
from orthoscale import carry, init, losses, network, optim, spectral
from orthoscale.network import Architecture, layers
from orthoscale.workspace import Workspace

M_BIG = 60_000      # MNIST training-set size
M_SMALL = 1_000     # "small m": where geoopt on samples should be about on par


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--profile", action="store_true", help="also print a torch.profiler table of the breakdown config"))
    quick = args.quick
    Ns = [2, 8] if quick else [2, 4, 8, 16, 32]
    ds = [32, 128] if quick else [32, 128, 512]
    budget = 0.3 if quick else 1.5       # seconds of timed work per measurement (median over the repeats)
    min_reps = 2 if quick else 3         # slow configs (a step ≥ budget/3) get exactly min_reps repeats
    header("bench_core: one RGD step, widths (784, d, …, d), free first layer, columns, polar, spectral", quick)
    print(f"m = {M_BIG} (and {M_SMALL} for geo@1k), d0 = {D0}, lr = {LR}, inputs whitened (Σxx = I), "
          f"median of ≥{min_reps} timed steps after warm-up, all from the same iterate\n", flush=True)

    load = CpuLoad()
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    X_big = whitened_inputs(D0, M_BIG, generator=g)
    X_small = whitened_inputs(D0, M_SMALL, generator=g)
    print(f"data generated in {time.perf_counter() - t0:.1f} s", flush=True)

    peaks = {}
    for name, dtype in DTYPES.items():
        peaks[name] = matmul_peak(dtype, quick=quick)
        print(f"matmul peak {name}: 2048×2048 @ 2048×2048 → {peaks[name] / 1e9:.1f} GFLOP/s", flush=True)
    print()

    cols = ("dtype", "N", "d", "fast ms", "NS it", "pf/step", "generic ms", "gen/fast", "geoopt ms", "geo/fast",
            "geo@1k ms", "geo@1k/fast", "fast-qr ms", "geo@1k/qr", "GF/s", "%peak", "exec/useful", "%pk exec",
            "chk gen", "chk geo")
    widths = (5, 3, 4, 9, 5, 7, 10, 8, 9, 8, 9, 11, 10, 9, 6, 5, 11, 8, 11, 11)
    line = lambda vals: "  ".join(str(v).rjust(w) for v, w in zip(vals, widths))
    print(line(cols))
    print(line(["-" * w for w in widths]), flush=True)
    rows = []
    start = time.perf_counter()

    for name, dtype in DTYPES.items():
        for d in ds:
            prob_big = regression_problem(X_big, d, noise=NOISE, generator=g, dtype=dtype)
            prob_small = regression_problem(X_small, d, noise=NOISE, generator=g, dtype=dtype)
            for N in Ns:
                arch = Architecture((D0,) + (d,) * N)
                blocks = init.random_blocks(arch, generator=g, dtype=dtype)
                Ws0 = layers(blocks)
                opt = optim.Optimizer(LR)
                opt_geo = optim.Optimizer(LR, retraction="qr", balance="none")  # geoopt's step, for the check
                opt_qr = optim.Optimizer(LR, retraction="qr")

                ws, ws_run = Workspace(), Workspace()
                state = [blocks]

                def fast():  # the first step from the iterate (a scanned frame), for the checks
                    return fast_step(blocks, prob_big, arch, opt, ws)

                def cycle():  # carry.REORTHO consecutive steps of a run: the frame's Newton–Schulz step once
                    for _ in range(carry.REORTHO):
                        state[0] = fast_step(state[0], prob_big, arch, opt, ws_run)

                def fast_qr():
                    return fast_step(blocks, prob_big, arch, opt_qr, ws)

                def generic():
                    return optim.step(blocks, losses.generic(blocks, arch, prob_big, "squared").grads, arch, opt)

                geo_big, geo_small = GeooptRGD(Ws0, LR), GeooptRGD(Ws0, LR)
                loss_big, loss_small = samples_loss(prob_big), samples_loss(prob_small)

                # --- same-step checks (these calls are also the warm-up of each implementation)
                tc = time.perf_counter()
                out_fast = fast()
                t_first = time.perf_counter() - tc
                diff_gen = max_abs_diff(out_fast, generic())
                diff_geo = 0.0
                for geo, prob, loss in ((geo_big, prob_big, loss_big), (geo_small, prob_small, loss_small)):
                    ref = optim.step(blocks, losses.squared_fast(blocks, prob).grads, arch, opt_geo)
                    geo.step(loss)
                    diff_geo = max(diff_geo, max_abs_diff(layers(ref), geo.layers()))

                # --- timings, side by side from the same iterate (fast: consecutive steps of a run from it)
                warm = 1 if t_first < budget / 3 else 0
                cycle()  # from the iterate into a run (the first step scans the frame); then steady cycles
                tm_fast = per_step(median_time(cycle, warmup=0, min_reps=min_reps,
                                               budget_s=budget * carry.REORTHO))

                # --- flops where the run now is: the algorithmic count (with the Newton–Schulz counts of this
                # iterate: a run's late steps need fewer than its first) and the count one cycle executes
                n_it, n_frame, flops = run_flops(state[0], prob_big)
                executed = counted_matmul_flops(cycle) / carry.REORTHO
                fast_qr()
                tm_qr = median_time(fast_qr, warmup=warm, min_reps=min_reps, budget_s=budget)
                tm_gen = median_time(generic, warmup=0, min_reps=min_reps, budget_s=budget)
                tm_geo = median_time(lambda: geo_big.step(loss_big), setup=lambda: geo_big.load(Ws0),
                                     warmup=0, min_reps=min_reps, budget_s=budget)
                tm_geo1k = median_time(lambda: geo_small.step(loss_small), setup=lambda: geo_small.load(Ws0),
                                       warmup=1, min_reps=min_reps, budget_s=budget)
                t_fast, t_gen, t_geo, t_geo1k = (t.seconds for t in (tm_fast, tm_gen, tm_geo, tm_geo1k))
                clean = all(t.clean for t in (tm_fast, tm_qr, tm_gen, tm_geo, tm_geo1k))
                t_fast1k = t_fast  # the fast path does not depend on m (same moments-sized work)
                gfs = flops / t_fast
                rows.append(dict(dtype=name, N=N, d=d, gen=t_gen / t_fast, geo=t_geo / t_fast,
                                 geo1k=t_geo1k / t_fast1k, geo1k_qr=t_geo1k / tm_qr.seconds, peak=gfs / peaks[name],
                                 redundant=executed / flops, faults=tm_fast.faults, n_it=n_it, n_frame=n_frame,
                                 ms=1e3 * t_fast))
                print(line((name + ("" if clean else "*"), N, d, fmt_ms(t_fast), n_it, f"{tm_fast.faults:.0f}",
                            fmt_ms(t_gen),
                            fmt_ratio(t_gen / t_fast), fmt_ms(t_geo), fmt_ratio(t_geo / t_fast), fmt_ms(t_geo1k),
                            fmt_ratio(t_geo1k / t_fast1k), fmt_ms(tm_qr.seconds), fmt_ratio(t_geo1k / tm_qr.seconds),
                            f"{gfs / 1e9:.1f}", f"{100 * gfs / peaks[name]:.0f}%",
                            f"{executed / flops:.2f}", f"{100 * executed / t_fast / peaks[name]:.0f}%",
                            fmt_check(diff_gen, dtype), fmt_check(diff_geo, dtype))), flush=True)

    print()
    print("fast: losses.squared_fast + optim.step; generic: losses.generic('squared') on the m samples + optim.step;")
    print("geoopt: per-layer parameters, Stiefel(canonical=False), RiemannianSGD, loss by autograd on the samples")
    print("  (QR retraction, no s² balancing); geo@1k: the same at m = 1000, against the same fast time (m-free).")
    print("fast-qr: the fast step with optim.retraction=qr (spectral balance kept); geo@1k/qr: geo@1k over it.")
    print("NS it: Newton–Schulz iterations a per-layer polar retraction takes at the run's iterate (a third-order")
    print("  last step counts 1.5: three products); the framed update needs one d×d polar factor instead;")
    print("  pf/step: minor page faults per fast step (fresh pages from the kernel: temporaries > 32 MiB).")
    print(f"fast ms: the mean step of a run over whole cycles of carry.REORTHO = {carry.REORTHO} steps (median of")
    print("  cycles); useful_flops and NS it at the run's iterate after them; exec/useful: executed flops of")
    print("  the next such cycle per step over useful_flops.")
    print("GF/s, %peak: the step's useful matmul flops (formula in useful_flops: sequential products, gradients,")
    print("  projection, Newton–Schulz) / median time, against the 2048³ matmul of the same dtype measured above;")
    print("  exec/useful: matmul flops the implementation executes (torch.utils.flop_counter) over the useful ones;")
    print("  %pk exec: executed flops / time / peak (how busy the matmul units are, redundant work included).")
    print("chk gen: max |Δ| of the layers after one step, fast vs generic (same algorithm);")
    print("chk geo: geoopt vs optim.step(retraction='qr', balance='none') on the fast gradients, max over m = 60000")
    print("  and m = 1000; tolerance 1e-8 (f64), 1e-3 (f32).")
    print()
    print("targets (all rows of the grid that the target concerns):")
    summary(rows, "generic/fast ≥ 50× at m = 60000, d = 128", lambda r: r["d"] == 128, "gen", 50)
    summary(rows, "geoopt/fast ≥ 20× at m = 60000, d ≤ 128", lambda r: r["d"] <= 128, "geo", 20)
    summary(rows, "geoopt/fast ≥ 8× at m = 60000, d = 512", lambda r: r["d"] == 512, "geo", 8)
    summary(rows, "geoopt/fast-qr ≥ 1.5× at m = 1000 (same retraction)", lambda r: True, "geo1k_qr", 1.5)
    summary(rows, "geoopt/fast ≥ 1× at m = 1000 (polar)", lambda r: True, "geo1k", 1)
    summary(rows, "fast path ≥ 50 % of matmul peak (useful flops) for d ≥ 128", lambda r: r["d"] >= 128, "peak", 0.5)
    summary(rows, "exec/useful ≤ 1.15 for d ≥ 128", lambda r: r["d"] >= 128, "redundant", 1.15, below=True)
    summary(rows, "0 page faults per fast step for d ≥ 128", lambda r: r["d"] >= 128, "faults", 0, below=True)
    print(f"grid time {time.perf_counter() - start:.0f} s")

    print("\nthe N = 2 rows' floor: the step's own kernels, each timed alone (median), against the time that 50 % of")
    print("the matmul peak allows for its useful flops (n = the row's NS it):")
    for row in (r for r in rows if r["N"] == 2 and r["d"] >= 128):
        kernels_alone(row, DTYPES[row["dtype"]], peaks[row["dtype"]], budget, min_reps)

    per_core([r for r in rows if r["d"] >= 128], peaks, budget * carry.REORTHO, min_reps)  # the grid's window
    trainer([r for r in rows if r["d"] >= 128], X_big, peaks, budget, min_reps)

    d, N = 128, max(Ns)
    prob = regression_problem(X_big, d, noise=NOISE, generator=g, dtype=torch.float64)
    arch = Architecture((D0,) + (d,) * N)
    print(f"\nwhere the fast step's time goes: d = {d}, N = {N}, f64 (each phase timed alone)")
    breakdown(arch, prob, init.random_blocks(arch, generator=g, dtype=torch.float64), LR, budget=budget,
              min_reps=min_reps, profile=args.profile)
    footer_load(load)


def kernels_alone(row: dict, dtype: torch.dtype, peak: float, budget: float, min_reps: int) -> None:
    """One line: the kernels an N = 2 step cannot do without, timed alone at its shapes (no other work between
    them), against the time the row's useful flops take at 50 % of ``peak``: its d×d0 products (useful_flops:
    three framed, four per layer), λ_max of the d×d Gram matrix (optim.balance's spectral.lambda_max, warm as
    in a run's late steps; the cold call printed beside) and its d³ products (framed: Newton–Schulz on the
    d×d polar factor, 2n, and the layer times it, 1; per layer: projection, 2, and Newton–Schulz, 2n)."""
    d = row["d"]
    framed = network.frameable(1, d)
    n = row["n_frame"] if framed else row["n_it"]
    g = torch.Generator().manual_seed(1)
    top, W1 = (torch.randn(*shape, generator=g, dtype=dtype) for shape in ((d, d), (d, D0)))
    gram = W1 @ W1.mT
    products = (lambda: (top.mT @ W1, W1 @ W1.mT, W1 @ W1.mT)) if framed else \
        (lambda: (top @ W1, top.mT @ W1, W1 @ W1.mT, W1 @ W1.mT))
    cubes = 2 * n + (1 if framed else 2)
    warm = spectral.Warm()
    spectral.lambda_max(gram, warm)  # a run's late steps: the last top eigenvector certifies the next λ_max
    again = gram.clone()
    parts = {f"{3 if framed else 4} d×d0 products": (products, 1),
             "λ_max warm": (lambda: spectral.lambda_max(again, warm), 1),
             f"{cubes:g} d³ products": (lambda: top @ top, cubes)}
    time_ms = lambda fn: 1e3 * median_time(fn, min_reps=min_reps, budget_s=budget / 3).seconds
    ms = {name: times * time_ms(fn) for name, (fn, times) in parts.items()}
    allowed = 1e3 * useful_flops(2, d, D0, row["n_it"], row["n_frame"], False) / (0.5 * peak)
    total = sum(ms.values())
    print(f"  {row['dtype']} d={d}: 50 % allows {allowed:.2f} ms; alone: "
          + ", ".join(f"{name} {v:.2f}" for name, v in ms.items())
          + f" = {total:.2f} ms ({100 * total / allowed:.0f} % of it; the row's step: {row['ms']:.2f} ms; "
          f"λ_max cold, as early in a run: {time_ms(lambda: spectral.lambda_max(gram)):.2f} ms)", flush=True)


def per_step(t: Timing) -> Timing:
    """A timing of cycles (carry.REORTHO steps each) as the mean per step."""
    return Timing(t.seconds / carry.REORTHO, t.reps, t.clean, t.faults / carry.REORTHO)


def summary(rows, text, which, key, target, below: bool = False) -> None:
    """One target line: the worst row and every row that misses ``target`` (≥ it, or ≤ it with ``below``)."""
    sel = [r for r in rows if which(r)]
    if not sel:
        return
    bad = [r for r in sel if (r[key] > target if below else r[key] < target)]
    fmt = {"peak": lambda v: f"{100 * v:.0f}%", "redundant": lambda v: f"{v:.2f}",
           "faults": lambda v: f"{v:.0f}"}.get(key, fmt_ratio)
    lo = (max if below else min)(sel, key=lambda r: r[key])
    verdict = "met on all rows" if not bad else ("missed on " + ", ".join(
        f"{r['dtype']} N={r['N']} d={r['d']} ({fmt(r[key])})" for r in bad))
    print(f"  {'MISS' if bad else 'PASS'}  {text}: {'max' if below else 'min'} {fmt(lo[key])} "
          f"({lo['dtype']} N={lo['N']} d={lo['d']}); {verdict}")


if __name__ == "__main__":
    main()
