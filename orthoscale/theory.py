"""Local convergence rate of RGD / GD at a realizable solution W* (P(W*) = W_N···W_1 = P*, so ∇L(W*) = 0).

Linearisation, any first-order retraction: DΦ(W*)[v] = v − M·P_T(H v) on tangent v, H = J_Pᵀ(Σ_xx-map)J_P the
  Euclidean Hessian (zero residual), M = μ·D, D = 1 (free layer) or 1/s² (orthonormal layers; s² frozen as G(W*) = 0).
P-space: the nonzero eigenvalues λ_j of D·P_T·H are those of the symmetric PSD operator on R^{d_N×d_0}
  K(E) = J_P(D·P_T(J_Pᵀ(E Σ^½))) Σ^½;  gauge (W_i → Q_i W_i Q_{i−1}ᵀ) and normal directions have λ = 0 (DΦ = 1).
Rates: error ρ(μ) = max_j |1 − μλ_j|; loss (what rates.fit_rate measures on rel_excess) ρ(μ)²;
  μ_opt = 2/(λ_min + λ_max), ρ_opt = (λ_max − λ_min)/(λ_max + λ_min), stable iff μ < μ_max = 2/λ_max.
GD: no P_T and D = 1. Square widths with a free layer (RGD): λ ∈ {1} ∪ {1 + (N−1)(σ_a² + σ_b²)/(2s²) : a < b}.
Cost: one K = J_P and J_Pᵀ as batched products with the layers' fixed neighbours (``sandwiches``, built once:
  O(N d² (d_N + d_0)) memory), O(N d² (d_N + d_0)) per K; no parameter Hessian is formed.
  n = d_N d_0 ≤ dense_max: K on the identity basis (vmap) + eigvalsh, O(n·(N d³ + d_N d_0 d_1) + n³), exact;
  else Lanczos (scipy eigsh): λ_max, then λ_min from λ_max·I − K (or K⁺ by CG when K has a null space),
  O(Lanczos steps) K's, ×O(√κ) CG steps each on the K⁺ path; count is then None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import network, optim, specs, stiefel
from .data import Moments, Problem
from .architecture import check_choice
from .network import Architecture, to_tall

F64 = torch.float64
LANCZOS_TOL = 1e-10  # relative accuracy of the extreme Ritz values (0, scipy's default, means machine precision)
RTOL = 1e-9  # λ is "nonzero" when λ > RTOL·λ_max (K is evaluated in float64: its null eigenvalues are ~1e-15·λ_max)


class NotApplicable(ValueError):
    """The local theory has nothing to say here (nonlinear network, no curvature, not a solution)."""


class NotASolution(NotApplicable):
    """The point is not a realizable solution (P ≠ P*, or an orthonormal layer off its manifold)."""


@dataclass(frozen=True)
class LocalSpectrum:
    """Extreme nonzero eigenvalues of K; ``count`` = number of nonzero ones (None on the iterative path)."""
    lam_min: float
    lam_max: float
    count: int | None

    def error_rate(self, mu: float) -> float:
        """ρ(μ) = max_j |1 − μλ_j| (the extremes suffice): ‖P_{t+1} − P*‖ ≈ ρ ‖P_t − P*‖ (Σ-weighted)."""
        return max(abs(1 - mu * self.lam_min), abs(1 - mu * self.lam_max))

    def loss_rate(self, mu: float) -> float:
        """ρ(μ)²: the rate of L − L* (and of rel_excess, as fitted by rates.fit_rate)."""
        return self.error_rate(mu) ** 2

    @property
    def mu_opt(self) -> float:
        """2/(λ_min + λ_max), the μ minimising ρ(μ)."""
        return 2 / (self.lam_min + self.lam_max)

    @property
    def rate_opt(self) -> float:
        """ρ(μ_opt) = (λ_max − λ_min)/(λ_max + λ_min), the best error rate."""
        return (self.lam_max - self.lam_min) / (self.lam_max + self.lam_min)

    @property
    def loss_rate_opt(self) -> float:
        """ρ(μ_opt)², the best loss rate."""
        return self.rate_opt ** 2

    @property
    def mu_max(self) -> float:
        """2/λ_max: the iteration is locally stable iff μ < μ_max."""
        return 2 / self.lam_max


def _sqrt_psd(S: torch.Tensor | None) -> torch.Tensor | None:
    """Σ^½ = U diag(√max(λ, 0)) Uᵀ from eigh; None (the identity) stays None."""
    if S is None:
        return None
    lam, U = torch.linalg.eigh(S.to(F64))
    return (U * lam.clamp(min=0).sqrt()) @ U.mT


def sandwiches(blocks: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, (L, R) with L_i = W_N···W_{i+1} (k, d_N, d_i) and R_i = W_{i−1}···W_1 (k, d_{i−1}, d_0) for its
    k layers i: P = W_N···W_1 has derivative Σ_i L_i T_i R_i along T and adjoint G ↦ (L_iᵀ G R_iᵀ)_i."""
    Ws = network.layers(blocks)
    R = [torch.eye(Ws[0].shape[-1], dtype=Ws[0].dtype, device=Ws[0].device)]
    for W in Ws[:-1]:
        R.append(W @ R[-1])
    L = [torch.eye(Ws[-1].shape[-2], dtype=Ws[0].dtype, device=Ws[0].device)]
    for W in Ws[:0:-1]:
        L.append(L[-1] @ W)
    L.reverse()
    out, i = [], 0
    for B in blocks:
        out.append((torch.stack(L[i:i + B.shape[0]]), torch.stack(R[i:i + B.shape[0]])))
        i += B.shape[0]
    return out


