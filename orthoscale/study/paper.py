"""The paper's experiments (arXiv 2311.14658: RGD on MNIST, RGD vs plain GD, the effect of depth, nonlinear
activations) as four studies of the service, and one self-contained Markdown report with its figures.

Settings the paper does not pin down are choices stated in the report and kept as config values
(conf/family/paper_*.yaml): width 10, whitening on the non-null subspace, tolerance 1e-8 on the
relative excess loss, μ searched per cell on [search.lr_min, search.lr_max].
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from .compose import plan
from .config import ConfigError
from .driver import StudyResult, run_study
from .locations import artifact_location, state_dir, tracking_uri
from .tracking import Tracker

FAMILIES = ("paper_mnist", "paper_gd", "paper_nonlinear", "paper_protocol")
SCALES = {
    "tiny": ["model.depth=2,4", "search.trials=2", "data.samples=2000", "stop.max_iters=300"],  # for tests
    "small": [],
    "full": ["model.depth=2,4,8,16,32,64,128", "seed=0,1,2", "search.trials=20"],
}


def _fmt(v, f=".4f"):
    return "—" if v is None else format(v, f)


def _law_lines(res: StudyResult) -> list[str]:
    out = []
    for series, law in sorted(res.scaling.items()):
        r, m = law["one_minus_rate"], law["best_lr"]
        out.append(f"| {series} | {r['exponent']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                   f"{m['exponent']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] | {r['points']} |")
    return out


def _series_rows(res: StudyResult, axis: str) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for row in res.rows:
        key = str(row.get(axis, "all"))
        out.setdefault(key, {})[row["depth"]] = row
    return out


def _table(res: StudyResult, axis: str) -> list[str]:
    series = _series_rows(res, axis)
    depths = sorted({d for s in series.values() for d in s})
    lines = [f"| {axis.split('.')[-1]} | " + " | ".join(f"N={d}: ρ (μ)" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for name, by_depth in sorted(series.items()):
        cells = [f"{_fmt(by_depth[d]['best_rate'])} ({_fmt(by_depth[d]['best_lr'], '.3g')})" if d in by_depth else "—"
                 for d in depths]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def conclusions(results: dict[str, StudyResult]) -> list[str]:
    """What the numbers say, in numbers."""
    out = []
    for name, res in results.items():
        for series, law in sorted(res.scaling.items()):
            k, (lo, hi) = law["one_minus_rate"]["exponent"], law["one_minus_rate"]["ci95"]
            trend = "shrinks" if hi < 0 else ("grows" if lo > 0 else "shows no significant trend")
            out.append(f"- {name} [{series}]: 1 − ρ ∝ N^{k:.2f} (95 % CI {lo:.2f} … {hi:.2f}) — the per-step "
                       f"contraction {trend} with depth over N = {min(r['depth'] for r in res.rows)} … "
                       f"{max(r['depth'] for r in res.rows)}; best μ ∝ N^{law['best_lr']['exponent']:.2f}.")
    gd = results.get("paper_gd")
    if gd:
        s = _series_rows(gd, "optim.method")
        for d in sorted(set(s.get("rgd", {})) & set(s.get("gd", {}))):
            r, g = s["rgd"][d]["best_rate"], s["gd"][d]["best_rate"]
            if r is not None and g is not None:
                out.append(f"- N={d}: best ρ RGD {r:.4f} vs plain GD {g:.4f} "
                           f"(iterations to tol {s['rgd'][d]['best_iters']} vs {s['gd'][d]['best_iters']}).")
    nl = results.get("paper_nonlinear")
    if nl:
        s = _series_rows(nl, "model.activation")
        lin = s.get("identity", {})
        for act, by_depth in sorted(s.items()):
            if act == "identity":
                continue
            pairs = [(d, by_depth[d]["best_rate"], lin[d]["best_rate"]) for d in sorted(by_depth)
                     if d in lin and by_depth[d]["best_rate"] is not None and lin[d]["best_rate"] is not None]
            if not pairs:
                out.append(f"- {act}: no linear phase at any depth within the step budget.")
                continue
            speed = [(1 - r) / (1 - lr) for _, r, lr in pairs]
            rows = ", ".join(f"N={d} {r:.4f} vs {lr:.4f}" for d, r, lr in pairs)
            out.append(f"- {act} against linear, best ρ: {rows}"
                       + f" — its 1 − ρ is {min(speed):.2g}…{max(speed):.2g} × the linear network's.")
    proto = results.get("paper_protocol")
    if proto and len(proto.scaling) > 1:
        ks = {k: v["one_minus_rate"]["exponent"] for k, v in proto.scaling.items()}
        out.append("- The depth exponent depends on how μ is scaled with N: " +
                   ", ".join(f"{k}: {v:.2f}" for k, v in sorted(ks.items())) +
                   " — a claim about depth must say which step-size protocol it assumes.")
    return out or ["- No series had a fitted rate at two or more depths: nothing to conclude."]


def write_report(folder: Path, results: dict[str, StudyResult], scale: str, overrides: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# RGD on orthonormal deep linear networks: the paper's experiments, reproduced", "",
             f"Scale `{scale}`; extra overrides: `{' '.join(overrides) or '—'}`; "
             f"generated {time.strftime('%Y-%m-%d %H:%M')}.",
             "", "## Choices where the paper is not explicit", "",
             "- MNIST training set (60 000 images), pixels in [0, 1], centred, whitened on the eigen-directions with "
             "λ > 1e-6·λ_max (Σ_xx = I there); hidden width 10 (forced by 10 outputs with column-orthonormal layers).",
             "- Loss (1/2m)‖PX − Y‖²; error = relative excess loss (L − L*)/(L(0) − L*); converged at 1e-8.",
             "- Initialisation: spectral (least-squares subspaces, flat spectrum) for one-hot targets; the teacher "
             "perturbed by δ = 0.2 for teacher targets; plain GD starts from the same point as RGD.",
             "- Nonlinear family: the teacher has the student's activation (data.teacher_activation=model), so every "
             "cell is realizable; 2 000 images, up to 4 000 steps to 1e-10 (generic autograd path).",
             "- μ searched per cell by Optuna on a log scale (sampler and objective: search.sampler, "
             "search.objective); "
             "ρ is the fitted per-step contraction of the excess loss.", ""]
    sections = {"paper_mnist": ("Rate against depth on MNIST", "variant"),
                "paper_gd": ("RGD against plain GD", "optim.method"),
                "paper_nonlinear": ("Nonlinear against linear", "model.activation"),
                "paper_protocol": ("How μ is scaled with N", "variant")}
    for name, res in results.items():
        title, axis = sections[name]
        for png in ("curves.png", "rate_vs_depth.png", "lr_vs_depth.png", "landscape.png"):
            src = res.folder / "report" / png
            if src.exists():
                shutil.copy(src, folder / f"{name}-{png}")
        lines += [f"## {title}", "", f"Study `{res.name}` ({len(res.rows)} cells); MLflow parent run "
                  f"`{res.parent_run_id}`.", "", *_table(res, axis), "",
                  "| series | exponent of 1 − ρ in N [95 % CI] | exponent of best μ [95 % CI] | points |",
                  "|---|---|---|---|", *_law_lines(res), "",
                  f"![convergence]({name}-curves.png) ![rate]({name}-rate_vs_depth.png)", ""]
    lines += ["## What the data show", "", *conclusions(results), ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path


def run_paper(scale: str, overrides: list[str]) -> Path:
    """The four studies at ``scale`` (SCALES) with ``overrides``, their report on disk and in MLflow; returns
    the report's path. ConfigError before anything runs for a bad scale or override."""
    if scale not in SCALES:
        raise ConfigError(f"paper.scale={scale!r}: must be one of {', '.join(SCALES)}")
    studies = {f: plan([f"family={f}", *SCALES[scale], *overrides])[0] for f in FAMILIES}
    results = {}
    for family, (cfg, ov, cells) in studies.items():
        results[family] = run_study(cfg, cells, ov)
        print(results[family].text, flush=True)
    cfg = studies[FAMILIES[0]][0]
    folder = state_dir(cfg) / "paper" / scale
    path = write_report(folder, results, scale, overrides)
    try:
        tracker = Tracker(tracking_uri(cfg), "orthoscale-paper", artifact_location(cfg, "orthoscale-paper"))
        run = tracker.client.create_run(tracker.experiment_id, run_name=f"paper-{scale}",
                                        tags={"orthoscale.role": "paper", "orthoscale.studies": json.dumps(
                                            {f: r.name for f, r in results.items()})})
        for f in sorted(folder.iterdir()):
            tracker.client.log_artifact(run.info.run_id, str(f))
        tracker.finish(run.info.run_id)
    except Exception as err:  # the report is on disk either way
        print(f"warning: the paper report did not reach MLflow ({type(err).__name__})", file=sys.stderr)
    return path
