"""Regression problems min_P L(P) = (1/2m) ‖P X − Y‖_F², X ∈ R^{d_0×m}, Y ∈ R^{d_N×m}, and their second moments.

Whitening convention: (1/m) X Xᵀ = I (Σ_xx = I). With Σ_yx = Y Xᵀ/m, the least-squares map
P* = Σ_yx Σ_xx⁺ and L* = L(P*), the loss splits exactly as L(P) = L* + ½ tr((P − P*) Σ_xx (P − P*)ᵀ):
the *excess* ½‖(P − P*) Σ_xx^{1/2}‖² is computed without the cancellation of ½tr(PΣPᵀ) − tr(PΣ_xy) + c.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import stiefel
from .init import teacher_blocks
from .network import Architecture, end_to_end, forward, layers
from .specs import WHITENINGS, TeacherSpec, check_samples

@dataclass(frozen=True)
class Moments:
    """Second moments of (X, Y): O(d_0²) numbers that replace the m samples for the squared loss."""
    sxx: torch.Tensor | None   # Σ_xx (d_0 × d_0); None when it is the identity to rounding
    syx: torch.Tensor          # Σ_yx = Y Xᵀ / m (d_N × d_0)
    p_star: torch.Tensor       # least-squares map Σ_yx Σ_xx⁺ (d_N × d_0)
    loss_star: float           # L* = min over linear maps
    loss_zero: float           # L(0) = ½ tr Σ_yy


@dataclass(frozen=True)
class Problem:
    """Samples, their moments, and the teacher's end-to-end map W* when there is one."""
    X: torch.Tensor
    Y: torch.Tensor
    moments: Moments
    target: torch.Tensor | None = None            # W* = the teacher's end-to-end map
    teacher: tuple[torch.Tensor, ...] | None = None  # the teacher's layers W*_1 … W*_N
    name: str = ""


def second_moments(X: torch.Tensor, Y: torch.Tensor) -> Moments:
    """Σ_xx, Σ_yx, P*, L*, L(0) from samples (columns of X and Y), in one pass over the data."""
    if not (bool(torch.isfinite(X).all()) and bool(torch.isfinite(Y).all())):
        raise ValueError("the data contain non-finite values (NaN or ±inf): no second moments")
    m = X.shape[1]
    sxx = X @ X.mT / m
    syx = Y @ X.mT / m
    loss_zero = 0.5 * float((Y * Y).sum()) / m
    eye = torch.eye(sxx.shape[0], dtype=X.dtype, device=X.device)
    is_identity = float((sxx - eye).abs().max()) <= 100 * torch.finfo(X.dtype).eps * max(1, sxx.shape[0])
    p_star = syx if is_identity else syx @ torch.linalg.pinv(sxx, hermitian=True)
    gain = 0.5 * float((p_star * (p_star @ (eye if is_identity else sxx))).sum())
    return Moments(None if is_identity else sxx, syx, p_star, max(loss_zero - gain, 0.0), loss_zero)


def whitened_gaussian(d: int, m: int, *, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """X = √m · Q with Q ∈ R^{d×m} having orthonormal rows, so (1/m) X Xᵀ = I exactly (needs m ≥ d)."""
    check_samples(m, d)
    G = torch.randn(m, d, generator=generator, dtype=dtype)
    return (m ** 0.5) * stiefel.qr_q(G).mT


def teacher_outputs(T: list[torch.Tensor], teacher: Architecture,
                    X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Y = f_teacher(X), and the teacher's end-to-end W* = W_N···W_1 when it is linear (else None)."""
    if teacher.linear:
        W_star = end_to_end(T)
        return W_star @ X, W_star
    return forward(T, teacher, X), None


def teacher_student(arch: Architecture, *, samples: int, condition: float = 1.0, scale: float = 1.0,
                    noise: float = 0.0, teacher_free_layer: str = "first", activation: str = "identity",
                    generator: torch.Generator, dtype=torch.float64, device="cpu") -> Problem:
    """Whitened Gaussian inputs, labels Y = f_teacher(X) (+ noise·Gaussian) from a teacher of ``arch``'s
    widths: W* X for the linear teacher, or the same network with ``activation`` between its layers."""
    TeacherSpec(samples, condition, scale, noise, teacher_free_layer)
    teacher = Architecture(arch.widths, teacher_free_layer, arch.orientation, activation)
    T = teacher_blocks(teacher, condition=condition, scale=scale, generator=generator, dtype=dtype)
    X = whitened_gaussian(arch.widths[0], samples, generator=generator, dtype=dtype)
    Y, W_star = teacher_outputs(T, teacher, X)
    if noise > 0:
        Y = Y + noise * torch.randn(Y.shape, generator=generator, dtype=dtype)
    X, Y = X.to(device), Y.to(device)
    return Problem(X, Y, second_moments(X, Y), None if W_star is None else W_star.to(device),
                   tuple(W.to(device) for W in layers(T)), f"teacher{arch.widths}")


def whiten(X: torch.Tensor, *, mode: str = "subspace", eps: float = 1e-6) -> torch.Tensor:
    """Centre the columns of X (d × m) and whiten them, with Σ = (1/m) X Xᵀ = U Λ Uᵀ.

    subspace: X ← Λ_r^{−1/2} U_rᵀ X on the r eigen-directions with λ > eps·λ_max; Σ_xx = I_r exactly.
    epsilon:  X ← U (Λ + eps·λ_max)^{−1/2} Uᵀ X keeping d rows; Σ_xx ≈ I on the range, 0 off it.
    """
    X = X - X.mean(dim=1, keepdim=True)
    lam, U = torch.linalg.eigh(X @ X.mT / X.shape[1])
    if mode == "subspace":
        keep = lam > eps * lam[-1]
        return (U[:, keep] / lam[keep].sqrt()).mT @ X
    if mode == "epsilon":
        return (U / (lam.clamp(min=0) + eps * lam[-1]).sqrt()) @ (U.mT @ X)
    raise ValueError(f"data.whiten={mode!r} is not one of {', '.join(WHITENINGS)}")
