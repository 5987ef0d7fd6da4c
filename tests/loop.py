"""Per-layer reference of the fast path and of one RGD step: a Python loop over W_1 … W_N.

This is how a straightforward implementation reads; the stacked code must match it to rounding,
and the benchmarks measure against it.
"""
from __future__ import annotations

import torch

from orthoscale import stiefel
from orthoscale.data import Problem
from orthoscale.network import Architecture
from orthoscale.optim import Optimizer, balance


def gradients(Ws: list[torch.Tensor], problem: Problem) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(excess loss, [G_1 … G_N]) with G_i = (W_N···W_{i+1})ᵀ D Σ_xx (W_{i−1}···W_1)ᵀ, by explicit loops."""
    n = len(Ws)
    below = [torch.eye(Ws[0].shape[1], dtype=Ws[0].dtype, device=Ws[0].device)]
    for W in Ws:
        below.append(W @ below[-1])
    above = [torch.eye(Ws[-1].shape[0], dtype=Ws[0].dtype, device=Ws[0].device)]
    for W in reversed(Ws):
        above.append(above[-1] @ W)
    above.reverse()  # above[i] = W_N ··· W_{i+1} (0-based: product of Ws[i:]), above[n] = I
    D = below[-1] - problem.moments.p_star
    Gp = D if problem.moments.sxx is None else D @ problem.moments.sxx
    grads = [above[i + 1].mT @ Gp @ below[i].mT for i in range(n)]
    return 0.5 * (D * Gp).sum(), grads


def step(Ws: list[torch.Tensor], grads: list[torch.Tensor], arch: Architecture, opt: Optimizer) -> list[torch.Tensor]:
    """One RGD/GD step, one layer at a time."""
    if opt.method == "gd":
        return [W - opt.lr * G for W, G in zip(Ws, grads)]
    f = arch.free_index
    s2 = balance(Ws[f - 1] if f else None, opt.balance)
    out = []
    for i, (W, G) in enumerate(zip(Ws, grads), start=1):
        if not arch.constrained(i):
            out.append(W - opt.lr * G)
            continue
        rows = arch.orientation == "rows"
        V, GV = (W.T, G.T) if rows else (W, G)
        V = stiefel.retract(V, -(opt.lr / s2) * stiefel.project(V, GV), opt.retraction)
        out.append(V.T if rows else V)
    return out
