"""A study's analysis from its result records: the cell table, scaling laws against depth, and plots.

Per cell, the best trial is the finished one with the least objective (search.objective); its μ
and fitted rate ρ are the cell's best μ and best ρ. Across cells that differ only in depth and seed
(a *series*), 1 − ρ and μ are fitted as power laws of N, with seeds giving the spread.
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from ..rates import fit_power_law
from ..train import OUTCOMES
from .cells import Cell
from .results import TrialResult

DEPTH, SEED = "model.depth", "seed"
EDGE = 0.05  # best μ within 5 % of the log range of a bound is "on the edge"


def _gap(measured, predicted):
    """(1 − ρ_measured)/(1 − ρ_predicted): 1 when they agree; < 1 when the measurement is slower."""
    if measured is None or predicted is None or predicted >= 1:
        return None
    return (1 - measured) / (1 - predicted)


def cell_rows(cells: list[Cell], records: list[dict]) -> list[dict]:
    by_cell = defaultdict(list)
    for rec in records:
        by_cell[rec["cell_index"]].append(rec)
    rows = []
    for cell in cells:
        recs = by_cell.get(cell.index, [])
        done = [(r, TrialResult.from_dict(r["result"])) for r in recs if r["status"] == "FINISHED" and r.get("result")]
        counts = Counter([res.outcome for _, res in done] +
                         ["pruned" if r["status"] == "KILLED" else "failed" for r in recs
                          if not (r["status"] == "FINISHED" and r.get("result"))])
        best, res = min(done, key=lambda d: d[1].objective, default=(None, TrialResult()))
        s = cell.config["search"]
        lo, hi = math.log(s["lr_min"]), math.log(s["lr_max"])
        edge = ""
        if best and cell.config["optim"]["protocol"] == "tuned":
            pos = (math.log(res.lr) - lo) / (hi - lo)
            edge = "low" if pos < EDGE else ("high" if pos > 1 - EDGE else "")
        rows.append({
            "cell": cell.id, **{k: v for k, v in cell.values}, "depth": cell.get(DEPTH), "seed": cell.get(SEED),
            "trials": len(recs), **{o: counts.get(o, 0) for o in (*OUTCOMES, "failed")},
            "best_lr": res.lr, "best_rate": res.rate, "best_iters": res.iters_to_tol, "best_objective": res.objective,
            "min_rate": min((d.rate for _, d in done if d.rate is not None), default=None),
            "lr_on_edge": edge, "best_key": best["key"] if best else None,
            # theory beside the measurement: ρ_lin² at the best μ, and the best rate any μ could give
            "theory_rate": res.theory_rate, "theory_mu_opt": res.theory_mu_opt, "theory_rate_opt": res.theory_rate_opt,
            "rate_ratio": _gap(res.rate, res.theory_rate), "search_gap": _gap(res.rate, res.theory_rate_opt),
        })
    return rows


def scaling(cells: list[Cell], rows: list[dict]) -> dict:
    """Per series: power laws of 1 − ρ and μ in N (needs ≥ 2 depths with a rate)."""
    out = {}
    groups = defaultdict(list)
    for cell, row in zip(cells, rows):
        groups[cell.series].append(row)
    for name, grp in groups.items():
        pts = [(r["depth"], r["best_rate"], r["best_lr"]) for r in grp if r["best_rate"] is not None]
        if len({p[0] for p in pts}) < 2:
            continue
        entry = {}
        for label, ys in (("one_minus_rate", [1 - p[1] for p in pts]), ("best_lr", [p[2] for p in pts])):
            law = fit_power_law([p[0] for p in pts], ys)
            entry[label] = {"exponent": law.exponent, "prefactor": law.prefactor, "stderr": law.stderr,
                            "ci95": list(law.ci), "points": law.points}
        out[name] = entry
    return out


def table(rows: list[dict]) -> str:
    head = f"{'cell':<28} {'trials':>6} {'conv':>4} {'div':>4} {'stall':>5} {'prun':>4} {'fail':>4} " \
           f"{'best μ':>10} {'ρ':>8} {'ρ_th(μ)':>8} {'ratio':>6} {'μ_opt':>8} {'ρ_opt':>8} {'iters':>6}  edge"
    lines = [head, "-" * len(head)]
    fmt = lambda v, f: (format(v, f) if v is not None else "—")
    for r in rows:
        lines.append(f"{r['cell']:<28} {r['trials']:>6} {r['converged']:>4} {r['diverged']:>4} "
                     f"{r['stalled'] + r['budget']:>5} {r['pruned']:>4} {r['failed']:>4} "
                     f"{fmt(r['best_lr'], '.4g'):>10} {fmt(r['best_rate'], '.5f'):>8} "
                     f"{fmt(r['theory_rate'], '.5f'):>8} {fmt(r['rate_ratio'], '.3f'):>6} "
                     f"{fmt(r['theory_mu_opt'], '.4g'):>8} {fmt(r['theory_rate_opt'], '.5f'):>8} "
                     f"{fmt(r['best_iters'], 'd'):>6}  {r['lr_on_edge']}")
    return "\n".join(lines)


def write(folder: Path, cells: list[Cell], records: list[dict]) -> dict:
    """cells.csv, scaling.json and the plots into ``folder``; returns {rows, scaling, text}."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = cell_rows(cells, records)
    with open(folder / "cells.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    laws = scaling(cells, rows)
    (folder / "scaling.json").write_text(json.dumps(laws, indent=2))
    from . import plots

    plots.render(folder, cells, rows, records, laws)
    text = table(rows)
    for name, law in laws.items():
        r, m = law["one_minus_rate"], law["best_lr"]
        text += (f"\n[{name}] 1−ρ ∝ N^{r['exponent']:.3f} (95% CI {r['ci95'][0]:.3f}…{r['ci95'][1]:.3f}); "
                 f"best μ ∝ N^{m['exponent']:.3f} (95% CI {m['ci95'][0]:.3f}…{m['ci95'][1]:.3f})")
    gaps = [r["search_gap"] for r in rows if r["search_gap"] is not None]
    if gaps:
        text += (f"\nsearch vs theory: (1 − best measured ρ)/(1 − ρ at μ_opt) = {min(gaps):.3f} … {max(gaps):.3f} "
                 f"over {len(gaps)} cells ({sum(g >= 0.95 for g in gaps)} within 5 %)")
    edges = [r["cell"] for r in rows if r["lr_on_edge"]]
    if edges:
        text += f"\nbest μ on the edge of [search.lr_min, search.lr_max] in: {', '.join(edges)} — widen the range"
    (folder / "summary.txt").write_text(text + "\n")
    return {"rows": rows, "scaling": laws, "text": text}
