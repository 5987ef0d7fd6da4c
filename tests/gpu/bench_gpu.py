"""The RGD step on a GPU: the three figures of the performance issue, in one run.

1. % of the GPU's matmul peak (useful flops, bench_core.useful_flops) of the fast step at d = 512, f32,
   widths (784, 512, …, 512), against an n³ matmul of the same dtype measured in the same run;
2. ms per step at N = 1024, d = 10 (f64 and f32), the stacked fast step (losses.squared_fast + optim.step);
3. trials per second of K trials of one small cell stepped together, against K = 1. The trials differ
   in μ only; their layers are stacked along a leading trial dimension (K, N, d, d) and one batched step
   moves all of them: gradients of L = L* + ½ tr((P − P*) Σ_xx (P − P*)ᵀ), P = W_N ··· W_1, by autograd
   through N batched products; projection Z − W sym(WᵀZ); polar retraction by a fixed number of
   Newton–Schulz iterations X ← X(3I − XᵀX)/2 (no data-dependent stop, so every K runs the same kernels).
   trials/s = K / (steps per trial × seconds per batched step).

    .venv/bin/python tests/gpu/bench_gpu.py          (needs CUDA)
    .venv/bin/python tests/gpu/bench_gpu.py --dry    (the same code on the CPU at small sizes)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bench")]

from bench_core import D0, useful_flops
from common import fast_step, ns_iterations, regression_problem, whitened_inputs
from orthoscale import data, init, losses, optim, stiefel
from orthoscale.network import Architecture
from orthoscale.workspace import Workspace

LR = 0.1
STEPS_PER_TRIAL = 2000   # the study's default stop.max_iters: a trial's length when it runs its budget
NS_ITERS = 8             # Newton–Schulz iterations of the batched retraction (quadratic: 8 reach rounding)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device: str, reps: int, warmup: int = 3) -> float:
    """Median seconds of fn() over ``reps`` calls after ``warmup``, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    A, B = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    C = torch.empty(n, n, dtype=dtype, device=device)
    return 2.0 * n ** 3 / seconds(lambda: torch.mm(A, B, out=C), device, reps=10)


def wide_rows(device: str, d: int, Ns: list[int], m: int, reps: int) -> None:
    """Figure 1: the fast step at width d, f32, widths (D0, d, …, d), useful flops over the matmul peak."""
    dtype = torch.float32
    peak = matmul_peak(device, dtype, 8192 if device == "cuda" else 512)
    print(f"matmul peak f32: {peak / 1e9:.0f} GFLOP/s")
    g = torch.Generator().manual_seed(0)
    X = whitened_inputs(D0, m, generator=g)
    prob = regression_problem(X, d, noise=0.1, generator=g, dtype=dtype)
    mom = prob.moments
    mom = dataclasses.replace(mom, **{f: getattr(mom, f).to(device) for f in ("sxx", "syx", "p_star")
                                      if getattr(mom, f) is not None})
    prob = dataclasses.replace(prob, X=prob.X.to(device), Y=prob.Y.to(device), moments=mom)
    for N in Ns:
        arch = Architecture((D0,) + (d,) * N)
        blocks = [B.to(device) for B in init.random_blocks(arch, generator=g, dtype=dtype)]
        opt, ws = optim.Optimizer(LR), Workspace()
        ev = losses.squared_fast(blocks, prob)
        mu = LR / optim.balance(blocks[0][0], "spectral")
        n_it = ns_iterations(blocks[1], -mu * stiefel.project(blocks[1], ev.grads[1]))
        F = ev.frames[1]
        n_frame = ns_iterations(torch.eye(d, dtype=dtype, device=device), -mu * (F.M - F.M.mT) / 2) if F else 0
        flops = useful_flops(N, d, D0, n_it, n_frame, prob.moments.sxx is not None)
        t = seconds(partial(fast_step, blocks, prob, arch, opt, ws), device, reps)
        print(f"  d={d} N={N:>3} f32: {1e3 * t:8.3f} ms/step, {flops / t / 1e9:8.0f} GFLOP/s useful = "
              f"{100 * flops / t / peak:5.1f} % of matmul peak")


