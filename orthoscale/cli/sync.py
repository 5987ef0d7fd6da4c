"""`orthoscale sync <study> [tracking.uri=…] [study.state_dir=…]`: replay a study's durable results into MLflow
(each trial once) and log its report, e.g. after the tracking store was unreachable. <study> is a study name
under the state dir's studies/ folder, or the path of a study folder."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..study.config import ConfigError

HELP = __doc__.strip()


def run(args: list[str]) -> int:
    from ..study.config import validate
    from ..study.typed import set_path
    from ..study.driver import load_plan, run_study
    from ..study.locations import PLAN, study_folder
    from .target import study_target

    target, sets, state = study_target(args)
    folder = Path(target) if Path(target).is_dir() else study_folder(state, target)
    if not (folder / PLAN).exists():
        raise ConfigError(f"study={target}: no study at {folder}")
    config, saved_overrides, cells = load_plan(folder)
    for key, value in sets.items():
        config = set_path(config, key, value)
    cfg = validate(config)
    cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, name=folder.name,
                                                             state_dir=str(folder.parent.parent)))
    result = run_study(cfg, cells, saved_overrides, run_trials=False)
    print(f"synced {result.trials_logged} trial(s) into {result.tracking_uri}"
          + (f"; still not logged: {len(result.unlogged)}" if result.unlogged else ""))
    return 0 if not result.unlogged else 1
