"""What the study service costs against the compute it manages: goals 1–5 side by side, measured in one run.

1. A: a study of small cells as a user runs it (`python -m orthoscale.sweep …`, Ray's start included) against the
   same cells searched by plain Optuna in one loop in this process, beside the best a study can reach on this
   machine (the loop's time over Ray's start plus the loop's work at the two-process ceiling); and the default
   `make sweep`: command wall against Σ trial compute / slots.
2. B: ≈ 1 s trials on 2 workers: share of worker time lost over the trial phase = 1 − Σ compute / (span × slots).
A trial's compute is its time in the worker, start to end: its problem, training, rate fit and local theory, as
run_trial does them in the hand loop too (the training loop alone is printed beside it).
3. The driver's CPU per trial (Tune controller, searcher and sampler, recorder with fsync, tracking writes), the
   trials/min one driver sustains, and on paper where a 1 000-GPU cluster with 1 s trials saturates.
4. MLflow ms per child run (curves as batched metrics, or as one artifact) on SQLite and on an `mlflow server` on
   PostgreSQL; a study with tracking.enabled=false still writes its results and report.
5. Fixed cost per study beyond Ray's start, with its profile (report/phases.json of the default study); its report
   (text, fits, files) and each of its figures, well under a second each (< 0.5 s).
CPU seconds (load-independent) are printed beside wall seconds; a busy machine inflates the walls.
Run: .venv/bin/python tests/bench/bench_study.py [--quick]
"""
from __future__ import annotations

import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
import torch
from common import CpuLoad, idle_check

from orthoscale.study.compose import plan
from orthoscale.study.pack import PACK, PackSearch, auto_size
from orthoscale.study.results import FINAL
from orthoscale.study.store import Encoded, ResultStore, encode
from orthoscale.study.trial import run_trial

QUICK = "--quick" in sys.argv
SLOTS = 2
GPUS, GPU_TRIAL_S = 1000, 1.0
RAY_TMP = tempfile.mkdtemp(prefix="ob", dir="/tmp")  # short: Ray puts socket paths under it


def sweep(args: list[str], state: Path) -> dict:
    """One study as a user runs it, in its own process (imports, Ray's start, MLflow, report): its figures."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "orthoscale.sweep", *args, f"study.state_dir={state}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "RAY_TMPDIR": RAY_TMP})
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise RuntimeError(f"study failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    folder = next(state.glob("studies/*/results.jsonl")).parent
    recs = ResultStore(folder).load()
    report = folder / "report"
    fanout = json.loads((report / "fanout.json").read_text()) if (report / "fanout.json").exists() else {}
    return {"wall": wall, "recs": recs, "phases": json.loads((report / "phases.json").read_text()),
            "fanout": fanout, "folder": folder, "compute": sum(r["ended"] - r["started"] for r in recs),
            "train": sum((r["result"] or {}).get("seconds", 0) for r in recs),
            "tune_trials": len({r["tune_trial_id"] for r in recs}),
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}  # all its processes


def plain_optuna(cells, trials: int, lo: float, hi: float) -> float:
    """(wall, CPU) seconds of the hand loop: one Optuna study per cell, trials one after another in this process."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    for cell in cells:
        s = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cell.index,
                                                                                        n_startup_trials=4))
        s.optimize(lambda t: run_trial(cell.cfg, t.suggest_float("lr", lo, hi, log=True)).objective,
                   n_trials=trials)
    return time.perf_counter() - start, time.process_time() - cpu


