"""MLflow record of a study: an experiment per family, a parent run per study, a child run per trial.

A study has one MLflow client (one writer per SQLite store), in a process of its own (:class:`TrackerProcess`):
the driver never loads MLflow, it sends calls. A background thread drains a queue of durable result records into
it, so logging never blocks Tune's event loop, let alone a trial, and its CPU is not the driver's. Each child
run takes three calls: created with its tags, one ``log_batch`` with its params, summary metrics and curves
(more only past MLflow's 1 000 entries a call), and its end.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .results import TrialResult
from .secrets import split_credentials

log = logging.getLogger("orthoscale.tracking")
# MLflow's own tag keys (mlflow.utils.mlflow_tags); MLflow itself is imported where a store is opened, so that a
# study loads it while Ray starts (seconds), and a study with tracking off never does
MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME = "mlflow.parentRunId", "mlflow.runName"
STUDY_TAG, TRIAL_TAG = "orthoscale.study", "orthoscale.trial"
SUMMARY = TrialResult.metrics()
BATCH, PARAMS = 1000, 100  # MLflow's limits per log_batch: entries in all, params


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def batches(params: list, metrics: list):
    """(params, metrics) per log_batch call within MLflow's limits (≤ PARAMS params, ≤ BATCH entries in all):
    a child run of up to ~900 curve points and summary metrics goes in one call."""
    while params or metrics:
        p, params = params[:PARAMS], params[PARAMS:]
        m, metrics = metrics[:BATCH - len(p)], metrics[BATCH - len(p):]
        yield p, m


def schema_template() -> Path:
    """An empty SQLite store made by this MLflow version (its tables, migrations and Default experiment, whose
    artifacts default to ./mlruns of this working dir), built once per version and working dir in the user's cache."""
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orthoscale"
    key = hashlib.sha256(os.getcwd().encode()).hexdigest()[:8]
    path = cache / f"mlflow-{version('mlflow')}-{key}.db"
    if not path.exists():
        from mlflow import MlflowClient

        cache.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{os.getpid()}.part")
        MlflowClient(f"sqlite:///{part}").search_experiments(max_results=1)  # creates and migrates every table
        os.replace(part, path)  # atomic: a concurrent study finds a whole template or none
    return path


