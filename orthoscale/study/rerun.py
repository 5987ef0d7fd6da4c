"""`python -m orthoscale.train [overrides…]`: one trial, exactly as configured, logged as its own MLflow run.

Every child run of a study carries the line that reproduces it (its cell's values, ``optim.protocol=fixed``
and its μ); the family's grid is ignored here, so the overrides alone define the trial.
"""
from __future__ import annotations

import shlex
import sys
import time

from .config import ConfigError
from .secrets import redact


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from .compose import plan
    from .cells import Cell
    from .driver import artifact_location, load_inputs, data_root, experiment_name, state_dir, tracking_uri
    from .trial import run_trial

    try:
        (cfg, overrides, cells), = plan(args, grid=False)
    except ConfigError as err:
        print(f"orthoscale: invalid config: {redact(str(err))}", file=sys.stderr)
        return 2
    config = redact(data_root(cells[0].config, state_dir(cfg)))
    try:
        load_inputs([Cell(0, (), (), config)])
    except ConfigError as err:
        print(f"orthoscale: invalid config: {redact(str(err))}", file=sys.stderr)
        return 2
    result = run_trial(config)
    from .tracking import Tracker

    experiment = experiment_name(cfg)
    tracker = Tracker(tracking_uri(cfg), experiment, artifact_location(cfg, experiment))
    now = time.time()
    rec = {"key": f"rerun-{time.strftime('%Y%m%d-%H%M%S')}", "cell": cells[0].id, "trial_number": 0,
           "lr": result["lr"], "status": "FINISHED", "result": result, "cfg": config, "started": now - result["seconds"],
           "ended": now, "rerun": redact(shlex.join(["python", "-m", "orthoscale.train", *args]))}
    run_id = tracker.log_trial(None, "rerun", rec)
    rate = f"{result['rate']:.6f}" if result["rate"] is not None else "none"
    print(f"outcome {result['outcome']} after {result['steps']} steps ({result['reason']}) · μ={result['lr']:.6g} · "
          f"ρ={rate} · iterations to tol {result['iters_to_tol']} · final relative excess "
          f"{result['final_rel_excess']:.3e}\nMLflow run {run_id} in {experiment} ({redact(tracking_uri(cfg))})")
    return 0
