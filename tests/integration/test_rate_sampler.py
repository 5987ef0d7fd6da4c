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
