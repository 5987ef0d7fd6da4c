"""Figures of a study (matplotlib, Agg): rate and best μ against depth with fitted laws, and
convergence curves at the best μ."""
from __future__ import annotations

import contextlib
import io
import time
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (backend first)
import matplotlib.ticker as ticker  # noqa: E402 (backend first)
import numpy as np  # noqa: E402 (backend first)

matplotlib.rcParams["axes.titley"] = 1.01  # a fixed title position: placing it by itself measures every tick label

from .edges import law_form  # noqa: E402 (backend first)


def _against_depth(ax, cells, rows, laws, column, law_key, transform):
    groups = defaultdict(list)
    for cell, row in zip(cells, rows):
        if row[column] is not None:
            groups[cell.series].append((row["depth"], transform(row[column])))
    for k, (name, pts) in enumerate(sorted(groups.items())):
        x, y = np.array(pts, dtype=float).T
        label = name
        law = laws.get(name, {}).get(law_key)
        if law:
            grid = np.geomspace(x.min(), x.max(), 50)
            ax.plot(grid, law["prefactor"] * grid ** law["exponent"], color=f"C{k}", lw=1)
            label += f"  (∝ N^{law['exponent']:.2f} ± {1.96 * law['stderr']:.2f})"
        ax.scatter(x, y, color=f"C{k}", s=18, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth N (layers)")
    ax.grid(True, which="both", alpha=0.3)
    if groups:
        ax.legend(fontsize=7)


class _PlainLog(ticker.LogFormatter):
    """Log-axis tick labels as plain text ('0.001', '1e-06', '16'): matplotlib's default writes each as mathtext,
    whose parser costs ~10 ms a label."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


_CLOCK: list = []  # [last write's time, {file name: seconds}] inside timed_figures()


@contextlib.contextmanager
def timed_figures():
    """Seconds each figure written inside the block took, from the previous figure's write (or the block's start)
    to its own: {file name: s}."""
    seconds: dict[str, float] = {}
    _CLOCK[:] = [time.perf_counter(), seconds]
    try:
        yield seconds
    finally:
        _CLOCK.clear()


def _write(fig, path, dpi: int) -> None:
    """Save and close ``fig``, its log axes labelled by :class:`_PlainLog`."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                base = axis.get_transform().base
                axis.set_major_formatter(_PlainLog(base))
                axis.set_minor_formatter(_PlainLog(base, labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    if _CLOCK and isinstance(path, Path):
        now = time.perf_counter()
        _CLOCK[1][path.name], _CLOCK[0] = now - _CLOCK[0], now


def _save(fig, path: Path) -> None:
    """A 6×4 in figure with fixed margins (tight_layout measures every tick label: ~0.5 s a figure)."""
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.12, top=0.92)
    _write(fig, path, 120)


def warm() -> None:
    """Draw a small log-scaled figure off screen: fonts, the mathtext parser of log tick labels and the Agg
    backend are loaded before a study's report needs them (≈ 1 s the first time in a process)."""
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 10], [1e-3, 1.0], label="N")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title("t")
    ax.legend(fontsize=7)
    _write(fig, io.BytesIO(), 30)


