"""Per-cell search of one config key (search.key: μ by default): one Optuna study per cell behind a single Ray
Tune ``Searcher``.

All cells' trials go through one Tuner, so the cluster stays busy; each cell's key is searched (μ on a log scale,
another key on search.scale) by its own Optuna study. Suggestions go breadth-first (the cell with fewest trials
launched), so cells progress together. A cell whose trials are all in and whose best μ is its outermost
trial near a bound of its range (WIDEN_MARGIN) has that bound moved by ``search.edge_factor`` and gets
``search.startup_trials`` more trials, at most ``search.edge_rounds`` times: a best μ outside the first range
is found, not clipped. ``CellPruner`` lets each cell's Optuna pruner stop its hopeless trials from their
intermediate reports. Each Optuna trial is sampled with a seed derived from (search.seed, cell, trial
number), so a study — resumed or not — draws the same μ sequence at concurrency 1.
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Callable

import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from .. import basin, rates
from .cells import Cell
from .results import FINAL

METRIC = "objective"
WIDEN_MARGIN = 0.15  # re-search past a bound when the best μ is the outermost tried and this close to it
#                      (a share of the log range; the spread start's outermost points lie 1/8 in)
LR = optuna.distributions.FloatDistribution


def derived_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def param_name(key: str) -> str:
    """The Optuna parameter of a searched config key: its last part ("lr", "init_delta")."""
    return key.split(".")[-1]


def record_value(rec: dict) -> float | None:
    """The searched value of a durable record (records from before search.key hold only μ)."""
    return rec.get("value", rec.get("lr"))


def make_sampler(name: str, seed: int, startup: int, confidence: float = 0.8, rising: bool = False):
    if name == "rate":
        return RateSampler(startup)
    if name == "bisect":
        return BisectSampler(startup, confidence, seed, rising)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    return optuna.samplers.RandomSampler(seed=seed)


class IndependentSampler(optuna.samplers.BaseSampler):
    """A sampler of one parameter at a time from the study's finished trials (no joint search space)."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}


def middle_out(k: int, startup: int) -> float:
    """Share of the range of spread point k < ``startup``: an even grid of ``startup`` cells taken middle-out."""
    order = sorted(range(startup), key=lambda i: (abs(i - (startup - 1) / 2), i))
    return (order[k] + 0.5) / startup


class RateSampler(IndependentSampler):
    """μ from a model of the local rate (rates.propose_step): a trial's measured loss rate ρ is r(μ)² with
    r(μ) = max(|1 − μa|, |1 − μb|). The first ``startup`` trials spread over the log range (a fixed grid,
    taken middle-out); a proposal already tried or running falls back to the next point of an even
    sequence over the range (:meth:`_grid`) not yet used.
    Trials without a measured rate (pruned ones) teach it nothing: use it with search.pruner=none."""

    def __init__(self, startup: int):
        self.startup = max(startup, 1)

    def sample_independent(self, study, trial, name, dist):
        S = optuna.trial.TrialState
        done = [t for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL))
                if name in t.params]
        busy = [t.params[name] for t in study.get_trials(deepcopy=False, states=(S.RUNNING,))
                if name in t.params and t.number != trial.number]
        points = [(t.params[name], math.sqrt(t.user_attrs["rate"])) for t in done
                  if t.user_attrs.get("rate") is not None and 0 < t.user_attrs["rate"] < 1]
        tried = [t.params[name] for t in done] + busy
        if len(done) >= self.startup and points:
            mu = rates.propose_step(points, [t.params[name] for t in done if t.user_attrs.get("unstable")],
                                    dist.low, dist.high)
            if not self._taken(mu, tried):
                return mu
        k = len(tried)
        while self._taken(self._grid(k, dist), tried):
            k += 1
        return self._grid(k, dist)

    @staticmethod
    def _taken(mu: float, tried: list[float]) -> bool:
        """μ already tried or running, to 0.1 % (a repeat would measure nothing new)."""
        return any(abs(mu / b - 1) < 1e-3 for b in tried)

    def _grid(self, k: int, dist) -> float:
        """Point k of the log range: the first ``startup`` on a grid taken middle-out, then the golden-ratio
        sequence (0.5 + k/φ) mod 1, which keeps filling the range evenly."""
        u = middle_out(k, self.startup) if k < self.startup else (0.5 + k * 0.6180339887498949) % 1.0
        return math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))


