"""Arguments of the commands that act on an existing study (`orthoscale.sync`, `orthoscale.report`)."""
from __future__ import annotations

from pathlib import Path

from .compose import PROJECT
from .config import ConfigError

SETTABLE = ("tracking.uri", "tracking.experiment", "study.state_dir")


def study_target(args: list[str]) -> tuple[str, dict[str, str], Path]:
    """(study name, key=value settings, state dir) from `<study|latest> [key=value…]`; ``latest`` is the
    study whose results changed last. ConfigError for a setting other than SETTABLE or no study."""
    sets = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    bad = [k for k in sets if k not in SETTABLE]
    if bad:
        raise ConfigError(f"{bad[0]}: only {', '.join(SETTABLE)} can be set here")
    state = Path(sets.get("study.state_dir") or PROJECT / ".orthoscale").resolve()
    study = args[0]
    if study == "latest":
        done = sorted((state / "studies").glob("*/results.jsonl"), key=lambda p: p.stat().st_mtime)
        if not done:
            raise ConfigError(f"study=latest: no study in {state / 'studies'}")
        study = done[-1].parent.name
    return study, sets, state
