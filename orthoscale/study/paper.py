"""The paper's experiments (arXiv 2311.14658: RGD on MNIST, RGD vs plain GD, the effect of depth, nonlinear
activations) as four studies of the service, two studies beyond its local rate (family basin: the edge of the basin
of linear convergence against depth; family global: runs from standard starts), and one self-contained Markdown
report with its figures.

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
from .driver import StudyResult, check_record_outlives_job, run_study
from .locations import artifact_location, state_dir, tracking_uri
from .report import rate_count, rate_label
from .tracking import Tracker

FAMILIES = ("paper_mnist", "paper_gd", "paper_nonlinear", "paper_protocol")
SCALES = {  # tiny: for tests; small: `make paper` on a laptop; full: a cluster (`make paper-cluster`)
    "tiny": ["model.depth=2,4", "search.trials=2", "data.samples=2000", "stop.max_iters=300", "stop.extend_to=600"],
    "small": [],
    "full": ["model.depth=2,4,8,16,32,64,128", "seed=0,1,2", "search.trials=20", "stop.extend_to=40000"],
}
BEYOND = ("basin", "global")  # beyond the local rate: the basin's edge against depth, and runs from standard starts
BEYOND_SCALES = {  # their own sizes (the MNIST overrides above do not apply to them), and seeds per family
    "tiny": ["model.depth=2,4", "search.trials=2", "stop.max_iters=300"],
    "small": ["model.depth=2,4,8,16,32"],
    "full": ["model.depth=2,4,8,16,32,64,128,256", "search.trials=8"],
}
BEYOND_SEEDS = {"basin": {"tiny": "seed=0", "small": "seed=0,1", "full": "seed=range(10)"},
                "global": {"tiny": "seed=0,1", "small": "seed=0,1,2", "full": "seed=range(32)"}}
SECTIONS = {  # study → (title, the grid axes that name a row of its table)
    "paper_mnist": ("Rate against depth on MNIST", ("variant",)),
    "paper_gd": ("RGD against plain GD", ("variant", "optim.method")),
    "paper_nonlinear": ("Nonlinear against linear", ("model.activation",)),
    "paper_protocol": ("How μ is scaled with N", ("variant",)),
}


def _fmt(v, f=".4f"):
    return "—" if v is None else format(v, f)


def _law_lines(res: StudyResult) -> list[str]:
    out = []
    for series, law in sorted(res.scaling.items()):
        r, m = law["one_minus_rate"], law["best_lr"]
        out.append(f"| {series} | {r['exponent']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                   f"{m['exponent']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] | {r['points']} |")
    return out or ["| — | no series has a rate at two or more depths | | |"]


def _series(rows: list[dict], axes: tuple[str, ...]) -> dict[str, dict[int, dict]]:
    """Rows by the label of their series ("onehot · rgd") and depth (seed 0 where there are several)."""
    out: dict[str, dict[int, dict]] = {}
    for row in sorted(rows, key=lambda r: -(r.get("seed") or 0)):
        out.setdefault(" · ".join(str(row.get(a, "all")) for a in axes), {})[row["depth"]] = row
    return out


def _cell(row: dict | None, notes: list[str], label: str) -> str:
    """A table cell: the rate and its μ, or "— [k]" with note k saying why there is none."""
    if row is None:
        return "not run"
    if row["best_rate"] is not None:
        edge = f", μ on the {row['lr_on_edge']} edge" if row["lr_on_edge"] else ""
        return f"{rate_label(row)} (μ {row['best_lr']:.3g}{edge})"
    notes.append(f"{label}, N={row['depth']}: {row['note']}")
    return f"— [{len(notes)}]"


def _table(res: StudyResult, axes: tuple[str, ...]) -> list[str]:
    """Rate (μ) per series and depth, how many cells have a rate, and every "—" with its reason."""
    series = _series(res.rows, axes)
    depths = sorted({d for s in series.values() for d in s})
    notes: list[str] = []
    lines = [f"| {' · '.join(a.split('.')[-1] for a in axes)} | " + " | ".join(f"N={d}: ρ (μ)" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for name, by_depth in sorted(series.items()):
        lines.append(f"| {name} | " + " | ".join(_cell(by_depth.get(d), notes, name) for d in depths) + " |")
    lines += ["", f"{rate_count(res.rows)}." + (" Cells without one:" if notes else ""), ""]
    lines += [f"{k}. {n}" for k, n in enumerate(notes, 1)]
    return lines + ([""] if notes else [])


def _theory_check(res: StudyResult) -> list[str]:
    """(1 − ρ)/(1 − ρ_th(μ)) at the best μ, by kind of estimate, where the exact local rate applies; every cell
    outside 2 % is named with its μ against μ_opt and the steps its rate rests on."""
    out, above = [], False
    for kind, words in (("fit", "fitted on a linear phase"), ("short", "estimated from a short run")):
        rows = [r for r in res.rows if r["rate_kind"] == kind and r["rate_ratio"]]
        if not rows:
            continue
        gaps = [r["rate_ratio"] for r in rows]
        off = [r for r in rows if abs(r["rate_ratio"] - 1) > 0.02]
        above |= any(r["tuned"] and r["theory_mu_opt"] and r["best_lr"] > r["theory_mu_opt"] for r in off)
        named = "; ".join(f"N={r['depth']} {r['rate_ratio']:.3f} (μ {r['best_lr']:.4g} vs μ_opt "
                          f"{r['theory_mu_opt']:.4g}, {r['best_iters'] or '—'} steps)" for r in off)
        out.append(f"- Rates {words}: (1 − ρ)/(1 − ρ_th(μ)) = {min(gaps):.3f} … {max(gaps):.3f} over {len(rows)} "
                   f"cells, {len(rows) - len(off)} within 2 %" + (f"; outside: {named}" if off else "") + ".")
    searched = [r for r in res.rows if r["search_gap"] and r["tuned"]]
    if searched:
        best = [r["search_gap"] for r in searched]
        short = ", ".join(f"N={r['depth']} ({r['trials']} trials)" for r in searched if r["search_gap"] < 0.95)
        out.append(f"- Against the best rate over μ, cells whose μ was searched: (1 − ρ)/(1 − ρ_opt) = "
                   f"{min(best):.3f} … {max(best):.3f} over {len(best)} cells "
                   f"({sum(abs(g - 1) <= 0.05 for g in best)} within 5 %)"
                   + (f"; below 0.95 the search did not come close to μ_opt: {short}" if short else "") + ".")
    if above:
        out.append("- Where the best μ lies above μ_opt, the exact rate is set by the mode of largest curvature "
                   "(|1 − μλ_max|²), which starts small: in a run of tens of steps it has not taken over, so the "
                   "measured contraction is faster than the asymptotic one and the search is drawn to such μ. "
                   "Against the best rate over μ (ρ_opt), the line above, they stay close.")
    return ["Against the exact local rate (teacher cells):", "", *out, ""] if out else []


def _iters(row: dict | None) -> str:
    """Iterations to tolerance of a cell's best trial, or why there are none."""
    if row is None:
        return "—"
    return str(row["best_iters"]) if row["best_iters"] is not None else "not reached"


