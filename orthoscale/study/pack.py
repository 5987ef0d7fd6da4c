"""Packs: several μ trials run by one Ray Tune trial, so Tune's per-trial cost is paid once per pack.

Every μ of a pack is still its own Optuna trial, durable record and MLflow child run; only the Tune trial
(scheduling, actor reset, result round trip) is shared. A pack holds trials of **distinct cells**, so each
cell's μ sequence is what it would be unpacked: at concurrency 1 every μ of a cell is still asked after the
cell's previous trial was told (deterministic, resumed or not). A pack is recorded whole when it ends (one
report back to the driver); a driver killed mid-pack reruns it on resume, as it reruns an unpacked trial.

Size (``ray.pack``; 0 = auto): auto measures Tune's per-trial cost twice, as the idle gap a worker sees
between two Tune trials and as the driver's CPU per Tune trial (medians over the study so far), and packs
enough trials that the gap stays under ``ray.pack_gap`` of a pack's compute and the driver, serving every
slot, stays busy under that share of its time — trials of seconds run unpacked, trials of milliseconds in
packs of up to one per open cell. A pack never holds more than its share (1/slots) of the work left, each
cell's trials counted at their own seconds, so a study's last trials run side by side. A pruner needs each
trial's intermediate reports: with one, packs are of one.
"""
from __future__ import annotations

import math
import statistics
import time
import traceback
from typing import Callable

from .cells import Cell
from .results import FINAL
from .search import METRIC, CellSearch
from .store import encode

PACK = "orthoscale_pack"  # the per-trial results of a pack, in its Tune result


def auto_size(gap: float | None, seconds: float | None, share: float = 0.05, driver: float | None = None,
              slots: int = 1) -> int:
    """Trials per pack k, for trials of ``seconds`` each, such that Tune's per-trial costs stay under ``share``
    (ray.pack_gap): a worker's idle ``gap`` (s per Tune trial) ≤ share of a pack's compute k·seconds, and the
    driver's CPU ``driver`` (s per Tune trial) for the packs of all ``slots`` ≤ share of a core:
    slots·driver ≤ share·k·seconds. 1 until the trials' seconds and one of the costs are measured."""
    if not seconds or not (gap or driver):
        return 1
    return max(1, math.ceil(max(gap or 0.0, slots * (driver or 0.0)) / (share * seconds)))


def driver_cost(stamps: list[float]) -> float | None:
    """The driver's CPU per Tune trial: the median CPU seconds between consecutive Tune-trial completions, from
    the driver's process CPU time at each."""
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(steps) if steps else None


def worker_gap(spans: list[tuple[int | str, float, float]]) -> float | None:
    """Median idle time between consecutive Tune trials of one worker, from (worker, start, end) of packs."""
    last: dict = {}
    gaps = []
    for worker, start, end in sorted(spans, key=lambda s: s[1]):
        if worker in last and start >= last[worker]:
            gaps.append(start - last[worker])
        last[worker] = max(end, last.get(worker, end))
    return statistics.median(gaps) if gaps else None


def run_pack(members: list[dict], run: Callable[[dict], dict], report=None) -> dict:
    """Run every member of a pack in turn (``run(member)`` → a TrialResult dict); the Tune result that carries
    them: each member's result or error, with its own start and end (wall clock of the worker). A pack of one
    raises its trial's error (Tune retries or records it); in a larger pack one trial's error is its own."""
    out, begin = [], time.time()
    for member in members:
        started, entry = time.time(), {}
        try:
            entry["result"] = run(member)
            entry["text"] = encode(entry["result"])  # its record's JSON, formatted here rather than in the driver
        except Exception as err:
            if len(members) == 1:
                raise
            entry["error"] = "".join(traceback.format_exception_only(err)).strip().splitlines()[-1][:2000]
        out.append({**entry, "started": started, "ended": time.time()})
    objectives = [e["result"][METRIC] for e in out if e.get("result") and e["result"].get(METRIC) is not None]
    return {PACK: out, FINAL: True, METRIC: min(objectives, default=math.inf), "pack_started": begin,
            "pack_ended": time.time()}


