"""`python -m orthoscale.report <study|latest> [tracking.uri=…] [tracking.experiment=…] [study.state_dir=…] [--out DIR]`:
re-render a study's table, scaling fits and plots from its MLflow record alone (parent + child runs).
``latest`` is the most recently run study of the state dir."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    from .study import report
    from .study.cells import Cell
    from .study.cli import study_target
    from .study.config import ConfigError
    from .study.secrets import redact
    from .study.tracking import Tracker

    out = None
    if "--out" in args:
        i = args.index("--out")
        out, args = Path(args[i + 1]), args[:i] + args[i + 2:]
    try:
        study, sets, state = study_target(args)
    except ConfigError as err:
        print(f"orthoscale: invalid config: {err}", file=sys.stderr)
        return 2
    uri = sets.get("tracking.uri") or f"sqlite:///{state / 'mlflow.db'}"
    family = study.rsplit("-", 1)[0]
    tracker = Tracker(uri, sets.get("tracking.experiment") or f"orthoscale-{family}")
    try:
        plan, records = tracker.load_study(study)
    except LookupError as err:
        print(f"orthoscale: {err} at {redact(uri)}", file=sys.stderr)
        return 2
    cells = [Cell.from_dict(c) for c in plan["cells"]]
    folder = out or state / "studies" / study / "report-from-mlflow"
    result = report.write(folder, cells, records)
    print(result["text"])
    print(f"\nre-rendered from {redact(uri)} into {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
