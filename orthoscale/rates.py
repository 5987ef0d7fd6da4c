"""Linear rates from trajectories, iterations to a tolerance, and scaling laws across depths.

A linear phase of e_t is a window [s, e] where log e_t = a + t log ρ: the fit is least squares on
log e_t. The window ends where the curve reaches its floor (within ``floor_margin`` nats of its
minimum, then extended while points stay on the line) and starts at the earliest s for which the
window drops by ≥ ``min_decades``, has R² ≥ ``min_r2`` and slopes on its two halves that differ by
at most ``max_drift`` (relative). Sub-linear curves (e_t ∝ 1/t) fail the drift test: "no linear phase".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RateFit:
    rate: float | None     # ρ: e_{t+1} ≈ ρ e_t on the window; None when there is no linear phase
    start: int = 0
    end: int = 0           # inclusive
    r2: float = float("nan")
    drift: float = float("nan")
    reason: str = ""

    @property
    def found(self) -> bool:
        return self.rate is not None


def _line(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (intercept, slope, R²) of y against t."""
    slope, intercept = np.polyfit(t, y, 1)
    resid = y - (intercept + slope * t)
    total = float(((y - y.mean()) ** 2).sum())
    return float(intercept), float(slope), 1.0 - float((resid ** 2).sum()) / total if total > 0 else 1.0


def fit_rate(values, *, min_points: int = 10, min_decades: float = 1.0, min_r2: float = 0.99,
             max_drift: float = 0.05, floor_margin: float = math.log(10), candidates: int = 64) -> RateFit:
    """Fit ρ on the automatically found linear phase of a positive sequence ``values``."""
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
    v = v[: bad[0]] if bad.size else v
    if v.size < min_points:
        return RateFit(None, reason=f"no linear phase: only {v.size} usable points")
    y, t = np.log(v), np.arange(v.size, dtype=np.float64)
    end = int(np.flatnonzero(y <= y.min() + floor_margin)[0])
    for s in np.unique(np.linspace(0, max(end - min_points + 1, 0), candidates).astype(int)):
        if end - s + 1 < min_points or y[s] - y[end] < min_decades * math.log(10):
            continue
        a, b, r2 = _line(t[s:end + 1], y[s:end + 1])
        mid = (s + end) // 2
        b1, b2 = _line(t[s:mid + 1], y[s:mid + 1])[1], _line(t[mid:end + 1], y[mid:end + 1])[1]
        drift = abs(b1 - b2) / abs(b) if b < 0 else math.inf
        if b < 0 and r2 >= min_r2 and drift <= max_drift:
            tol = max(3 * float(np.std(y[s:end + 1] - (a + b * t[s:end + 1]))), 0.05)
            e = end
            while e + 1 < y.size and abs(y[e + 1] - (a + b * t[e + 1])) <= tol:
                e += 1
            if e > end:
                a, b, r2 = _line(t[s:e + 1], y[s:e + 1])
            return RateFit(math.exp(b), int(s), int(e), r2, drift, "linear phase")
    return RateFit(None, reason="no linear phase: no window drops "
                   f"≥ {min_decades:g} decade(s) with R² ≥ {min_r2} and slope drift ≤ {max_drift}")


def iterations_to(values, tol: float) -> int | None:
    """First t with values[t] ≤ tol, or None."""
    hits = np.flatnonzero(np.asarray(values, dtype=np.float64) <= tol)
    return int(hits[0]) if hits.size else None


@dataclass(frozen=True)
class RateEstimate:
    """ρ of a run with its 95 % interval: ``kind`` "fit" (the linear phase, :func:`fit_rate`) or "short" (a run
    that reached the tolerance before a linear phase could be fitted, :func:`short_rate`) or "instant" (solved in
    one or two steps: ``rate`` is only an upper bound, nothing to fit)."""
    rate: float
    low: float
    high: float
    points: int
    kind: str

    @property
    def conservative(self) -> float:
        """What a search should rank by: the fitted ρ, or a short run's upper bound (its early steps may not
        show the slowest mode yet)."""
        return self.rate if self.kind == "fit" else self.high

    @property
    def label(self) -> str:
        """How a table shows it: "0.1040" fitted, "≈ 0.1040 from 8 steps" short, "≤ 1.2e-08 (solved in 1 step)"."""
        if self.kind == "instant":
            return f"≤ {self.rate:.1e} (solved in {self.points} step{'s' if self.points > 1 else ''})"
        return f"{self.rate:.4f}" if self.kind == "fit" else f"≈ {self.rate:.4f} from {self.points} steps"


