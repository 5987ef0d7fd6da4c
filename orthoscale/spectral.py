"""λ_max of a symmetric positive semidefinite G (n×n), to working precision, without a full eigendecomposition.

Lanczos with full reorthogonalisation from a fixed generic start vector gives Ritz values θ_1 ≥ θ_2 ≥ …
and the Ritz vector y of θ_1, normalised; its Rayleigh quotient θ = yᵀGy ≤ λ_1. It stops on Temple's
bound: for a unit y with Rayleigh quotient θ, residual ρ = ‖Gy − θy‖ and λ_2 ≤ a < θ,

    θ ≤ λ_1 ≤ θ + ρ²/(θ − a),

with a = (θ_1 + θ_2)/2 (λ_2 ≥ θ_2 by interlacing; a assumes θ_2 within half the gap of λ_2, as Lanczos'
gap estimates do). θ is returned once the bound is ≤ eps·θ: λ_1 to working precision. Whatever does not
get there (MAX_ITER steps, a breakdown, a cluster at the top that leaves no gap) is answered densely, by
LAPACK's ?syevr for the top two eigenvalues alone (:func:`_dense_top`). Below ``LANCZOS_MIN`` that is the
method: there a Lanczos step's few small calls cost more than the tridiagonal reduction; above it the
reduction (memory-bound, (4/3) n³ flops, half of them in BLAS-2) costs more than the ≈ 40–60
matrix–vector products.

Warm start (:class:`Warm`, which a run keeps from one step to the next): a run's consecutive Gram
matrices differ by little. By Weyl's inequality λ_2(G) ≤ λ_2(G') + ‖G − G'‖_2, so the last call's bound
a' on λ_2(G') gives a = a' + ‖G − G'‖_F ≥ λ_2(G), and the last top eigenvector, or a few Lanczos steps
from it, meets Temple's bound with that a — no eigendecomposition, no search for the gap. Where it does
not (the bound has eaten the gap, or the vector has drifted too far), the cold path answers and leaves its
own bound, and its vector: below LANCZOS_MIN with the eigenvector once the steps are within reach of a
warm answer (NEAR), without it, keeping the old vector, while they are large (early in a run).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

LANCZOS_MIN = 384   # from this n on Lanczos beats ?syevr (measured: 1.4× at n = 384, a loss at n = 256)
MAX_ITER = 96       # Lanczos steps before giving up (then ?syevr)
CHECK_FROM = 16     # first step at which the tridiagonal matrix is solved for the stopping test
CHECK_EVERY = 8     # … and every so many steps after (a test solves a k×k eigenproblem)
WARM_CHECKS = (2, 4, 8, 12)  # the steps at which a warm Lanczos run is tested (then it hands over)
WARM_REACH = 16  # a warm start vector whose residual is more than this many times what Temple's bound needs
                 # is not worth those steps (measured: ~1.4× closer a step from such a start)
NEAR = 1e3  # a dense answer leaves its vector once ‖G − G_last‖_F is within this many times that need


@dataclass
class Warm:
    """What one :func:`lambda_max` leaves for the next call on a nearby matrix: that matrix G (as it was:
    its version is kept), its λ_max, a ≥ λ_2(G), a unit vector y close to the top eigenvector (of G, or of
    an earlier matrix while the steps are large), and how many calls were answered warm."""
    G: torch.Tensor | None = None
    version: int = -1
    top: float = 0.0
    a: float = math.inf
    y: torch.Tensor | None = None
    hits: int = 0

    def keep(self, G: torch.Tensor, top: float, a: float, y: torch.Tensor | None) -> None:
        self.G, self.version, self.top, self.a, self.y = G, G._version, top, a, y

    def usable(self, G: torch.Tensor) -> bool:
        """Whether the kept matrix is still as it was and comparable with G (shape, dtype, device)."""
        P = self.G
        return P is not None and self.y is not None and P._version == self.version \
            and (P.shape, P.dtype, P.device) == (G.shape, G.dtype, G.device)


def lambda_max(G: torch.Tensor, warm: Warm | None = None) -> torch.Tensor:
    """λ_max(G) for one symmetric PSD G (n, n) as a 0-dim tensor: from ``warm`` where it certifies (see
    module), else Lanczos to Temple's bound, else densely (:func:`_dense_top`)."""
    n, eps = G.shape[-1], torch.finfo(G.dtype).eps
    vector = warm is not None  # whether a dense answer leaves its top eigenvector
    if warm is not None and warm.usable(G):
        step = float(torch.dist(G, warm.G))
        # near the last matrix (else, early in a run, a fresh vector would be stale by the next call: the
        # eigenvalues alone answer, and the last vector is kept until the steps come within reach)
        vector = step * step <= NEAR ** 2 * eps * warm.top * max(warm.top - warm.a, 0.0)
        if vector:
            a = warm.a + step  # ≥ λ_2(G) by Weyl
            theta, y, t, rho = _rayleigh(G, warm.y)
            room = eps * t * (t - a)  # Temple's bound is met where ρ² ≤ room (and θ > a)
            found = None
            if t > a and rho * rho <= room:
                found = theta, y
            elif t > a and rho * rho <= WARM_REACH ** 2 * room:
                found = _lanczos(G, y, a)
            if found is not None:
                warm.keep(G, float(found[0]), a, found[1])
                warm.hits += 1
                return found[0]
    if n >= LANCZOS_MIN:
        found = _lanczos(G)
        if found is not None:
            if warm is not None:
                warm.keep(G, float(found[0]), found[2], found[1])
            return found[0]
    top, second, y = _dense_top(G, vector)
    if warm is not None:  # λ_2 to rounding (≈ n eps λ_1: backward stable), the bound above it by that much
        warm.keep(G, float(top), second + n * eps * float(top), y if vector else warm.y)
    return top