def fresh_sqlite(uri: str) -> None:
    """A SQLite store about to be created starts as a copy of :func:`schema_template` (milliseconds) instead of
    running MLflow's migrations again (seconds of CPU per study)."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):].split("?")[0])
    if path.name and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(schema_template(), path)


class Tracker:
    """Thin, explicit wrapper of MlflowClient for the study's runs."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        uri, env = split_credentials(uri)  # credentials travel in MLflow's env variables, never in the URI
        os.environ.update(env)
        fresh_sqlite(uri)
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=artifact_location)

    def open_parent(self, study: str, params: dict, tags: dict) -> tuple[str, bool]:
        """The study's parent run, reused when it exists (resume); returns (run id, reused)."""
        found = self.client.search_runs([self.experiment_id], f"tags.`{STUDY_TAG}` = '{study}' "
                                        f"and tags.`orthoscale.role` = 'study'", max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id, True
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, tags={STUDY_TAG: study, "orthoscale.role": "study",
                                                               **tags}, run_name=study)
        params = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for part in chunks(params, 100):
            self.client.log_batch(run.info.run_id, params=part)
        return run.info.run_id, False

    def logged_trials(self, parent: str) -> set[str]:
        """Trial keys whose child run under ``parent`` is complete. A child is terminated by the last call that
        logs it, so one still RUNNING was cut off mid-way (a killed driver): it is deleted, to be logged again."""
        keys, token = set(), None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
                                           max_results=1000, page_token=token)
            for run in page:
                if run.info.status == "RUNNING":
                    self.client.delete_run(run.info.run_id)
                else:
                    keys.add(run.data.tags.get(TRIAL_TAG))
            token = page.token
            if not token:
                return keys - {None}

    def log_trial(self, parent: str | None, study: str, rec: dict) -> str:
        """One child run (a standalone run when ``parent`` is None) with params, curves, summary
        metrics, tags and final status."""
        from mlflow.entities import Metric, Param

        res = rec.get("result") or {}
        now = int(time.time() * 1000)
        tags = {MLFLOW_RUN_NAME: rec["key"], STUDY_TAG: study,
                TRIAL_TAG: rec["key"], "orthoscale.cell": rec["cell"], "orthoscale.rerun": rec["rerun"],
                "orthoscale.outcome": res.get("outcome", rec["status"].lower()),
                "orthoscale.reason": str(res.get("reason") or rec.get("error") or "")[:5000],
                "orthoscale.node": str(res.get("node", "")),
                "orthoscale.node_id": str(res.get("node_id") or rec.get("node") or ""),
                "orthoscale.host": str(rec.get("host") or ""),
                "orthoscale.device": str(res.get("device", "")), **({MLFLOW_PARENT_RUN_ID: parent} if parent else {})}
        run = self.client.create_run(self.experiment_id, start_time=int(rec.get("started", now / 1000) * 1000),
                                     tags=tags)
        run_id = run.info.run_id
        params = {"lr": rec.get("lr"), "cell": rec["cell"], "trial_number": rec.get("trial_number", 0),
                  "searched_key": rec.get("param", "optim.lr"), "searched_value": rec.get("value", rec.get("lr")),
                  **{f"cfg.{k}": v for k, v in flatten(rec["cfg"]).items() if not k.startswith("family.")}}
        metrics = [Metric(k, float(res[k]), now, 0) for k in SUMMARY if isinstance(res.get(k), (int, float))]
        for name, values in (res.get("curves") or {}).items():
            metrics += [Metric(name, float(v), now, int(s)) for s, v in zip(res["curve_steps"], values)
                        if isinstance(v, (int, float))]
        for part_params, part_metrics in batches([Param(k, str(v)[:6000]) for k, v in params.items()], metrics):
            self.client.log_batch(run_id, params=part_params, metrics=part_metrics)
        self.client.set_terminated(run_id, status=rec["status"], end_time=int(rec.get("ended", now / 1000) * 1000))
        return run_id

    def load_study(self, study: str) -> tuple[dict, list[dict]]:
        """(the study's plan — config, overrides, cells — from its parent run, its trial records rebuilt
        from the child runs): the record alone is enough to redo the study's report."""
        found = self.client.search_runs([self.experiment_id], f"tags.`{STUDY_TAG}` = '{study}' "
                                        f"and tags.`orthoscale.role` = 'study'", max_results=1)
        if not found:
            raise LookupError(f"no study {study!r} in experiment {self.experiment_id}")
        parent = found[0].info.run_id
        plan = self.client.download_artifacts(parent, "config.json")
        plan = json.loads(Path(plan).read_text())
        from .cells import Cell

        ids = {cell.id: cell.index for cell in map(Cell.from_dict, plan["cells"])}
        records, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
                                           max_results=1000, page_token=token)
            for run in page:
                tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
                history = self.client.get_metric_history(run.info.run_id, "rel_excess")
                result = TrialResult.from_dict({k: metrics[k] for k in SUMMARY if k in metrics})
                result.outcome, result.reason = tags.get("orthoscale.outcome"), tags.get("orthoscale.reason")
                result.success = result.outcome == "converged"
                result.curve_steps = [m.step for m in history]
                result.curves = {"rel_excess": [m.value for m in history]}
                result.iters_to_tol = None if result.iters_to_tol is None else int(result.iters_to_tol)
                result.steps = None if result.steps is None else int(result.steps)
                records.append({"key": tags[TRIAL_TAG], "cell_index": ids[tags["orthoscale.cell"]],
                                "cell": tags["orthoscale.cell"], "trial_number": int(params.get("trial_number", 0)),
                                "lr": _number(params["lr"]), "param": params.get("searched_key", "optim.lr"),
                                "value": _number(params.get("searched_value", params["lr"])), "status": run.info.status,
                                "result": result.to_dict() if run.info.status != "FAILED" else None})
            token = page.token
            if not token:
                return plan, records

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def close_study(self, parent: str, files: list[str], metrics: dict[str, float], tags: dict[str, str]) -> None:
        """The study's end on its parent run: ``files`` as artifacts, its summary in one ``log_batch``, FINISHED."""
        from mlflow.entities import Metric, RunTag

        for path in files:
            self.client.log_artifact(parent, path)
        now = int(time.time() * 1000)
        self.client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.finish(parent, "FINISHED")


