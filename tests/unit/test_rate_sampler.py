"""The rate-model sampler inside a real Optuna study (ask/tell, user attributes, resume by add_trial)."""
from __future__ import annotations

import optuna
import pytest

from orthoscale.study.search import LR, RateSampler, trial_attrs


def loss_rate(mu: float, a: float, b: float) -> float:
    return max(abs(1 - mu * a), abs(1 - mu * b)) ** 2  # the loss contracts like the error squared


def run(study, a, b, trials, dist):
    for _ in range(trials):
        t = study.ask({"lr": dist})
        mu = t.params["lr"]
        rho = loss_rate(mu, a, b)
        result = {"observed_rate": rho if rho < 1 else None, "outcome": "diverged" if rho >= 1 else "converged"}
        for key, value in trial_attrs(result).items():
            t.set_user_attr(key, value)
        study.tell(t, rho if rho < 1 else 3.0)


@pytest.mark.parametrize("N", [2, 8, 32])
def test_rate_sampler_finds_the_optimal_step_in_12_trials(N):
    a, b = 1.0, 1 + 0.9 * (N - 1)
    dist = LR(1e-3, 3.0, log=True)
    study = optuna.create_study(sampler=RateSampler(4))
    run(study, a, b, 12, dist)
    mu_opt = 2 / (a + b)
    best = study.best_trial.params["lr"]
    assert (1 - loss_rate(best, a, b) ** 0.5) / (1 - loss_rate(mu_opt, a, b) ** 0.5) >= 0.95
    assert len({round(t.params["lr"], 12) for t in study.trials[:4]}) == 4  # the spread start is 4 distinct μ


def test_rate_sampler_resumes_from_replayed_trials():
    """Trials re-added with create_trial (as CellSearch does on resume) steer the next proposal the same way."""
    a, b, dist = 1.0, 7.3, LR(1e-3, 3.0, log=True)
    first = optuna.create_study(sampler=RateSampler(4))
    run(first, a, b, 6, dist)
    replay = optuna.create_study(sampler=RateSampler(4))
    for t in first.trials:
        replay.add_trial(optuna.trial.create_trial(params=t.params, distributions={"lr": dist}, value=t.value,
                                                   user_attrs=t.user_attrs))
    assert replay.ask({"lr": dist}).params["lr"] == pytest.approx(first.ask({"lr": dist}).params["lr"], rel=1e-12)


def test_a_running_trial_is_not_proposed_twice():
    a, b, dist = 1.0, 7.3, LR(1e-3, 3.0, log=True)
    study = optuna.create_study(sampler=RateSampler(4))
    run(study, a, b, 6, dist)
    one, two = study.ask({"lr": dist}), study.ask({"lr": dist})
    assert abs(one.params["lr"] / two.params["lr"] - 1) > 1e-3


def test_fallback_points_fill_the_range_without_repeats():
    """With no rate ever measured (every trial unstable), the sampler still spreads its trials: all distinct,
    inside the range, covering both halves of its log scale."""
    dist = LR(1e-3, 3.0, log=True)
    study = optuna.create_study(sampler=RateSampler(4))
    mus = []
    for _ in range(16):
        t = study.ask({"lr": dist})
        t.set_user_attr("rate", None)
        t.set_user_attr("unstable", True)
        study.tell(t, 3.0)
        mus.append(t.params["lr"])
    assert len({round(m, 12) for m in mus}) == 16 and all(1e-3 <= m <= 3.0 for m in mus)
    mid = (1e-3 * 3.0) ** 0.5
    assert sum(m < mid for m in mus[4:]) >= 4 and sum(m > mid for m in mus[4:]) >= 4
