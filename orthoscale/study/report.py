"""A study's analysis from its result records: the cell table, scaling laws against depth, and plots.

Per cell, the best trial is the finished one with the least objective (search.objective); its μ
and rate ρ are the cell's best μ and best ρ — the linear-phase fit, or for a run that reached the
tolerance too fast for one the short-run estimate (rates.short_rate, marked "≈"). A cell without a rate
says why (:func:`outcome_note`). Across cells that differ only in depth and seed (a *series*), 1 − ρ and
μ are fitted as power laws of N, with seeds giving the spread.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

from ..rates import RateEstimate, fit_power_law, on_edge
from ..specs import OUTCOMES
from . import edges
from .cells import Cell
from .results import TrialResult

DEPTH, SEED = "model.depth", "seed"
RATED = ("fit", "short")  # estimate kinds that are rates; "instant" (solved in 1–2 steps) is only a bound


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
        s = cell.cfg.search
        tried = [r["lr"] for r in recs if r.get("lr")]
        lo, hi = min([s.lr_min, *tried]), max([s.lr_max, *tried])  # the range, as edge re-search widened it
        edge = on_edge(res.lr, lo, hi) if best and cell.cfg.optim.protocol == "tuned" else ""
        kind = res.rate_kind or ("fit" if res.rate is not None else None)
        rate = (res.rate_estimate if res.rate_estimate is not None else res.rate) if kind in RATED else None
        row = {
            "cell": cell.id, **{k: v for k, v in cell.values}, "depth": cell.get(DEPTH), "seed": cell.get(SEED),
            "trials": len(recs), **{o: counts.get(o, 0) for o in (*OUTCOMES, "failed")},
            "best_lr": res.lr, "best_rate": rate, "best_iters": res.iters_to_tol, "best_objective": res.objective,
            "rate_kind": kind if rate is not None else None, "rate_ci": res.rate_ci, "rate_points": res.rate_points,
            "min_rate": min((d.rate for _, d in done if d.rate is not None), default=None),
            "lr_on_edge": edge, "lr_range": [lo, hi], "best_key": best["key"] if best else None,
            "outcome": res.outcome if best else None, "tail_rate": res.tail_rate,
            "tuned": cell.cfg.optim.protocol == "tuned",
            # theory beside the measurement: ρ_lin² at the best μ, and the best rate any μ could give
            "theory_rate": res.theory_rate, "theory_mu_opt": res.theory_mu_opt, "theory_rate_opt": res.theory_rate_opt,
            "rate_ratio": _gap(rate, res.theory_rate), "search_gap": _gap(rate, res.theory_rate_opt),
        }
        row["note"] = "" if rate is not None else outcome_note(res if best else None, counts, kind)
        rows.append(row)
    return rows


def rate_label(row: dict) -> str:
    """A cell's rate as a table shows it: "0.3370", or "≈ 0.1040 from 8 steps" for a short-run estimate."""
    if row["best_rate"] is None:
        return "—"
    lo, hi = row.get("rate_ci") or (row["best_rate"], row["best_rate"])
    return RateEstimate(row["best_rate"], lo, hi, row.get("rate_points") or 0, row["rate_kind"] or "fit").label


def _slowing(res: TrialResult) -> str:
    """" and slowing (ρ a → b)" when the contraction over the last quarter of the run is weaker than over the
    quarter before (from the logged curve), else ""."""
    steps, values = res.curve_steps or [], (res.curves or {}).get("rel_excess") or []
    if len(steps) < 4 or steps[-1] < 8:
        return ""
    at = lambda t: min(range(len(steps)), key=lambda i: abs(steps[i] - t))
    i, j, k = at(steps[-1] / 2), at(3 * steps[-1] / 4), len(steps) - 1
    if not (i < j < k and values[i] > 0 and values[j] > 0 and values[k] > 0):
        return ""
    before = (values[j] / values[i]) ** (1 / (steps[j] - steps[i]))
    after = (values[k] / values[j]) ** (1 / (steps[k] - steps[j]))
    return f" and slowing ({before:.5f} → {after:.5f} over the last two quarters)" if after > before else ""


def rate_count(rows: list[dict]) -> str:
    """"k of n cells have a rate (f fitted, s from short runs)"."""
    kinds = Counter(r["rate_kind"] for r in rows if r["best_rate"] is not None)
    return (f"{sum(kinds.values())} of {len(rows)} cells have a rate ({kinds.get('fit', 0)} fitted on a linear phase, "
            f"{kinds.get('short', 0)} estimated from a short run)")


