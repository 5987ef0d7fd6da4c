"""The edge of a basin of convergence: success statistics in plain numpy.

A run from a start at size x (e.g. the relative perturbation δ of a solution) either succeeds (converges to
tolerance) or fails. Across starts (seeds) success is random with probability p(x), falling in x; its edge
x₅₀ is where p(x₅₀) = ½. Here:

wilson          k successes of n: the Wilson score interval  (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
fit_logistic    p(x) = 1 / (1 + exp(−(a + b u))), u = log x (or x): maximum likelihood by Newton's method;
                x₅₀ at u₅₀ = −a/b; its 95 % interval by profile likelihood, the u₅₀ = c whose best fit over the
                slope, max_b ℓ(c, b) with p = σ(b (u − c)), lies within χ²₁,₀.₉₅ / 2 of the maximum.
                Completely separated data (every success below every failure) have no finite MLE: the edge is
                then only bracketed, by the largest success and the smallest failure.
propose_edge    probabilistic bisection (Horstein): a posterior over the edge on a grid of u, updated by each
                outcome as if it were right with probability ``p_correct``; the next probe is the posterior
                median (or another quantile). Noisy outcomes (seeds, a non-monotone edge) move the posterior, not
                a hard bracket.
fit_power_law_weighted  log y = log c + k log x by weighted least squares (weights 1/σ² of log y), the 95 %
                interval of k from Student's t with n − 2 dof and the residual scale max(1, χ²/(n − 2)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rates import PowerLaw

Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (see the module docstring); (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p, n, z2 = successes / trials, trials, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if successes == 0 else max(centre - half, 0.0)  # exact ends: no rounding past p̂ = 0 or 1
    return low, 1.0 if successes == trials else min(centre + half, 1.0)


@dataclass(frozen=True)
class EdgeFit:
    """x₅₀ with its 95 % interval [low, high]; ``slope`` b of the logistic in u (None when separated);
    ``kind``: "logistic" (the MLE), "separated" (only bracketed), "one-sided" (all successes or all failures:
    x₅₀ lies beyond the range tried, ``x50`` is the bound and the interval is open on that side)."""
    x50: float
    low: float
    high: float
    slope: float | None
    points: int
    kind: str


def _to_u(x, log: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.log(x) if log else x


def _from_u(u: float, log: bool) -> float:
    return math.exp(u) if log else u


def fit_logistic(x, success, *, log: bool = True, iters: int = 100) -> EdgeFit:
    """Maximum-likelihood logistic fit of ``success`` (bools) against ``x`` (see the module docstring)."""
    u, y = _to_u(x, log), np.asarray(success, dtype=np.float64)
    n = u.size
    if n == 0:
        raise ValueError("a logistic fit needs at least one point")
    if y.all():
        return EdgeFit(_from_u(u.max(), log), _from_u(u.max(), log), math.inf, None, n, "one-sided")
    if not y.any():
        return EdgeFit(_from_u(u.min(), log), -math.inf if not log else 0.0, _from_u(u.min(), log), None, n,
                       "one-sided")
    top, bottom = u[y == 1].max(), u[y == 0].min()
    if top < bottom:  # complete separation: p jumps from 1 to 0 between these two points
        return EdgeFit(_from_u(0.5 * (top + bottom), log), _from_u(top, log), _from_u(bottom, log), None, n,
                       "separated")
    X = np.column_stack([np.ones(n), u - u.mean()])  # centred for conditioning; a shifted back below
    beta = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ beta)))
        w = np.clip(p * (1 - p), 1e-12, None)
        info = X.T @ (w[:, None] * X)
        step = np.linalg.solve(info, X.T @ (y - p))
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    a, b = beta
    if not b < 0:  # success does not fall with x: no edge in the range
        return EdgeFit(_from_u(u.mean(), log), _from_u(u.min(), log), _from_u(u.max(), log), float(b), n, "flat")
    u50 = -a / b + u.mean()
    lo, hi = profile_interval(u, y, u50, float(b))
    return EdgeFit(_from_u(u50, log), _from_u(lo, log), _from_u(hi, log), float(b), n, "logistic")


CHI2_95 = 3.841458820694124  # the 95 % quantile of χ² with one degree of freedom


def _loglik(u: np.ndarray, y: np.ndarray, centres: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """Log-likelihood of p = σ(b (u − c)) for each centre c (rows) and slope b (columns)."""
    z = slopes[None, :, None] * (u[None, None, :] - centres[:, None, None])
    return -(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)).sum(axis=2)


def profile_interval(u: np.ndarray, y: np.ndarray, u50: float, slope: float, grid: int = 200) -> tuple[float, float]:
    """The profile-likelihood 95 % interval of u₅₀: {c : 2 (ℓ̂ − max_b ℓ(c, b)) ≤ χ²₁,₀.₉₅}, over c on a grid of
    the range tried and b < 0 on a log grid around the MLE ``slope``. Unlike the delta method it stays honest for
    nearly separated outcomes (a steep, poorly known slope), where it spans the region of mixed outcomes."""
    slopes = -np.exp(np.linspace(math.log(abs(slope)) - 6, math.log(abs(slope)) + 6, 61))
    best = max(float(_loglik(u, y, np.array([u50]), np.array([slope])).max()),
               float(_loglik(u, y, np.array([u50]), slopes).max()))
    cs = np.linspace(u.min(), u.max(), grid)
    chunk = max(1, 2_000_000 // (slopes.size * u.size))
    prof = np.concatenate([_loglik(u, y, cs[i:i + chunk], slopes).max(axis=1) for i in range(0, grid, chunk)])
    inside = cs[2 * (best - prof) <= CHI2_95]
    if not inside.size:
        return u50, u50
    step = (u.max() - u.min()) / (grid - 1)
    return min(float(inside.min()) - step, u50), max(float(inside.max()) + step, u50)


def edge_posterior(points, lo: float, hi: float, *, log: bool = True, p_correct: float = 0.8,
                   grid: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    """(grid of u, posterior density of the edge on it) after the outcomes ``points`` = [(x, success)]:
    a uniform prior on [lo, hi] in u; a success at x multiplies the density above x by p_correct and below by
    1 − p_correct (the edge lies above a success), a failure the reverse."""
    u = np.linspace(*_to_u([lo, hi], log), grid)
    logf = np.zeros(grid)
    good, bad = math.log(p_correct), math.log(1 - p_correct)
    for x, ok in points:
        above = u > float(_to_u(x, log))
        logf += np.where(above == bool(ok), good, bad)
    f = np.exp(logf - logf.max())
    return u, f / f.sum()


def propose_edge(points, lo: float, hi: float, *, log: bool = True, p_correct: float = 0.8,
                 quantile: float = 0.5) -> float:
    """The next probe of a probabilistic bisection: the median of :func:`edge_posterior` (another ``quantile``
    spreads probes over where the edge may be, which a fit of the slope of p(x) needs)."""
    u, f = edge_posterior(points, lo, hi, log=log, p_correct=p_correct)
    k = int(np.searchsorted(np.cumsum(f), quantile))
    return _from_u(float(u[min(k, u.size - 1)]), log)


def posterior_interval(points, lo: float, hi: float, *, log: bool = True, p_correct: float = 0.8,
                       mass: float = 0.95) -> tuple[float, float]:
    """The central ``mass`` interval of :func:`edge_posterior`: where the bisection says the edge lies."""
    u, f = edge_posterior(points, lo, hi, log=log, p_correct=p_correct)
    c = np.cumsum(f)
    tail = (1 - mass) / 2
    i, j = int(np.searchsorted(c, tail)), int(np.searchsorted(c, 1 - tail))
    return _from_u(float(u[i]), log), _from_u(float(u[min(j, u.size - 1)]), log)


def fit_power_law_weighted(x, y, sigma_log_y=None) -> PowerLaw:
    """Weighted least squares of log y on log x (see the module docstring); ``sigma_log_y`` None: equal weights."""
    from scipy import stats

    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    s = np.ones_like(lx) if sigma_log_y is None else np.asarray(sigma_log_y, dtype=np.float64)
    keep = np.isfinite(lx) & np.isfinite(ly) & np.isfinite(s) & (s > 0)
    lx, ly, w = lx[keep], ly[keep], 1 / s[keep] ** 2
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError("a power law needs at least two distinct x with positive y")
    mx, my = (w * lx).sum() / w.sum(), (w * ly).sum() / w.sum()
    sxx = float((w * (lx - mx) ** 2).sum())
    k = float((w * (lx - mx) * (ly - my)).sum()) / sxx
    a = my - k * mx
    n = lx.size
    if n > 2:
        chi2 = float((w * (ly - a - k * lx) ** 2).sum()) / (n - 2)
        scale = max(chi2, 1.0) if sigma_log_y is not None else chi2
        se = math.sqrt(scale / sxx)
        q = float(stats.t.ppf(0.975, n - 2))
    else:
        se, q = math.nan, math.nan
    return PowerLaw(k, math.exp(a), se, (k - q * se, k + q * se), n)
