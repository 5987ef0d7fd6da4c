"""`orthoscale report <study|latest> [tracking.uri=…] [tracking.experiment=…] [study.state_dir=…] [--out DIR]`:
re-render a study's table, scaling fits and plots from its MLflow record alone (parent and child runs). The
experiment is read from the study's saved plan (its folder under the state dir), else from tracking.experiment."""
from __future__ import annotations

import sys
from pathlib import Path

from ..study.config import ConfigError

HELP = __doc__.strip()


def run(args: list[str]) -> int:
    from ..study import report
    from ..study.cells import Cell
    from ..study.locations import experiment_name, read_plan, study_folder
    from ..study.secrets import redact
    from ..study.tracking import Tracker
    from .target import study_target

    out = None
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            raise ConfigError("--out: needs a folder")
        out, args = Path(args[i + 1]), args[:i] + args[i + 2:]
    study, sets, state = study_target(args)
    uri = sets.get("tracking.uri") or f"sqlite:///{state / 'mlflow.db'}"
    experiment = sets.get("tracking.experiment")
    if experiment is None:
        try:
            experiment = experiment_name(_plan_config(read_plan(study_folder(state, study))))
        except FileNotFoundError:
            raise ConfigError(f"tracking.experiment: study {study!r} has no saved plan under {state}; name its "
                              "experiment (orthoscale-<family>)") from None
    try:
        plan, records = Tracker(uri, experiment).load_study(study)
    except LookupError as err:
        raise ConfigError(f"study={study}: {err} at {redact(uri)}") from None
    cells = [Cell.from_dict(c) for c in plan["cells"]]
    folder = out or study_folder(state, study) / "report-from-mlflow"
    result = report.write(folder, cells, records)
    print(result["text"])
    print(f"\nre-rendered from {redact(uri)} into {folder}", file=sys.stdout)
    return 0


def _plan_config(plan: dict):
    from ..study.config import validate

    return validate(plan["config"])
