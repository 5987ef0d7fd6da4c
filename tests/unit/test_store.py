"""Durable trial results: one JSON line per record, the last per trial key wins, a torn final line is ignored."""
from __future__ import annotations

import math

from orthoscale.study.store import ResultStore


def test_records_append_and_load_back(tmp_path):
    store = ResultStore(tmp_path / "study")
    assert store.load() == [] and store.path.parent.is_dir()  # no file yet: nothing done
    first, second = {"key": "a", "lr": 0.1, "result": {"steps": 3}}, {"key": "b", "lr": 0.2, "result": None}
    store.append(first)
    store.append(second)
    assert store.load() == [first, second]
    assert len(store.path.read_text().splitlines()) == 2
    assert ResultStore(tmp_path / "study").load() == [first, second]  # a new process reads the same


def test_the_last_record_per_key_wins(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"key": "a", "status": "RUNNING"})
    store.append({"key": "b", "status": "FINISHED"})
    store.append({"key": "a", "status": "FINISHED"})
    assert sorted((r["key"], r["status"]) for r in store.load()) == [("a", "FINISHED"), ("b", "FINISHED")]


def test_a_torn_final_line_is_ignored(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"key": "a", "lr": 0.1})
    with open(store.path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "b", "lr": 0.')  # the process died mid-write
    assert store.load() == [{"key": "a", "lr": 0.1}]


def test_non_finite_floats_survive_as_strings_in_strict_json(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"key": "a", "result": {"rate": float("nan"), "curve": [1.0, float("inf"), -math.inf]},
                  "pair": (float("nan"), 2)})
    line = store.path.read_text().strip()
    assert "NaN" not in line and "Infinity" not in line  # strict JSON: other readers can parse it
    (rec,) = store.load()
    assert rec["result"] == {"rate": "nan", "curve": [1.0, "inf", "-inf"]} and rec["pair"] == ["nan", 2]
    assert math.isnan(float(rec["result"]["rate"])) and float(rec["result"]["curve"][2]) == -math.inf


def test_a_packs_records_go_in_with_one_fsync(tmp_path, monkeypatch):
    import os

    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    store = ResultStore(tmp_path)
    store.append(*({"key": f"c#{k}", "v": k} for k in range(5)))
    assert len(calls) == 1 and [r["v"] for r in store.load()] == list(range(5))


def test_a_result_encoded_by_its_worker_is_written_as_it_is_and_reads_back_the_same(tmp_path):
    import pickle

    from orthoscale.study.store import Encoded, encode

    result = {"lr": 0.1, "final_loss": math.inf, "curves": {"loss": [1.0, math.nan, 0.5]}, "outcome": "diverged"}
    plain = {"key": "c#0", "status": "FINISHED", "result": result, "ended": 2.0}
    store = ResultStore(tmp_path)
    store.append({**plain, "result": Encoded(result, encode(result))}, {**plain, "key": "c#1"})
    first, second = store.load()
    assert first == {**second, "key": "c#0"}                 # the worker's text and the driver's encoding agree
    assert first["result"]["final_loss"] == "inf" and first["result"]["curves"]["loss"][1] == "nan"
    assert type(pickle.loads(pickle.dumps(Encoded(result, "{}")))) is dict   # to the tracking process: a dict
