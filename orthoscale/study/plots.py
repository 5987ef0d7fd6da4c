"""Figures of a study (matplotlib, Agg): rate and best μ against depth with fitted laws, and
convergence curves at the best μ."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402



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


def render(folder: Path, cells, rows, records, laws) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    _against_depth(ax, cells, rows, laws, "best_rate", "one_minus_rate", lambda r: 1 - r)
    ax.set_ylabel("1 − ρ at the best μ (per step)")
    ax.set_title("Linear rate against depth")
    fig.tight_layout()
    fig.savefig(folder / "rate_vs_depth.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    _against_depth(ax, cells, rows, laws, "best_lr", "best_lr", lambda v: v)
    ax.set_ylabel("best step size μ")
    ax.set_title("Best step size against depth")
    fig.tight_layout()
    fig.savefig(folder / "lr_vs_depth.png", dpi=120)
    plt.close(fig)

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
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=120)
    plt.close(fig)