def short_rate(values, tol: float, min_points: int = 3) -> RateEstimate | None:
    """ρ of a run that reached ``tol`` at step T: least squares of log e_t = a + t log ρ over t = 1 … T (every
    step after the first, whose transient is left out). Interval: exp(b ± t_{0.975, n−2} se(b)), widened to
    hold the last step's ratio e_T / e_{T−1} — in a few steps a slower mode that starts small has not yet
    taken over, and the latest ratio is the closest to it. A run solved in fewer than ``min_points`` (≥ 3)
    steps gets kind "instant": ρ ≤ (e_T / e_0)^(1/T), no rate. None when ``tol`` is never reached."""
    v = np.asarray(values, dtype=np.float64)
    hit = iterations_to(v, tol)
    if hit is None or hit == 0 or not np.all(np.isfinite(v[:hit + 1]) & (v[:hit + 1] >= 0)) or not v[0] > 0:
        return None
    if hit < max(min_points, 3):  # solved in one or two steps: only a bound, the mean contraction
        mean = float((max(v[hit], 1e-300) / v[0]) ** (1.0 / hit))
        return RateEstimate(mean, 0.0, mean, hit, "instant")
    from scipy.special import stdtrit  # Student's t quantile (scipy.stats costs seconds to import)

    t = np.arange(1, hit + 1, dtype=np.float64)
    y = np.log(v[1:hit + 1])
    a, b, _ = _line(t, y)
    n = t.size
    se = math.sqrt(float(((y - a - b * t) ** 2).sum()) / (n - 2) / float(((t - t.mean()) ** 2).sum()))
    q = float(stdtrit(n - 2, 0.975))
    last = float(v[hit] / v[hit - 1])
    return RateEstimate(math.exp(b), min(math.exp(b - q * se), last), max(math.exp(b + q * se), last), n, "short")


def estimate_rate(values, tol: float, fit: RateFit | None = None) -> RateEstimate | None:
    """The linear phase's ρ (``fit``, by default fit_rate(values)) when there is one, else the short-run
    estimate of a run that reached ``tol`` too fast for it; None when neither applies."""
    fit = fit if fit is not None else fit_rate(values)
    if fit.found:
        return RateEstimate(fit.rate, fit.rate, fit.rate, fit.end - fit.start + 1, "fit")
    return short_rate(values, tol)


def observed_rate(values, tol: float, fit: RateFit | None = None) -> float | None:
    """The rate a search ranks a run by (:attr:`RateEstimate.conservative` of :func:`estimate_rate`), or None."""
    est = estimate_rate(values, tol, fit)
    return est.conservative if est else None


