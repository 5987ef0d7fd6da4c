"""Packs of μ trials per Tune trial: sizing, running, and a searcher whose packs leave each cell's μ sequence as it
is unpacked (real Optuna studies, no Ray)."""
from __future__ import annotations

import pytest

from orthoscale.study.compose import plan
from orthoscale.study.pack import PACK, PackSearch, auto_size, driver_cost, run_pack, worker_gap
from orthoscale.study.results import FINAL
from orthoscale.study.tracking import batches


def loss_rate(mu: float, a: float = 0.5, b: float = 3.0) -> float:
    return max(abs(1 - mu * a), abs(1 - mu * b)) ** 2


def entry(member: dict) -> dict:
    rho = loss_rate(member["lr"])
    ok = rho < 1
    return {"result": {"objective": rho if ok else 3.0, "outcome": "converged" if ok else "diverged",
                       "observed_rate": rho if ok else None, "pid": 1}, "started": 0.0, "ended": 0.01}


def drive(search: PackSearch, live: int = 1) -> tuple[list[list[dict]], dict[int, list[float]]]:
    """Run the searcher to the end with ``live`` packs at a time; (packs in order, μ sequence per cell)."""
    search.limit = lambda: live
    packs, running, n = [], [], 0
    while n < 1000:
        s = search.suggest(f"t{n}")
        if s == "FINISHED" and not running:
            break
        if s not in (None, "FINISHED"):
            running.append((f"t{n}", s))
            packs.append(s["pack"])
            n += 1
            if len(running) < live:
                continue
        tid, done = running.pop(0)
        search.on_trial_complete(tid, {PACK: [entry(m) for m in done["pack"]], FINAL: True, "objective": 0.0,
                                       "pack_started": 0.0, "pack_ended": 0.01})
    per_cell: dict[int, list[float]] = {}
    for pack in packs:
        for m in pack:
            per_cell.setdefault(m["cell_index"], []).append(m["lr"])
    return packs, per_cell


def searcher(pack: int, trials: int = 5, sampler: str = "rate") -> PackSearch:
    (cfg, _, cells), = plan(["model.depth=2,3,4", "seed=0", f"search.trials={trials}", f"search.sampler={sampler}",
                             "search.edge_rounds=0"])
    return PackSearch(cells, {**cfg.search.__dict__}, pack=pack)


@pytest.mark.parametrize("sampler", ["rate", "tpe"])
def test_packs_leave_each_cells_mu_sequence_unchanged_at_concurrency_one(sampler):
    _, alone = drive(searcher(1, sampler=sampler))
    packs, packed = drive(searcher(3, sampler=sampler))
    assert packed == alone and all(len(v) == 5 for v in alone.values())
    assert max(len(p) for p in packs) == 3 and len(packs) < 15        # fewer Tune trials for the same trials
    for pack in packs:                                                  # a pack never holds two trials of a cell
        assert len({m["cell_index"] for m in pack}) == len(pack)


def test_the_concurrency_gate_counts_packs_not_trials():
    search = searcher(3)
    search.limit = lambda: 2
    first, second = search.suggest("a"), search.suggest("b")
    assert len(first["pack"]) == 3 and second is not None and search.suggest("c") is None
    assert search.in_flight() == 2 and len(search.live) == len(first["pack"]) + len(second["pack"])


def test_a_pack_never_outgrows_the_trials_left_per_live_pack():
    search = searcher(10, trials=2)            # 6 trials, 3 cells, 4 live packs allowed
    search.limit = lambda: 4
    assert len(search.suggest("a")["pack"]) == 2


def test_a_pack_holds_no_more_than_its_share_of_the_remaining_work():
    """Auto packs are sized by the median trial, but hold at most 1/slots of the work left, each cell's trials at
    their own expected seconds: a cell of slow trials (budget-bound μ) near the end is not strung behind others
    in one pack while a slot stands idle."""
    def measured(slow: float) -> PackSearch:
        (cfg, _, cells), = plan(["model.depth=2,3,4,5,6,7", "seed=0", "search.trials=2", "search.edge_rounds=0"])
        search = PackSearch(cells, {**cfg.search.__dict__}, pack=0)
        search.limit = lambda: 1
        first = search.suggest("a")["pack"]
        assert [m["cell_index"] for m in first] == [0]                  # nothing measured yet: one trial
        search.on_trial_complete("a", {PACK: [entry(m) for m in first], FINAL: True, "objective": 0.0})
        search.cpu, search.seconds = [0.0, 0.05, 0.10], [0.01] * 10    # short trials, 50 ms of driver per pack
        search.cell_seconds = {c: [0.01] for c in range(6)} | {1: [0.01, slow]}
        search.limit = lambda: 3
        return search

    assert len(measured(0.01).suggest("b")["pack"]) == 4                # ⌈11 trials left / 3 packs⌉
    search = measured(3.5)                                               # cell 1's trials take seconds
    assert search.rest_seconds() == pytest.approx(2 * 3.5 + 9 * 0.01)
    assert [m["cell_index"] for m in search.suggest("b")["pack"]] == [1]  # 3.5 s ≥ a third of the ≈ 7 s left


