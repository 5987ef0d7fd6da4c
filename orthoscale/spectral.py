"""λ_max of a symmetric positive semidefinite G (n×n), to working precision, without a full eigendecomposition.

Lanczos with full reorthogonalisation from a fixed generic start vector gives Ritz values θ_1 ≥ θ_2 ≥ …
and the Ritz vector y of θ_1, normalised; its Rayleigh quotient θ = yᵀGy ≤ λ_1. It stops on Temple's
bound: for a unit y with Rayleigh quotient θ, residual ρ = ‖Gy − θy‖ and λ_2 ≤ a < θ,

    θ ≤ λ_1 ≤ θ + ρ²/(θ − a),

with a = (θ_1 + θ_2)/2 (λ_2 ≥ θ_2 by interlacing; a assumes θ_2 within half the gap of λ_2, as Lanczos'
gap estimates do). θ is returned once the bound is ≤ eps·θ: λ_1 to working precision. Whatever does not
get there (MAX_ITER steps, a breakdown, a cluster at the top that leaves no gap) is answered by
``torch.linalg.eigvalsh``. Below ``LANCZOS_MIN`` that is the method: there a Lanczos step's few small
calls cost more than LAPACK's tridiagonalisation; above it the tridiagonalisation (memory-bound,
(4/3) n³ flops, half of them in BLAS-2) costs several times the ≈ 40–60 matrix–vector products.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

LANCZOS_MIN = 384   # from this n on Lanczos beats eigvalsh (measured: ≈ 2× at n = 512, a loss at n = 256)
MAX_ITER = 96       # Lanczos steps before giving up (then eigvalsh)
CHECK_FROM = 16     # first step at which the tridiagonal matrix is solved for the stopping test
CHECK_EVERY = 8     # … and every so many steps after (a test solves a k×k eigenproblem)


def lambda_max(G: torch.Tensor) -> torch.Tensor:
    """λ_max(G) for one symmetric PSD G (n, n) as a 0-dim tensor: Lanczos to Temple's bound (see module), else
    eigvalsh."""
    n = G.shape[-1]
    if n >= LANCZOS_MIN:
        top = _lanczos(G)
        if top is not None:
            return top
    return torch.linalg.eigvalsh(G)[-1]


def _lanczos(G: torch.Tensor) -> torch.Tensor | None:
    n, eps = G.shape[-1], torch.finfo(G.dtype).eps
    steps = min(MAX_ITER, n - 1)
    V = torch.empty(steps + 1, n, dtype=G.dtype, device=G.device)  # Lanczos vectors as rows
    V[0] = _start(n, G.dtype, G.device)
    alpha, beta = [], []
    for j in range(steps):
        w = G @ V[j]
        Vj = V[:j + 1]
        h = Vj @ w
        w = torch.addmv(w, Vj.mT, h, alpha=-1)  # classical Gram–Schmidt against every vector, twice (once
        h2 = Vj @ w                             # loses orthogonality: ghost copies of θ_1 close the gap)
        w = torch.addmv(w, Vj.mT, h2, alpha=-1)
        alpha.append(float(h[j] + h2[j]))
        b = float(torch.linalg.vector_norm(w))
        if not b > eps * max(abs(alpha[-1]), 1e-300):
            return None  # an invariant subspace (or a zero G): no gap for the bound
        torch.div(w, b, out=V[j + 1])
        beta.append(b)
        k = j + 1
        if k < CHECK_FROM or (k - CHECK_FROM) % CHECK_EVERY and k < steps:
            continue
        t1, t2, s = _top_pair(alpha, beta[:-1])
        gap = t1 - t2
        if gap > 0 and 2 * (b * s[-1]) ** 2 / gap <= eps * t1:  # Lanczos' own residual estimate
            top = _temple(G, V[:k].mT @ torch.from_numpy(s).to(G), (t1 + t2) / 2, eps)
            if top is not None:
                return top
    return None


def _temple(G: torch.Tensor, y: torch.Tensor, a: float, eps: float) -> torch.Tensor | None:
    """The Rayleigh quotient θ = yᵀGy of the Ritz vector y (normalised here) if Temple's bound θ + ρ²/(θ − a),
    ρ = ‖Gy − θy‖, is ≤ (1 + eps) θ; else None. θ and ρ come from y itself, not from the Lanczos recurrence,
    so the bound holds whatever rounding did to the orthogonality of the Lanczos vectors."""
    y = y / torch.linalg.vector_norm(y)
    Gy = G @ y
    theta = torch.dot(y, Gy)
    t = float(theta)
    rho = float(torch.linalg.vector_norm(torch.add(Gy, y, alpha=-t)))
    return theta if t > a and rho * rho / (t - a) <= eps * t else None


def _top_pair(alpha: list[float], beta: list[float]) -> tuple[float, float, np.ndarray]:
    """(θ_1, θ_2, s_1): the two largest eigenvalues of the symmetric tridiagonal matrix with diagonal α and
    off-diagonal β (k ≥ 2), and the eigenvector of θ_1, in float64: LAPACK's dstemr for those two alone
    (~25 µs at k = 40, against ~110 µs for torch.linalg.eigh of the dense k × k matrix); where it fails,
    numpy's eigh of the dense one."""
    from scipy.linalg import lapack  # on first use: scipy.linalg costs ~0.4 s to import

    k = len(alpha)
    d, e = np.array(alpha, dtype=np.float64), np.zeros(k)
    e[:-1] = beta
    m, w, z, info = lapack.dstemr(d, e, 3, 0.0, 0.0, k - 1, k)
    if info == 0 and m == 2:
        return float(w[1]), float(w[0]), z[:, 1].copy()
    theta, S = np.linalg.eigh(np.diag(d) + np.diag(e[:-1], 1) + np.diag(e[:-1], -1))
    return float(theta[-1]), float(theta[-2]), S[:, -1].copy()


@functools.lru_cache(maxsize=16)
def _start(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fixed unit start vector (Gaussian, seed 0, drawn on the CPU): generic, and the same in every run."""
    v = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (v / torch.linalg.vector_norm(v)).to(dtype=dtype, device=device)
