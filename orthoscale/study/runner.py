"""Ray Tune fan-out: one Tuner for all cells' trials, with the per-cell searcher, its pruner, a
durable recorder and the progress line. Trials are pure functions of their config.

Concurrency: Tune keeps at most ``max_concurrent_trials`` trials pending, and only one for a custom
searcher without it, which with short trials and reused actors runs one trial at a time whatever the
cluster. So the Tuner always gets ``max_concurrent_trials`` (ray.max_concurrent, else a ceiling), the
searcher takes over the gate (``set_max_concurrency``) and gates on :class:`capacity.Capacity`, which
follows the cluster's slots as nodes join or leave."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from pathlib import Path

import ray
from ray import tune
from ray.air._internal import usage as air_usage
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import trial as trial_module

from .capacity import UNCAPPED, Capacity
from .cells import Cell
from .config import RayCfg, step_size
from .typed import set_path
from .pack import PACK, PackSearch, members
from .search import CellPruner
from .store import Encoded, ResultStore
from .tracking import TrackingWriter
from .results import FINAL, TrialResult


def make_trainable(threads: int):
    def orthoscale_trial(config: dict, cells: list[Cell], mnist_arrays: dict | None = None) -> None:
        """One Tune trial: a pack of trials (pack.py), each μ = member["lr"] (or the searched key member["param"] =
        member["value"]) on cell member["cell_index"] of ``cells`` (the study's typed cell configs, sent once through
        the object store by ``tune.with_parameters``). Its modules load on its first call, not when Ray starts its
        actor: an actor then starts in about a second, so a new worker is ready while the first trials run."""
        from orthoscale import mnist
        from orthoscale.study.typed import replace_path
        from orthoscale.study.pack import members, run_pack
        from orthoscale.study.trial import run_trial

        for root, (images, labels) in (mnist_arrays or {}).items():  # the driver's MNIST, via the object store
            mnist.provide(root, "train", images, labels)
        node = ray.get_runtime_context().get_node_id()
        pack = members(config)
        # intermediate reports cost a round trip to the driver each: only a pruner (packs of one) needs them
        report = tune.report if len(pack) == 1 and cells[pack[0]["cell_index"]].cfg.search.pruner != "none" else None

        def one(member: dict) -> dict:
            cfg = cells[member["cell_index"]].cfg
            if member.get("param", "optim.lr") != "optim.lr" and member.get("value") is not None:
                cfg = replace_path(cfg, member["param"], member["value"])  # the searched key's value of this trial
            result = run_trial(cfg, member["lr"], report=report, threads=threads)
            result.node_id = node
            return result.to_dict()
        tune.report(run_pack(pack, one))
    return orthoscale_trial


class DriverOnly:
    """Tune pickles its callbacks and searcher for ``Tuner.restore``; studies resume from their own
    durable store instead, so these driver-side objects (queues, threads, streams) pickle as empty."""

    def __getstate__(self):
        return {}


class Recorder(DriverOnly, tune.Callback):
    """Every ended trial → one durable record (fsynced) → the tracking queue."""

    def __init__(self, cells: list[Cell], store: ResultStore, writer: TrackingWriter, rerun_prefix: list[str],
                 attempt: str):
        self.cells, self.store, self.writer, self.prefix, self.attempt = cells, store, writer, rerun_prefix, attempt
        self.started: dict[str, float] = {}
        self.addresses: dict[str, str] = {}

    def host(self, node_id: str | None) -> str | None:
        """The address of the node a trial ran on (nodes are looked up again when one is new)."""
        if node_id and node_id not in self.addresses:
            self.addresses = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        return self.addresses.get(node_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())

    def _record(self, trial, status: str, error: str | None = None) -> None:
        """One durable record per trial of the pack, each with its own result (or error) and times."""
        res = dict(trial.last_result or {})
        entries = res.get(PACK) or []
        recs = []
        for i, member in enumerate(members(trial.config)):
            entry = entries[i] if i < len(entries) else {}
            recs.append(self._one(trial, member, status if not entry.get("error") else "FAILED",
                                  entry.get("error") or error, entry.get("result") or ({} if entries else res), entry))
        self.store.append(*recs)
        for rec in recs:
            self.writer.submit(rec)

    def _one(self, trial, cfg: dict, status: str, error: str | None, res: dict, entry: dict) -> dict:
        cell = self.cells[cfg["cell_index"]]
        final = status == "FINISHED" and bool(res)
        mu = res["lr"] if final else step_size(cell.cfg, cfg["lr"])  # theory: known to the trial only
        result = None
        if final:  # the worker's result with its JSON text (pack.run_pack): the record writes it as it is
            result = Encoded(res, entry["text"]) if entry.get("text") else TrialResult.from_dict(res).to_dict()
        elif res:  # the last intermediate report of a stopped or failed trial
            result = TrialResult(lr=mu, steps=res.get("step"), final_rel_excess=res.get("rel_excess"),
                                 objective=res.get("objective"), node_id=res.get("node_id")).to_dict()
        param, value = cfg.get("param", "optim.lr"), cfg.get("value")
        searched = [f"{param}={value!r}"] if param != "optim.lr" and value is not None else []
        rec = {"key": cfg["key"], "cell_index": cell.index, "cell": cell.id, "trial_number": cfg["trial_number"],
               "tuned": cfg["tuned"], "lr": mu, "param": param, "value": value if value is not None else mu,
               "status": status, "result": result, "error": error,
               "cfg": set_path(cell.config, param, value) if searched else cell.config,
               "tune_trial_id": trial.trial_id, "node": res.get("node_id"),
               "host": self.host(res.get("node_id")), "attempt": self.attempt,
               "started": entry.get("started") or self.started.get(trial.trial_id, time.time()),
               "ended": entry.get("ended") or time.time(),
               "rerun": " ".join(["python -m orthoscale rerun", *self.prefix, *cell.overrides, *searched,
                                  *(["optim.protocol=fixed", f"optim.lr={mu!r}"] if mu is not None else [])])}
        return rec

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, "FINISHED" if (trial.last_result or {}).get(FINAL) else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info):
        err = trial.get_error()
        self._record(trial, "FAILED", str(err).strip().splitlines()[-1][:2000] if err else "error")


@contextlib.contextmanager
def _trainable_looked_up_once():
    """Tune looks a trial's trainable class up in the GCS (two key-value reads and an unpickle, ~5 ms) three times
    per Tune trial; within one Tuner the registered class does not change, so it is looked up once per name."""
    original = trial_module.get_trainable_cls
    trial_module.get_trainable_cls = functools.cache(original)
    try:
        yield
    finally:
        trial_module.get_trainable_cls = original


@contextlib.contextmanager
def _one_failure_per_death():
    """An actor that dies under a task reaches Tune twice with the same exception: its actor callback, then its
    task callback. For a trial that was PENDING on a reused actor (its ``reset`` in flight), the first call
    counts the failure and requeues the trial, PENDING again; the second then finds it PENDING and ends it as
    ERROR, whatever ``max_failures`` allows. Each exception now counts once per trial, and a trial whose reset
    failed is no longer taken for one still resetting (Tune would wait for that reset forever)."""
    original = TuneController._trial_task_failure

    def once(self, trial, exception):
        if getattr(exception, "_orthoscale_counted", None) == trial.trial_id:
            return
        with contextlib.suppress(AttributeError):  # an exception that takes no attributes counts every time
            exception._orthoscale_counted = trial.trial_id
        self._resetting_trials.discard(trial)
        return original(self, trial, exception)

    TuneController._trial_task_failure = once
    try:
        yield
    finally:
        TuneController._trial_task_failure = original


def run_tuner(cells: list[Cell], searcher: PackSearch, spec: RayCfg, *, name: str, storage: Path,
              callbacks: list, verbose: int, capacity: Capacity, arrays: dict | None = None) -> None:
    """All remaining trials of all cells in one Tuner, as many at once as ``capacity`` allows."""
    if verbose == 0:  # Tune's newer console output prints its header even when asked to be silent
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Tune's own CSV/JSON/TensorBoard files of every result: the study keeps its own record (results.jsonl)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Tune's experiment state (every trial's JSON, the pickled searcher) is for Tuner.restore, which a study never
    # uses: written every ≥ 10 s it grew with the trials (~45 ms of driver CPU per Tune trial); now once, at the end
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(7 * 24 * 3600))
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # so it finds no such files
    # Tune tags its usage statistics with the class names of the callbacks it is given, and imports the MLflow,
    # W&B, Comet and Aim integrations to name them: ~1 s of the driver's CPU, MLflow loaded into the driver
    air_usage.tag_callbacks = lambda callbacks: False
    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    trainable = tune.with_parameters(make_trainable(max(1, int(spec.cpus_per_trial))), cells=cells,
                                     mnist_arrays=arrays or None)
    searcher.limit = capacity.limit
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=CellPruner(searcher), num_samples=searcher.remaining() + searcher.reserve(),
            max_concurrent_trials=spec.max_concurrent or UNCAPPED, reuse_actors=True,
            trial_dirname_creator=lambda t: f"t{t.trial_id}"),
        run_config=tune.RunConfig(
            name=name, storage_path=str(Path(storage).resolve()), callbacks=callbacks,
            verbose=verbose, failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            log_to_file=False),
    )
    with _trainable_looked_up_once(), _one_failure_per_death():
        tuner.fit()
