"""A compact, terminal-friendly progress line for a study (instead of Ray's wide trial table).

On a TTY the line is rewritten in place about once a second; otherwise (CI logs) one line is
printed every ``every`` seconds. It shows cells done, trials running / done / failed / pruned,
the best rate so far per depth, and an ETA.
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from .pack import PACK, members


class Progress(Callback):
    def __getstate__(self):  # see runner.DriverOnly: never restored, holds a stream
        return {}

    def __init__(self, total_trials: int, cells: int, budget: list[int], done_before: dict[int, int],
                 depth_of: list[int], every: float = 10.0, stream=None, capacity=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = 1.0 if self.tty else every
        self.total, self.cells, self.budget = total_trials, cells, budget
        self.per_cell = dict(done_before)
        self.depth_of, self.capacity = depth_of, capacity
        self.hosts: set[str] = set()
        self.done = self.failed = self.pruned = self.running = 0
        self.best: dict[int, float] = {}
        self.start = self.last = time.monotonic()
        self.before = sum(done_before.values())

    def line(self) -> str:
        cells_done = sum(1 for c in range(self.cells) if self.per_cell.get(c, 0) >= self.budget[c])
        finished = self.done + self.failed + self.pruned
        elapsed = time.monotonic() - self.start
        left = self.total - self.before - finished
        eta = f"{elapsed / finished * left:.0f}s" if finished else "?"
        best = " ".join(f"N={n}:{r:.4f}" for n, r in sorted(self.best.items()))
        slots = f" of {self.capacity.slots()} slots" if self.capacity else ""
        return (f"cells {cells_done}/{self.cells} · trials {self.before + finished}/{self.total} "
                f"({self.running} running{slots} on {len(self.hosts)} host(s), {self.failed} failed, "
                f"{self.pruned} pruned) · "
                f"best ρ {best or '—'} · ETA {eta}")

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:200])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self.emit(force=True)
        if self.tty:
            self.stream.write("\n")

    def _ended(self, trial) -> list[tuple[int, dict]]:
        """(cell, entry) per trial of the ended pack; entry: its result or error (pack.run_pack), {} if none."""
        entries = (trial.last_result or {}).get(PACK) or []
        out = []
        for i, member in enumerate(members(trial.config)):
            c = member["cell_index"]
            self.per_cell[c] = self.per_cell.get(c, 0) + 1
            out.append((c, entries[i] if i < len(entries) else {}))
        return out

    def on_trial_complete(self, iteration, trials, trial, **info):
        for c, entry in self._ended(trial):
            res = entry.get("result") or {}
            if res.get("node_id"):
                self.hosts.add(res["node_id"])
            if entry.get("error"):
                self.failed += 1
            elif not res:
                self.pruned += 1
            else:
                self.done += 1
                rate = res.get("rate")
                if rate is not None and res.get("outcome") == "converged":
                    n = self.depth_of[c]
                    self.best[n] = min(self.best.get(n, 1.0), rate)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += len(self._ended(trial))

    def on_step_end(self, iteration, trials, **info):
        self.running = sum(1 for t in trials if t.status == "RUNNING")
        self.emit()
