"""`orthoscale sweep [-m] [overrides…]`: run a scaling study (or, with -m, one study per combination)."""
from __future__ import annotations

import socket
import sys

from ..study.config import ConfigError

HYDRA_FLAGS = {"--info": "orthoscale sweep --help lists families, groups and keys; --cfg job prints the config",
               "--hydra-help": "orthoscale sweep --help", "--config-path": "configs live in conf/ (ORTHOSCALE_CONF)",
               "-cp": "configs live in conf/ (ORTHOSCALE_CONF)", "--config-name": "the root config is conf/config.yaml",
               "-cn": "the root config is conf/config.yaml", "--resolve": "--cfg job prints the resolved config"}


def help_text() -> str:
    from .describe import sweep_help

    return sweep_help()


def run(args: list[str]) -> int:
    multirun = any(a in ("-m", "--multirun") for a in args)
    show = "--cfg" in args or "-c" in args
    args = [a for a in args if a not in ("-m", "--multirun")]
    if show:  # Hydra's `--cfg job|hydra|all`: print the composed configuration of every cell
        i = args.index("--cfg") if "--cfg" in args else args.index("-c")
        args = args[:i] + args[i + 2 if i + 1 < len(args) and args[i + 1] in ("job", "hydra", "all") else i + 1:]
    for a in args:
        if a.startswith("-"):
            hint = HYDRA_FLAGS.get(a.split("=")[0], "orthoscale sweep --help")
            raise ConfigError(f"{a}: not an option of orthoscale sweep; see {hint}")
    from ..study.compose import plan

    studies = plan(args, multirun)
    if show:
        from ..study.tracking import dumps

        for _, ov, cells in studies:
            print(dumps({"overrides": ov, "cells": [c.id for c in cells], "config": cells[0].config}))
        return 0
    from ..study.driver import in_ray_job, run_study

    browse, status = [], 0
    for i, (cfg, ov, cells) in enumerate(studies):
        result = run_study(cfg, cells, ov, release_ray=i == len(studies) - 1)
        print(result.text)
        where = f" on host {socket.gethostname()}" if in_ray_job() else ""
        record = (f"{result.tracking_uri} · experiment {result.experiment} · parent run {result.parent_run_id}"
                  if cfg.tracking.enabled else "no MLflow run (tracking.enabled=false)")
        print(f"\nrecord: {record}\nresults and report: {result.folder}{where}")
        if cfg.tracking.enabled:
            browse.append("make ui   (http://127.0.0.1:5000)" if result.tracking_uri.startswith("sqlite:") and not where
                          else f"the MLflow UI of {result.tracking_uri}" if result.tracking_uri.startswith("http")
                          else f"mlflow ui --backend-store-uri {result.tracking_uri}")
        if result.unlogged:
            print(f"warning: {len(result.unlogged)} trial(s) not yet in MLflow (kept in {result.folder}); "
                  "rerun the same command to replay them")
        if result.failed_all:
            print(f"orthoscale: every trial of study {result.name} failed; first error: {result.failed_all}",
                  file=sys.stderr)
            status = 1
    for line in dict.fromkeys(browse):
        print(f"browse it: {line}")
    return status