def render(folder: Path, cells, rows, records, laws) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    _against_depth(ax, cells, rows, laws, "best_rate", "one_minus_rate", lambda r: 1 - r)
    theory = sorted({(r["depth"], 1 - r["theory_rate_opt"]) for r in rows if r.get("theory_rate_opt") is not None})
    if theory:
        ax.plot(*zip(*theory), "k--", lw=1, label="theory: best over μ (exact local rate)")
        ax.legend(fontsize=7)
    ax.set_ylabel("1 − ρ at the best μ (per step)")
    ax.set_title("Linear rate against depth")
    _save(fig, folder / "rate_vs_depth.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    _against_depth(ax, cells, rows, laws, "best_lr", "best_lr", lambda v: v)
    ax.set_ylabel("best step size μ")
    ax.set_title("Best step size against depth")
    _save(fig, folder / "lr_vs_depth.png")

    best = {r["best_key"] for r in rows if r["best_key"]}
    fig, ax = plt.subplots(figsize=(6, 4))
    seen = set()
    for rec in sorted(records, key=lambda r: r["cell_index"]):
        if rec["key"] not in best:
            continue
        cell = cells[rec["cell_index"]]
        name = f"{cell.series} N={cell.get('model.depth')}"
        if name in seen:  # one curve per depth and series: the first seed
            continue
        seen.add(name)
        res = rec["result"]
        ax.plot(res["curve_steps"], res["curves"]["rel_excess"], lw=1, label=f"{name}, μ={res['lr']:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative excess loss (L − L*)/(L(0) − L*)")
    ax.set_title("Convergence at the best μ")
    ax.grid(True, which="both", alpha=0.3)
    if seen:
        ax.legend(fontsize=6, ncol=2)
    _save(fig, folder / "curves.png")
    landscape(folder, cells, records)


MARKERS = {"converged": ("o", "C2"), "diverged": ("x", "C3"), "stalled": ("v", "C1"), "budget": ("^", "C1"),
           "pruned": (".", "0.6"), "failed": ("s", "k")}


def seed_panels(cells) -> dict[str, list[int]]:
    """Cells grouped up to their seed: the cell id without ``seed=…`` → the indices of its seeds' cells."""
    panels = defaultdict(list)
    for cell in cells:
        panels[cell.label(("seed",))].append(cell.index)
    return dict(panels)


def landscape(folder: Path, cells, records) -> None:
    """Objective (search.objective) against the searched value (search.key: μ by default), one small panel per
    cell up to its seed (the seeds of a cell overlaid), outcomes marked; objective=edge (−value or 0) on a linear
    axis."""
    key = cells[0].config["search"]["key"] if cells else "optim.lr"
    edge = bool(cells) and cells[0].config["search"]["objective"] == "edge"
    panels = seed_panels(cells)
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    height = 2.2 * rows + 0.3  # inches: the panels and the legend's line above them
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, height), squeeze=False, sharey=True)
    by_cell = defaultdict(list)
    for rec in records:
        by_cell[rec["cell_index"]].append(rec)
    for ax, (title, members) in zip(axes.flat, panels.items()):
        points = defaultdict(list)  # one marker line per outcome (a call per point costs ~50 ms a study's trial)
        for rec in (rec for index in members for rec in by_cell.get(index, [])):
            res = rec.get("result") or {}
            outcome = res.get("outcome", "failed") if rec["status"] != "FAILED" else "failed"
            x = rec.get("value", rec.get("lr"))
            if res.get("objective") is not None and x:
                points[MARKERS.get(outcome, ("s", "k"))].append((x, res["objective"]))
        for (marker, color), xy in points.items():
            ax.plot(*zip(*xy), ls="", marker=marker, color=color, ms=4, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("linear" if edge else "log")
        ax.set_title(title + (f" ({len(members)} seeds)" if len(members) > 1 else ""), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.minorticks_off()  # minor log ticks on every panel cost seconds in layout and drawing
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("objective", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step size μ" if key == "optim.lr" else key, fontsize=7)
    handles = [plt.Line2D([], [], marker=m, color=c, ls="", label=o) for o, (m, c) in MARKERS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=len(MARKERS), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.42 / height, top=1 - 0.6 / height, wspace=0.15,
                        hspace=0.45)  # fixed margins: tight_layout measures every tick label of every panel
    _write(fig, folder / "landscape.png", 110)


def _by_series(rows: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[r["series"]].append(r)
    return dict(sorted(out.items()))


def _depth_axes(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("depth N (layers)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)


def edge_plots(folder: Path, cells, records, result: dict) -> None:
    """basin_success.png (success share per bin with Wilson bars and the logistic fit, a panel per series),
    basin_edge.png (x₅₀ against N with intervals and the law), basin_distance.png (success against the distance
    from the start, in units of the depth's edge)."""
    name, rising = result["key"].split(".")[-1], bool(result.get("rising"))
    series = _by_series(result["bins"])
    fig, axes = plt.subplots(1, len(series) or 1, figsize=(4 * max(len(series), 1), 3.4), squeeze=False)
    edges = {(e["series"], e["depth"]): e for e in result["edges"]}
    for ax, (label, bins) in zip(axes[0], series.items()):
        depths = sorted({b["depth"] for b in bins})
        for k, depth in enumerate(depths):
            mine = [b for b in bins if b["depth"] == depth]
            x = np.array([np.sqrt(b["from"] * b["to"]) if b["from"] > 0 else (b["from"] + b["to"]) / 2 for b in mine])
            p = np.array([b["p"] for b in mine])
            err = np.clip([[b["p"] - b["wilson"][0], b["wilson"][1] - b["p"]] for b in mine], 0, None).T
            ax.errorbar(x, p, yerr=err, fmt="o", ms=3, color=f"C{k}", capsize=2, label=f"N={depth}")
            e = edges.get((label, depth))
            if e and e["kind"] == "logistic":
                grid = np.geomspace(min(x.min(), e["x50"]) / 1.5, max(x.max(), e["x50"]) * 1.5, 100)
                ax.plot(grid, 1 / (1 + np.exp(-e["slope"] * np.log(grid / e["x50"]))), color=f"C{k}", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(name)
        ax.set_ylabel("P(converges to tol)")
        ax.set_title(label, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    _write(fig, folder / "basin_success.png", 110)

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, rows) in enumerate(_by_series(result["edges"]).items()):
        inside = [e for e in rows if e["kind"] in ("logistic", "separated") and e["low"] > 0 and np.isfinite(e["high"])]
        beyond = [e for e in rows if e["kind"] == "one-sided" and e["successes"]]
        if inside:
            x = np.array([e["depth"] for e in inside], dtype=float)
            y = np.array([e["x50"] for e in inside])
            err = np.clip([[e["x50"] - e["low"], e["high"] - e["x50"]] for e in inside], 0, None).T
            law = result["laws"].get(label)
            text = (f"  ({name}₅₀ ∝ {law_form(result)}, β = {law['beta']:.2f} [{law['ci95'][0]:.2f}, "
                    f"{law['ci95'][1]:.2f}])" if law else "")
            ax.errorbar(x, y, yerr=err, fmt="o", ms=4, color=f"C{k}", capsize=2, label=label + text)
            if law:
                grid = np.geomspace(x.min(), x.max(), 50)
                ax.plot(grid, law["prefactor"] * grid ** (law["beta"] if rising else -law["beta"]), color=f"C{k}",
                        lw=1)
        if beyond:
            ax.scatter([e["depth"] for e in beyond], [e["x50"] for e in beyond], marker="v" if rising else "^",
                       color=f"C{k}", label=f"{label}: every run converged {'down' if rising else 'up'} to here")
    ax.set_yscale("log")
    _depth_axes(ax, f"edge {name}₅₀ (P = ½), 95 % interval", "Basin edge against depth")
    fig.tight_layout()
    _write(fig, folder / "basin_edge.png", 120)

    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    points = defaultdict(list)  # depth → (distance to the teacher, to the last iterate, converged)
    for rec in records:
        res, cell = rec.get("result") or {}, cells[rec["cell_index"]]
        e = edges.get((cell.series, cell.get("model.depth")))  # only where the edge lies inside the range tried
        if e and e["kind"] in ("logistic", "separated") and res.get("teacher_distance") is not None:
            points[cell.get("model.depth")].append((res["teacher_distance"] / e["x50"],
                                                    (res.get("start_distance") or np.nan) / e["x50"],
                                                    res.get("outcome") == "converged"))
    for k, (depth, pts) in enumerate(sorted(points.items())):
        to_teacher, to_end, ok = (np.array(v, dtype=float) for v in zip(*pts))
        y = ok + rng.uniform(-0.08, 0.08, ok.size)
        ax.scatter(to_teacher, y, s=8, color=f"C{k}", label=f"N={depth}")
        ax.scatter(to_end[ok == 1], y[ok == 1] - 1.25, s=8, facecolors="none", edgecolors=f"C{k}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap over a narrow range
    ax.set_yticks([-0.25, 0, 1], ["converged: distance to\nthe solution reached", "failed: to the teacher",
                                  "converged: to the teacher"], fontsize=7)
    ax.set_xlabel(f"distance from the start (relative, all layers) / {name}₅₀(N)")
    ax.set_title("Success against distance in units of the basin edge", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    _write(fig, folder / "basin_distance.png", 120)


def runs_plots(folder: Path, rows: list[dict]) -> None:
    """global_linear.png: share of runs reaching a linear phase (Wilson bars), the step where it begins, and
    1 − ρ in that phase against 1 − ρ_loc at the solution reached, each against N per series."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, (label, grp) in enumerate(_by_series(rows).items()):
        x = np.array([r["depth"] for r in grp], dtype=float)
        share = np.array([r["linear_share"] for r in grp])
        err = np.clip([[r["linear_share"] - r["wilson"][0], r["wilson"][1] - r["linear_share"]] for r in grp],
                      0, None).T
        axes[0].errorbar(x, share, yerr=err, fmt="o-", ms=3, color=f"C{k}", capsize=2, label=label)
        pts = [(r["depth"], r["linear_start"]) for r in grp if r["linear_start"] is not None]
        if pts:
            axes[1].plot(*zip(*pts), "o-", ms=3, color=f"C{k}", label=label)
        fit = [(r["depth"], 1 - r["rate"]) for r in grp if r["rate"] is not None]
        loc = [(r["depth"], 1 - r["solution_rate"]) for r in grp if r["solution_rate"] is not None]
        if fit:
            axes[2].plot(*zip(*fit), "o", ms=4, color=f"C{k}", label=f"{label}: fitted")
        if loc:
            axes[2].plot(*zip(*loc), "--", lw=1, color=f"C{k}", label=f"{label}: exact local rate at the solution")
    axes[1].set_yscale("symlog", linthresh=1)
    axes[2].set_yscale("log")
    for ax, (ylabel, title) in zip(axes, (("share of runs", "Reached a linear phase and converged"),
                                          ("step (median)", "Where the linear phase begins"),
                                          ("1 − ρ (median)", "Rate in the linear phase"))):
        _depth_axes(ax, ylabel, title)
    fig.tight_layout()
    _write(fig, folder / "global_linear.png", 110)
