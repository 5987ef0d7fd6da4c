"""The edge of success: Wilson intervals, the logistic edge fit, probabilistic bisection (alone and as the study's
sampler, through real Optuna studies), and the law of the edge in depth — on planted problems with known edges."""
from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from orthoscale import basin
from orthoscale.study import paper
from orthoscale.study.compose import plan
from orthoscale.study.config import ConfigError
from orthoscale.study.typed import replace_path
from orthoscale.study.driver import StudyResult
from orthoscale.study.report import write
from orthoscale.study.results import TrialResult
from orthoscale.study.edges import edge_analysis, is_edge_study, is_runs_study, runs_analysis, runs_text
from orthoscale.study.search import BisectSampler, CellSearch
from orthoscale.study.trial import FINAL


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.85])
@pytest.mark.parametrize("n", [15, 60])
def test_wilson_interval_covers_the_true_share_about_95_percent_of_draws(p, n):
    rng = np.random.default_rng(7)
    draws = rng.binomial(n, p, size=4000)
    cover = np.mean([lo <= p <= hi for lo, hi in (basin.wilson(int(k), n) for k in draws)])
    assert (0.90 if n < 30 else 0.93) <= cover <= 0.985   # Wilson's coverage oscillates around 95 % at small n
    lo, hi = basin.wilson(0, 10)
    assert lo == 0 and 0.2 < hi < 0.35        # no success in 10: the upper end is ≈ 0.28, not 0


def test_wilson_coverage_averaged_over_the_share_is_95_percent():
    from scipy import stats

    for n in (10, 40, 200):
        k = np.arange(n + 1)
        bounds = np.array([basin.wilson(int(j), n) for j in k])
        shares = np.linspace(0.02, 0.98, 97)
        exact = [stats.binom.pmf(k, n, p)[(bounds[:, 0] <= p) & (p <= bounds[:, 1])].sum() for p in shares]
        assert np.mean(exact) == pytest.approx(0.95, abs=0.012)


def planted_success(x, x50, slope, rng):
    """P(success | x) = 1 / (1 + (x/x50)^slope): a logistic in log x with its edge at x50, falling in x for a
    positive slope and rising for a negative one."""
    x = np.asarray(x)
    return rng.random(x.size) < 1 / (1 + (x / x50) ** slope)


@pytest.mark.parametrize("rising", [False, True])
def test_logistic_fit_recovers_a_planted_edge_and_its_interval_covers_it(rising):
    rng, slope = np.random.default_rng(1), -4.0 if rising else 4.0
    x = np.exp(rng.uniform(math.log(0.05), math.log(5), 3000))
    fit = basin.fit_logistic(x, planted_success(x, 0.7, slope, rng), rising=rising)
    assert fit.kind == "logistic" and fit.x50 == pytest.approx(0.7, rel=0.05) and fit.low < 0.7 < fit.high
    assert fit.slope == pytest.approx(-slope, rel=0.15)
    assert basin.fit_logistic(x, planted_success(x, 0.7, slope, rng), rising=not rising).kind == "flat"
    covered = 0
    for _ in range(100):
        x = np.exp(rng.uniform(math.log(0.05), math.log(5), 120))
        f = basin.fit_logistic(x, planted_success(x, 0.7, slope, rng), rising=rising)
        covered += f.low <= 0.7 <= f.high
    assert covered >= 88


def test_separated_and_one_sided_outcomes_bracket_the_edge():
    fit = basin.fit_logistic([0.1, 0.2, 0.4, 0.8], [True, True, False, False])
    assert fit.kind == "separated" and (fit.low, fit.high) == pytest.approx((0.2, 0.4))
    assert fit.x50 == pytest.approx(math.sqrt(0.08))
    every = basin.fit_logistic([0.1, 0.2], [True, True])
    assert every.kind == "one-sided" and every.x50 == 0.2 and every.high == math.inf


def test_a_rising_edge_is_bracketed_and_bounded_on_the_other_side():
    fit = basin.fit_logistic([0.1, 0.2, 0.4, 0.8], [False, False, True, True], rising=True)
    assert fit.kind == "separated" and (fit.low, fit.high) == pytest.approx((0.2, 0.4))
    every = basin.fit_logistic([0.1, 0.2], [True, True], rising=True)  # the edge lies below the smallest tried
    assert every.kind == "one-sided" and (every.x50, every.low, every.high) == pytest.approx((0.1, 0.0, 0.1))
    none = basin.fit_logistic([0.1, 0.2], [False, False], rising=True)  # ... above the largest
    assert none.kind == "one-sided" and none.x50 == pytest.approx(0.2) and none.high == math.inf
    assert basin.fit_logistic([0.1, 0.2, 0.4], [True, False, False], rising=True).kind == "flat"


