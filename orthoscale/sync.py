"""`python -m orthoscale.sync <study> [tracking.uri=…] [study.state_dir=…]`: replay a study's durable
results into MLflow (each trial once) and log its report, e.g. after the tracking store was unreachable.

<study> is a study name under the state dir's studies/ folder, or the path of a study folder.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from .study.config import ConfigError
from .study.secrets import redact


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    from .study.cli import study_target
    from .study.config import set_path, validate
    from .study.driver import load_plan, run_study

    try:
        target, raw_sets, state = study_target(args)
    except ConfigError as err:
        print(f"orthoscale: invalid config: {err}", file=sys.stderr)
        return 2
    folder = Path(target) if Path(target).is_dir() else state / "studies" / target
    if not (folder / "config.json").exists():
        print(f"orthoscale: no study at {folder}", file=sys.stderr)
        return 2
    config, saved_overrides, cells = load_plan(folder)
    for key, value in raw_sets.items():
        config = set_path(config, key, value)
    try:
        cfg = validate(config)
    except ConfigError as err:
        print(f"orthoscale: invalid config: {redact(str(err))}", file=sys.stderr)
        return 2
    cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, name=folder.name,
                                                             state_dir=str(folder.parent.parent)))
    result = run_study(cfg, cells, saved_overrides, run_trials=False)
    print(f"synced {result.trials_logged} trial(s) into {result.tracking_uri}"
          + (f"; still not logged: {len(result.unlogged)}" if result.unlogged else ""))
    return 0 if not result.unlogged else 1


if __name__ == "__main__":
    sys.exit(main())
