"""Initialisations of an ODLNN's layers, returned stacked as in :func:`Architecture.blocks`.

random            free layer W = scale · G / √d_in (G standard Gaussian), orthonormal layers Haar.
teacher           a network of the same kind whose free layer is U diag(σ) Vᵀ, σ_j = scale · κ^{−j/(r−1)}.
teacher_perturbed each teacher layer W + δ ‖W‖_F E/‖E‖_F (E Gaussian), orthonormal ones projected back
                  by their polar factor: the local regime, at relative distance ≈ δ from a solution.
spectral          orthonormal layers Haar; the free layer chosen so that the product is σ̄ U_r V_rᵀ, the
                  least-squares map's top-r singular subspaces with the spectrum flattened to its mean
                  (for one-hot MNIST, whose P* has a nearly flat spectrum, that is the solution itself).
spectral_perturbed  the spectral start moved by :func:`perturb` to relative distance δ (model.init_delta).
All randomness comes from ``generator`` on the CPU, so a seed gives the same network on every device.
"""
from __future__ import annotations


import torch

from . import stiefel
from .checks import check_value
from .network import Architecture, end_to_end, layers, stack, to_tall
from .specs import InitSpec, check_start

def _gaussian(shape, generator, dtype, device):
    return torch.randn(*shape, generator=generator, dtype=dtype).to(device)


def _orthonormal_stack(arch: Architecture, count: int, rows: int, cols: int, generator, dtype, device):
    n, p = (rows, cols) if arch.orientation == "columns" else (cols, rows)
    Q = stiefel.random_point(n, p, count, generator=generator, dtype=dtype, device=device)
    return to_tall(Q, arch).contiguous()  # row-major like every later iterate (QR's Q is column-major)


def random_blocks(arch: Architecture, *, scale: float = 1.0, generator: torch.Generator,
                  dtype=torch.float64, device="cpu") -> list[torch.Tensor]:
    """Gaussian free layer of stated scale, Haar orthonormal layers."""
    check_value(InitSpec, "init_scale", scale, "model.init_scale")
    out = []
    for b in arch.blocks():
        if b.constrained:
            out.append(_orthonormal_stack(arch, b.count, b.rows, b.cols, generator, dtype, device))
        else:
            out.append(scale * _gaussian((b.count, b.rows, b.cols), generator, dtype, device) / b.cols ** 0.5)
    return out


def teacher_blocks(arch: Architecture, *, condition: float = 1.0, scale: float = 1.0,
                   generator: torch.Generator, dtype=torch.float64, device="cpu") -> list[torch.Tensor]:
    """A teacher of the same kind: Haar orthonormal layers, free layer with condition number ``condition`` ≥ 1
    (checked by its callers against data.TeacherSpec)."""
    out = random_blocks(arch, generator=generator, dtype=dtype, device=device)
    for k, b in enumerate(arch.blocks()):
        if not b.constrained:
            r = min(b.rows, b.cols)
            U = stiefel.random_point(b.rows, r, generator=generator, dtype=dtype, device=device)
            V = stiefel.random_point(b.cols, r, generator=generator, dtype=dtype, device=device)
            expo = torch.arange(r, dtype=dtype, device=device) / max(r - 1, 1)
            sigma = scale * torch.as_tensor(float(condition), dtype=dtype, device=device) ** (-expo)
            out[k] = ((U * sigma) @ V.mT)[None]
    return out


def perturb(blocks: list[torch.Tensor], arch: Architecture, *, delta: float,
            generator: torch.Generator) -> list[torch.Tensor]:
    """Each layer moved to relative distance δ in a random direction, ``arch``'s orthonormal layers
    projected (back) onto the manifold. ``blocks`` may be laid out for another free layer (a teacher
    of another kind): they are re-stacked for ``arch`` first."""
    check_value(InitSpec, "init_delta", delta, "model.init_delta")
    blocks = stack(layers(blocks), arch)
    out = []
    for B, b in zip(blocks, arch.blocks()):
        E = _gaussian(B.shape, generator, B.dtype, B.device)
        norm = lambda A: torch.linalg.matrix_norm(A)[:, None, None]
        W = B + delta * norm(B) * E / norm(E)
        out.append(to_tall(stiefel.polar_svd(to_tall(W, arch)), arch) if b.constrained else W)
    return out


def spectral_blocks(arch: Architecture, p_star: torch.Tensor, *, generator: torch.Generator) -> list[torch.Tensor]:
    """Haar orthonormal layers and a free layer W_f = A⁺ (σ̄ U_r V_rᵀ) B⁺, A/B the products above/below it."""
    check_start("spectral", arch)
    f = arch.free_index
    blocks = random_blocks(arch, generator=generator, dtype=p_star.dtype, device=p_star.device)
    r = min(arch.widths)
    U, s, Vh = torch.linalg.svd(p_star, full_matrices=False)
    P0 = s[:r].mean() * U[:, :r] @ Vh[:r]
    Ws = [W for B in blocks for W in B]
    eye = lambda d: torch.eye(d, dtype=p_star.dtype, device=p_star.device)
    above = end_to_end([W[None] for W in Ws[f:]]) if f < len(Ws) else eye(P0.shape[0])
    below = end_to_end([W[None] for W in Ws[: f - 1]]) if f > 1 else eye(P0.shape[1])
    Wf = torch.linalg.pinv(above) @ P0 @ torch.linalg.pinv(below)
    k = next(k for k, b in enumerate(arch.blocks()) if b.start == f - 1)
    blocks[k] = Wf[None]
    return blocks


def relative_distance(blocks: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """‖W − W_ref‖_F / ‖W_ref‖_F over all layers together (any stacking): :func:`perturb` puts a start at
    relative distance δ from ``reference`` before its projection onto the manifold."""
    a, b = layers(blocks), layers(reference)
    num = sum(float(torch.linalg.matrix_norm(x.to(y) - y) ** 2) for x, y in zip(a, b))
    den = sum(float(torch.linalg.matrix_norm(y) ** 2) for y in b)
    return (num / den) ** 0.5 if den > 0 else float("nan")