@pytest.mark.parametrize("rising", [False, True])
def test_probabilistic_bisection_alone_finds_a_sharp_edge_and_a_noisy_one(rising):
    for trust, width in ((0.8, 20), (0.97, 1.1)):  # the interval is as wide as the outcomes are trusted
        sharp = []
        for _ in range(14):
            x = basin.propose_edge(sharp, 0.01, 10, p_correct=trust, rising=rising)
            sharp.append((x, (x < 0.37) != rising))
        lo, hi = basin.posterior_interval(sharp, 0.01, 10, p_correct=trust, rising=rising)
        assert lo <= 0.37 <= hi and hi / lo < width and sharp[-1][0] == pytest.approx(0.37, rel=0.02)
    rng, noisy = np.random.default_rng(3), []
    for _ in range(60):  # each probe is a new seed: its own edge, log-normal around 0.37
        x = basin.propose_edge(noisy, 0.01, 10, p_correct=0.7, rising=rising)
        noisy.append((x, (x < 0.37 * math.exp(0.3 * rng.standard_normal())) != rising))
    fit = basin.fit_logistic(*zip(*noisy), rising=rising)
    assert fit.low <= 0.37 <= fit.high and fit.x50 == pytest.approx(0.37, rel=0.25)


@pytest.mark.parametrize("rising", [False, True])
def test_bisect_sampler_brackets_the_edge_in_an_optuna_study(rising):
    study = optuna.create_study(direction="minimize", sampler=BisectSampler(2, rising=rising))
    dist = optuna.distributions.FloatDistribution(0.05, 5.0, log=True)
    rng = np.random.default_rng(5)
    points = []
    for _ in range(30):
        t = study.ask({"init_delta": dist})
        x = t.params["init_delta"]
        ok = bool(x < 0.9 * math.exp(0.2 * rng.standard_normal())) != rising
        t.set_user_attr("success", ok)
        study.tell(t, (-1 / x if rising else -x) if ok else 0.0)
        points.append((x, ok))
    first = sorted(p for p, _ in points[:2])
    assert first[0] < 0.5 < first[1]                     # the spread start: one probe on each side of the middle
    fit = basin.fit_logistic(*zip(*points), rising=rising)
    assert fit.x50 == pytest.approx(0.9, rel=0.1)
    late = [x for x, _ in points[10:]]
    assert float(np.median(late)) == pytest.approx(0.9, rel=0.1)  # probes concentrate near the edge


PLANTED = {  # family: (searched key, its range, the planted edge c N^k, the law's form in the report and the paper)
    "basin": ("model.init_delta", (0.05, 8.0), (2.0, -0.5), "init_delta₅₀ ∝ N^−β", "β in δ₅₀ ∝ N^−β"),
    "basin_scale": ("model.init_scale", (0.01, 3.0), (0.05, 0.5), "init_scale₅₀ ∝ N^β", "β in s₅₀ ∝ N^β"),
}


@pytest.mark.parametrize("family", PLANTED)
def test_a_basin_study_search_plants_values_and_its_analysis_recovers_the_law(tmp_path, family):
    """The real searcher of family=basin (δ, success falls with it) and family=basin_scale (the free layer's scale,
    success rises with it), with planted outcomes instead of training: each suggestion carries its value, and
    the pooled edges per depth follow the planted law c N^k (β = |k|: the basin shrinks with depth either way)."""
    key, (low, high), (c, k), form, paper_form = PLANTED[family]
    (cfg, _, cells), = plan([f"family={family}", "model.depth=2,8,32", "seed=0,1,2,3", "search.trials=10",
                             "+family.grid.variant=[{name: rgd, optim.method: rgd}]"])
    rising = cfg.search.edge == "rising"
    assert rising == (k > 0)
    search = CellSearch(cells, {**cfg.search.__dict__})
    rng, records = np.random.default_rng(11), []
    for n in range(2000):
        s = search.suggest(f"t{n}")
        if s == "FINISHED":
            break
        cell = cells[s["cell_index"]]
        value = s["value"]
        assert s["lr"] is None and s["param"] == key and low <= value <= high
        edge = c * cell.get("model.depth") ** k * math.exp(0.15 * rng.standard_normal())
        ok = (value < edge) != rising
        score = (-1 / value if rising else -value) if ok else 0.0
        result = {"objective": score, "outcome": "converged" if ok else "stalled", FINAL: True}
        search.on_trial_complete(f"t{n}", result)
        records.append({"key": s["key"], "cell_index": cell.index, "trial_number": s["trial_number"], "lr": 0.1,
                        "value": value, "status": "FINISHED", "result": planted_result(
                            outcome=result["outcome"], objective=result["objective"], value=value)})
    assert len(records) == 12 * 10
    out = edge_analysis(cells, records)
    assert out["rising"] == rising
    for e in out["edges"]:  # three 95 % intervals: allow each a 5 % miss rather than a flaky test
        assert e["low"] / 1.05 <= c * e["depth"] ** k <= e["high"] * 1.05 and e["kind"] == "logistic"
        assert e["x50"] == pytest.approx(c * e["depth"] ** k, rel=0.15)
    law = out["laws"]["variant=rgd"]
    assert law["ci95"][0] <= 0.5 <= law["ci95"][1] and law["beta"] == pytest.approx(0.5, abs=0.1)
    assert law["exponent"] == pytest.approx(k, abs=0.1)
    report = tmp_path / "study" / "report"
    written = write(report, cells, records)  # the study's report: the edge table replaces the cell table
    assert form in written["text"] and written["edge"]["laws"] == out["laws"]
    assert all((report / f).stat().st_size > 1000 for f in ("basin_success.png", "basin_edge.png",
                                                             "basin_distance.png", "edges.json"))
    res = StudyResult(family, report.parent, None, None, "", [], {}, "", 0.0, 0, [])  # the paper's section of it
    section = "\n".join(paper._beyond(family, res, tmp_path))
    assert f"| series | {paper_form} [95 % CI] | depths |" in section and "| variant=rgd | 32 | 40 (" in section
    assert (tmp_path / f"{family}-basin_edge.png").exists() and f"({family}-basin_edge.png)" in section


