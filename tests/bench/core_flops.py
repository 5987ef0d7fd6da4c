"""bench_core's problem (widths (D0, d, …, d), lr LR, noise NOISE) and the useful flops of its fast step,
shared with per_core.py, which times the same step one trial per core."""
from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ns_iterations  # noqa: E402
from orthoscale import carry, losses, network, optim, scan, stiefel  # noqa: E402

D0 = 784            # MNIST input dimension
LR = 0.1
NOISE = 0.1


def useful_flops(N: int, d: int, d0: int, n_it: float, n_frame: float, sxx: bool) -> int:
    """Matmul flops one fast-path RGD step needs, counted from the algorithm, not from the implementation.

    Every product of an (a×b) by a (b×c) matrix counts 2abc; k = N − 1 orthonormal d×d layers W_2 … W_N,
    framed (network.frameable: k > 2, or any k from d = scan.WIDE on) or per layer.
    Framed, Σxx = I (top T = C_k orthogonal, losses.squared_fast): TᵀP*, M = G1·W1ᵀ, the Gram W1·W1ᵀ of s²  6d²d0
    else: P = top·W1, G1 = topᵀ·Gp, the Gram, K = Gp·W1ᵀ (per layer) or M = G1·W1ᵀ (framed)
                                                                                  8d²d0 [+ 2d·d0² if Σxx ≠ I]
    framed (the run carries its frame from step to step, carry.py; the mean step of a cycle of
    carry.REORTHO steps, the frame at hand, no prefix scan):                           d³-products
      R = polar(I − (μ/s²) skew M) by Newton–Schulz, n_frame iterations on one d×d      2 n_frame
      narrow (d < scan.WIDE): the frame times the d×d Schur basis, the layers C'_j C'_{j−1}ᵀ   1 + k + (k − 1)
      wide: powers Rʲ by doubling (k − 1, one Newton–Schulz step on R and on each of the
        ⌈log₂k⌉ − 1 later multipliers), the frame C_j Rʲ, the layers C'_j C'_{j−1}ᵀ  2⌈log₂k⌉ + (k − 1) + k + (k − 1)
      one Newton–Schulz step on the frame every carry.REORTHO steps                       2k / REORTHO
    per layer (k ≤ 2, d < scan.WIDE): T_i and S_i by sequential chains 2(k − 1), G_i = S_iᵀ·K·T_iᵀ 2k − 2
      (T_1 = S_k = I are not multiplied), projection 2k,
      n Newton–Schulz iterations of the polar retraction 2nk (n measured at this iterate, ns_iterations).
    Elementwise work, norms, λ_max, the d×d Schur form and SVD are not counted, so GF/s under-reports the
    work slightly. What the implementation executes (the first step's scan; the check of orthogonality) is
    counted separately by torch.utils.flop_counter over a cycle: column 'exec/useful'.
    """
    k = N - 1
    framed = network.frameable(k, d)
    if framed:
        frame = 1 + k if d < scan.WIDE else 2 * math.ceil(math.log2(k)) + (k - 1) + k
        cubes = 2 * n_frame + frame + (k - 1) + 2 * k / carry.REORTHO
    else:
        cubes = 2 * max(k - 1, 0) + (2 * k - 2) + 2 * k + 2 * n_it * k
    moments = 8 * d * d * d0 + 2 * d * d0 * d0 if sxx else (6 if framed else 8) * d * d * d0
    return int(2 * d ** 3 * cubes) + moments


def run_flops(run: list[torch.Tensor], prob) -> tuple[float, float, int]:
    """(NS it, NS it of the framed update, useful_flops) of one step at a run's iterate ``run``."""
    N, d, dtype = run[1].shape[0] + 1, run[0].shape[1], run[0].dtype
    ev = losses.squared_fast(run, prob)
    lr_orth = LR / optim.balance(run[0][0], "spectral")
    n_it = ns_iterations(run[1], -lr_orth * stiefel.project(run[1], ev.grads[1]))
    S = lr_orth * (ev.frames[1].M - ev.frames[1].M.mT) / 2 if ev.frames[1] is not None else None
    n_frame = ns_iterations(torch.eye(d, dtype=dtype), -S) if S is not None else 0
    return n_it, n_frame, useful_flops(N, d, D0, n_it, n_frame, prob.moments.sxx is not None)
