"""Figures of a study (matplotlib, Agg): rate and best μ against depth with fitted laws, and
convergence curves at the best μ."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (backend first)
import numpy as np  # noqa: E402 (backend first)



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


def _save(fig, path: Path) -> None:
    """A 6×4 in figure with fixed margins (tight_layout measures every tick label: ~0.5 s a figure)."""
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.12, top=0.92)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def landscape(folder: Path, cells, records) -> None:
    """Objective (search.objective) against μ per cell, one small panel each, outcomes marked."""
    cols = min(5, len(cells))
    rows = -(-len(cells) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False, sharey=True)
    by_cell = defaultdict(list)
    for rec in records:
        by_cell[rec["cell_index"]].append(rec)
    for ax, cell in zip(axes.flat, cells):
        points = defaultdict(list)  # one scatter per outcome (a call per point costs ~50 ms a study's trial)
        for rec in by_cell.get(cell.index, []):
            res = rec.get("result") or {}
            outcome = res.get("outcome", "failed") if rec["status"] != "FAILED" else "failed"
            if res.get("objective") is not None and rec.get("lr"):
                points[MARKERS.get(outcome, ("s", "k"))].append((rec["lr"], res["objective"]))
        for (marker, color), xy in points.items():
            ax.scatter(*zip(*xy), marker=marker, color=color, s=18)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(cell.id, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.minorticks_off()  # minor log ticks on every panel cost seconds in layout and drawing
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("objective", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step size μ", fontsize=7)
    handles = [plt.Line2D([], [], marker=m, color=c, ls="", label=o) for o, (m, c) in MARKERS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=len(MARKERS), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12 / rows + 0.03, top=1 - 0.1 / rows - 0.03, wspace=0.15,
                        hspace=0.45)  # fixed margins: tight_layout measures every tick label of every panel
    fig.savefig(folder / "landscape.png", dpi=110)
    plt.close(fig)