def deep_rows(device: str, N: int, d: int, reps: int) -> None:
    """Figure 2: ms per step of the stacked fast step, widths (d,)*(N+1)."""
    for dtype in (torch.float64, torch.float32):
        arch = Architecture((d,) * (N + 1))
        g = torch.Generator().manual_seed(1)
        prob = data.teacher_student(arch, samples=20 * d, noise=0.1, generator=g, dtype=dtype, device=device)
        blocks = [B.to(device) for B in init.random_blocks(arch, generator=g, dtype=dtype)]
        opt, ws = optim.Optimizer(LR), Workspace()
        t = seconds(partial(fast_step, blocks, prob, arch, opt, ws), device, reps)
        print(f"  N={N} d={d} {str(dtype)[6:]}: {1e3 * t:.3f} ms/step")


def batched_trials(device: str, N: int, d: int, Ks: list[int], reps: int) -> None:
    """Figure 3: K trials (μ spread over a decade) stepped as one batch; trials/s against K = 1."""
    dtype = torch.float32
    arch = Architecture((d,) * (N + 1), free_layer="none")
    g = torch.Generator().manual_seed(2)
    prob = data.teacher_student(arch, samples=20 * d, noise=0.1, generator=g, dtype=dtype, device=device)
    P_star, loss_star = prob.moments.p_star, prob.moments.loss_star
    W0 = torch.stack([W[0] for W in init.random_blocks(Architecture((d,) * 2, free_layer="none"), generator=g,
                                                       dtype=dtype)] * N).to(device)   # (N, d, d)
    eye = torch.eye(d, dtype=dtype, device=device)

    def step(W: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """W (K, N, d, d) → the next iterate of every trial; mu (K,)."""
        V = W.detach().requires_grad_()
        P = V[:, 0]
        for i in range(1, N):
            P = V[:, i] @ P
        G, = torch.autograd.grad(0.5 * ((P - P_star) ** 2).sum(), V)
        with torch.no_grad():
            xi = -mu[:, None, None, None] * (G - V @ stiefel.sym(V.mT @ G))
            X = (V + xi) / stiefel.tangent_scale(xi)[..., None, None]
            for _ in range(NS_ITERS):
                X = X @ (1.5 * eye - 0.5 * X.mT @ X)
        return X

    print(f"  cell: N={N} d={d} f32, free_layer=none; {STEPS_PER_TRIAL} steps per trial; L* = {float(loss_star):.3g}")
    base = None
    for K in Ks:
        W = W0.expand(K, N, d, d).contiguous()
        mu = torch.logspace(-2, -1, K, dtype=dtype, device=device)
        t = seconds(partial(step, W, mu), device, reps)
        rate = K / (STEPS_PER_TRIAL * t)
        base = base or rate
        print(f"  K={K:>5}: {1e3 * t:8.3f} ms per batched step, {rate:9.2f} trials/s, {rate / base:7.1f}× K=1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="run on the CPU at small sizes (checks this script)")
    args = p.parse_args()
    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device visible: run with --dry on a machine without one", file=sys.stderr)
        return 1
    device = "cpu" if args.dry else "cuda"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 means f32: TF32 would be a different algorithm
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("1. fast step at d = 512, f32, % of matmul peak (useful flops)")
    wide_rows(device, 64 if args.dry else 512, [4, 8] if args.dry else [2, 4, 8, 16, 32],
              m=1000 if args.dry else 60_000, reps=3 if args.dry else 20)
    print("2. deep and narrow: ms per step")
    deep_rows(device, 64 if args.dry else 1024, 10, reps=3 if args.dry else 50)
    print("3. K trials of one small cell batched in one process")
    batched_trials(device, 8 if args.dry else 16, 16 if args.dry else 32,
                   [1, 4, 16] if args.dry else [1, 4, 16, 64, 256, 1024], reps=3 if args.dry else 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