def _dense_top(G: torch.Tensor, vector: bool) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """(λ_1 as a 0-dim tensor, λ_2 (0 for n = 1), the unit top eigenvector if ``vector``) of a dense G. On the
    CPU by LAPACK's ?syevr for those two alone (the tridiagonal reduction, then MRRR for two eigenpairs) on
    one BLAS thread (measured alone: 1.7–2× faster than torch's eigvalsh, syevd on the whole tridiagonal
    problem, at n = 128 and 256; ~2.4× than its eigh); elsewhere by torch."""
    n = G.shape[-1]
    if G.device.type == "cpu" and G.dtype in (torch.float32, torch.float64):
        syevr, blas = _lapack(G.dtype)
        with blas.limit(limits=1):  # more threads than cores with torch's own: each waits on the others
            w, z, m, _, info = syevr(G.detach().numpy().T, compute_v=int(vector), range="I", il=max(n - 1, 1),
                                     iu=n, lower=1)  # Gᵀ = G column-major: one plain copy; 'L' ~20 % faster
        if info == 0 and m == min(n, 2):
            y = torch.from_numpy(z[:, m - 1].copy()) if vector else None
            return torch.tensor(w[m - 1], dtype=G.dtype), float(w[0]) if m == 2 else 0.0, y
    lam, V = torch.linalg.eigh(G) if vector else (torch.linalg.eigvalsh(G), None)
    return lam[-1], float(lam[-2]) if n > 1 else 0.0, V[:, -1].clone() if vector else None


@functools.lru_cache(maxsize=2)
def _lapack(dtype: torch.dtype):
    """(?syevr of ``dtype``, the loaded BLAS libraries' thread controls), on first use: scipy.linalg costs
    ~0.4 s to import."""
    from scipy.linalg import lapack
    from threadpoolctl import ThreadpoolController

    return (lapack.ssyevr if dtype == torch.float32 else lapack.dsyevr), \
        ThreadpoolController().select(user_api="blas")


def _lanczos(G: torch.Tensor, start: torch.Tensor | None = None,
             bound: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(θ, y, a): λ_max(G) = θ to working precision, its unit Ritz vector y and the a ≥ λ_2 its Temple bound
    took; or None. Cold (no ``bound``): from the fixed start vector, a = (θ_1 + θ_2)/2, tested from step
    CHECK_FROM on every CHECK_EVERY steps. Warm: from the unit vector ``start`` with a = ``bound``, tested
    after WARM_CHECKS steps."""
    n, eps = G.shape[-1], torch.finfo(G.dtype).eps
    warm = bound is not None
    steps = min(WARM_CHECKS[-1] if warm else MAX_ITER, n - 1)
    V = torch.empty(steps + 1, n, dtype=G.dtype, device=G.device)  # Lanczos vectors as rows
    V[0] = start if warm else _start(n, G.dtype, G.device)
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
        if (k not in WARM_CHECKS) if warm else (k < CHECK_FROM or (k - CHECK_FROM) % CHECK_EVERY and k < steps):
            continue
        t1, t2, s = _top_pair(alpha, beta[:-1])
        a = bound if warm else (t1 + t2) / 2
        if t1 > a and (b * s[-1]) ** 2 / (t1 - a) <= eps * t1:  # Lanczos' own residual estimate
            theta, y, t, rho = _rayleigh(G, V[:k].mT @ torch.from_numpy(s).to(G))
            if _temple(t, rho, a, eps):
                return theta, y, a
    return None


def _rayleigh(G: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(θ, y/‖y‖, float θ, ρ): the Rayleigh quotient θ = yᵀGy of y normalised and its residual ρ = ‖Gy − θy‖,
    from y itself, not from the Lanczos recurrence, so that Temple's bound holds whatever rounding did to
    the orthogonality of the Lanczos vectors."""
    y = y / torch.linalg.vector_norm(y)
    Gy = G @ y
    theta = torch.dot(y, Gy)
    t = float(theta)
    return theta, y, t, float(torch.linalg.vector_norm(torch.add(Gy, y, alpha=-t)))


def _temple(t: float, rho: float, a: float, eps: float) -> bool:
    """Temple's bound: θ ≤ λ_1 ≤ θ + ρ²/(θ − a) ≤ (1 + eps) θ, given λ_2 ≤ a < θ."""
    return t > a and rho * rho / (t - a) <= eps * t


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
