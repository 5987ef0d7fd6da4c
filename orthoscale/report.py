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
    from .study.compose import PROJECT
    from .study.secrets import redact
    from .study.tracking import Tracker

    study, rest = args[0], args[1:]
    out = Path(rest[rest.index("--out") + 1]) if "--out" in rest else None
    sets = dict(a.split("=", 1) for a in rest if "=" in a)
    state = Path(sets.get("study.state_dir") or PROJECT / ".orthoscale").resolve()
    if study == "latest":
        done = sorted((state / "studies").glob("*/results.jsonl"), key=lambda p: p.stat().st_mtime)
        if not done:
            print(f"orthoscale: no study in {state / 'studies'}", file=sys.stderr)
            return 2
        study = done[-1].parent.name
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