def serve() -> None:
    """The tracking process (``python -m orthoscale.study.tracking``): opens the store named by the first pickled
    message on stdin (uri, experiment, artifact location), then runs each (method, args, kwargs) on its
    :class:`Tracker`, replying ("ok", value) or ("error", text) on stdout. It ends on None, or on end of input when
    the driver is gone (records are durable: a rerun logs them)."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything MLflow prints goes to stderr: stdout carries replies only
    requests = sys.stdin.buffer

    def reply(status: str, value) -> None:
        pickle.dump((status, value), replies)
        replies.flush()

    try:
        tracker = Tracker(*pickle.load(requests))
    except Exception as err:
        return reply("error", f"{type(err).__name__}: {err}")
    reply("ok", tracker.experiment_id)
    while True:
        try:
            call = pickle.load(requests)
        except EOFError:
            return
        if call is None:
            return
        method, args, kwargs = call
        try:
            reply("ok", getattr(tracker, method)(*args, **kwargs))
        except Exception as err:
            reply("error", f"{type(err).__name__}: {err}")


class TrackingError(RuntimeError):
    """A call the tracking process could not carry out (its message: the MLflow error's type and text)."""


class TrackerProcess:
    """A :class:`Tracker` in a child process, with the same calls (``CALLS``): MLflow's import and client cost
    seconds and tens of ms per child run of CPU, which in the driver would be taken from Tune's event loop (one
    interpreter lock). A plain subprocess, not multiprocessing: that would re-run the caller's main script."""

    CALLS = ("open_parent", "logged_trials", "log_trial", "close_study", "finish")

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        uri, env = split_credentials(uri)  # credentials travel in env variables, as for the driver
        os.environ.update(env)
        here = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))}
        self.proc = subprocess.Popen([sys.executable, "-m", "orthoscale.study.tracking"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self.lock = threading.Lock()
        try:
            self.experiment_id = self._exchange((uri, experiment, artifact_location))
        except TrackingError:
            self.close()
            raise

    def _exchange(self, message):
        with self.lock:
            try:
                pickle.dump(message, self.proc.stdin)
                self.proc.stdin.flush()
                status, value = pickle.load(self.proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as err:
                raise TrackingError(f"the tracking process is gone ({type(err).__name__})") from None
        if status == "error":
            raise TrackingError(value)
        return value

    def __getattr__(self, name: str):
        if name not in TrackerProcess.CALLS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self._exchange((name, args, kwargs))

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            pickle.dump(None, self.proc.stdin)
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TrackingWriter:
    """Logs records on a background thread, each trial once, through ``tracker`` (a :class:`TrackerProcess` in a
    study, or a :class:`Tracker`); counts time spent and failures. Without a tracker (store unreachable) every
    record is counted as not logged."""

    def __init__(self, tracker: Tracker | TrackerProcess | None, parent: str | None, study: str, retries: int = 3,
                 enabled: bool = True):
        self.tracker, self.parent, self.study, self.retries = tracker, parent, study, retries
        self.enabled = enabled  # False (tracking.enabled=false): records are not for MLflow, none is "unlogged"
        self.done = set(tracker.logged_trials(parent)) if tracker else set()
        self.queue: queue.Queue = queue.Queue()
        self.seconds, self.logged, self.failed = 0.0, 0, []
        self.thread = threading.Thread(target=self._run, name="orthoscale-tracking", daemon=True)
        self.thread.start()

    def submit(self, rec: dict) -> None:
        self.queue.put(rec)

    def _run(self) -> None:
        while (rec := self.queue.get()) is not None:
            if rec["key"] in self.done:
                continue
            if self.tracker is None:
                if self.enabled:
                    self.failed.append(rec["key"])
                continue
            start = time.perf_counter()
            for attempt in range(self.retries):
                try:
                    self.tracker.log_trial(self.parent, self.study, rec)
                    self.done.add(rec["key"])
                    self.logged += 1
                    break
                except Exception as err:  # tracking must not stop the study; the record is durable
                    log.warning("logging trial %s failed (attempt %d/%d): %s", rec["key"], attempt + 1,
                                self.retries, err)
                    time.sleep(0.5 * 2 ** attempt)
            else:
                self.failed.append(rec["key"])
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        """Once every submitted record is logged (or failed)."""
        self.queue.put(None)
        self.thread.join()


def files(folder: Path) -> list[str]:
    """The files of ``folder`` (what a study logs as its parent run's artifacts)."""
    return [str(path) for path in sorted(Path(folder).iterdir()) if path.is_file()]


def _number(text: str) -> float | None:
    """A numeric param as logged ("None" for a value the trial never had)."""
    return None if text in (None, "None") else float(text)


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


if __name__ == "__main__":
    serve()