def test_a_pruner_keeps_packs_of_one():
    (cfg, _, cells), = plan(["model.depth=2,3", "seed=0", "search.pruner=median"])
    search = PackSearch(cells, {**cfg.search.__dict__}, pack=5)
    search.limit = lambda: 1
    assert len(search.suggest("a")["pack"]) == 1


def test_a_failed_pack_fails_every_trial_in_it():
    search = searcher(3)
    search.limit = lambda: 1
    pack = search.suggest("a")["pack"]
    search.on_trial_complete("a", None, error=True)
    states = [t.state.name for s in search.studies for t in s.get_trials(deepcopy=False)]
    assert states.count("FAIL") == len(pack) and not search.live and not search.packs


def test_auto_size_keeps_the_gap_under_its_share_of_the_compute():
    assert auto_size(None, 0.1) == 1 and auto_size(0.05, None) == 1
    assert auto_size(0.05, 2.0) == 1          # seconds-long trials: unpacked
    assert auto_size(0.05, 0.01) == 100       # 10 ms trials behind a 50 ms gap: 100 per pack → 5 %


def test_auto_size_keeps_the_driver_busy_under_its_share_whatever_the_slots():
    assert auto_size(None, 0.2, 0.05, driver=0.1) == 10            # 100 ms of driver CPU per pack ≤ 5 % of 10 × 0.2 s
    assert auto_size(0.01, 0.2, 0.05, driver=0.1) == 10            # the larger of the two costs decides
    assert auto_size(None, 0.2, 0.05, driver=0.1, slots=2) == 20   # two slots' packs on one driver
    assert auto_size(None, 1.0, 0.05, driver=0.1, slots=1000) == 2000
    assert auto_size(None, 2.0, 0.05, driver=0.001) == 1


def test_driver_cost_is_the_median_cpu_between_tune_trial_ends():
    assert driver_cost([1.0, 1.1, 1.3, 1.4, 1.5, 2.5]) == pytest.approx(0.1)  # a one-off second does not count
    assert driver_cost([1.0]) is None


def test_worker_gap_is_the_median_idle_time_between_a_workers_tune_trials():
    spans = [(1, 0.0, 1.0), (2, 0.0, 1.0), (1, 1.1, 2.0), (2, 1.3, 2.0), (1, 2.2, 3.0)]
    assert worker_gap(spans) == pytest.approx(0.2)
    assert worker_gap([(1, 0.0, 1.0)]) is None


def test_run_pack_keeps_each_trials_error_to_itself_but_a_pack_of_one_raises():
    def run(member):
        if member["lr"] < 0:
            raise FloatingPointError("boom")
        return {"objective": member["lr"]}

    out = run_pack([{"lr": 0.3}, {"lr": -1.0}, {"lr": 0.2}], run)
    assert [bool(e.get("result")) for e in out[PACK]] == [True, False, True]
    assert "boom" in out[PACK][1]["error"] and out["objective"] == 0.2 and out[FINAL]
    assert all(e["started"] <= e["ended"] for e in out[PACK])
    with pytest.raises(FloatingPointError):
        run_pack([{"lr": -1.0}], run)


def test_a_child_run_goes_in_one_log_batch_within_mlflows_limits():
    params, metrics = list(range(70)), list(range(820))
    assert [(len(p), len(m)) for p, m in batches(params, metrics)] == [(70, 820)]
    calls = list(batches(list(range(150)), list(range(1500))))
    assert all(len(p) <= 100 and len(p) + len(m) <= 1000 for p, m in calls)
    assert sum(len(p) for p, _ in calls) == 150 and sum(len(m) for _, m in calls) == 1500


def test_the_driver_loads_mlflow_only_when_a_store_opens():
    import subprocess
    import sys

    code = "import sys, orthoscale.study.driver, orthoscale.study.runner; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    from mlflow.utils import mlflow_tags

    from orthoscale.study import tracking
    assert (tracking.MLFLOW_PARENT_RUN_ID, tracking.MLFLOW_RUN_NAME) == (mlflow_tags.MLFLOW_PARENT_RUN_ID,
                                                                         mlflow_tags.MLFLOW_RUN_NAME)


def test_phases_add_up_wall_and_cpu_per_name():
    import time

    from orthoscale.study.driver import Phases

    phases = Phases()
    spin = phases.timed("spin", lambda until: [None for _ in iter(lambda: time.process_time() < until, False)])
    spin(time.process_time() + 0.05)
    phases.timed("sleep", time.sleep)(0.05)
    phases.timed("sleep", time.sleep)(0.05)
    assert phases["spin.cpu"] >= 0.04 and phases["sleep"] >= 0.1 and phases["sleep.cpu"] < 0.05
