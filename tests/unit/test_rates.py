"""Linear-rate fits on synthetic sequences, iterations to a tolerance, power-law fits."""
from __future__ import annotations

import math

import numpy as np
import pytest

from orthoscale import rates


def geometric(rho, steps, noise=0.0, seed=0, c=1.0):
    """c ρ^t (1 + noise ε_t), ε standard Gaussian (clipped so the values stay positive)."""
    t = np.arange(steps, dtype=np.float64)
    eps = np.clip(np.random.default_rng(seed).standard_normal(steps), -3, 3)
    return c * rho ** t * (1 + noise * eps)


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.05])
@pytest.mark.parametrize("rho,steps", [(0.5, 60), (0.9, 300), (0.99, 2500)])
def test_recovers_rate_of_noisy_geometric_sequence(rho, steps, noise):
    fit = rates.fit_rate(geometric(rho, steps, noise, seed=int(rho * 100)))
    assert fit.found and fit.reason == "linear phase"
    assert abs(fit.rate - rho) <= 1e-3
    assert fit.start == 0 and fit.end >= steps - 2
    assert fit.r2 >= 0.99 and fit.drift <= 0.05
    if noise == 0.0:
        assert fit.rate == pytest.approx(rho, rel=1e-12)


@pytest.mark.parametrize("values", [1.0 / np.arange(1, 5001), 1.0 / np.arange(1, 5001) ** 2,
                                    1.0 / np.sqrt(np.arange(1, 5001)), 3.0 / np.arange(10, 2010) ** 1.5])
def test_refuses_sublinear_curves(values):
    fit = rates.fit_rate(values)
    assert fit.rate is None and not fit.found
    assert fit.reason.startswith("no linear phase")


def test_refuses_a_flat_or_short_sequence():
    flat = rates.fit_rate(np.full(500, 0.3))
    assert not flat.found and flat.reason.startswith("no linear phase")
    short = rates.fit_rate(geometric(0.5, 8))
    assert not short.found and "only 8 usable points" in short.reason


@pytest.mark.parametrize("floor_noise", [0.0, 0.3])
def test_geometric_then_floor(floor_noise):
    """ρ^t down to a floor of 1e-12 where it flattens into (noisy) rounding: the window stops at the floor."""
    rho, knee, steps = 0.8, 124, 400  # 0.8^124 ≈ 1e-12
    v = geometric(rho, steps, 0.01, seed=1)
    rng = np.random.default_rng(2)
    v[knee:] = 1e-12 * np.exp(floor_noise * rng.standard_normal(steps - knee))
    fit = rates.fit_rate(v)
    assert fit.found
    assert abs(fit.rate - rho) <= 1e-3
    assert fit.start == 0
    assert knee - 15 <= fit.end <= knee + 3


def test_floor_on_a_steep_descent():
    rho = 0.3
    v = np.maximum(rho ** np.arange(200.0), 1e-30) * (1 + 0.01 * np.sin(np.arange(200.0)))
    fit = rates.fit_rate(v)
    assert fit.found and abs(fit.rate - rho) <= 1e-3 and fit.end <= 60


def test_skips_an_initial_plateau():
    """Flat for 80 steps then ρ^t: the window starts after (most of) the plateau."""
    rho = 0.9
    v = np.concatenate([np.ones(80), geometric(rho, 300, 0.01, seed=3)])
    fit = rates.fit_rate(v)
    assert fit.found
    assert fit.start >= 60
    assert abs(fit.rate - rho) <= 1e-3
    whole = np.polyfit(np.arange(v.size), np.log(v), 1)[0]
    assert abs(math.exp(whole) - rho) > 1e-2  # a fit from t = 0 would be far off


def test_fast_initial_transient():
    """A fast mode dying out (100·0.3^t) on top of the slow one (0.9^t): the slow rate is found."""
    t = np.arange(300.0)
    fit = rates.fit_rate(100 * 0.3 ** t + 0.9 ** t)
    assert fit.found and abs(fit.rate - 0.9) <= 1e-3


def test_stops_at_the_first_non_finite_or_non_positive_value():
    v = geometric(0.7, 100)
    v[60] = np.nan
    fit = rates.fit_rate(v)
    assert fit.found and fit.end <= 59 and fit.rate == pytest.approx(0.7, rel=1e-10)
    w = geometric(0.7, 100)
    w[50] = 0.0
    assert rates.fit_rate(w).end <= 49