def planted_result(**fields) -> dict:
    """A trial's result record as the study writes it, with a short curve."""
    return TrialResult(**{"lr": 0.1, "steps": 20, "objective": 0.5, "final_rel_excess": 0.3, "curve_steps": [0, 20],
                          "curves": {"rel_excess": [1.0, 0.3]}, **fields}).to_dict()


def test_power_law_weighted_recovers_a_planted_exponent():
    n = np.array([2, 4, 8, 16, 32, 64])
    rng = np.random.default_rng(2)
    y = 3 * n ** -0.7 * np.exp(0.02 * rng.standard_normal(n.size))
    law = basin.fit_power_law_weighted(n, y, np.full(n.size, 0.02))
    assert law.ci[0] <= -0.7 <= law.ci[1] and law.prefactor == pytest.approx(3, rel=0.1)


@pytest.mark.parametrize("args, words", [
    (["search.key=model.init_delta", "optim.protocol=theory", "search.sampler=bisect", "search.objective=edge"],
     "search.low and search.high"),
    (["search.key=model.init_delta", "search.low=0.1", "search.high=1", "search.sampler=bisect",
      "search.objective=edge"], "optim.protocol='tuned'"),
    (["search.sampler=bisect"], "search.objective=edge"),
    (["search.low=0.1"], "search.lr_min"),
    (["family=basin", "search.low=0"], "must be > 0 on search.scale=log"),
    (["family=basin_scale", "search.low=0", "search.scale=linear"], "must be > 0 with search.edge=rising"),
    (["family=basin", "model.init=random"], "model.init='random'"),
    (["family=basin", "data.noise=0.1"], "optim.protocol='theory'"),
])
def test_search_key_rules_stop_with_one_line(args, words):
    with pytest.raises(ConfigError) as err:
        plan(args)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_runs_from_standard_starts_are_summarised_per_depth_over_seeds(tmp_path):
    (cfg, _, cells), = plan(["family=global", "model.depth=2,4", "seed=0,1,2",
                             "family.grid.variant=[{name: random, model.init: random}]"])
    assert is_runs_study(cells) and not is_edge_study(cells)
    plant = {  # per depth: (outcome, fitted ρ, short-run ρ, window start, exact local ρ at the solution) per seed
        2: [("converged", None, 0.09, None, 0.1), ("converged", 0.1, 0.1, 4, 0.1),
            ("diverged", None, None, None, None)],
        4: [("converged", 0.33, 0.33, 6, 0.333), ("stalled", None, None, None, None),
            ("stalled", None, None, None, None)],
    }
    records = []
    for cell in cells:
        outcome, rate, est, start, local = plant[cell.get("model.depth")][cell.get("seed")]
        records.append({"key": f"{cell.id}#0", "cell_index": cell.index, "lr": 0.5, "status": "FINISHED",
                        "result": planted_result(outcome=outcome, rate=rate, rate_estimate=est, linear_start=start,
                                                 solution_rate=local)})
    rows = {r["depth"]: r for r in runs_analysis(cells, records)}
    assert rows[2]["linear"] == 2 and rows[2]["runs"] == 3 and rows[2]["outcomes"] == {"converged": 2, "diverged": 1}
    assert rows[2]["linear_start"] == pytest.approx(2.5)      # a short run's linear phase starts at step 1
    assert rows[2]["rate_vs_local"] == pytest.approx(((1 - 0.09) / 0.9 + 1) / 2)
    assert rows[4]["linear"] == 1 and rows[4]["wilson"] == pytest.approx(basin.wilson(1, 3))
    assert rows[4]["outcomes"] == {"converged": 1, "stalled": 2} and "stalled" in runs_text(list(rows.values()))
    written = write(tmp_path, cells, records)
    assert written["runs"] and (tmp_path / "global_linear.png").stat().st_size > 1000


def test_a_searched_value_replaces_one_key_of_the_typed_config_within_its_bounds():
    (cfg, _, cells), = plan(["family=basin", "model.depth=2", "seed=0"])
    moved = replace_path(cells[0].cfg, "model.init_delta", 0.7)
    assert moved.model.init_delta == 0.7 and moved.model.depth == 2 and cells[0].cfg.model.init_delta != 0.7
    with pytest.raises(ConfigError, match="model.init_delta"):
        replace_path(cells[0].cfg, "model.init_delta", -1.0)
