"""One study end to end: durable store → MLflow parent → Ray Tune fan-out → report on the parent run.

Re-running the same command resumes: the study's name is derived from its configuration, finished
trials are read back from the durable store (not rerun, not re-logged), the parent run is reused.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import report
from .cells import Cell
from .config import Config, ConfigError, to_dict, validate
from .locations import (PROJECT, PLAN, artifact_location, experiment_name, read_plan, state_dir, study_folder,
                        tracking_uri, with_data_root)
from .store import ResultStore
from .secrets import redact
from .tracking import TrackerProcess, TrackingError, TrackingWriter, dumps, files

RESULT_SECTIONS = ("model", "data", "optim", "stop", "search", "family", "seed")


def study_name(cfg: Config, cells: list[Cell]) -> str:
    """<family>-<hash of everything that changes results>: the same command names the same study."""
    if cfg.study.name:
        return cfg.study.name
    content = {k: v for k, v in to_dict(cfg).items() if k in RESULT_SECTIONS}
    content["cells"] = [c.config for c in cells]
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.family.name}-{digest}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class StudyResult:
    name: str
    folder: Path
    parent_run_id: str | None
    experiment_id: str | None
    tracking_uri: str
    rows: list[dict]
    scaling: dict
    text: str
    logging_seconds: float
    trials_logged: int
    unlogged: list[str]
    experiment: str = ""
    fanout: dict | None = None      # capacity.fanout_summary of this run's trials (None when none ran)
    failed_all: str | None = None   # the first error, when every trial of the study failed


def process_age() -> float:
    """Seconds since this process started (interpreter start and imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


class Phases(dict):
    """Seconds a study spent in each of its phases (report/phases.json): where its fixed cost goes. startup:
    from the process's start to the study's (imports, composing the configs); setup: from there to its first
    trial (Ray's start, of which ray_wait was waited for, the tracking store, the searcher)."""

    def timed(self, name: str, fn):
        """``fn`` that adds its wall seconds to ``name`` and the driver's CPU seconds (all threads) to name.cpu."""
        def call(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self[name] = self.get(name, 0.0) + time.perf_counter() - start
                self[f"{name}.cpu"] = self.get(f"{name}.cpu", 0.0) + time.process_time() - cpu
        return call


def _open_tracking(cfg: Config, name: str, overrides: list[str], cells: list[Cell], out):
    """(tracker, parent run id), or (None, None) when the store cannot be reached: the study goes on,
    its results stay in the study folder, and ``orthoscale sync`` replays them later."""
    uri, experiment = tracking_uri(cfg), experiment_name(cfg)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # bounded: an outage costs seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    tracker = None
    try:
        tracker = TrackerProcess(uri, experiment, artifact_location(cfg, experiment))
        parent, _ = tracker.open_parent(
            name, params={"family": cfg.family.name, "grid": json.dumps(cfg.family.grid), "cells": len(cells),
                          "search": to_dict(cfg)["search"], "max_concurrent": cfg.ray.max_concurrent or "auto",
                          "cpus_per_trial": cfg.ray.cpus_per_trial, "gpus_per_trial": cfg.ray.gpus_per_trial},
            tags={"orthoscale.command": shlex.join(["python", "-m", "orthoscale.sweep", *overrides]),
                  "orthoscale.overrides": " ".join(overrides), "orthoscale.git_commit": git_commit(),
                  "mlflow.note.content": cfg.family.description})
        return tracker, parent
    except Exception as err:  # any failure to reach tracking must not cost the study
        if tracker:
            tracker.close()
        what = str(err) if isinstance(err, TrackingError) else f"{type(err).__name__}: {err}"
        print(f"warning: MLflow at {redact(uri)} is unreachable ({redact(what).splitlines()[0][:200]}); results "
              f"are kept in the study folder — replay them with: orthoscale sync {name}", file=out, flush=True)
        return None, None


def series_key(series: str) -> str:
    """A series name ('variant=teacher', 'activation=relu,…') as MLflow allows in metric and tag keys."""
    return re.sub(r"[^\w\-. :/]", "_", series.replace("=", ":"))


FANOUT_METRICS = ("concurrency_mean", "concurrency_peak", "slots", "hosts_used", "hosts_in_cluster",
                  "trial_phase_seconds")


def _close_tracking(tracker, parent, folder, result, fanout, out) -> bool:
    try:
        metrics, tags = {}, {}
        if fanout:
            metrics.update({key: float(fanout[key]) for key in FANOUT_METRICS})
            tags["orthoscale.fanout"] = fanout["line"]
            if fanout["lost_hosts"]:
                tags["orthoscale.lost_hosts"] = ", ".join(fanout["lost_hosts"])
        for series, law in result["scaling"].items():
            key = series_key(series)
            metrics["rate_exponent" + ("" if series == "all" else f".{key}")] = law["one_minus_rate"]["exponent"]
            tags[f"orthoscale.law.{key}"] = json.dumps(law)
        for series, law in result.get("edge", {}).get("laws", {}).items():
            key = series_key(series)
            metrics[f"edge_beta.{key}"] = law["beta"]
            tags[f"orthoscale.edge_law.{key}"] = json.dumps(law)
        tracker.close_study(parent, [str(folder / PLAN), *files(folder / "report")], metrics, tags)
        return True
    except Exception as err:
        print(f"warning: the study's report did not reach MLflow ({type(err).__name__}); "
              "rerun the command or orthoscale sync to replay it", file=out, flush=True)
        return False


def run_study(cfg: Config, cells: list[Cell], overrides: list[str], *, out=sys.stdout,
              run_trials: bool = True, release_ray: bool = False) -> StudyResult:
    """Run (or, with ``run_trials=False``, only sync and report) one study; see the module docstring. With
    ``release_ray`` (the command's last study), Ray is shut down in the background once the trials are done."""
    began, phases = time.perf_counter(), Phases(startup=process_age())
    state = state_dir(cfg)
    overrides = redact(list(overrides))
    cells = [Cell(c.index, c.values, c.settings, validate(redact(with_data_root(c.config)))) for c in cells]
    name = study_name(cfg, cells)
    folder = study_folder(state, name)
    if not cfg.study.resume and run_trials and (folder / "results.jsonl").exists():
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder = study_folder(state, name)
    arrays = load_inputs(cells)
    check_record_outlives_job(cfg)
    if any(c.cfg.optim.device == "cuda" for c in cells) and cfg.ray.gpus_per_trial <= 0:
        raise ConfigError("optim.device=cuda: trials get no GPU with ray.gpus_per_trial=0; set it (cluster=gpu) "
                          "or use optim.device=auto")
    store = ResultStore(folder)
    finished = store.load()
    starting = None
    if run_trials and may_have_trials(cells, finished):  # Ray starts while Tune, MLflow and the plots load
        from .cluster import RayStart

        starting = RayStart(cfg.ray, cfg.study.verbose)
        threading.Thread(target=report.warm_plots, name="orthoscale-plots", daemon=True).start()
    from .pack import PackSearch

    searcher = PackSearch(cells, to_dict(cfg)["search"], finished, cfg.ray.pack, cfg.ray.pack_gap)
    with ThreadPoolExecutor(1) as pool:  # MLflow's store opens while Ray starts (both take seconds)
        opening = pool.submit(phases.timed("tracking_open", _open_tracking), cfg, name, overrides, cells, out) \
            if cfg.tracking.enabled else None
        try:
            if searcher.remaining() and run_trials:  # the cluster can run these trials: checked before any starts
                from .cluster import RayStart, check_resources

                starting = starting or RayStart(cfg.ray, cfg.study.verbose)
                phases["ray_start"] = phases.timed("ray_wait", starting.wait)()
                check_resources(cfg.ray, cells)
        except ConfigError:
            tracker, parent = opening.result() if opening else (None, None)
            if tracker:
                tracker.finish(parent, "FAILED")
                tracker.close()
            raise
        tracker, parent = opening.result() if opening else (None, None)
    save_plan(folder, cfg, overrides, cells)
    writer = TrackingWriter(tracker, parent, name, enabled=cfg.tracking.enabled)
    for rec in finished:  # replays any record that did not reach tracking before an interruption
        writer.submit(rec)
    print(f"study {name}: {len(cells)} cells, {searcher.remaining()} trials to run"
          f"{f', {len(finished)} already done' if finished else ''} · MLflow {redact(tracking_uri(cfg))}",
          file=out, flush=True)
    fanout, phases["setup"] = None, time.perf_counter() - began
    if searcher.remaining() and run_trials:
        fanout = phases.timed("trials", _fan_out)(cfg, cells, searcher, store, writer, overrides, name, state,
                                                  finished, arrays, out)
    if release_ray and starting and starting.joined not in (None, "existing"):
        from .cluster import release

        release()
    records = store.load()  # the report reads the durable records: it is drawn while tracking drains
    result = phases.timed("report", report.write)(folder / "report", cells, records)
    figures = result["figure_seconds"]  # of the report's seconds, each figure's (the rest: text, fits, files)
    phases["report.figures"], phases["report.slowest_figure"] = sum(figures.values()), max(figures.values(), default=0)
    phases.timed("tracking_drain", writer.close)()
    if fanout:
        (folder / "report" / "fanout.json").write_text(dumps(fanout))
        result["text"] += "\n" + "\n".join(x for x in (fanout["line"], fanout["warning"]) if x)
    synced = tracker is not None and phases.timed("tracking_close", _close_tracking)(tracker, parent, folder, result,
                                                                                    fanout, out)
    if tracker:
        tracker.close()
    phases["process.cpu"] = time.process_time()  # the driver's CPU since it started, imports included
    (folder / "report" / "phases.json").write_text(dumps(phases))
    return StudyResult(name, folder, parent, tracker.experiment_id if tracker else None, redact(tracking_uri(cfg)),
                       result["rows"], result["scaling"], result["text"], writer.seconds, writer.logged,
                       writer.failed + ([] if synced or not cfg.tracking.enabled else ["<parent report>"]),
                       experiment_name(cfg), fanout,
                       first_error(records))


def done_per_cell(finished: list[dict]) -> dict[int, int]:
    """Recorded trials per cell index."""
    return dict(collections.Counter(rec["cell_index"] for rec in finished))


def may_have_trials(cells: list[Cell], finished: list[dict]) -> bool:
    """Whether a cell has fewer recorded trials than search.trials (a cheap upper bound: the searcher decides)."""
    done = done_per_cell(finished)
    return any(done.get(c.index, 0) < c.cfg.search.trials for c in cells)


def first_error(records: list[dict]) -> str | None:
    """The first error when every trial failed (None otherwise, or when there are no trials)."""
    if records and all(r["status"] == "FAILED" for r in records):
        return next((r["error"] for r in records if r.get("error")), "unknown error")
    return None


def load_inputs(cells: list[Cell]) -> dict:
    """The MNIST training arrays per data.root the cells use, MD5-checked (ConfigError if not), before any
    trial starts: trials on any host get them from the driver through Ray's object store. (The core's MNIST
    module loads torch: a study without MNIST cells never imports it.)"""
    out = {}
    for root in sorted({c.cfg.data.root for c in cells if c.cfg.data.kind == "mnist"}):
        from .. import mnist

        try:
            out[root] = mnist.load(Path(root), "train")
        except mnist.MnistError as err:
            raise ConfigError(f"data.root={root}: {err}") from None
    return out


def save_plan(folder: Path, cfg: Config, overrides: list[str], cells: list[Cell]) -> None:
    """Everything needed to resume or sync the study without the configs that composed it."""
    (folder / PLAN).write_text(dumps({
        "config": redact(to_dict(cfg)), "overrides": overrides,
        "cells": [c.to_dict() for c in cells]}))


def load_plan(folder: Path) -> tuple[dict, list[str], list[Cell]]:
    plan = read_plan(folder)
    cells = [Cell.from_dict(c) for c in plan["cells"]]
    return plan["config"], plan["overrides"], cells


def in_ray_job() -> bool:
    """True in the driver of a job submitted through Ray's Jobs API (its supervisor sets this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def check_record_outlives_job(cfg: Config) -> None:
    """A submitted job runs in a temporary copy of the code under the head's Ray temp dir: without a tracking
    server and a state dir outside that copy, the study's only record would vanish with the Ray session."""
    if not in_ray_job() or (cfg.tracking.enabled and cfg.tracking.uri):
        return
    if not cfg.study.state_dir or state_dir(cfg).is_relative_to(PROJECT):
        raise ConfigError("tracking.uri / study.state_dir: a study submitted as a Ray job would keep its only "
                          "record in the job's temporary working dir; set tracking.uri=http://<mlflow server> "
                          "or study.state_dir=<persistent folder on the head>")


def _fan_out(cfg, cells, searcher, store, writer, overrides, name, state, finished, arrays, out) -> dict:
    """Run the remaining trials; returns what the fan-out achieved (capacity.fanout_summary)."""
    import ray

    from .capacity import Capacity, fanout_summary
    from .progress import Progress
    from .cluster import worker_hosts
    from .runner import Recorder, run_tuner

    capacity = Capacity(cfg.ray, ray.cluster_resources, cfg.ray.refresh)
    hosts_before = worker_hosts()
    done_before = done_per_cell(finished)
    progress = Progress(sum(searcher.budget), len(cells), searcher.budget, done_before,
                        [c.cfg.model.depth for c in cells], cfg.study.progress_every, out, capacity)
    prefix = [o for o in overrides if o.split("=")[0] not in cfg.family.grid]
    attempt = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    recorder = Recorder(cells, store, writer, prefix, attempt)
    run_tuner(cells, searcher, cfg.ray, name=attempt, storage=state / "ray", callbacks=[recorder, progress],
              verbose=cfg.study.verbose, capacity=capacity, arrays=arrays)
    progress.finish()
    hosts_after = worker_hosts()
    lost = sorted({addr for node, addr in hosts_before.items() if node not in hosts_after})
    mine = [r for r in store.load() if r.get("attempt") == attempt]
    return fanout_summary(mine, capacity.most, len(set(hosts_before.values()) | set(hosts_after.values())), lost)