def operator(blocks: list[torch.Tensor], arch: Architecture, moments: Moments, *, method: str = "rgd",
             balance: str = "spectral") -> Callable[[torch.Tensor], torch.Tensor]:
    """E ↦ K(E) = J_P(D·P_T(J_Pᵀ(E Σ^½))) Σ^½ for one E (d_N × d_0), float64; vmap it for a batch. J_P and J_Pᵀ
    are the products of :func:`sandwiches` (no autodiff: nothing beyond torch's eager kernels is loaded)."""
    blocks = [B.to(F64) for B in blocks]
    layout, root, parts = arch.blocks(), _sqrt_psd(moments.sxx), sandwiches(blocks)
    free = next((B[0] for B, b in zip(blocks, layout) if not b.constrained), None)
    inv_s2 = 1.0 / float(optim.balance(free, balance)) if method == "rgd" else 1.0
    root_times = (lambda E: E) if root is None else (lambda E: E @ root)

    def apply(E: torch.Tensor) -> torch.Tensor:
        G, dP = root_times(E), 0
        for B, (L, R), b in zip(blocks, parts, layout):
            C = L.mT @ G @ R.mT  # J_Pᵀ: the gradient of ⟨G, P⟩ in this block's layers
            if method == "rgd" and b.constrained:  # D·P_T on the tall representative
                C = inv_s2 * to_tall(stiefel.project(to_tall(B, arch), to_tall(C, arch)), arch)
            dP = dP + (L @ C @ R).sum(-3)  # J_P
        return root_times(dP)
    return apply


def check_solution(blocks: list[torch.Tensor], arch: Architecture, moments: Moments, *, method: str = "rgd",
                   tol: float | None = None) -> None:
    """NotASolution unless ‖(P − P*)Σ^½‖_F ≤ tol‖P*Σ^½‖_F (L − L* ≈ 0, so ∇L ≈ 0) and, for RGD, the
    orthonormal layers are on their manifold to tol (else the architecture cannot represent the point).
    Default tol: 1e-6 for float64 blocks, 1e-3 for lower precision."""
    tol = tol if tol is not None else (1e-6 if blocks[0].dtype == F64 else 1e-3)
    if method == "rgd" and (orth := network.orthonormality_error(blocks, arch)) > tol:
        raise NotASolution(f"not a solution: the orthonormal layers are off the manifold (max ‖WᵀW − I‖_F = "
                           f"{orth:.2e}); model.free_layer={arch.free_layer} cannot represent this point")
    root = _sqrt_psd(moments.sxx)
    P, P_star = network.end_to_end([B.to(F64) for B in blocks]), moments.p_star.to(F64)
    weigh = (lambda A: A) if root is None else (lambda A: A @ root)
    err = float(torch.linalg.matrix_norm(weigh(P - P_star))) / max(float(torch.linalg.matrix_norm(weigh(P_star))),
                                                                    1e-300)
    if not err <= tol:
        raise NotASolution(f"not a solution: ‖(P − P*)Σ^½‖/‖P*Σ^½‖ = {err:.2e} > {tol:g}, so L > L* and ∇L ≠ 0")