class BisectSampler(IndependentSampler):
    """The edge of success of a searched value (e.g. the largest δ that still converges; ``rising``: the smallest
    scale that does): probabilistic bisection
    (basin.propose_edge) over the range on the distribution's scale, from the finished trials' outcomes
    (user attr "success"). The first ``startup`` trials (≥ 2) spread over the range, middle-out, one at a random
    point of each of ``startup`` equal cells (drawn from ``seed``), so that an edge near either bound is seen
    early and cells pooled later (seeds) do not all probe the same values. Then each probe is a quantile of the
    posterior drawn between its quartiles, so probes spread over where the edge may be (a fit of the slope of
    p(x) needs them) rather than repeat one point. Outcomes may disagree (seeds, a basin that is not
    star-shaped): each is trusted with probability ``confidence``."""

    def __init__(self, startup: int, confidence: float = 0.8, seed: int = 0, rising: bool = False):
        self.startup, self.confidence, self.seed, self.rising = max(startup, 2), confidence, seed, rising

    def sample_independent(self, study, trial, name, dist):
        S = optuna.trial.TrialState
        done = [(t.params[name], t.user_attrs["success"])
                for t in study.get_trials(deepcopy=False, states=(S.COMPLETE,))
                if name in t.params and t.user_attrs.get("success") is not None]
        busy = study.get_trials(deepcopy=False, states=(S.RUNNING,))
        k = len(done) + sum(name in t.params and t.number != trial.number for t in busy)
        draw = random.Random(f"{self.seed}/{k}").random()
        if k < self.startup or not done:
            return _on_scale(middle_out(k % self.startup, self.startup) + (draw - 0.5) / self.startup, dist)
        return basin.propose_edge(done, dist.low, dist.high, log=dist.log, p_correct=self.confidence,
                                  rising=self.rising, quantile=0.25 + 0.5 * draw)


def _on_scale(u: float, dist) -> float:
    """The point at share ``u`` ∈ [0, 1] of the distribution's range, on its scale (log or linear)."""
    if dist.log:
        return math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
    return dist.low + u * (dist.high - dist.low)


def make_pruner(name: str, startup: int):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(startup, 1), n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def trial_attrs(result: dict) -> dict:
    """What a model-based sampler learns from a finished trial beyond its objective: its observed loss rate,
    whether μ was past the stability edge (it diverged or stalled), and whether it converged to tolerance."""
    return {"rate": result.get("observed_rate"), "unstable": result.get("outcome") in ("diverged", "stalled"),
            "success": result.get("outcome") == "converged"}