def two_loops(args: list[str], trials: int) -> float:
    """Wall seconds of two hand loops (:func:`plain_optuna` over the cells of ``args``) run at once in two
    processes, imports excluded: what two cores give two independent workers here, a study's ceiling."""
    code = ("import sys, time; sys.argv = ['bench']; from bench_study import plan, plain_optuna; "
            f"(_, _, cells), = plan({args!r}); print('ready', flush=True); sys.stdin.readline(); "
            f"t = time.time(); plain_optuna(cells, {trials}, 1e-3, 3.0); print(t, time.time(), flush=True)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).resolve().parent)])}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = [tuple(map(float, proc.stdout.readline().split())) for proc in procs]
    for proc in procs:
        proc.wait()
    return max(e for _, e in spans) - min(b for b, _ in spans)


def searcher_cpu(n_cells: int = 15, trials: int = 12) -> float:
    """Driver CPU seconds per trial of the per-cell searcher and its sampler (suggest + tell), no Ray."""
    (cfg, _, cells), = plan([f"model.depth={','.join(str(2 + i) for i in range(n_cells))}", "seed=0",
                             f"search.trials={trials}", "search.edge_rounds=0"])
    search = PackSearch(cells, {**cfg.search.__dict__}, pack=1)
    search.limit = lambda: 1
    start, n = time.process_time(), 0
    while (s := search.suggest(f"t{n}")) not in (None, "FINISHED"):
        mu = s["pack"][0]["lr"]
        rho = min(max(abs(1 - mu), 0.01), 0.999)
        search.on_trial_complete(f"t{n}", {PACK: [{"result": {"objective": rho, "outcome": "converged",
                                                              "observed_rate": rho}, "started": 0, "ended": 1}],
                                           FINAL: True, "objective": rho})
        n += 1
    return (time.process_time() - start) / n


def record_cpu(recs: list[dict], folder: Path, per: int = 1) -> float:
    """Driver CPU seconds per durable record (JSON lines + one fsync per pack of ``per``, as the study writes; each
    trial's result arrives encoded by its worker, pack.run_pack)."""
    store = ResultStore(folder)
    recs = [{**r, "result": Encoded(r["result"], encode(r["result"]))} if r.get("result") else r for r in recs]
    start = time.process_time()
    for i in range(0, len(recs), per):
        store.append(*recs[i:i + per])
    return (time.process_time() - start) / len(recs)


def tracking_cost(uri: str, recs: list[dict], artifact_curves: bool = False) -> tuple[float, float]:
    """(wall ms, driver CPU ms) per child run logged by Tracker.log_trial (curves batched as metrics), or with
    ``artifact_curves`` the same run with its curves as one JSON artifact instead."""
    from orthoscale.study.tracking import Tracker

    tmp = Path(tempfile.mkdtemp(prefix="orthoscale-curves-"))
    local = (tmp / "artifacts").as_uri() if uri.startswith("sqlite:") else None  # not ./mlruns of the caller
    tracker = Tracker(uri, f"bench-{secrets.token_hex(4)}", local)
    parent, _ = tracker.open_parent("bench", params={}, tags={})
    walls, cpus = [], []
    for rec in recs:
        if artifact_curves:
            res = rec["result"] or {}
            rec = {**rec, "result": {**res, "curves": {}, "curve_steps": []}}
        t, c = time.perf_counter(), time.process_time()
        run_id = tracker.log_trial(parent, "bench", rec)
        if artifact_curves:
            path = tmp / "curves.json"
            path.write_text(json.dumps({"steps": res.get("curve_steps"), **(res.get("curves") or {})}))
            tracker.client.log_artifact(run_id, str(path))
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)


def postgres_tracking(recs: list[dict], tmp: Path):
    """Tracking cost on an `mlflow server` backed by a private PostgreSQL (tests/integration/servers.py), or the
    reason it could not start."""
    try:
        from tests.integration.conftest import free_port
        from tests.integration.servers import MlflowOnPostgres, Postgres, Traversable
    except Exception as err:  # pragma: no cover - the test extra is missing
        return f"skipped ({type(err).__name__})"
    tmp.mkdir(parents=True, exist_ok=True)
    access, pg, server = Traversable(tmp), None, None
    try:
        pg = Postgres(tmp / "pg", free_port(), secrets.token_hex(12))
        pg.start()
        server = MlflowOnPostgres(tmp, free_port(), pg.create_database("mlflow"))
        return tracking_cost(server.uri, recs), tracking_cost(server.uri, recs, artifact_curves=True)
    except (AssertionError, OSError) as err:
        return f"skipped ({str(err).splitlines()[0][:120]})"
    finally:
        if server:
            server.stop()
        if pg:
            pg.stop()
        access.restore()


def row(goal: str, what: str, value: str, target: str, ok: bool | None) -> str:
    verdict = "—" if ok is None else ("PASS" if ok else "MISS")
    return f"{goal:<4} {what:<58} {value:>24}  {target:<18} {verdict}"