def test_iterations_to():
    v = [1.0, 0.5, 0.1, 0.01, 0.2, 1e-5]
    assert rates.iterations_to(v, 0.1) == 2
    assert rates.iterations_to(v, 0.05) == 3
    assert rates.iterations_to(v, 1e-5) == 5
    assert rates.iterations_to(v, 1e-6) is None
    assert rates.iterations_to(v, 2.0) == 0
    assert rates.iterations_to(geometric(0.5, 60), 1e-9) == math.ceil(9 * math.log(10) / math.log(2))


def test_power_law_exact():
    x = np.array([2, 4, 8, 16, 32, 64], dtype=np.float64)
    fit = rates.fit_power_law(x, 3.0 * x ** 1.5)
    assert fit.exponent == pytest.approx(1.5, rel=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-12)
    assert fit.points == 6 and fit.stderr <= 1e-12


def test_power_law_with_noise_covers_the_truth():
    rng = np.random.default_rng(4)
    x = np.repeat([2, 4, 8, 16, 32, 64, 128], 5).astype(np.float64)
    y = 0.7 * x ** -1.2 * np.exp(0.1 * rng.standard_normal(x.size))
    fit = rates.fit_power_law(x, y)
    assert fit.ci[0] < -1.2 < fit.ci[1]
    assert fit.ci[1] - fit.ci[0] < 0.1
    assert fit.ci[0] < fit.exponent < fit.ci[1] and fit.points == 35
    assert fit.prefactor == pytest.approx(0.7, rel=0.15)


def test_power_law_interval_has_95_percent_coverage():
    rng = np.random.default_rng(5)
    x = np.repeat([3, 6, 12, 24], 3).astype(np.float64)
    hits = 0
    for _ in range(1000):
        fit = rates.fit_power_law(x, 2.0 * x ** 0.8 * np.exp(0.2 * rng.standard_normal(x.size)))
        hits += fit.ci[0] <= 0.8 <= fit.ci[1]
    assert 0.93 <= hits / 1000 <= 0.97


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_power_law_input_checks():
    with pytest.raises(ValueError, match="two distinct x"):
        rates.fit_power_law([4, 4, 4], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="two distinct x"):
        rates.fit_power_law([1, 2, 3], [0.0, -1.0, 2.0])  # only one usable (positive) point
    two = rates.fit_power_law([1, 10], [1.0, 100.0])
    assert two.exponent == pytest.approx(2.0) and math.isnan(two.stderr)


# ---------------------------------------------------------------- step-size proposals

def v_rate(mu: float, a: float, b: float) -> float:
    return max(abs(1 - mu * a), abs(1 - mu * b))


def spread(k: int, startup: int, lo: float, hi: float) -> float:
    """The search's starting grid (study.search.RateSampler): log-spaced, middle-out."""
    order = sorted(range(startup), key=lambda i: (abs(i - (startup - 1) / 2), i))
    return math.exp(math.log(lo) + (order[k] + 0.5) / startup * (math.log(hi) - math.log(lo)))


def search_by_proposals(a, b, trials, noise=0.0, seed=0, startup=4, lo=1e-3, hi=3.0):
    """Drive rates.propose_step on r(μ) = max(|1 − μa|, |1 − μb|) measured with relative noise (divergent
    past 2/b); returns the μ tried."""
    rng = np.random.default_rng(seed)
    points, diverged, tried = [], [], []
    for k in range(trials):
        mu = rates.propose_step(points, diverged, lo, hi) if k >= startup and points else spread(k, startup, lo, hi)
        tried.append(mu)
        r = v_rate(mu, a, b)
        (diverged.append(mu) if r >= 1 else points.append((mu, r * (1 + noise * rng.standard_normal()))))
    return tried


