"""`python -m orthoscale.sweep [-m] [overrides…]`: run a scaling study (or, with -m, one per combination).

Every configuration is validated before anything starts; a bad value exits with code 2 and one line.
"""
from __future__ import annotations

import socket
import sys

from .study.config import ConfigError
from .study.secrets import redact


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    multirun = any(a in ("-m", "--multirun") for a in args)
    show = "--cfg" in args
    overrides = [a for a in args if a not in ("-m", "--multirun", "--cfg")]
    from .study.compose import plan

    try:
        studies = plan(overrides, multirun)
    except ConfigError as err:
        print(f"orthoscale: invalid config: {redact(str(err))}", file=sys.stderr)
        return 2
    if show:
        from .study.tracking import dumps

        for cfg, ov, cells in studies:
            print(dumps({"overrides": ov, "cells": [c.id for c in cells], "config": cells[0].config}))
        return 0
    from .study.driver import in_ray_job, run_study

    browse = []
    for cfg, ov, cells in studies:
        try:
            result = run_study(cfg, cells, ov)
        except ConfigError as err:
            print(f"orthoscale: invalid config: {redact(str(err))}", file=sys.stderr)
            return 2
        print(result.text)
        where = f" on host {socket.gethostname()}" if in_ray_job() else ""
        print(f"\nrecord: {result.tracking_uri} · experiment {cfg.tracking.experiment or 'orthoscale-' + cfg.family.name}"
              f" · parent run {result.parent_run_id}\nresults and report: {result.folder}{where}")
        browse.append("make ui   (http://127.0.0.1:5000)" if result.tracking_uri.startswith("sqlite:") and not where
                      else f"the MLflow UI of {result.tracking_uri}" if result.tracking_uri.startswith("http")
                      else f"mlflow ui --backend-store-uri {result.tracking_uri}")
        if result.unlogged:
            print(f"warning: {len(result.unlogged)} trial(s) not yet in MLflow (kept in {result.folder}); "
                  "rerun the same command to replay them")
    for line in dict.fromkeys(browse):
        print(f"browse it: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
