"""`make paper` end to end at a tiny scale: every study runs and the report has every table and figure."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration


def test_paper_at_tiny_scale_writes_the_whole_report(tmp_path):
    out = subprocess.run([sys.executable, "-m", "orthoscale", "paper", "paper.scale=tiny",
                          f"study.state_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = tmp_path / "paper" / "tiny" / "report.md"
    text = report.read_text()
    for title in ("Rate against depth on MNIST", "RGD against plain GD", "Nonlinear against linear",
                  "How μ is scaled with N", "What the data show", "Choices where the paper is not explicit"):
        assert f"## {title}" in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) == 12 and all((report.parent / f).stat().st_size > 1000 for f in figures)
    tables = [ln for ln in text.splitlines() if ln.startswith("| variant") or ln.startswith("| activation")]
    assert len(tables) >= 4
    assert "1 − ρ ∝ N^" in text or "nothing to conclude" in text
    for row in ("| onehot · rgd |", "| onehot · gd |", "| teacher · rgd |", "| teacher · gd |", "| relu |"):
        assert row in text  # one row per compared setting
    # one-hot MNIST from starts off the solution: a rate in every cell
    onehot = [ln for ln in text.splitlines() if ln.startswith(("| onehot_random |", "| onehot_perturbed |",
                                                                               "| onehot · rgd |"))]
    assert len(onehot) == 3 and all("—" not in ln and ln.count("(μ ") == 2 for ln in onehot), onehot
    # every table counts its rates, and every "—" has its numbered reason
    assert text.count("cells have a rate") == 4
    dashes = re.findall(r"— \[(\d+)\]", text)
    reasons = re.findall(r"^(\d+)\. [^\n]+, N=\d+: \S", text, flags=re.M)
    assert len(dashes) == len(reasons) and sorted(dashes) == sorted(reasons)
    assert "Side by side" in text and "(1 − ρ)/(1 − ρ_linear)" in text
    # beyond the local rate: the basin's edges and law table, and the runs from standard starts
    for title in ("Beyond the local rate: the basin of linear convergence", "From standard initialisations"):
        assert f"## {title}" in text
    assert "| series | β in δ₅₀ ∝ N^−β [95 % CI] | depths |" in text and "| start | N | linear phase" in text
    # every study's parent run closed with its report and a law per series (series names hold '=' and ',')
    assert "did not reach MLflow" not in out.stdout + out.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parents = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], filter_string="tags.`orthoscale.role` = 'study'")]
    assert len(parents) == 6 and all(r.info.status == "FINISHED" for r in parents)
    laws = [k for r in parents for k in r.data.tags if k.startswith("orthoscale.law.")]
    assert any(k.startswith("orthoscale.law.variant:") for k in laws), laws
