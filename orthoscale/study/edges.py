"""Two analyses across seeds that a cell table cannot show.

Edge (cells that search a value for the edge of success, search.objective=edge, e.g. the basin family): per series
and depth, every finished trial is a point (searched value x, converged or not), pooled over seeds. Per bin of x the
success share with its Wilson 95 % interval; per depth the edge x₅₀ (p = ½) of a logistic fit in log x with its
interval; per series the law x₅₀ ∝ N^−β by weighted least squares on the edges (basin.py holds the formulas).

Runs (cells that search nothing, one run each, several seeds: e.g. the global family): per series and depth, the
share of runs that reached a linear phase and converged, the step where that phase begins, its rate against the
exact local rate at the solution reached, and the outcomes counted.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from .. import basin
from .cells import Cell

BINS = 8  # bins of the searched value per depth in the success table (on the search's scale)


def _by_series_depth(cells: list[Cell], records: list[dict]) -> dict[tuple[str, int], list[dict]]:
    index = {c.index: c for c in cells}
    out: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rec in records:
        res = rec.get("result") or {}
        if rec["status"] == "FINISHED" and res.get("outcome") not in (None, "pruned"):
            cell = index[rec["cell_index"]]
            out[(cell.series, cell.get("model.depth"))].append(rec)
    return dict(sorted(out.items()))


def is_edge_study(cells: list[Cell]) -> bool:
    return bool(cells) and cells[0].config["search"]["objective"] == "edge"


def is_runs_study(cells: list[Cell]) -> bool:
    """Every cell runs once (nothing searched) and some series × depth has several seeds."""
    if not cells or cells[0].config["search"]["key"] != "optim.lr":
        return False
    if any(c.config["optim"]["protocol"] == "tuned" for c in cells):
        return False
    return max(Counter((c.series, c.get("model.depth")) for c in cells).values()) > 1


def _points(recs: list[dict]) -> tuple[list[float], list[bool]]:
    xs = [float(r.get("value", r["lr"])) for r in recs]
    return xs, [r["result"]["outcome"] == "converged" for r in recs]


def edge_analysis(cells: list[Cell], records: list[dict]) -> dict:
    """{"edges": [row per series and depth], "bins": [...], "laws": {series: law}, "key": searched key}."""
    s = cells[0].config["search"]
    log = s["scale"] == "log" or s["key"] == "optim.lr"
    lo, hi = (s["lr_min"], s["lr_max"]) if s["key"] == "optim.lr" else (s["low"], s["high"])
    edges, bins = [], []
    for (series, depth), recs in _by_series_depth(cells, records).items():
        xs, ok = _points(recs)
        fit = basin.fit_logistic(xs, ok, log=log)
        edges.append({"series": series, "depth": depth, "x50": fit.x50, "low": fit.low, "high": fit.high,
                      "kind": fit.kind, "slope": fit.slope, "trials": len(xs), "successes": int(sum(ok)),
                      "seeds": len({r["cell_index"] for r in recs})})
        top, bottom = max([lo, *xs]), min([hi, *xs])
        grid = (np.geomspace(bottom, top, BINS + 1) if log and bottom > 0 else np.linspace(bottom, top, BINS + 1))
        where = np.clip(np.searchsorted(grid, xs, side="right") - 1, 0, BINS - 1)
        for b in range(BINS):
            n = int((where == b).sum())
            if n:
                k = int(np.asarray(ok)[where == b].sum())
                w_lo, w_hi = basin.wilson(k, n)
                bins.append({"series": series, "depth": depth, "from": float(grid[b]), "to": float(grid[b + 1]),
                             "trials": n, "successes": k, "p": k / n, "wilson": [w_lo, w_hi]})
    laws = {}
    for series in sorted({e["series"] for e in edges}):
        inside = [e for e in edges if e["series"] == series and e["kind"] in ("logistic", "separated")
                  and e["low"] > 0 and math.isfinite(e["high"])]
        if len({e["depth"] for e in inside}) < 2:
            continue
        sigma = [(math.log(e["high"]) - math.log(e["low"])) / (2 * basin.Z95) or 1e-3 for e in inside]
        law = basin.fit_power_law_weighted([e["depth"] for e in inside], [e["x50"] for e in inside], sigma)
        laws[series] = {"beta": -law.exponent, "ci95": [-law.ci[1], -law.ci[0]], "prefactor": law.prefactor,
                        "stderr": law.stderr, "points": law.points}
    return {"key": s["key"], "edges": edges, "bins": bins, "laws": laws}


def _num(v, f=".3g") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, f)


def edge_text(result: dict) -> str:
    name = result["key"].split(".")[-1]
    head = f"{'series':<24} {'N':>4} {'trials':>6} {'conv':>5} {name + '₅₀':>10} {'95% interval':>20}  fit"
    lines = [f"edge of success in {result['key']} (converged to stop.tol), pooled over seeds", head, "-" * len(head)]
    words = {"logistic": "logistic", "separated": "bracketed (no overlap)", "flat": "no edge (p does not fall)"}
    for e in result["edges"]:
        kind = words.get(e["kind"], "one-sided: " + ("every run converged" if e["successes"] == e["trials"]
                                                     else "no run converged"))
        shown = (f">{_num(e['x50'])}" if e["kind"] == "one-sided" and e["successes"] else
                 f"<{_num(e['x50'])}" if e["kind"] == "one-sided" else _num(e["x50"]))
        lines.append(f"{e['series']:<24} {e['depth']:>4} {e['trials']:>6} {e['successes']:>5} {shown:>10} "
                     f"{'[' + _num(e['low']) + ', ' + _num(e['high']) + ']':>20}  {kind}")
    lines.append(f"success share per bin of {name} (k/n, Wilson 95 %):")
    for (series, depth), grp in _group(result["bins"]).items():
        lines.append(f"  {series} N={depth}: " + "  ".join(
            f"{_num(b['from'])}–{_num(b['to'])} {b['successes']}/{b['trials']} "
            f"[{b['wilson'][0]:.2f}, {b['wilson'][1]:.2f}]" for b in grp))
    for series, law in result["laws"].items():
        lines.append(f"[{series}] {name}₅₀ ∝ N^−β, β = {law['beta']:.3f} (95% CI {law['ci95'][0]:.3f}…"
                     f"{law['ci95'][1]:.3f}, {law['points']} depths)")
    missing = sorted({e["series"] for e in result["edges"]} - set(result["laws"]))
    if missing:
        lines.append(f"no law for {', '.join(missing)}: fewer than two depths with an edge inside the range")
    return "\n".join(lines)


def _group(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["series"], r["depth"])].append(r)
    return out


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def runs_analysis(cells: list[Cell], records: list[dict]) -> list[dict]:
    """One row per series and depth over its seeds (see the module docstring)."""
    rows = []
    for (series, depth), recs in _by_series_depth(cells, records).items():
        res = [r["result"] for r in recs]
        # a linear phase: fitted (from its window's start), or a run too short for a fit whose every step after
        # the first contracts at one rate (rates.short_rate: from step 1)
        linear = [x for x in res if x["outcome"] == "converged" and x.get("rate_estimate") is not None]
        rate = {id(x): x["rate"] if x.get("rate") is not None else x["rate_estimate"] for x in linear}
        gaps = [(1 - rate[id(x)]) / (1 - x["solution_rate"]) for x in linear
                if x.get("solution_rate") is not None and x["solution_rate"] < 1]
        k = len(linear)
        rows.append({"series": series, "depth": depth, "runs": len(res), "linear": k,
                     "linear_share": k / len(res), "wilson": list(basin.wilson(k, len(res))),
                     "linear_start": _median(x["linear_start"] if x.get("linear_start") is not None else 1
                                             for x in linear),
                     "steps": _median(x["steps"] for x in linear),
                     "rate": _median(rate.values()),
                     "solution_rate": _median(x.get("solution_rate") for x in linear),
                     "rate_vs_local": _median(gaps), "rate_vs_local_range": [min(gaps), max(gaps)] if gaps else None,
                     "outcomes": dict(Counter(x["outcome"] for x in res))})
    return rows


def runs_text(rows: list[dict]) -> str:
    head = (f"{'series':<24} {'N':>4} {'runs':>5} {'linear':>14} {'start':>6} {'steps':>6} {'ρ':>8} "
            f"{'ρ_loc':>8} {'(1−ρ)/(1−ρ_loc)':>16}  outcomes")
    lines = ["runs from each start, per series and depth over seeds: share that reached a linear phase and "
             "converged (Wilson 95 %), medians over those of the step where the phase begins, steps to tol, fitted ρ "
             "and the exact local rate ρ_loc at the solution reached", head, "-" * len(head)]
    for r in rows:
        share = f"{r['linear']}/{r['runs']} [{r['wilson'][0]:.2f},{r['wilson'][1]:.2f}]"
        lines.append(f"{r['series']:<24} {r['depth']:>4} {r['runs']:>5} {share:>14} "
                     f"{_num(r['linear_start'], '.0f'):>6} {_num(r['steps'], '.0f'):>6} {_num(r['rate'], '.5f'):>8} "
                     f"{_num(r['solution_rate'], '.5f'):>8} "
                     f"{_num(r['rate_vs_local'], '.3f'):>16}  "
                     + ", ".join(f"{n} {o}" for o, n in sorted(r["outcomes"].items())))
    return "\n".join(lines)
