"""One step of Riemannian gradient descent (RGD) or plain gradient descent (GD), all layers from one iterate.

RGD: free layer W ← W − μ G; orthonormal layer (tall representative V, V ᵀV = I)
     V ← Retr_V(−(μ/s²) P_V(G_V)), s² = ‖W_free‖₂² (spectral), ‖W_free‖_F² (frobenius) or 1 (none).
GD:  every layer W ← W − μ G, no constraint (the unconstrained baseline, from the same initialisation).
"""
from __future__ import annotations

import math

import torch

from . import carry, spectral, stiefel
from .network import Architecture, Frame, to_tall
from .specs import Optimizer
from .workspace import Workspace

def balance(W_free: torch.Tensor | None, how: str, ws: Workspace | None = None) -> torch.Tensor | float:
    """s² of the free layer W (d_out × d_in): λ_max(W Wᵀ) on the smaller Gram matrix (spectral.lambda_max,
    warm from the last step's where ``ws`` keeps one), ‖W‖_F², or 1."""
    if W_free is None or how == "none":
        return 1.0
    if how == "frobenius":
        return (W_free * W_free).sum()
    gram = W_free @ W_free.mT if W_free.shape[0] <= W_free.shape[1] else W_free.mT @ W_free
    return spectral.lambda_max(gram, ws.keep("balance", spectral.Warm) if ws else None)


def step(blocks: list[torch.Tensor], grads: list[torch.Tensor], arch: Architecture, opt: Optimizer,
         frames: list[Frame | None] | None = None, ws: Workspace | None = None) -> list[torch.Tensor]:
    """The next iterate; every block is updated from the same (blocks, grads).

    ``grads`` and ``frames`` as in losses.Evaluation (block_grads may be None where a frame holds it).
    ``frames`` (losses.Evaluation.frames) hold the gradient of an orthogonal square block as
    G_i = C_j M C_{j−1}ᵀ with W_i = C_j C_{j−1}ᵀ; then P_W(G_i) = C_j skew(M) C_{j−1}ᵀ, W_i + ξ_i =
    C_j A C_{j−1}ᵀ with A = I − (μ/s²) skew M, and the polar retraction is C_j polar(A) C_{j−1}ᵀ — the
    same step without a per-layer projection or Newton–Schulz loop over the stack (QR: qr(C_j A C_{j−1}ᵀ)).
    With ``ws``, a framed polar update is written into it (valid until the step after next: two buffers
    alternate), its temporaries reuse it, and ``ws`` vouches for it as orthogonal (network.hidden_products
    then frames it without probing it); the free layer's update goes into ``ws`` too (two buffers alternate).
    """
    frames = frames or [None] * len(blocks)
    full = lambda G, F: G if G is not None else F.gradient()
    if opt.method == "gd":
        return [torch.add(B, full(G, F), alpha=-opt.lr) for B, G, F in zip(blocks, grads, frames)]
    layout = arch.blocks()
    free = next((B[0] for B, b in zip(blocks, layout) if not b.constrained), None)
    s2 = float(balance(free, opt.balance, ws))  # one number: the scalar arithmetic below stays off the tensors
    lr_orth = opt.lr / s2 if s2 else math.inf
    out = []
    for n, (B, G, b, F) in enumerate(zip(blocks, grads, layout, frames)):
        if not b.constrained:  # W − μG in one pass (with ``ws``, into its buffer: no fresh pages to fault in)
            out.append(torch.add(B, full(G, F), alpha=-opt.lr, out=ws.other(("free", n), B) if ws else None))
            continue
        if F is not None and opt.retraction in ("polar", "qr"):
            # I − (μ/s²) skew M = I + (μ/2s²)(Mᵀ − M): two passes, I a shared one
            A = torch.add(stiefel.eye_like(F.M), torch.sub(F.M.mT, F.M), alpha=lr_orth / 2)
            out.append(framed_update(F, A, B, n, opt.retraction, arch, ws))
            continue
        G = full(G, F)
        V, GV = to_tall(B, arch), to_tall(G, arch)
        xi = -lr_orth * stiefel.project(V, GV)
        out.append(to_tall(stiefel.retract(V, xi, opt.retraction), arch))
    return out


def framed_update(F: Frame, A: torch.Tensor, B: torch.Tensor, n: int, retraction: str, arch: Architecture,
                  ws: Workspace | None) -> torch.Tensor:
    """Block ``n`` (B, in its frame F) retracted from W_i + ξ_i = C_j A C_{j−1}ᵀ: polar, C_j polar(A) C_{j−1}ᵀ
    (by carry.polar_step where carry.applies: the result carries its frame to the next step);
    qr, qr(C_j A C_{j−1}ᵀ) (neither the gradient nor its projection is formed), by CholeskyQR near the
    manifold (stiefel.near_manifold(A − I)), else Householder. With ``ws`` the temporaries and the
    result are its buffers (Householder's column-major, as LAPACK writes them in place)."""
    if retraction == "polar" and carry.applies(F.chunks):  # the result carries its frame to the next step
        X = carry.polar_step(F.chunks, F.age, A, ws=ws, name=("carry", n),
                             out=ws.other(("next", n), B) if ws else None)
        if ws:
            ws.vouch("orthogonal", X)
        return X
    size = (F.chunks.slots,) + tuple(B.shape[1:])
    scratch = (ws.buffer(("tmp", n), size, B), ws.buffer(("x", n), size, B)) if ws else None
    if retraction == "polar":
        X = stiefel.polar_in_frame(F.chunks, A, out=ws.other(("next", n), B) if ws else None, scratch=scratch)
        if ws:  # orthogonal to rounding (the Newton–Schulz step): the next step's frame needs no probe
            ws.vouch("orthogonal", X)
        return X
    X = to_tall(F.chunks.sandwich(A, scratch), arch)
    if stiefel.near_manifold(A - torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)):
        # every layer's step C_j S C_{j−1}ᵀ has ‖S‖_F: CholeskyQR; Q in the other iterate buffer (the Gram
        # product first), R in the sandwich's first scratch (free again)
        bufs = (to_tall(ws.other(("next", n), B), arch), scratch[0][:X.shape[0]]) if ws else None
        return to_tall(stiefel.qr_q_near_orthonormal(X, out=bufs), arch)
    bufs = None
    if ws:  # Q in the other iterate buffer, R in the sandwich's first scratch (free again), both column-major
        R = scratch[0].view(-1)[:X.numel()].view(X.shape)
        bufs = (ws.other(("next_qr", n), to_tall(B, arch).mT).mT, R.mT)
    return to_tall(stiefel.qr_q(X, out=bufs), arch)