def tail_rate(values, window: int | None = None) -> float | None:
    """Mean per-step contraction of the last ``window`` steps (default a quarter of the run, ≥ 10):
    (v_T / v_{T−w})^{1/w}; None when the run is too short or its values are not positive."""
    v = np.asarray(values, dtype=np.float64)
    w = window or max(v.size // 4, 10)
    if v.size <= w or not (v[-1] > 0 and v[-1 - w] > 0 and np.isfinite(v[-1])):
        return None
    return float((v[-1] / v[-1 - w]) ** (1.0 / w))


def steps_to(values, tol: float, window: int | None = None) -> int | None:
    """Steps a run still needs to bring its last value to ``tol`` at its :func:`tail_rate` ρ_tail:
    ⌈log(tol / v_T) / log ρ_tail⌉; None when the tail does not contract."""
    tail = tail_rate(values, window)
    if tail is None or not tail < 1:
        return None
    return max(int(math.ceil(math.log(tol / values[-1]) / math.log(tail))), 0)


EDGE = 0.05  # a μ within 5 % of the log range from a bound is "on the edge"


def on_edge(mu: float, lo: float, hi: float, margin: float = EDGE, log: bool = True) -> str:
    """"low" / "high" when log μ (μ itself with ``log`` False) lies within ``margin`` of the range [lo, hi] from
    that bound, else ""."""
    f = math.log if log else float
    pos = (f(mu) - f(lo)) / (f(hi) - f(lo))
    return "low" if pos < margin else ("high" if pos > 1 - margin else "")


LEAN = 0.5  # where propose_step probes between a lower and an upper bound of μ* (log scale)


def propose_step(points: list[tuple[float, float]], diverged: list[float], lo: float, hi: float,
                 tol: float = 0.01) -> float:
    """The next step size μ ∈ [lo, hi] when searching the best local rate of a gradient method.

    Near a minimum a step contracts the error by r(μ) = max(|1 − μa|, |1 − μb|), a and b the extreme
    curvatures: 1 − μa left of μ* = 2/(a + b), μb − 1 right of it, unstable past 2/b. The measured (μ, r),
    sorted by μ, are split into a left and a right branch — the split whose weighted least-squares lines
    fit best and put μ* between them (ties: more points on the left). Both branches seen: μ* = 2/(a + b).
    Only the left one: b unknown, so probe between the largest μ tried and the least upper bound of μ*
    (1/a since b ≥ a; 2/(a + 2/μ_d) for a diverged μ_d, which means b ≥ 2/μ_d; hi). Only the right one:
    μ* ≥ 1/b, the next probe.
    """
    pts = sorted(points)
    best = None
    for s in range(len(pts), -1, -1):
        left, right = pts[:s], pts[s:]
        a = _slope(left, lambda mu, r: (1 - r) / mu)
        b = _slope(right, lambda mu, r: (1 + r) / mu)
        if (left and not a > 0) or (right and not b > 0) or (left and right and not (
                b > a and left[-1][0] * (1 + tol) <= 2 / (a + b) <= right[0][0] / (1 + tol))):
            continue
        sse = sum((r - (1 - mu * a)) ** 2 for mu, r in left) + sum((r - (mu * b - 1)) ** 2 for mu, r in right)
        if best is None or sse < best[0] * (1 - 1e-9):
            best = (sse, left, right, a, b)
    if best is None:  # no consistent reading of the points: probe above the best one measured
        return min(max(min(pts, key=lambda p: p[1])[0] * (1 + tol), lo), hi)
    _, left, right, a, b = best
    if left and right:
        guess = 2 / (a + b)
    elif right:
        guess = 1 / b
    else:
        lower = left[-1][0]
        upper = min([hi] + [2 / (a + 2 / d) for d in diverged if a > 0] + ([1 / a] if a > 0 else []))
        guess = lower ** (1 - LEAN) * upper ** LEAN if upper > lower * (1 + tol) else lower * (1 + tol)
    return min(max(guess, lo), hi)


def _slope(points, value) -> float | None:
    """Σ μ² v(μ, r) / Σ μ²: one branch's curvature, each point weighted by its precision (∝ μ²)."""
    if not points:
        return None
    w = [mu * mu for mu, _ in points]
    return sum(wi * value(mu, r) for wi, (mu, r) in zip(w, points)) / sum(w)


@dataclass(frozen=True)
class PowerLaw:
    """y ≈ c · x^k fitted on log–log axes; ``ci`` is the 95 % interval of k."""
    exponent: float
    prefactor: float
    stderr: float
    ci: tuple[float, float]
    points: int


def fit_power_law(x, y) -> PowerLaw:
    """Least squares of log y on log x over all points (several seeds per x give the spread).

    The standard error of k is σ̂ / √Σ(log x − mean)²; the interval uses Student's t with n − 2 dof.
    """
    from scipy.special import stdtrit  # Student's t quantile (scipy.stats costs seconds to import)

    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    keep = np.isfinite(lx) & np.isfinite(ly)
    lx, ly = lx[keep], ly[keep]
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError("a power law needs at least two distinct x with positive y")
    a, k, _ = _line(lx, ly)
    n = lx.size
    if n > 2:
        sigma = math.sqrt(float(((ly - a - k * lx) ** 2).sum()) / (n - 2))
        se = sigma / math.sqrt(float(((lx - lx.mean()) ** 2).sum()))
        q = float(stdtrit(n - 2, 0.975))
    else:
        se, q = math.nan, math.nan
    return PowerLaw(k, math.exp(a), se, (k - q * se, k + q * se), n)
