"""The argument the commands that act on an existing study share: `<study|latest> [key=value…]`."""
from __future__ import annotations

from pathlib import Path

from ..study.config import ConfigError
from ..study.locations import DEFAULT_STATE, latest_study

SETTABLE = ("tracking.uri", "tracking.experiment", "study.state_dir")


def study_target(args: list[str]) -> tuple[str, dict[str, str], Path]:
    """(study name, key=value settings, state dir); ``latest`` is the study whose results changed last.
    ConfigError for a setting other than SETTABLE, or no study."""
    if not args or args[0].startswith("-") or "=" in args[0]:
        raise ConfigError("study: name the study (a folder under <state dir>/studies, or latest) first")
    sets = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    bad = [k for k in sets if k not in SETTABLE] + [a for a in args[1:] if "=" not in a]
    if bad:
        raise ConfigError(f"{bad[0]}: only {', '.join(SETTABLE)} can be set here")
    state = Path(sets.get("study.state_dir") or DEFAULT_STATE).resolve()
    study = args[0]
    if study == "latest":
        study = latest_study(state)
        if study is None:
            raise ConfigError(f"study=latest: no study in {state / 'studies'}")
    return study, sets, state