@pytest.mark.parametrize("N", [2, 3, 4, 8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("noise,seed", [(0.0, 0), (0.002, 1), (0.005, 2)])
def test_proposals_reach_the_optimal_rate_within_5_percent(N, noise, seed):
    """Curvatures as in the depth study (a = 1, b = 1 + 0.9(N − 1)), rates measured to 0.5 %: 4 spread
    starting points and 8 proposals (search.trials = 12) reach ≥ 95 % of the optimal 1 − r."""
    a, b = 1.0, 1 + 0.9 * (N - 1)
    tried = search_by_proposals(a, b, 12, noise, seed)
    best = min(tried, key=lambda mu: v_rate(mu, a, b))
    mu_opt = 2 / (a + b)
    assert (1 - v_rate(best, a, b)) / (1 - v_rate(mu_opt, a, b)) >= 0.95, (tried, mu_opt)


def test_proposal_is_the_optimum_once_both_branches_are_seen():
    a, b = 0.5, 4.0
    mu_opt = 2 / (a + b)
    left, right = 0.5 * mu_opt, 1.05 * mu_opt
    mu = rates.propose_step([(left, v_rate(left, a, b)), (right, v_rate(right, a, b))], [], 1e-3, 3.0)
    assert mu == pytest.approx(mu_opt, rel=1e-12)


def test_proposal_moves_out_of_a_one_sided_bracket():
    a, b = 0.5, 4.0
    mu_opt = 2 / (a + b)
    only_left = [(0.1 * mu_opt, v_rate(0.1 * mu_opt, a, b)), (0.3 * mu_opt, v_rate(0.3 * mu_opt, a, b))]
    up = rates.propose_step(only_left, [10 * mu_opt], 1e-3, 3.0)
    assert 0.3 * mu_opt < up < 10 * mu_opt           # bisects towards the least upper bound
    right = [(f * mu_opt, v_rate(f * mu_opt, a, b)) for f in (1.1, 1.3)]
    down = rates.propose_step(right, [], 1e-3, 3.0)
    assert down == pytest.approx(1 / b) and down < mu_opt  # μ* ≥ 1/b: the left branch is probed next
    assert rates.propose_step([(5.0, 0.5)], [], 1e-3, 3.0) <= 3.0  # clipped to the range


def test_observed_rate_fits_or_estimates_a_short_run():
    slow = [0.9 ** t for t in range(200)]
    assert rates.observed_rate(slow, 1e-12) == pytest.approx(0.9, rel=1e-9)
    assert rates.estimate_rate(slow, 1e-12).kind == "fit"
    fast = [0.01 ** t for t in range(6)]  # reaches 1e-9 in 5 steps: too few points to fit
    assert rates.observed_rate(fast, 1e-9) == pytest.approx(0.01, rel=1e-9)
    est = rates.estimate_rate(fast, 1e-9)
    assert est.kind == "short" and est.points == 5 and est.label == "≈ 0.0100 from 5 steps"
    assert rates.observed_rate([1.0, 2.0, 4.0], 1e-10) is None
    instant = rates.short_rate([1.0, 1e-3, 1e-12], 1e-10)  # two steps: no spread, only a bound
    assert instant.kind == "instant" and instant.rate == pytest.approx(1e-6) and instant.low == 0
    assert "solved in 2 steps" in instant.label
    assert rates.short_rate([1e-12, 1e-13], 1e-10) is None  # a start within tolerance: nothing to estimate


@pytest.mark.parametrize("rho", [0.05, 0.1, 0.3, 0.6])
@pytest.mark.parametrize("points", [6, 8, 10])
def test_short_rate_recovers_a_planted_geometric_sequence_within_its_interval(rho, points):
    """c ρ^t (1 + 2 % noise) after a first step of another size, cut where it reaches tol after ``points``
    steps: ρ lies in the interval, which is narrow, and the first step does not bias it."""
    for seed in range(5):
        v = geometric(rho, points + 1, noise=0.02, seed=seed, c=3.0)
        v[0] = 1.0  # a transient first step: left out
        est = rates.short_rate(v, math.sqrt(v[points] * v[points - 1]))
        assert est is not None and est.points == points and est.kind == "short"
        assert est.low <= rho <= est.high, (seed, est)
        assert est.low <= est.rate <= est.high and est.conservative == est.high
        assert est.high / est.low < 1.2


def test_short_rate_bounds_a_slow_mode_that_has_not_taken_over():
    """e_t = 0.1^t + 1e-4·0.2^t reaches 1e-9 in 8 steps with step ratios still rising towards 0.2: the
    point estimate is the faster mode, the upper bound holds the last ratio (the closest to 0.2)."""
    t = np.arange(12.0)
    v = 0.1 ** t + 1e-4 * 0.2 ** t
    est = rates.short_rate(v, 1e-9)
    last = v[est.points] / v[est.points - 1]
    assert est.rate < 0.15 and est.high == pytest.approx(last) and last > est.rate
