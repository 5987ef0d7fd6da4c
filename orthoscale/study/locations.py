"""Where a study's things live — the one place for the state dir, the tracking URI, the experiment name, the
study folder, the saved plan and the data root.

state dir      study.state_dir, else <project>/.orthoscale
tracking URI   tracking.uri, else sqlite:///<state dir>/mlflow.db
experiment     tracking.experiment, else orthoscale-<family.name>
study folder   <state dir>/studies/<study>: results.jsonl, config.json (the plan), report/
MNIST          data.root, else <project>/.orthoscale/data/mnist (where `make data` puts it, whatever the state dir)
"""
from __future__ import annotations

import json
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_STATE = PROJECT / ".orthoscale"
MNIST_ROOT = DEFAULT_STATE / "data" / "mnist"
PLAN = "config.json"


def state_dir(cfg) -> Path:
    return Path(cfg.study.state_dir or DEFAULT_STATE).resolve()


def tracking_uri(cfg) -> str:
    return cfg.tracking.uri or f"sqlite:///{state_dir(cfg) / 'mlflow.db'}"


def experiment_name(cfg) -> str:
    return cfg.tracking.experiment or f"orthoscale-{cfg.family.name}"


def artifact_location(cfg, experiment: str) -> str | None:
    """Local stores keep artifacts beside them; a tracking server proxies its own."""
    if tracking_uri(cfg).startswith(("http://", "https://")):
        return None
    return (state_dir(cfg) / "artifacts" / experiment).as_uri()


def study_folder(state: Path, study: str) -> Path:
    return Path(state) / "studies" / study


def latest_study(state: Path) -> str | None:
    """The study whose results changed last under ``state``."""
    done = sorted(Path(state).glob("studies/*/results.jsonl"), key=lambda p: p.stat().st_mtime)
    return done[-1].parent.name if done else None


def with_data_root(config: dict) -> dict:
    """A cell config with MNIST's default folder filled in (a copy; unchanged for other data)."""
    if config["data"]["kind"] != "mnist" or config["data"]["root"]:
        return config
    config = json.loads(json.dumps(config))
    config["data"]["root"] = str(MNIST_ROOT)
    return config


def read_plan(folder: Path) -> dict:
    """The plan a study saved in its folder: {config, overrides, cells} (FileNotFoundError without one)."""
    from .config import upgrade

    plan = json.loads((Path(folder) / PLAN).read_text())
    plan["config"] = upgrade(plan["config"])
    for cell in plan["cells"]:
        cell["config"] = upgrade(cell["config"])
    return plan
