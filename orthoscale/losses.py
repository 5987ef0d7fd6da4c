"""Loss, excess loss L − L* and Euclidean gradients G_i = ∂L/∂W_i, by two paths.

fast     squared loss through the second moments: with P = W_N···W_1, D = P − P*, ∂L/∂P = D Σ_xx and
         G_i = (W_N···W_{i+1})ᵀ D Σ_xx (W_{i−1}···W_1)ᵀ; O(N d³ + d_N d_0 d_1) a step, independent of m.
generic  any differentiable loss of f(X) on the m samples, any activation, gradients by autograd.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .data import Problem
from .network import Architecture, Frame, end_to_end, forward, hidden_products
from .specs import LOSS_NAMES
from .workspace import Workspace

LOSSES = {  # ℓ(f(X), Y) averaged over the m samples (columns)
    "squared": lambda out, Y: 0.5 * ((out - Y) ** 2).sum() / Y.shape[1],
    "huber": lambda out, Y: F.huber_loss(out, Y, reduction="sum", delta=1.0) / Y.shape[1],
    "cross_entropy": lambda out, Y: F.cross_entropy(out.T, Y.T),
}
assert tuple(LOSSES) == LOSS_NAMES


@dataclass(frozen=True)
class Evaluation:
    loss: torch.Tensor             # L (scalar)
    excess: torch.Tensor           # L − L*, L* = the linear least-squares minimum for the squared loss, else 0
    block_grads: list[torch.Tensor | None]  # one per block, shaped like it; None where ``frames`` holds it
    end_to_end: torch.Tensor | Callable[[], torch.Tensor] | None  # W_N···W_1 (linear networks), or what forms it
    frames: list[Frame | None] | None = None  # per block: its gradient C_j M C_{j−1}ᵀ in the block's frame
    in_loss: bool = False  # block_grads[0] = G is what the loss sums, L − L* = ½‖G‖²: finite where L is

    @functools.cached_property
    def product(self) -> torch.Tensor | None:
        """P = W_N···W_1 for linear networks (formed on first use where the gradients did not need it)."""
        P = self.end_to_end
        return P() if callable(P) else P

    def _pairs(self):
        return zip(self.block_grads, self.frames or [None] * len(self.block_grads))

    @functools.cached_property
    def grads(self) -> list[torch.Tensor]:
        """G_i = ∂L/∂W_i for every block, shaped like it (a framed block's on first use)."""
        return [G if G is not None else F.gradient() for G, F in self._pairs()]

    def finite(self) -> bool:
        """Loss and gradients all finite (a framed block's gradient through its M and C): each part's least
        and greatest entry finite (one aminmax pass, which propagates NaN; isfinite(x).all() costs ~9× as
        much: a boolean temporary and a slow reduction, 0.1 ms a step at 128 × 784). A gradient the loss
        sums the squares of (``in_loss``) is not passed over again: a NaN or ±inf in it makes L so, and
        so does a sum of squares that overflows."""
        pairs = list(self._pairs())[1 if self.in_loss else 0:]
        parts = [self.loss] + [G if G is not None else F.M for G, F in pairs]
        return all(math.isfinite(float(v)) for x in parts for v in torch.aminmax(x))


def squared_fast(blocks: list[torch.Tensor], problem: Problem, ws: Workspace | None = None) -> Evaluation:
    """Squared loss and its gradients from the second moments (linear networks only); frames in ``ws``.

    Where W_2 … W_N are one framed block (orthogonal square: its C_k is the top T, TᵀT = I) and Σ_xx = I,
    G_1 = Tᵀ(T W_1 − P*) = W_1 − TᵀP* and L − L* = ½‖T G_1‖² = ½‖G_1‖²: one d×d_0 product, not
    two, and P = T W_1 is formed only if asked for (:attr:`Evaluation.product`)."""
    mom = problem.moments
    chain = hidden_products(blocks, ws)
    W1 = blocks[0][0]
    framed = len(blocks) == 2 and chain.frames[0] is not None
    if framed and mom.sxx is None:
        # P may be asked for after the next step: a scanned frame's buffer is its scan's, a carried one's
        # stays as it is until the step after next (carry.polar_step alternates two)
        top = chain.top if chain.frames[0].age is not None else chain.top.clone()
        G1 = torch.addmm(W1, top.mT, mom.p_star, alpha=-1)  # W1 − TᵀP* in one pass
        g = G1.view(-1)
        excess, P = torch.dot(g, g).mul_(0.5), lambda: top @ W1
    else:
        P = chain.top @ W1
        D = P - mom.p_star
        Gp = D if mom.sxx is None else D @ mom.sxx
        excess = 0.5 * torch.dot(D.reshape(-1), Gp.reshape(-1))  # ½ tr(D Σ_xx Dᵀ), no temporary
        G1 = chain.top.mT @ Gp
    grads, frames = [G1[None]], [None]
    if framed:  # M = C_kᵀ (Gp W1ᵀ) = G1 W1ᵀ: neither K nor the d³ product C_kᵀK
        frame = chain.frames[0]
        grads.append(None)
        frames.append(Frame(frame.prefixes, G1 @ W1.mT, frame.age))
    elif len(blocks) > 1:
        K = Gp @ W1.mT
        for b in range(len(blocks) - 1):
            G, F = chain.gradient(b, K)
            grads.append(G)
            frames.append(F)
    return Evaluation(mom.loss_star + excess, excess, grads, P, frames, in_loss=framed and mom.sxx is None)


def generic(blocks: list[torch.Tensor], arch: Architecture, problem: Problem, loss: str) -> Evaluation:
    """Loss of f(X) on the samples and its gradients by autograd."""
    params = [B.detach().requires_grad_() for B in blocks]
    with torch.enable_grad():
        value = LOSSES[loss](forward(params, arch, problem.X), problem.Y)
        grads = list(torch.autograd.grad(value, params))
    value = value.detach()
    star = problem.moments.loss_star if (loss == "squared" and arch.linear) else 0.0
    product = end_to_end(blocks) if arch.linear else None
    return Evaluation(value, value - star, grads, product)


def evaluate(blocks: list[torch.Tensor], arch: Architecture, problem: Problem, loss: str = "squared",
             path: str = "fast", ws: Workspace | None = None) -> Evaluation:
    """Dispatch to a resolved path ('fast' or 'generic'); ``ws`` as in :func:`squared_fast`."""
    if path == "fast":
        return squared_fast(blocks, problem, ws)
    return generic(blocks, arch, problem, loss)
