"""End to end through a browser: a real tiny study, the MLflow UI server `make ui` starts, Debian's headless
Chromium driven by Playwright. It checks that the study's record is readable where people read it: the runs
table (parent and children), the parent's plot artifact, and a child's per-iteration `rel_excess` chart.

Screenshots of every step land in tmp_path and in .orthoscale/test-artifacts/ui/ (kept by CI). Nothing is
skipped: Chromium comes from `make browser` (apt), Playwright from the `test` extra; no browser download.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from .conftest import ROOT, TINY, plan_and_run, runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# `make ui`'s flags; the test asserts the Makefile recipe still carries them, so the two cannot drift.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
UI_FLAGS = ["--host", "127.0.0.1", "--workers", "1"]
ARTIFACTS = ROOT / ".orthoscale" / "test-artifacts" / "ui"
WAIT_MS = 30_000


def _makefile_ui_recipe() -> str:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("ui:"))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip().rstrip("\\"))
    return " ".join(recipe)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 20) -> str:
    """The server log's last lines, less the access log of static files."""
    if not path.exists():
        return ""
    return "\n".join([ln for ln in path.read_text(errors="replace").splitlines() if "/static-files/" not in ln][-n:])


def _start_ui(db: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}",
           "--port", str(port), *UI_FLAGS]
    # own process group: `mlflow ui` runs uvicorn as a child, and both must go at the end
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **UI_ENV}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_health(proc: subprocess.Popen, base: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow ui exited with {proc.returncode}:\n{_tail(log)}"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"OK":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow ui not healthy after {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # the uvicorn child, should it outlive its parent
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


# A Plotly chart of real size whose line trace has a drawn path, in the card whose legend names `legend`
# (the smallest ancestor holding that text holds this one chart only).
_CHART_DRAWN = """(legend) => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => {
    let card = p;
    while (card && !(card.innerText || '').includes(legend)) card = card.parentElement;
    if (!card || card.querySelectorAll('.js-plotly-plot').length !== 1) return false;
    const r = p.getBoundingClientRect();
    const lines = Array.from(p.querySelectorAll('.scatterlayer path.js-line'));
    return r.width > 100 && r.height > 100 && lines.some(l => (l.getAttribute('d') || '').length > 20);
})"""


def test_ui_shows_the_study_in_a_browser(ray_local, tmp_path):
    recipe = _makefile_ui_recipe()
    for piece in ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false", "mlflow ui", "--backend-store-uri sqlite:///",
                  "--host 127.0.0.1", "--workers 1"):
        assert piece in recipe, f"Makefile `ui` recipe lacks {piece!r}: {recipe}"
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run `make browser`"
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)

    from mlflow import MlflowClient

    shots = tmp_path / "ui"
    shots.mkdir()
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)

    def shot(page, name: str) -> None:
        path = shots / f"{name}.png"
        page.screenshot(path=str(path))
        shutil.copy2(path, ARTIFACTS / path.name)

    # The server boots (~15 s on two cores) while the study runs, as `make ui` beside `make sweep` would;
    # the store's tables are created first so that the two never race to create them.
    db = (tmp_path / "mlflow.db").resolve()
    MlflowClient(f"sqlite:///{db}").search_experiments()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-ui.log"
    proc = _start_ui(db, port, log)
    try:
        res = plan_and_run(["model.depth=2,3", "seed=0", "search.trials=2", *TINY], tmp_path)
        assert Path(res.tracking_uri.removeprefix("sqlite:///")).resolve() == db
        client, all_runs = runs(res.tracking_uri, "orthoscale-depth")
        children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
        assert len(children) == 4 and len(all_runs) == 5
        child = next(c for c in sorted(children, key=lambda c: c.info.run_name) if c.info.status == "FINISHED"
                     and len(client.get_metric_history(c.info.run_id, "rel_excess")) >= 2)
        png = Path(client.download_artifacts(res.parent_run_id, "rate_vs_depth.png", str(tmp_path)))
        png_w, png_h = _png_size(png)
        exp = res.experiment_id

        def plot_renders(page) -> None:
            """The artifact viewer shows rate_vs_depth.png decoded at its true size, and visibly large."""
            expect(page.get_by_text("rate_vs_depth.png", exact=True).last).to_be_visible()
            img = page.locator('img[alt="rate_vs_depth.png"]')
            expect(img).to_be_visible()
            page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=img.element_handle())
            size = img.evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
            assert tuple(size) == (png_w, png_h), (size, (png_w, png_h))
            box = img.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, box

        _wait_health(proc, base, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
                page.set_default_timeout(WAIT_MS)
                try:
                    # 1. the experiment's runs table: the parent, expanded, lists every child
                    page.goto(f"{base}/#/experiments/{exp}/runs")
                    parent_link = page.get_by_role("link", name=res.name, exact=True)
                    expect(parent_link).to_be_visible()
                    close = page.get_by_role("button", name="Close", exact=True)  # the assistant side panel
                    if close.count():
                        close.first.click()
                    expect(page.get_by_text(f"{len(all_runs)} matching runs")).to_be_visible()
                    page.get_by_role("row").filter(has=parent_link).get_by_role("button").first.click()
                    for c in children:
                        expect(page.get_by_role("link", name=c.info.run_name, exact=True)).to_be_visible()
                    shot(page, "01-experiment-runs")

                    # 2. the parent's page, its Artifacts tab, the plot of the rate against depth
                    parent_link.click()
                    page.wait_for_url(f"**/#/experiments/{exp}/runs/{res.parent_run_id}**")
                    expect(page.get_by_role("heading", name=res.name, exact=True)).to_be_visible()
                    shot(page, "02-parent-run")
                    page.get_by_role("tab", name="Artifacts").click()
                    page.get_by_text("rate_vs_depth.png", exact=True).first.click()
                    plot_renders(page)
                    shot(page, "03-parent-artifact-rate_vs_depth")
                    # the artifact's own route (a deep link) shows the same plot
                    page.goto(f"{base}/#/experiments/{exp}/runs/{res.parent_run_id}/artifacts/rate_vs_depth.png")
                    plot_renders(page)
                    shot(page, "04-parent-artifact-deep-link")

                    # 3. a child's metric page for rel_excess (the route the UI's metric links use)
                    q = (f"?runs={json.dumps([child.info.run_id])}&metric={quote(json.dumps('rel_excess'))}"
                         f"&experiments={json.dumps([exp])}&plot_metric_keys={quote(json.dumps(['rel_excess']))}"
                         "&plot_layout={}&x_axis=step&y_axis_scale=log&line_smoothness=1&show_point=false"
                         "&deselected_curves=[]&last_linear_y_axis_range=[]")
                    legend = f"{child.info.run_name} (rel_excess)"
                    page.goto(f"{base}/#/metric{q}")
                    expect(page.get_by_text(legend).first).to_be_visible()
                    page.wait_for_function(_CHART_DRAWN, arg=legend)
                    shot(page, "05-child-metric-rel_excess")

                    # 4. the same curve in the child's Model metrics tab, filtered to rel_excess
                    page.goto(f"{base}/#/experiments/{exp}/runs/{child.info.run_id}/model-metrics")
                    expect(page.get_by_role("heading", name=child.info.run_name, exact=True)).to_be_visible()
                    page.get_by_placeholder("Search metric charts").fill("rel_excess")
                    matching = sum("rel_excess" in k for k in child.data.metrics)  # rel_excess, final_rel_excess…
                    expect(page.get_by_text(re.compile(rf"Model metrics\s*\({matching}\)"))).to_be_visible()
                    expect(page.get_by_role("heading", name="rel_excess", exact=True)).to_be_visible()
                    expect(page.get_by_text(legend).first).to_be_visible()
                    page.wait_for_function(_CHART_DRAWN, arg=legend)
                    shot(page, "06-child-model-metrics")
                except BaseException:
                    with contextlib.suppress(Exception):  # the failure itself is what must surface
                        shot(page, "99-failure")
                    raise
            finally:
                browser.close()
    except BaseException as e:
        e.add_note(f"mlflow ui log tail:\n{_tail(log)}")
        raise
    finally:
        _stop(proc)
    assert sorted(p.name for p in ARTIFACTS.iterdir()) == sorted(p.name for p in shots.iterdir())