def outcome_note(res: TrialResult | None, counts: Counter, kind: str | None) -> str:
    """Why a cell has no rate, in words, from its best trial (``res``) and the outcomes of all its trials."""
    tally = ", ".join(f"{n} {o}" for o, n in counts.most_common())
    if res is None:
        return f"no finished trial ({tally or 'none ran'})"
    if res.at_solution:
        return f"start already at the solution: initial relative excess {res.start_rel_excess:.1e} ≤ tol"
    if kind == "instant":
        return (f"solved in {res.iters_to_tol} step(s) from relative excess {res.start_rel_excess:.2g}"
                " — too few to measure a rate (a start whose error one step removes)")
    if res.outcome == "stalled":
        return (f"stalled at a plateau of relative excess h = {res.final_rel_excess:.2g} after {res.steps} steps "
                f"({tally})")
    if res.outcome == "diverged":
        return f"diverged at every μ tried ({tally})"
    if res.outcome == "budget" and res.tail_rate is not None and res.tail_rate < 1:
        more = f"; ~{res.steps_needed} more steps to tol at that rate, past stop.extend_to" if res.steps_needed else ""
        return (f"no linear phase in {res.steps} steps: still contracting at ρ_tail = {res.tail_rate:.5f} per step"
                f"{_slowing(res)}, at relative excess {res.final_rel_excess:.2g}{more}")
    why = "; ".join(filter(None, (res.rate_note, tally)))
    return f"{res.outcome} after {res.steps} steps without a linear phase ({why})"


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
    approx = lambda r: "≈" if r["rate_kind"] == "short" else ""
    for r in rows:
        lines.append(f"{r['cell']:<28} {r['trials']:>6} {r['converged']:>4} {r['diverged']:>4} "
                     f"{r['stalled'] + r['budget']:>5} {r['pruned']:>4} {r['failed']:>4} "
                     f"{fmt(r['best_lr'], '.4g'):>10} {approx(r) + fmt(r['best_rate'], '.5f'):>8} "
                     f"{fmt(r['theory_rate'], '.5f'):>8} {fmt(r['rate_ratio'], '.3f'):>6} "
                     f"{fmt(r['theory_mu_opt'], '.4g'):>8} {fmt(r['theory_rate_opt'], '.5f'):>8} "
                     f"{fmt(r['best_iters'], 'd'):>6}  {r['lr_on_edge']}")
    return "\n".join(lines)


def warm_plots() -> None:
    """Load what :func:`write` loads on first use, the plotting stack and the scaling fits' t quantile, ahead of
    it (the driver calls it on a thread while Ray starts)."""
    from scipy.special import stdtrit  # noqa: F401 (loaded for rates.fit_power_law)

    from . import plots

    plots.warm()


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

    out = {"rows": rows, "scaling": laws}
    with plots.timed_figures() as out["figure_seconds"]:
        plots.render(folder, cells, rows, records, laws)
        if edges.is_edge_study(cells):  # the edge of success across seeds replaces the per-cell table
            out["edge"] = edges.edge_analysis(cells, records)
            (folder / "edges.json").write_text(json.dumps(out["edge"], indent=2))
            plots.edge_plots(folder, cells, records, out["edge"])
        elif edges.is_runs_study(cells):  # one run per seed: the per-depth summary over seeds
            out["runs"] = edges.runs_analysis(cells, records)
            (folder / "runs.json").write_text(json.dumps(out["runs"], indent=2))
            plots.runs_plots(folder, out["runs"])
    if "edge" in out:
        out["text"] = edges.edge_text(out["edge"]) + "\n" + rate_count(rows)
        (folder / "summary.txt").write_text(out["text"] + "\n")
        return out
    if "runs" in out:
        text = edges.runs_text(out["runs"])
    else:
        text = table(rows)
    for name, law in laws.items():
        r, m = law["one_minus_rate"], law["best_lr"]
        text += (f"\n[{name}] 1−ρ ∝ N^{r['exponent']:.3f} (95% CI {r['ci95'][0]:.3f}…{r['ci95'][1]:.3f}); "
                 f"best μ ∝ N^{m['exponent']:.3f} (95% CI {m['ci95'][0]:.3f}…{m['ci95'][1]:.3f})")
    gaps = [r["search_gap"] for r in rows if r["search_gap"] is not None]
    if gaps:
        text += (f"\nsearch vs theory: (1 − best measured ρ)/(1 − ρ at μ_opt) = {min(gaps):.3f} … {max(gaps):.3f} "
                 f"over {len(gaps)} cells ({sum(g >= 0.95 for g in gaps)} within 5 %)")
    text += "\n" + rate_count(rows)
    for r in rows:
        if r["note"]:
            text += f"\n  {r['cell']}: {r['note']}"
    on_bound = [r["cell"] for r in rows if r["lr_on_edge"]]
    if on_bound:
        text += (f"\nbest μ on the edge of its range (after search.edge_rounds re-searches) in: {', '.join(on_bound)}"
                 " — widen search.lr_min / lr_max or allow more rounds")
    (folder / "summary.txt").write_text(text + "\n")
    return {**out, "text": text}