def local_spectrum(blocks: list[torch.Tensor], arch: Architecture, moments: Moments, *, method: str = "rgd",
                   balance: str = "spectral", tol: float | None = None, dense_max: int = 600) -> LocalSpectrum:
    """Extreme nonzero eigenvalues of K at the solution ``blocks`` (laid out for ``arch``); see the module doc.

    Raises NotASolution (a ValueError, message "not a solution: …") when the point is not a solution to ``tol``
    (see :func:`check_solution`). d_N·d_0 ≤ ``dense_max``: dense and exact; otherwise Lanczos (count = None).
    """
    check_choice("optim.method", method, specs.METHODS)
    check_choice("optim.balance", balance, specs.BALANCES)
    if not arch.linear:
        raise NotApplicable("the local theory is for linear networks (model.activation=identity)")
    network.check_blocks(blocks, arch)
    check_solution(blocks, arch, moments, method=method, tol=tol)
    K = operator(blocks, arch, moments, method=method, balance=balance)
    shape = (arch.widths[-1], arch.widths[0])
    n = shape[0] * shape[1]
    if n <= dense_max:
        basis = torch.eye(n, dtype=F64, device=blocks[0].device).reshape(n, *shape)
        M = torch.func.vmap(K, chunk_size=256)(basis).reshape(n, n)
        lam = torch.linalg.eigvalsh(0.5 * (M + M.mT))
        if not float(lam[-1]) > 0:
            raise NotApplicable("K = 0: no curvature at this point")
        nonzero = lam[lam > RTOL * lam[-1]]
        return LocalSpectrum(float(nonzero[0]), float(nonzero[-1]), int(nonzero.numel()))
    return _lanczos(K, shape, blocks[0].device)


def _lanczos(K: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, int], device) -> LocalSpectrum:
    """λ_max by eigsh(K, 'LA'); λ_min by eigsh(λ_max·I − K, 'LA'), or, when that finds null(K) (λ = 0), by
    eigsh(K⁺, 'LA') with K⁺x = CG(K, CG(K, Kx)) (CG from 0 stays in range(K), so null(K) maps to 0)."""
    from scipy.sparse.linalg import LinearOperator, cg, eigsh

    n = shape[0] * shape[1]
    op = lambda f: LinearOperator((n, n), matvec=f, dtype=np.float64)

    def matvec(x: np.ndarray) -> np.ndarray:
        return K(torch.as_tensor(np.ravel(x), dtype=F64, device=device).reshape(shape)).reshape(-1).cpu().numpy()
    v0 = np.random.default_rng(0).standard_normal(n)
    lam_max = float(eigsh(op(matvec), k=1, which="LA", v0=v0, tol=LANCZOS_TOL, return_eigenvectors=False)[0])
    if not lam_max > 0:
        raise NotApplicable("K = 0: no curvature at this point")
    theta, x = eigsh(op(lambda x: lam_max * np.ravel(x) - matvec(x)), k=1, which="LA", v0=v0, tol=LANCZOS_TOL)
    if lam_max - theta[0] <= RTOL * lam_max:  # the top of λ_max·I − K is null(K): invert K on its range
        def pinv(x):  # K⁺x; atol in units of ‖x‖ so that a (restart) vector in null(K) maps to 0 at once
            scale = 1e-12 * float(np.linalg.norm(x))
            solve = lambda b, a: cg(op(matvec), b, rtol=1e-12, atol=a, maxiter=n)[0]
            return solve(solve(matvec(x), scale * lam_max), scale)
        _, x = eigsh(op(pinv), k=1, which="LA", v0=v0)
    x = x[:, 0]
    return LocalSpectrum(float(x @ matvec(x)) / float(x @ x), lam_max, None)  # Rayleigh quotient on K


def predicted_loss_rate(problem: Problem, arch: Architecture, mu: float, *, method: str = "rgd",
                        balance: str = "spectral") -> float | None:
    """ρ(μ)² at the teacher W* = problem.teacher re-stacked for ``arch``; None without a teacher or when the
    teacher is not a solution for ``arch`` (e.g. noisy labels, or a free layer the architecture lacks)."""
    if problem.teacher is None:
        return None
    try:
        spec = local_spectrum(network.stack(list(problem.teacher), arch), arch, problem.moments,
                              method=method, balance=balance)
    except NotASolution:
        return None
    return spec.loss_rate(mu)