def main():
    load = CpuLoad()
    print(f"torch {torch.__version__}, optuna {optuna.__version__}, {os.cpu_count()} cores, {SLOTS} slots for Ray"
          f"{'  [--quick]' if QUICK else ''}\n{idle_check()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="orthoscale-bench-"))
    tmp.chmod(0o755)
    out = []

    # 1b + 3 + 5: the default study as `make sweep` runs it
    default = sweep(["search.trials=4"] if QUICK else [], tmp / "default")
    ph, recs = default["phases"], default["recs"]
    n, slots = len(recs), default["fanout"].get("slots", SLOTS)
    ratio_default = default["wall"] / (default["compute"] / slots)

    # 1a: small cells, the study command against the hand loop
    depths, trials = ("2,4", 8) if QUICK else ("2,4,8,16", 16)
    small = [f"model.depth={depths}", "seed=0,1", f"search.trials={trials}", "model.width=8", "stop.max_iters=400",
             "search.pruner=none", "search.sampler=tpe", "search.edge_rounds=0"]
    a = sweep(small, tmp / "a")
    (_, _, cells), = plan(small)
    plain, plain_cpu = plain_optuna(cells, trials, 1e-3, 3.0)
    thr_study, thr_plain = len(a["recs"]) / a["wall"], len(cells) * trials / plain
    ratio_a = thr_study / thr_plain
    ray_a = a["phases"].get("ray_start", 0)
    no_ray = len(a["recs"]) / (a["wall"] - ray_a) / thr_plain
    ceiling = 2 * plain / two_loops(small, trials)  # two hand loops at once against one
    bound_a = plain / (ray_a + plain / ceiling)  # 1a's best here: Ray's start, then the loop's work at the ceiling

    # 2: ≈ 1 s trials
    steps = 600
    one = ["model.depth=32", "model.width=32", "seed=0", "optim.protocol=fixed", "optim.lr=0.05", "stop.tol=1e-300",
           f"stop.max_iters={steps}", f"stop.stall_window={steps + 1}", "search.pruner=none"]
    run_trial(plan(one, grid=False)[0][2][0].cfg, threads=1)
    probe = run_trial(plan(one, grid=False)[0][2][0].cfg, threads=1)
    steps = max(50, int(steps / probe.seconds))
    one = [x for x in one if not x.startswith(("stop.max_iters", "stop.stall_window", "seed="))] + [
        f"stop.max_iters={steps}", f"stop.stall_window={steps + 1}", f"seed=range({4 if QUICK else 16})"]
    b = sweep(one, tmp / "b")
    span = b["fanout"]["trial_phase_seconds"]
    lost = 1 - b["compute"] / (span * b["fanout"]["slots"])

    # 3: driver CPU per trial, from the default study's trial phase, and its parts measured alone
    cpu_trial = (ph.get("trials.cpu", 0) + ph.get("tracking_drain.cpu", 0)) / n
    c_search = searcher_cpu()
    c_record = record_cpu(recs[:100], tmp / "records", max(1, round(n / default["tune_trials"])))
    sq_wall, sq_cpu = tracking_cost(f"sqlite:///{tmp / 'track.db'}", recs[:60])
    sqa_wall, sqa_cpu = tracking_cost(f"sqlite:///{tmp / 'track-a.db'}", recs[:60], artifact_curves=True)
    c_track = sq_cpu / 1e3                          # in the tracking process (tracking.TrackerProcess), not the driver
    c_mu = c_search + c_record                      # driver CPU per μ trial, whatever the packing
    c_tune = max(cpu_trial * n - c_mu * n, 0.0) / default["tune_trials"]  # the rest, per Tune trial: the controller
    sustain = 60 / cpu_trial

    # 4: PostgreSQL-backed server; tracking off
    pg = postgres_tracking(recs[:30], tmp / "pgroot")
    off = sweep(["model.depth=2,3", "seed=0", "search.trials=2", "tracking.enabled=false", "model.width=4",
                 "stop.max_iters=100"], tmp / "off")
    off_ok = (len(off["recs"]) == 4 and (off["folder"] / "report" / "summary.txt").exists()
              and not (tmp / "off" / "mlflow.db").exists())

    # 5: fixed cost beyond Ray's start
    in_study = sum(ph.get(k, 0) for k in ("ray_wait", "trials", "report", "tracking_drain", "tracking_close"))
    fixed = default["wall"] - ph.get("trials", 0) - ph.get("ray_start", 0)
    startup = default["wall"] - in_study

    print(f"\nthe default study: {n} trials in {default['tune_trials']} Tune trials (packs), "
          f"Σ compute {default['compute']:.1f} s ({default['train']:.1f} s training) on {slots} slots; "
          f"command wall {default['wall']:.1f} s")
    median_a = statistics.median(r["result"]["seconds"] for r in a["recs"])
    print(f"A: {len(a['recs'])} small trials ({len(cells)} cells): study {a['wall']:.1f} s (Ray start "
          f"{ray_a:.1f} s), plain Optuna {plain:.1f} s; median trial "
          f"{1e3 * median_a:.0f} ms\n"
          f"   CPU: the study's processes ≥ {a['cpu']:.1f} s (those reaped in its tree; its trials "
          f"{a['compute']:.1f} s of worker time) against "
          f"the hand loop's {plain_cpu:.1f} s: on {os.cpu_count()} cores the study needs ≥ "
          f"{a['cpu'] / os.cpu_count():.1f} s of wall, so ≥ 1.3× would need ≤ {plain / 1.3 * os.cpu_count():.1f} s "
          f"of CPU in all")
    print(f"B: {len(b['recs'])} trials of {b['compute'] / len(b['recs']):.2f} s in the worker "
          f"({b['train'] / len(b['recs']):.2f} s training, {steps} steps), trial phase "
          f"{span:.1f} s, {b['tune_trials']} Tune trials")
    print("\nper trial, driver CPU (ms): "
          f"searcher+sampler {1e3 * c_search:.2f} · record+fsync (one per pack) {1e3 * c_record:.2f} · Tune controller "
          f"{1e3 * c_tune:.1f} per Tune trial (÷ {n / default['tune_trials']:.1f} trials per pack here) · all, "
          f"measured in the study: {1e3 * cpu_trial:.1f}; the MLflow child run ({sq_cpu:.1f} ms CPU on SQLite)"
          " runs in the tracking process")
    print("MLflow ms per child run (wall / CPU of the process logging): SQLite, curves as metrics "
          f"{sq_wall:.1f} / {sq_cpu:.1f}; curves as one artifact {sqa_wall:.1f} / {sqa_cpu:.1f}; "
          + (f"PostgreSQL server, metrics {pg[0][0]:.1f} / {pg[0][1]:.1f}, artifact {pg[1][0]:.1f} / {pg[1][1]:.1f}"
             if isinstance(pg, tuple) else f"PostgreSQL server {pg}"))
    print("  (the UI plots curves logged as metrics; an artifact is a file to download: metrics are kept)")

    # on paper: GPUS workers, trials of GPU_TRIAL_S; one driver process (Tune, searcher, records) and one logging
    # process per MLflow store, each one core at most
    pack_1s = auto_size(None, GPU_TRIAL_S, driver=c_tune + c_mu, slots=GPUS)  # auto, on the driver's cost alone
    per = {p: c_mu + c_tune / p for p in sorted({1, 8, 64, pack_1s})}
    print(f"\nsimulation, {GPUS} GPUs × {GPU_TRIAL_S:.0f} s trials = {GPUS / GPU_TRIAL_S:.0f} trials/s for one driver:")
    for p, cost in per.items():
        print(f"  packs of {p:>2}: {1e3 * cost:6.2f} ms of driver CPU per trial → the driver saturates at "
              f"{GPU_TRIAL_S / cost:7.0f} GPUs ({min(1.0, GPU_TRIAL_S / cost / GPUS):.0%} of {GPUS} busy)")
    writers = -(-GPUS * c_track // GPU_TRIAL_S)
    print(f"  one tracking process ({sq_cpu:.1f} ms per child run on SQLite) keeps up with "
          f"{GPU_TRIAL_S / c_track:.0f} GPUs: {GPUS} need {writers:.0f} writers on a server store (SQLite takes one); "
          f"auto packs 1 s trials by {pack_1s} on {GPUS} slots (Tune's per-trial cost {1e3 * c_tune:.0f} ms; a pack "
          "holds one trial per open cell, so that needs as many cells open)")
    sim = (GPU_TRIAL_S / (c_mu + c_tune / pack_1s), GPU_TRIAL_S / c_track)

    tail = sum(ph.get(k, 0) for k in ("report", "tracking_drain", "tracking_close"))
    figures = [p.name for p in (default["folder"] / "report").glob("*.png")]
    text_s = ph.get("report", 0) - ph.get("report.figures", 0)
    exit_s = default["wall"] - ph.get("startup", 0) - ph.get("setup", 0) - ph.get("trials", 0) - tail
    print(f"\nfixed cost of the default study, {fixed:.1f} s beyond Ray's start and the trials (wall s; the driver's "
          f"CPU in brackets): process start, imports, compose {ph.get('startup', startup):.1f} · setup "
          f"{ph.get('setup', 0):.1f}: Ray start {ph.get('ray_start', 0):.1f} on its thread, waited for "
          f"{ph.get('ray_wait', 0):.1f} after Tune loaded and the tracking process opened its store "
          f"({ph.get('tracking_open', 0):.1f}) · report {ph.get('report', 0):.2f} "
          f"[{ph.get('report.cpu', 0):.2f}], of which figures "
          f"{ph.get('report.figures', 0):.2f} · tracking drain {ph.get('tracking_drain', 0):.2f} · "
          f"parent run close {ph.get('tracking_close', 0):.2f} · summary and exit {exit_s:.2f}")

    print(f"\n{'goal':<4} {'what':<58} {'measured':>24}  {'target':<18} verdict")
    out = [
        row("1", "A: study / plain Optuna throughput, Ray start included", f"{ratio_a:.2f}×", "≥ 1.3×", ratio_a >= 1.3),
        row("", "   the same, Ray's start left out", f"{no_ray:.2f}×", "(info)", None),
        row("", "   two hand loops at once / one: this machine's ceiling", f"{ceiling:.2f}×", "(info)", None),
        row("", "   best possible here: Ray's start + loop at the ceiling", f"{bound_a:.2f}×", "(info)", None),
        row("1", "default sweep: wall / (Σ compute / slots)", f"{ratio_default:.2f}×", "≤ 2.0×", ratio_default <= 2.0),
        row("2", "1-s trials: worker time lost over the trial phase", f"{100 * lost:.1f} %", "≤ 10 %", lost <= 0.10),
        row("3", "driver CPU per trial (default study)", f"{1e3 * cpu_trial:.1f} ms", "≤ 20 ms",
            cpu_trial <= 0.020),
        row("3", "trials/min one driver sustains", f"{sustain:,.0f}", "≥ 3 000", sustain >= 3000),
        row("3", "1 s trials: GPUs one driver / one SQLite writer feed", f"{sim[0]:,.0f} / {sim[1]:,.0f}",
            f"≥ {GPUS} / (info)", sim[0] >= GPUS),
        row("4", "MLflow calls per child run", "3 (create, log_batch, end)", "fewest", True),
        row("4", "ms per child run: SQLite / PostgreSQL server",
            f"{sq_wall:.0f} / " + (f"{pg[0][0]:.0f}" if isinstance(pg, tuple) else "n/a"), "(info)", None),
        row("4", "tracking.enabled=false: results and report, no store", "yes" if off_ok else "no", "yes", off_ok),
        row("5", "fixed cost per study beyond Ray's start", f"{fixed:.1f} s", "≤ 5 s", fixed <= 5.0),
        row("5", "report of the default study: text, fits and files", f"{text_s:.2f} s", "well under 1 s",
            text_s < 0.5),
        row("5", "   its slowest figure (of " + f"{len(figures)}; all {ph.get('report.figures', 0):.2f} s)",
            f"{ph.get('report.slowest_figure', 0):.2f} s", "well under 1 s", ph.get("report.slowest_figure", 9) < 0.5),
    ]
    print("\n".join(out))
    busy = load.others()
    print(f"\nother CPU load during the run: {busy:.2f} cores of {os.cpu_count()}"
          + ("  ** machine busy: walls are inflated; CPU figures hold **" if busy > 0.2 else ""))


if __name__ == "__main__":
    main()
