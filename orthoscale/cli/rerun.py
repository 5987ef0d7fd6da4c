"""`orthoscale rerun [overrides…]`: one trial, exactly as configured, logged as its own MLflow run.

Every child run of a study carries the line that reproduces it (its cell's values, ``optim.protocol=fixed``
and its μ); the family's grid is ignored here, so the overrides alone define the trial.
"""
from __future__ import annotations

import shlex
import time

from ..study.config import ConfigError, validate

HELP = __doc__.strip()


def run(args: list[str]) -> int:
    from ..study.cells import Cell
    from ..study.compose import plan
    from ..study.driver import load_inputs
    from ..study.locations import artifact_location, experiment_name, tracking_uri, with_data_root
    from ..study.secrets import redact
    from ..study.tracking import Tracker
    from ..study.trial import run_trial

    (cfg, overrides, cells), = plan(args, grid=False)
    if cfg.optim.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("optim.device=cuda: this machine has no GPU; use optim.device=auto or cpu")
    cell = Cell(0, (), (), validate(redact(with_data_root(cells[0].config))))
    load_inputs([cell])
    result = run_trial(cell.cfg)
    experiment = experiment_name(cfg)
    tracker = Tracker(tracking_uri(cfg), experiment, artifact_location(cfg, experiment))
    now = time.time()
    rec = {"key": f"rerun-{time.strftime('%Y%m%d-%H%M%S')}", "cell": cells[0].id, "trial_number": 0,
           "lr": result.lr, "status": "FINISHED", "result": result.to_dict(), "cfg": cell.config,
           "started": now - result.seconds,
           "ended": now, "rerun": redact(shlex.join(["python", "-m", "orthoscale", "rerun", *args]))}
    run_id = tracker.log_trial(None, "rerun", rec)
    rate = f"{result.rate:.6f}" if result.rate is not None else "none"
    print(f"outcome {result.outcome} after {result.steps} steps ({result.reason}) · μ={result.lr:.6g} · "
          f"ρ={rate} · iterations to tol {result.iters_to_tol} · final relative excess "
          f"{result.final_rel_excess:.3e}\nMLflow run {run_id} in {experiment} ({redact(tracking_uri(cfg))})")
    return 0
