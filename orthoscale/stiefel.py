"""The Stiefel manifold St(n, p) = {W ∈ R^{n×p} : WᵀW = I_p}, n ≥ p, with the Euclidean metric.

Every function takes stacks: W, Z, ξ have shape (..., n, p) and the leading dimensions are a batch.
Points are *tall* (orthonormal columns); a layer with orthonormal rows is stored as its transpose.
"""
from __future__ import annotations

import functools
import math

import torch

from . import scan
from .specs import RETRACTIONS

EPS64 = torch.finfo(torch.float64).eps


def sym(A: torch.Tensor) -> torch.Tensor:
    """sym(A) = (A + Aᵀ)/2 on the last two dims."""
    return 0.5 * (A + A.mT)


def eye_like(W: torch.Tensor) -> torch.Tensor:
    """I_p broadcastable against WᵀW, for W of shape (..., n, p) (:func:`identity`: shared, read only)."""
    return identity(W.shape[-1], W.dtype, W.device)


@functools.lru_cache(maxsize=32)
def identity(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """I_n: one shared tensor per (n, dtype, device), to be read, never written."""
    return torch.eye(n, dtype=dtype, device=device)


def add_product(C: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """C + α A B in one GEMM call (addmm, or baddbmm over the flattened leading dimensions); operands
    whose leading dimensions differ (broadcasting) take a separate product and sum instead."""
    if not C.shape[:-2] == A.shape[:-2] == B.shape[:-2]:
        return C + alpha * (A @ B)
    if C.dim() == 2:
        return torch.addmm(C, A, B, alpha=alpha)
    flat = lambda T: T.reshape(-1, *T.shape[-2:])
    return torch.baddbmm(flat(C), flat(A), flat(B), alpha=alpha).view(C.shape)


def project(W: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Tangent projection P_W(Z) = Z − W sym(WᵀZ); with the Euclidean metric it is also egrad → rgrad.
    Formed as Z − ½ W (S + Sᵀ), S = WᵀZ: the ½ and the subtraction ride in the second GEMM call."""
    S = W.mT @ Z
    return add_product(Z, W, S + S.mT, -0.5)


def orthonormality_error(W: torch.Tensor) -> torch.Tensor:
    """‖WᵀW − I‖_F per matrix: shape (...,). I comes off the Gram's diagonal in place (no broadcast
    temporary)."""
    E = W.mT @ W
    E.diagonal(dim1=-2, dim2=-1).sub_(1)
    return torch.linalg.matrix_norm(E)


def random_point(n: int, p: int, *batch: int, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Haar-distributed point(s) of St(n, p): the sign-fixed Q factor of a Gaussian (..., n, p)."""
    if n < p:
        raise ValueError(f"St(n, p) needs n ≥ p, got n={n}, p={p}")
    G = torch.randn(*batch, n, p, generator=generator, dtype=dtype, device="cpu").to(device)
    return qr_q(G)


def qr_q(A: torch.Tensor, *, out: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Q of the QR decomposition A = QR with diag(R) > 0 (the unique such Q when A has full column rank).

    ``out``: buffers for Q and R; column-major ones (the ``.mT`` of contiguous stacks, as LAPACK works)
    are written in place, so that a large stack takes no fresh memory. The signs are fixed in place."""
    Q, R = torch.linalg.qr(A, out=out)
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Q.mul_(signs.unsqueeze(-2))


NEAR_STEP = 1.0  # ‖ξ‖_F up to which W + ξ counts as near the manifold: κ(W + ξ)² ≤ 1 + ‖ξ‖_F² ≤ 2


def near_manifold(xi: torch.Tensor) -> bool:
    """Whether every W + ξ of a stack is near the manifold (‖ξ‖_F ≤ NEAR_STEP, ξ (..., n, p) tangent at W):
    where :func:`qr_q_near_orthonormal` is as accurate as Householder's QR."""
    return bool((torch.linalg.matrix_norm(xi) <= NEAR_STEP).all())


def qr_q_near_orthonormal(A: torch.Tensor, *, out: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`qr_q` of A (..., n, p) with σ(A) ⊂ [1, √2] (W + ξ, W on St(n, p), ξ tangent and
    :func:`near_manifold`: AᵀA = I + ξᵀξ), by CholeskyQR: R = chol(AᵀA)ᵀ (diag(R) > 0), Q = A R⁻¹. A Gram
    product, a p×p Cholesky factorisation and a triangular solve, BLAS-3 throughout, instead of Householder
    reflections (half of them BLAS-2): 1.5–2.5× faster at p = 128–512 here, and as orthonormal,
    ‖QᵀQ − I‖ ≲ eps·κ(A)²·p with κ² ≤ 2.
    ``out``: buffers (Q, R) shaped like A and like AᵀA (the Gram product goes into Q's first). The caller
    vouches for the spectrum; should a factorisation still fail in rounding, the whole stack takes :func:`qr_q`.
    The factor is taken as the lower one of the (symmetric) Gram product's transpose, written column-major
    into R's transpose: LAPACK's own layout, no copies in or out (a quarter faster than the upper one of a
    row-major stack of 15 × 512²)."""
    Q, R = out if out is not None else (torch.empty_like(A), A.new_empty(A.shape[:-2] + (A.shape[-1],) * 2))
    gram = Q if Q.shape == R.shape else Q.new_empty(R.shape)
    torch.matmul(A.mT, A, out=gram)
    _, info = torch.linalg.cholesky_ex(gram.mT, out=(R.mT, R.new_empty(R.shape[:-2], dtype=torch.int32)))
    if bool(info.any()):
        return qr_q(A)
    return torch.linalg.solve_triangular(R, A, upper=True, left=False, out=Q)


def polar_svd(A: torch.Tensor) -> torch.Tensor:
    """Polar factor U Vᵀ of A = U Σ Vᵀ, computed in float64 (float32 SVD fails now and then on CPU)."""
    U, _, Vh = torch.linalg.svd(A.to(torch.float64), full_matrices=False)
    return (U @ Vh).to(A.dtype)


def gram_error(X: torch.Tensor) -> torch.Tensor:
    """E = XᵀX − I (..., p, p) in one GEMM call (−I as its β = −1 term)."""
    if X.dim() == 2:
        return torch.addmm(eye_like(X), X.mT, X, beta=-1)
    flat = X.reshape(-1, *X.shape[-2:])
    return torch.baddbmm(eye_like(X), flat.mT, flat, beta=-1).view(*X.shape[:-2], X.shape[-1], X.shape[-1])


def polar_newton_schulz(A: torch.Tensor, bound: torch.Tensor | float | None = None, *,
                        max_iter: int = 40, tol: float | None = None, first: float | None = None,
                        E0: torch.Tensor | None = None) -> torch.Tensor:
    """Polar factor of A by Newton–Schulz: X ← X (3I − XᵀX)/2 = X − X E/2 with E = XᵀX − I, matmul only.

    X₀ = A / c with c ≥ σ_max(A)/√2 (``bound``, default ‖A‖_F) puts every singular value in (0, √2],
    from where the iteration converges to 1, quadratically at the end. An iteration is two GEMM calls
    (E, then X − X E/2 fused). The last step: quadratic once max|E| ≤ ``tol`` (2√eps: to ≈ err²), else
    third order X(I − E/2 + 3E²/8) once max|E| ≤ eps^{1/3} (to ≈ (5/16) err³; one GEMM more, one
    iteration less). Matrices whose error is still above ``tol`` after ``max_iter`` are redone by :func:`polar_svd`.
    A ``bound`` of 1.0 (a float) starts from A itself. ``E0``: E at X₀, where the caller has formed it;
    ``first``: a bound on max|E| at X₀ that the caller knows (the first iteration takes it, not measuring).
    """
    eps = torch.finfo(A.dtype).eps
    tol = tol if tol is not None else 2 * math.sqrt(eps)
    c = torch.linalg.matrix_norm(A) if bound is None else bound
    if isinstance(c, torch.Tensor):
        X = A / c[..., None, None]
    else:
        X = A if c == 1.0 else A / c
    for it in range(max_iter):
        E = E0 if it == 0 and E0 is not None else gram_error(X)
        if it == 0 and first is not None and max_iter > 1:  # (with one iteration, err is needed below)
            worst = first
        else:
            err = E.abs().amax(dim=(-2, -1))
            worst = float(err if err.dim() == 0 else err.max())  # NaN where any is: then neither test passes
        if worst <= tol:
            return add_product(X, X, E, -0.5)
        if worst <= eps ** (1 / 3):
            return add_product(X, X, add_product(E, E, E, -0.75), -0.5)  # X − X(E − 3E²/4)/2
        X = add_product(X, X, E, -0.5)
    bad = ~(err <= tol)  # the last update was the quadratic step from err ≤ tol for the others
    X = X.clone()
    X[bad] = polar_svd(A[bad])
    return X


def tangent_scale(xi: torch.Tensor) -> torch.Tensor:
    """c with σ_max(W + ξ)/c ≤ √2 for ξ tangent at W: σ(W + ξ)² = 1 + σ(ξ)² ≤ 1 + ‖ξ‖_F², so
    c² = max(1, (1 + ‖ξ‖_F²)/2) — no scaling (singular values in [1, √2)) while ‖ξ‖_F ≤ 1."""
    return torch.sqrt(torch.clamp((1 + torch.linalg.matrix_norm(xi) ** 2) / 2, min=1.0))


def polar_eigh(A: torch.Tensor) -> torch.Tensor:
    """Polar factor A (AᵀA)^{−1/2} of A (..., n, p) of full column rank, by one symmetric eigendecomposition
    AᵀA = V Λ Vᵀ: A V Λ^{−1/2} Vᵀ. Accurate to rounding times cond(A)²; meant for well-conditioned A (a
    point plus a moderate tangent vector), where a few calls replace an iteration with a convergence test."""
    lam, V = torch.linalg.eigh(A.mT @ A)
    return A @ (V * lam.rsqrt().unsqueeze(-2)) @ V.mT


def polar_near_identity(A: torch.Tensor) -> torch.Tensor:
    """Polar factor of one A = I + S (d, d), S skew (AᵀA = I − S² has its eigenvalues in [1, 1 + ‖S‖²]).

    Narrow A: :func:`polar_eigh` (a few calls). Wide A (d ≥ scan.WIDE): Newton–Schulz from A/c with
    c² = max(1, (1 + b)/2) for a bound b ≥ ‖S‖_2² (as :func:`tangent_scale` does with b = ‖S‖_F²) — one to
    three iterations of d³ products, where one symmetric eigendecomposition (mostly memory-bound
    tridiagonalisation) costs as much as tens of such products. The bound b:
    - ‖S‖_F² = ‖A‖_F² − d (⟨I, S⟩ = tr S = 0), summed in float64 (to ≈ 32 d eps₆₄ even where A is float32,
      without forming S). Up to 1 it gives c = 1 and the first iteration's max|AᵀA − I| = max|SᵀS| ≤
      ‖S‖_2² ≤ ‖S‖_F², so that error is not measured.
    - Above 1, the first iteration's E = AᵀA − I = SᵀS: its ∞-norm (largest absolute row sum) bounds its
      spectral radius ‖S‖_2², which ‖S‖_F² overstates up to d-fold for a step spread over many directions
      (measured: ‖S‖_F² ≈ 2.5 against ‖S‖_2² ≈ 0.01 at d = 512, N = 32, where c from ‖S‖_F took
      5.5 iterations instead of 3). c² = (1 + the smaller bound)/2, and E scales with it."""
    d = A.shape[-1]
    if d < scan.WIDE:
        return polar_eigh(A)
    s2 = max(float(torch.linalg.vector_norm(A, dtype=torch.float64)) ** 2 - d, 0.0) + 32 * d * EPS64
    if s2 <= 1.0:
        return polar_newton_schulz(A, 1.0, first=s2)
    E = gram_error(A)
    size = E.abs()
    t = min(s2, float(size.sum(dim=-1).amax()))
    if t <= 1.0:
        return polar_newton_schulz(A, 1.0, E0=E, first=float(size.amax()))
    c2 = (1 + t) / 2  # E at A/c: (AᵀA)/c² − I = E/c² + (1/c² − 1) I
    E.div_(c2).diagonal().add_(1 / c2 - 1)
    return polar_newton_schulz(A, math.sqrt(c2), E0=E)


def newton_schulz_step(X: torch.Tensor, *, out: torch.Tensor | None = None,
                       scratch: torch.Tensor | None = None) -> torch.Tensor:
    """One Newton–Schulz step X (3I − XᵀX)/2 for a stack X (k, d, d): XᵀX scaled by −1/2 straight from the
    product (no pass that copies a broadcast 3I/2 in), 3/2 added on the diagonal, then one product; into
    ``out`` (k, d, d) with ``scratch`` (k, d, d) holding (3I − XᵀX)/2 if given. A single matrix (k = 1)
    takes 3I/2 as the product's β-term instead (one call fewer; a copy of d² elements, not of k d²)."""
    Y = torch.empty_like(X) if scratch is None else scratch
    if X.shape[0] == 1:
        torch.addmm(eye_like(X), X[0].mT, X[0], beta=1.5, alpha=-0.5, out=Y[0])
    else:
        torch.baddbmm(Y, X.mT, X, beta=0, alpha=-0.5, out=Y)  # beta = 0: Y's old contents are never read
        Y.diagonal(dim1=-2, dim2=-1).add_(1.5)
    return torch.bmm(X, Y, out=out)


def polar_in_frame(C: torch.Tensor | scan.Chunked, A: torch.Tensor, *, out: torch.Tensor | None = None,
                   scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """polar(C_j A C_{j−1}ᵀ) for j = 1 … k, C (k+1, d, d) orthogonal (or its scan.Chunked form), A = I + S
    (d, d) with S skew: C_j polar(A) C_{j−1}ᵀ.

    The polar factor is orthogonally equivariant on both sides, so one d×d polar factor serves the whole
    stack (:func:`polar_near_identity`). Rounding in C (≈ Σ of its layers' deviations from orthogonality)
    would grow step after step; one Newton–Schulz step X(3I − XᵀX)/2 squares it away
    (:func:`newton_schulz_step`). Both passes run group by group of
    chunks (scan.Chunked.groups), so that each group's X stays in cache between them.
    Written into ``out`` (k, d, d) if given, with two ``scratch`` buffers ((C.slots, d, d) for a
    scan.Chunked C, else (k, d, d)) instead of fresh temporaries.
    """
    chunks = C if isinstance(C, scan.Chunked) else scan.Chunked.whole(C)
    P = polar_near_identity(A)
    k = chunks.slots - chunks.pad
    if out is None:
        out = torch.empty((k,) + tuple(P.shape), dtype=P.dtype, device=P.device)
    if scratch is None:
        scratch = tuple(torch.empty((chunks.slots,) + tuple(P.shape), dtype=P.dtype, device=P.device)
                        for _ in range(2))
    R = chunks.middles(P)
    for part, q, j, cs in chunks.groups():
        bufs = tuple(b[q:q + part.slots] for b in scratch)
        X = part.sandwich(P, bufs, middles=R[cs])  # bufs[0] is free again
        newton_schulz_step(X, out=out[j:j + X.shape[0]], scratch=bufs[0][:X.shape[0]])
    return out


def retract(W: torch.Tensor, xi: torch.Tensor, method: str = "polar") -> torch.Tensor:
    """Retr_W(ξ) for a tangent ξ at W, by ``method`` ∈ RETRACTIONS."""
    if method == "polar":
        return polar_newton_schulz(W + xi, tangent_scale(xi))
    if method == "polar_svd":
        return polar_svd(W + xi)
    if method == "qr":
        return qr_q_near_orthonormal(W + xi) if near_manifold(xi) else qr_q(W + xi)
    if method == "cayley":
        return cayley(W, xi)
    raise ValueError(f"retraction={method!r} is not one of {', '.join(RETRACTIONS)}")


def cayley(W: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """Cayley retraction (I − A/2)⁻¹(I + A/2) W with A = ξ̂Wᵀ − Wξ̂ᵀ, ξ̂ = (I − WWᵀ/2)ξ, so AW = ξ.

    Solved in float64 (float32 drifts off the manifold); batched solves are checked and
    redone one matrix at a time where the batched result is wrong (pytorch#142815).
    """
    W64, xi64 = W.to(torch.float64), xi.to(torch.float64)
    xih = xi64 - 0.5 * W64 @ (W64.mT @ xi64)
    A = xih @ W64.mT - W64 @ xih.mT
    I = torch.eye(W.shape[-2], dtype=torch.float64, device=W.device)
    lhs, rhs = I - 0.5 * A, (I + 0.5 * A) @ W64
    X = torch.linalg.solve(lhs, rhs)
    bad = orthonormality_error(X) > 1e-9 * max(1.0, W.shape[-1])
    if X.dim() > 2 and bool(bad.any()):
        X = X.clone()
        for idx in bad.nonzero():
            k = tuple(idx.tolist())
            X[k] = torch.linalg.solve(lhs[k], rhs[k])
    return X.to(W.dtype)