def _side_by_side(res: StudyResult) -> list[str]:
    """RGD and GD per variant and depth: rate and iterations to tolerance."""
    lines = []
    s = _series(res.rows, ("variant", "optim.method"))
    for variant in sorted({k.split(" · ")[0] for k in s}):
        rgd, gd = s.get(f"{variant} · rgd", {}), s.get(f"{variant} · gd", {})
        lines += [f"**{variant}**", "",
                  "| N | RGD ρ | RGD iters to tol | GD ρ | GD iters to tol | (1 − ρ_RGD)/(1 − ρ_GD) |",
                  "|---|---|---|---|---|---|"]
        for d in sorted(set(rgd) | set(gd)):
            r, g = rgd.get(d), gd.get(d)
            ratio = (1 - r["best_rate"]) / (1 - g["best_rate"]) if r and g and r["best_rate"] is not None \
                and g["best_rate"] is not None else None
            lines.append(f"| {d} | {rate_label(r) if r else '—'} | {_iters(r)} | {rate_label(g) if g else '—'} | "
                         f"{_iters(g)} | {_fmt(ratio, '.3f')} |")
        lines.append("")
    return lines


def _against_linear(res: StudyResult) -> list[str]:
    """(1 − ρ_act)/(1 − ρ_linear) per activation and depth; for a run still contracting without a linear phase,
    the same ratio for its tail contraction ρ_tail (the last quarter's mean per-step factor), so marked."""
    s = _series(res.rows, ("model.activation",))
    lin = s.get("identity", {})
    depths = sorted({d for v in s.values() for d in v})
    lines = ["| activation | " + " | ".join(f"N={d}: (1 − ρ)/(1 − ρ_linear)" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for act, by_depth in sorted(s.items()):
        if act == "identity":
            continue
        cells = []
        for d in depths:
            r, lr = by_depth.get(d), lin.get(d)
            if not (r and lr and lr["best_rate"] is not None):
                cells.append("no linear rate to compare with")
            elif r["best_rate"] is not None:
                cells.append(f"{(1 - r['best_rate']) / (1 - lr['best_rate']):.3g}")
            elif r.get("tail_rate") is not None and r["tail_rate"] < 1 and r["best_iters"] is None and \
                    r.get("outcome") == "budget":
                cells.append(f"{(1 - r['tail_rate']) / (1 - lr['best_rate']):.3g} at the end (ρ_tail, no linear phase)")
            else:
                cells.append(f"no rate: {r.get('outcome') or 'no trial finished'}")
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    return lines + [""]


def conclusions(results: dict[str, StudyResult]) -> list[str]:
    """What the numbers say, in numbers."""
    out = []
    for name, res in results.items():
        if name in BEYOND:
            continue
        for series, law in sorted(res.scaling.items()):
            k, (lo, hi) = law["one_minus_rate"]["exponent"], law["one_minus_rate"]["ci95"]
            trend = "shrinks" if hi < 0 else ("grows" if lo > 0 else "shows no significant trend")
            depths = [r["depth"] for r in res.rows]
            out.append(f"- {name} [{series}]: 1 − ρ ∝ N^{k:.2f} (95 % CI {lo:.2f} … {hi:.2f}) — the per-step "
                       f"contraction {trend} with depth over N = {min(depths)} … {max(depths)}; best μ ∝ "
                       f"N^{law['best_lr']['exponent']:.2f}.")
    gd = results.get("paper_gd")
    if gd:
        s = _series(gd.rows, ("variant", "optim.method"))
        for variant in sorted({k.split(" · ")[0] for k in s}):
            rgd, g = s.get(f"{variant} · rgd", {}), s.get(f"{variant} · gd", {})
            pairs = [(d, rgd[d], g[d]) for d in sorted(set(rgd) & set(g))
                     if rgd[d]["best_rate"] is not None and g[d]["best_rate"] is not None]
            if pairs:
                out.append(f"- RGD vs plain GD, {variant} targets: " + "; ".join(
                    f"N={d} ρ {a['best_rate']:.4f} vs {b['best_rate']:.4f} "
                    f"(iterations to tol {_iters(a)} vs {_iters(b)})"
                    for d, a, b in pairs) + ".")
    nl = results.get("paper_nonlinear")
    if nl:
        s = _series(nl.rows, ("model.activation",))
        lin = s.get("identity", {})
        for act, by_depth in sorted(s.items()):
            if act == "identity":
                continue
            pairs = [(d, by_depth[d]["best_rate"], lin[d]["best_rate"]) for d in sorted(by_depth)
                     if d in lin and by_depth[d]["best_rate"] is not None and lin[d]["best_rate"] is not None]
            missing = [f"N={d}" + (f" (ρ_tail {by_depth[d]['tail_rate']:.5f})" if by_depth[d]["tail_rate"] else "")
                       for d in sorted(by_depth) if by_depth[d]["best_rate"] is None]
            if pairs:
                speed = [(1 - r) / (1 - lr) for _, r, lr in pairs]
                out.append(f"- {act} against linear, best ρ: " + ", ".join(f"N={d} {r:.4f} vs {lr:.4f}"
                                                                           for d, r, lr in pairs)
                           + f" — its 1 − ρ is {min(speed):.2g}…{max(speed):.2g} × the linear network's.")
            if missing:
                out.append(f"- {act}: no rate at " + ", ".join(missing) + " — the reasons are under the table.")
    proto = results.get("paper_protocol")
    if proto and len(proto.scaling) > 1:
        ks = {k: v["one_minus_rate"]["exponent"] for k, v in proto.scaling.items()}
        out.append("- The depth exponent depends on how μ is scaled with N: " +
                   ", ".join(f"{k}: {v:.2f}" for k, v in sorted(ks.items())) +
                   " — a claim about depth must say which step-size protocol it assumes.")
    return out or ["- No series had a rate at two or more depths: nothing to conclude."]


CHOICES = [
    "- MNIST training set (60 000 images), pixels in [0, 1], centred, whitened on the eigen-directions with "
    "λ > 1e-6·λ_max (Σ_xx = I there); hidden width 10 (forced by 10 outputs with column-orthonormal layers).",
    "- Loss (1/2m)‖PX − Y‖²; error = relative excess loss (L − L*)/(L(0) − L*); converged at 1e-8. For one-hot "
    "labels L* is the least-squares optimum of the 10 × d_0 end-to-end map; for nonlinear networks L* = 0 (the "
    "teacher's loss, no noise).",
    "- Initialisation, one-hot labels: from a random network (Gaussian free layer, Haar orthonormal layers) and "
    "from the spectral start moved to relative distance δ = 0.2. The spectral start itself (least-squares "
    "subspaces, flat spectrum) is not used: its error lies in the free layer only, so μ = 1 solves it in one step "
    "and there is no rate to measure (the report flags such cells, and cells that start at the solution). "
    "Teacher targets: the teacher perturbed by δ = 0.2. Plain GD starts from the same point as RGD.",
    "- Nonlinear family: the teacher has the student's activation (data.teacher_activation=model), so every "
    "cell is realizable; 2 000 images, generic autograd path, tolerance 1e-10.",
    "- Budgets follow the rate: 1 000 steps (nonlinear: 2 000), and a run still contracting then goes on for the "
    "steps its tail rate needs to reach tolerance when that fits within stop.extend_to (3 000; nonlinear 8 000) — "
    "a run predicted to need more stops and says so. μ is searched on [0.01, 3] (the teacher family's best μ lies "
    "well inside), widened automatically when the best μ sits on a bound.",
    "- μ searched per cell by Optuna on a log scale (sampler and objective: search.sampler, search.objective); a "
    "cell whose best μ is its outermost trial near a bound gets that bound widened and is re-searched "
    "(search.edge_rounds, search.edge_factor).",
    "- ρ is the per-step contraction of the excess loss: fitted on the linear phase, or, for a run that reaches "
    "tolerance before a linear phase can be fitted, the least-squares slope over every step after the first "
    "(\"≈ ρ from k steps\"; its 95 % interval is widened to the last step's ratio, and the search ranks by its "
    "upper end). A run solved in one or two steps has no rate.",
]


def _beyond(name: str, res: StudyResult, folder: Path) -> list[str]:
    """The basin's edge per depth with its law, or the runs from standard starts, from the study's report files."""
    report = res.folder / "report"
    for png in ("basin_success.png", "basin_edge.png", "basin_distance.png", "global_linear.png"):
        if (report / png).exists():
            shutil.copy(report / png, folder / f"{name}-{png}")
    head = [f"Study `{res.name}` ({len(res.rows)} cells); MLflow parent run `{res.parent_run_id}`.", ""]
    if name == "basin":
        edges = json.loads((report / "edges.json").read_text()) if (report / "edges.json").exists() else None
        if not edges:
            return head + ["No trial finished.", ""]
        lines = head + ["| series | N | trials (converged) | δ₅₀ | 95 % interval | fit |", "|---|---|---|---|---|---|"]
        for e in edges["edges"]:
            lines.append(f"| {e['series']} | {e['depth']} | {e['trials']} ({e['successes']}) | "
                         f"{_fmt(e['x50'], '.3g')} | [{_fmt(e['low'], '.3g')}, {_fmt(e['high'], '.3g')}] | "
                         f"{e['kind']} |")
        lines += ["", "| series | β in δ₅₀ ∝ N^−β [95 % CI] | depths |", "|---|---|---|"]
        laws = [f"| {k} | {v['beta']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] | {v['points']} |"
                for k, v in edges["laws"].items()]
        lines += laws or ["| — | no series has an edge inside the range at two depths | |"]
        return lines + ["", "![success](basin-basin_success.png) ![edge](basin-basin_edge.png) "
                        "![distance](basin-basin_distance.png)", ""]
    rows = json.loads((report / "runs.json").read_text()) if (report / "runs.json").exists() else []
    lines = head + ["| start | N | linear phase (Wilson 95 %) | phase begins (median step) | ρ | ρ at the solution "
                    "(exact) | (1 − ρ)/(1 − ρ_loc) | outcomes |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['series']} | {r['depth']} | {r['linear']}/{r['runs']} [{r['wilson'][0]:.2f}, "
                     f"{r['wilson'][1]:.2f}] | {_fmt(r['linear_start'], '.0f')} | {_fmt(r['rate'], '.5f')} | "
                     f"{_fmt(r['solution_rate'], '.5f')} | {_fmt(r['rate_vs_local'], '.3f')} | "
                     + ", ".join(f"{n} {o}" for o, n in sorted(r["outcomes"].items())) + " |")
    return lines + ["", "![global](global-global_linear.png)", ""]


BEYOND_TEXT = {
    "basin": ("Beyond the local rate: the basin of linear convergence",
              "Teacher–student (width 8), μ = μ_opt(N) of the exact local theory; each cell bisects the relative "
              "perturbation δ of the teacher between converging to tolerance within the budget and not; the edge δ₅₀ "
              "(P = ½) per depth pools every seed's trials in a logistic fit in log δ. RGD with a free first layer, "
              "RGD with the free layer last and plain GD start from the same perturbation of their teacher."),
    "global": ("From standard initialisations",
               "Random networks at three scales of the free layer and the spectral start, one run per seed, "
               "μ = μ_opt(N): the share that reaches a linear phase and converges, where the phase begins (the "
               "fitted window's start), and its rate against the exact local rate at the solution reached."),
}


def write_report(folder: Path, results: dict[str, StudyResult], scale: str, overrides: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# RGD on orthonormal deep linear networks: the paper's experiments, reproduced", "",
             f"Scale `{scale}`; extra overrides: `{' '.join(overrides) or '—'}`; "
             f"generated {time.strftime('%Y-%m-%d %H:%M')}.",
             "", "## Choices where the paper is not explicit", "", *CHOICES, ""]
    for name, res in results.items():
        if name in BEYOND:
            title, words = BEYOND_TEXT[name]
            lines += [f"## {title}", "", words, "", *_beyond(name, res, folder)]
            continue
        title, axes = SECTIONS[name]
        for png in ("curves.png", "rate_vs_depth.png", "lr_vs_depth.png", "landscape.png"):
            src = res.folder / "report" / png
            if src.exists():
                shutil.copy(src, folder / f"{name}-{png}")
        lines += [f"## {title}", "", f"Study `{res.name}` ({len(res.rows)} cells); MLflow parent run "
                  f"`{res.parent_run_id}`.", "", *_table(res, axes)]
        if name == "paper_gd":
            lines += ["Side by side (best μ of each method):", "", *_side_by_side(res)]
        if name == "paper_nonlinear":
            lines += ["Per-step progress against the linear network of the same depth:", "", *_against_linear(res)]
        lines += [*_theory_check(res),
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
    studies.update({f: plan([f"family={f}", *BEYOND_SCALES[scale], BEYOND_SEEDS[f][scale], *overrides])[0]
                    for f in BEYOND})
    check_record_outlives_job(studies[FAMILIES[0]][0])
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
