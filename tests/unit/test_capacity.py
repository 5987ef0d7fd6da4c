"""Slots from cluster resources, the searcher's gate on live trials, and concurrency measured from records."""
from __future__ import annotations

import pytest

from orthoscale.study.capacity import Capacity, diagnose, fanout_summary, measure, resource_slots
from orthoscale.study.config import RayCfg


@pytest.mark.parametrize("resources, cpus, gpus, slots", [
    ({"CPU": 2.0}, 1, 0, 2), ({"CPU": 3.0}, 0.5, 0, 6), ({"CPU": 16.0, "GPU": 2.0}, 1, 0.25, 8),
    ({"CPU": 1.0}, 1, 0.5, 0), ({"CPU": 0.0}, 1, 0, 0), ({"CPU": 2.0}, 2, 0, 1)])
def test_resource_slots(resources, cpus, gpus, slots):
    assert resource_slots(resources, cpus, gpus) == slots


def test_capacity_follows_the_cluster_and_keeps_proposals_ready():
    cluster = {"CPU": 1.0}
    cap = Capacity(RayCfg(), lambda: dict(cluster), refresh=0)
    assert (cap.slots(), cap.limit()) == (1, 1)          # one slot: nothing proposed ahead (deterministic)
    cluster["CPU"] = 3.0                                  # two hosts join
    assert (cap.slots(), cap.limit()) == (3, 6)          # three running, three waiting for a slot
    cluster["CPU"] = 2.0                                  # one leaves
    assert (cap.slots(), cap.limit(), cap.most) == (2, 4, 3)
    cluster["CPU"] = 0.0                                  # none left: still one live trial, waiting
    assert cap.limit() == 1


def test_capacity_never_exceeds_max_concurrent():
    cluster = {"CPU": 8.0}
    cap = Capacity(RayCfg(max_concurrent=3), lambda: dict(cluster), refresh=0)
    assert (cap.slots(), cap.limit()) == (3, 3)
    cluster["CPU"] = 2.0
    assert (cap.slots(), cap.limit()) == (2, 3)
    assert Capacity(RayCfg(max_concurrent=1), lambda: {"CPU": 4.0}, refresh=0).limit() == 1


def test_capacity_reads_resources_at_most_every_refresh_seconds():
    calls = []
    cap = Capacity(RayCfg(), lambda: calls.append(1) or {"CPU": 2.0}, refresh=3600)
    for _ in range(5):
        cap.limit()
    assert len(calls) == 1


def rec(start, end, host="a"):
    return {"started": start, "ended": end, "host": host}


def test_measure_concurrency_from_records():
    c = measure([rec(0, 2), rec(1, 3, "b"), rec(2, 4)])
    assert (c.trials, c.span, c.busy, c.peak) == (3, 4, 6, 2)
    assert c.mean == pytest.approx(1.5) and c.hosts == {"a": 2, "b": 1}
    assert measure([]).trials == 0 and measure([{"started": None, "ended": 1}]).trials == 0


def test_diagnose_names_why_concurrency_was_low():
    full = [rec(i, i + 10) for i in range(0, 100, 5)] + [rec(i + 2.5, i + 12.5) for i in range(0, 100, 5)]
    assert diagnose(measure(full), 2, full) is None        # two at a time throughout
    serial = [rec(i, i + 2) for i in range(0, 40, 2)]       # one at a time, 2 s trials
    line = diagnose(measure(serial), 2, serial)
    assert line.startswith("low concurrency: mean 1.00 of 2 slots (50%)") and "short" not in line
    short = [rec(i * 0.3, i * 0.3 + 0.3) for i in range(40)]
    assert "trials are short (median 0.30 s)" in diagnose(measure(short), 2, short)
    tail = [rec(0, 10), rec(0, 10), rec(10, 30)]            # the last trial ran alone for two thirds of the time
    assert "last trials serialised" in diagnose(measure(tail), 2, tail)


def test_fanout_summary_names_lost_hosts():
    s = fanout_summary([rec(0, 2, "10.0.0.10"), rec(0, 2, "10.0.0.11")], 2, 3, ["10.0.0.12"])
    assert s["concurrency_mean"] == 2 and s["hosts_used"] == 2 and s["hosts_in_cluster"] == 3
    assert s["warning"] is None and "lost during the study: 10.0.0.12" in s["line"]
    assert "worker hosts used 2/3" in s["line"]


def test_searcher_gates_live_trials_on_the_limit():
    from orthoscale.study.compose import plan
    from orthoscale.study.search import CellSearch

    (cfg, _, cells), = plan(["model.depth=2,4", "seed=0", "search.trials=3", "search.edge_rounds=0"])
    search = CellSearch(cells, {**cfg.search.__dict__})
    allowed = [2]
    search.limit = lambda: allowed[0]
    assert search.set_max_concurrency(100_000)
    a, b = search.suggest("a"), search.suggest("b")
    assert {a["cell_index"], b["cell_index"]} == {0, 1}    # breadth-first over cells
    assert search.suggest("c") is None                      # two live: wait
    search.on_trial_complete("a", {"objective": 0.5, "orthoscale_final": True, "observed_rate": 0.5})
    assert search.suggest("c") is not None
    allowed[0] = 5                                          # nodes joined
    assert search.suggest("d") is not None and search.suggest("e") is not None
    assert search.suggest("f") is not None and search.suggest("g") == "FINISHED"  # 6 trials in all