def members(config: dict) -> list[dict]:
    """The trials of a Tune trial's config."""
    return config["pack"]


class PackSearch(CellSearch):
    """CellSearch whose suggestions are packs of trials of distinct cells (see the module docstring); the
    searcher's concurrency gate counts Tune trials (packs), not the trials inside them."""

    def __init__(self, cells: list[Cell], search: dict, finished: list[dict] = (), pack: int = 0,
                 gap_share: float = 0.05):
        super().__init__(cells, search, finished)
        self.pack = 1 if search["pruner"] != "none" else pack
        self.gap_share = gap_share
        self.packs: dict[str, list[tuple[str, int]]] = {}  # Tune trial → its trials (Optuna id, cell)
        self.spans: list[tuple[int | str, float, float]] = []  # (worker pid, start, end) of finished packs
        self.seconds: list[float] = []                         # wall time of finished trials on their worker
        self.cell_seconds: dict[int, list[float]] = {}         # the same, per cell
        self.cpu: list[float] = []                             # the driver's CPU time at each Tune trial's end

    def in_flight(self) -> int:
        return len(self.packs)

    def expected(self, cell: int) -> float | None:
        """Seconds the next trial of ``cell`` is expected to take: the longest of its last four (a cell's trials
        differ by μ: slow ones run to the budget, diverging ones stop at once), else the median trial's."""
        own = self.cell_seconds.get(cell)
        if own:
            return max(own[-4:])
        return statistics.median(self.seconds[-200:]) if self.seconds else None

    def rest_seconds(self) -> float:
        """Expected seconds of the trials not yet asked for, cell by cell (:meth:`expected`; 0 for cells whose
        trials are not measured yet)."""
        return sum((self.budget[c] - len(self.used[c])) * (self.expected(c) or 0.0) for c in range(len(self.budget))
                   if self.budget[c] > len(self.used[c]))

    def propose(self, trial_id: str, open_cells: list[int]) -> dict:
        """A pack of distinct open cells: ray.pack trials, or auto (module docstring); never more than spreads the
        remaining trials over the live packs allowed, nor more expected seconds than its share of the remaining
        work, so the last trials of a study run side by side rather than one after another in one pack."""
        allowed = max(self.limit() if self.limit else 1, 1)
        want = self.pack or auto_size(worker_gap(self.spans[-200:]), statistics.median(self.seconds[-200:])
                                      if self.seconds else None, self.gap_share, driver_cost(self.cpu[-200:]),
                                      allowed)
        cap = max(1, min(want, len(open_cells), math.ceil(self.remaining() / allowed)))
        share = self.rest_seconds() / allowed
        picks: list[dict] = []
        total = 0.0
        while len(picks) < cap:
            cells = [c for c in open_cells if len(self.used[c]) < self.budget[c]
                     and c not in {p["cell_index"] for p in picks}]
            if not cells:
                break
            picks.append(super().propose(f"{trial_id}.{len(picks)}", cells))
            total += self.expected(picks[-1]["cell_index"]) or 0.0
            if share and total >= share:
                break
        self.packs[trial_id] = [(f"{trial_id}.{i}", p["cell_index"]) for i, p in enumerate(picks)]
        return {"pack": picks}

    def report(self, trial_id: str, value: float, step: int) -> bool:
        return super().report(f"{trial_id}.0", value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.cpu.append(time.process_time())
        entries = (result or {}).get(PACK) or []
        if result and result.get("pack_started") and entries and entries[0].get("result"):
            self.spans.append((entries[0]["result"].get("pid"), result["pack_started"], result["pack_ended"]))
        for i, (sub, cell) in enumerate(self.packs.pop(trial_id, [])):
            entry = entries[i] if i < len(entries) else {}
            if entry.get("result"):
                self.seconds.append(entry["ended"] - entry["started"])
                self.cell_seconds.setdefault(cell, []).append(self.seconds[-1])
                super().on_trial_complete(sub, {**entry["result"], FINAL: True})
            else:  # failed, or (a pack of one) pruned: Tune's last result is its last intermediate report
                super().on_trial_complete(sub, None if entries else result, error or bool(entries))
