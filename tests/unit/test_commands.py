"""The command layer: --help on every command, bad input as exit code 2 with one line, and the import graph
(the core imports no service code and nothing of Ray, MLflow, Optuna or Hydra; no module imports itself back)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from orthoscale.cli import COMMANDS, main

PACKAGE = Path(__file__).resolve().parents[2] / "orthoscale"
SERVICE = ("ray", "mlflow", "optuna", "hydra", "omegaconf")


def test_help_of_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in COMMANDS)
    for name in COMMANDS:
        assert main([name, "--help"]) == 0
        assert f"orthoscale {name}" in capsys.readouterr().out
    assert main(["sweep", "-h"]) == 0
    text = capsys.readouterr().out
    assert "families (family=…)" in text and "depth " in text and "config groups" in text
    assert "model.depth          8" in text                       # keys with their defaults
    assert main([]) == 2 and main(["nope"]) == 2


@pytest.mark.parametrize("args, key", [
    (["sweep", "tracking.uri=ftp://x"], "tracking.uri"),
    (["sweep", "model.depth=0"], "model.depth"),
    (["sweep", "--info"], "--info"),
    (["sweep", "optim.device=cuda", "model.depth=2", "search.trials=1"], "optim.device=cuda"),
    (["report", "no-such-study", "study.state_dir=/nonexistent"], "tracking.experiment"),
    (["report", "latest", "study.state_dir=/nonexistent"], "study=latest"),
    (["sync", "x", "model.depth=3"], "model.depth"),
    (["paper", "paper.scale=huge"], "paper.scale"),
])
def test_bad_input_exits_2_with_one_line_naming_the_key(args, key, capsys, tmp_path):
    if args[0] == "sweep":
        args = args + [f"study.state_dir={tmp_path}"]
    assert main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("orthoscale: invalid config:") and key in err[0], err
    assert not list(tmp_path.glob("studies/*/results.jsonl"))    # nothing ran


def imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved inside the package)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out |= {f"{base}.{a.name}" for a in node.names} | {base}
    return out


def graph() -> dict[str, set[str]]:
    mods = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}


def test_the_core_imports_no_service_code():
    for path in PACKAGE.glob("*.py"):
        if path.name in ("__main__.py", "sweep.py"):  # the command entry points
            continue
        bad = {i for i in imports(path) if i.split(".")[0] in SERVICE or i.startswith(("orthoscale.study",
                                                                                          "orthoscale.cli"))}
        assert not bad, f"{path.name} imports {bad}"


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            raise AssertionError(" → ".join(trail[trail.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(g[m]):
            visit(n, trail + [m])
        state[m] = 2

    for m in sorted(g):
        visit(m, [])


def test_the_driver_of_a_study_without_mnist_never_imports_torch():
    """A driver composes, validates and runs a study with the core's torch-free declarations (architecture,
    specs): torch's import (seconds) belongs to the trials' workers, not to every command's start."""
    import subprocess
    import sys

    code = ("import sys; from orthoscale.study.compose import plan; from orthoscale.study import driver, runner, "
            "cluster, report, plots, edges, search, pack, capacity, progress; "
            "(cfg, _, cells), = plan(['model.depth=2,4', 'seed=0,1']); driver.load_inputs(cells); "
            "from orthoscale.cli import report as _r, rerun as _e, sweep as _s, sync as _y; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