class CellSearch(Searcher):
    """Suggests {cell, lr, param, value, key} configs (``param``: the searched key, ``value`` its value; lr: μ
    when that key is optim.lr); ``finished`` are result records of an earlier attempt (resume)."""

    def __init__(self, cells: list[Cell], search: dict, finished: list[dict] = ()):
        super().__init__(metric=METRIC, mode="min")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cells, self.spec = cells, search
        self.key, self.name = search["key"], param_name(search["key"])
        self.log = self.key == "optim.lr" or search["scale"] == "log"
        bounds = (search["lr_min"], search["lr_max"]) if self.key == "optim.lr" else (search["low"], search["high"])
        self.ranges = [bounds] * len(cells)
        self.rounds = [0] * len(cells)
        self.settled: set[int] = set()  # cells done with their search: best μ inside the range
        self.studies = [optuna.create_study(direction="minimize", pruner=make_pruner(search["pruner"],
                                                                                     search["startup_trials"]))
                        for _ in cells]
        self.budget = [search["trials"] if self.searched(c) else 1 for c in cells]
        self.used: list[set[int]] = [set() for _ in cells]
        self.live: dict[str, tuple[int, int, optuna.trial.Trial | None]] = {}
        self.pruned: set[str] = set()
        self.last_step: dict[str, int] = {}
        self.limit: Callable[[], int] | None = None  # live trials allowed now (the runner's Capacity.limit)
        self.max_concurrent = 0
        self._widened_by(finished)
        for rec in finished:
            self._replay(rec)

    def searched(self, cell: Cell) -> bool:
        """Whether a cell's trials search the key: always for a key other than μ, for μ with protocol tuned."""
        return self.key != "optim.lr" or cell.cfg.optim.protocol == "tuned"

    def dist(self, c: int) -> LR:
        return LR(*self.ranges[c], log=self.log)

    def _widened_by(self, finished: list[dict]) -> None:
        """On resume: each cell's range holds every μ it tried, and its rounds are its trials past the budget."""
        extra = max(self.spec["startup_trials"], 1)
        for c in range(len(self.cells)):
            lrs = [record_value(r) for r in finished if r["cell_index"] == c and r.get("tuned")]
            if lrs and self.budget[c] > 1:
                lo, hi = self.ranges[c]
                self.ranges[c] = (min([lo, *lrs]), max([hi, *lrs]))
                self.rounds[c] = min(-(-max(len(lrs) - self.budget[c], 0) // extra), self.spec["edge_rounds"])
                self.budget[c] += self.rounds[c] * extra

    def _best_on_edge(self, c: int) -> str:
        """"low"/"high" when the best finished trial of cell ``c`` is its outermost μ on that side and lies within
        WIDEN_MARGIN of that bound of the cell's range (log scale)."""
        done = [t for t in self.studies[c].get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if not done:
            return ""
        best = min(done, key=lambda t: (t.value, t.params[self.name])).params[self.name]  # ties: smallest value
        tried = [t.params[self.name] for t in done]
        side = rates.on_edge(best, *self.ranges[c], margin=WIDEN_MARGIN, log=self.log)
        return side if best == (min(tried) if side == "low" else max(tried)) else ""

    def _widen(self) -> None:
        """Widen every settled cell (all its trials in) whose best μ is on an edge of its range."""
        busy = {c for c, _, _ in self.live.values()}
        for c in range(len(self.cells)):
            if (c in self.settled or c in busy or len(self.used[c]) < self.budget[c] or self.budget[c] <= 1
                    or self.rounds[c] >= self.spec["edge_rounds"]):
                continue
            side = self._best_on_edge(c)
            if not side:
                self.settled.add(c)
                continue
            lo, hi = self.ranges[c]
            f = self.spec["edge_factor"]
            if side == "low" and lo <= 0:  # a linear range from 0 cannot go lower
                self.settled.add(c)
                continue
            self.ranges[c] = (lo / f, hi) if side == "low" else (lo, hi * f)
            self.rounds[c] += 1
            self.budget[c] += max(self.spec["startup_trials"], 1)

    def _may_widen(self) -> bool:
        """A cell with live trials could still need a wider range once they are in."""
        return any(self.budget[c] > 1 and self.rounds[c] < self.spec["edge_rounds"] for c, _, _ in self.live.values())

    def _replay(self, rec: dict) -> None:
        c, k = rec["cell_index"], rec["trial_number"]
        self.used[c].add(k)
        if rec.get("tuned"):
            state = {"FINISHED": optuna.trial.TrialState.COMPLETE, "KILLED": optuna.trial.TrialState.PRUNED}.get(
                rec["status"], optuna.trial.TrialState.FAIL)
            value = (rec.get("result") or {}).get("objective") if state == optuna.trial.TrialState.COMPLETE else None
            self.studies[c].add_trial(optuna.trial.create_trial(
                params={self.name: record_value(rec)}, distributions={self.name: self.dist(c)}, value=value,
                state=state,
                user_attrs=trial_attrs(rec.get("result") or {}) if value is not None else {}))

    def remaining(self) -> int:
        """Trials still planned (re-searches of edge cells not counted: see :meth:`reserve`)."""
        return sum(max(b - len(u), 0) for b, u in zip(self.budget, self.used))

    def reserve(self) -> int:
        """The most trials edge re-searches could still add."""
        extra = max(self.spec["startup_trials"], 1)
        return sum((self.spec["edge_rounds"] - r) * extra for b, r in zip(self.budget, self.rounds) if b > 1)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's ConcurrencyLimiter defers to this searcher, which gates on :attr:`limit` (the slots the
        cluster has now, following nodes that join or leave) and never on more than ``max_concurrent``."""
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str):
        self._widen()
        open_cells = [i for i in range(len(self.cells)) if len(self.used[i]) < self.budget[i]]
        if not open_cells:
            return None if self._may_widen() else Searcher.FINISHED
        allowed = min(self.limit(), self.max_concurrent or math.inf) if self.limit else self.max_concurrent
        if allowed and self.in_flight() >= allowed:
            return None  # Tune asks again next step
        return self.propose(trial_id, open_cells)

    def in_flight(self) -> int:
        """Tune trials running or waiting (the concurrency gate counts these)."""
        return len(self.live)

    def propose(self, trial_id: str, open_cells: list[int]) -> dict:
        """One Optuna trial of the open cell with fewest trials launched, as a Tune trial config."""
        c = min(open_cells, key=lambda i: (len(self.used[i]), i))
        k = next(n for n in range(len(self.used[c]) + 1) if n not in self.used[c])
        self.used[c].add(k)
        cell, otrial, lr, value = self.cells[c], None, None, None
        tuned = self.searched(cell)
        if tuned:
            study = self.studies[c]
            study.sampler = make_sampler(self.spec["sampler"], derived_seed(self.spec["seed"], c, k),
                                         self.spec["startup_trials"], self.spec["bisect_confidence"],
                                         self.spec["edge"] == "rising")
            otrial = study.ask({self.name: self.dist(c)})
            value = otrial.params[self.name]
            lr = value if self.key == "optim.lr" else None
        self.live[trial_id] = (c, k, otrial)
        return {"cell_index": c, "trial_number": k, "lr": lr, "value": value, "param": self.key, "tuned": tuned,
                "key": f"{cell.id}#{k}"}

    def report(self, trial_id: str, value: float, step: int) -> bool:
        """Feed an intermediate value to the cell's pruner; True when the trial should stop."""
        c, _, otrial = self.live.get(trial_id, (None, None, None))
        if otrial is None or not math.isfinite(value) or step <= self.last_step.get(trial_id, -1):
            return False  # a retried trial starts over: its repeated steps are already known
        self.last_step[trial_id] = step
        otrial.report(value, step)
        if otrial.should_prune():
            self.pruned.add(trial_id)
            return True
        return False

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        c, _, otrial = self.live.pop(trial_id, (None, None, None))
        if otrial is None:
            return
        study = self.studies[c]
        if error or not result or METRIC not in result:
            study.tell(otrial, state=optuna.trial.TrialState.FAIL)
        elif trial_id in self.pruned or not result.get(FINAL, False):
            study.tell(otrial, state=optuna.trial.TrialState.PRUNED)
        else:
            for key, value in trial_attrs(result).items():
                otrial.set_user_attr(key, value)
            study.tell(otrial, result[METRIC])

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a study resumes from its durable result store (see driver)."""

    def restore(self, checkpoint_path: str) -> None:
        """See :meth:`save`."""


class CellPruner(FIFOScheduler):
    """FIFO scheduling; STOP when the trial's cell pruner says its intermediate value is hopeless."""

    def __init__(self, searcher: CellSearch, value_key: str = "log10_rel_excess"):
        super().__init__()
        self.searcher, self.value_key = searcher, value_key

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL) or self.value_key not in result:
            return TrialScheduler.CONTINUE
        stop = self.searcher.report(trial.trial_id, float(result[self.value_key]), int(result["step"]))
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE
