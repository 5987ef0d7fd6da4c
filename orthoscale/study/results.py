"""The typed result of one trial, the one schema that the trial writes and the recorder, the tracker, `sync` and the
report read. In a durable record (results.jsonl) it is ``record["result"]``: :meth:`TrialResult.to_dict`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

FINAL = "orthoscale_final"  # marks a trial's summary in what it reports; Tune's own "done" is also set on stops


def metric(default=None):
    """A field that is also a summary metric of the trial's MLflow child run."""
    return field(default=default, metadata={"metric": True})


@dataclass
class TrialResult:
    """What one trial measured (a pruned trial: outcome, steps, last relative excess and objective only)."""
    outcome: str = "pruned"                      # converged | diverged | stalled | budget | pruned
    reason: str = ""
    lr: float | None = metric()                  # μ of the trial
    steps: int | None = metric()
    iters_to_tol: int | None = metric()
    objective: float | None = metric()           # what the cell's search minimised
    observed_rate: float | None = None           # the loss rate the search learns from (contracted to its end)
    rate: float | None = metric()                # fitted linear rate of the relative excess loss
    rate_r2: float | None = metric()
    rate_window: list | None = None
    linear_start: int | None = metric()          # the step where the fitted linear phase begins (rate_window[0])
    rate_note: str | None = None
    rate_estimate: float | None = metric()       # ρ of the fit, or of a short run (rates.estimate_rate)
    rate_kind: str | None = None                 # fit | short | instant (rates.RateEstimate.kind)
    rate_ci: list | None = None                  # its 95 % interval [low, high]
    rate_points: int | None = None               # steps it rests on
    start_rel_excess: float | None = metric()    # relative excess at step 0
    at_solution: bool = False                    # the start was already within stop.tol
    tail_rate: float | None = metric()           # mean per-step contraction of the last quarter (rates.tail_rate)
    steps_needed: int | None = None              # a run out of budget: steps to tol at its tail rate
    final_rel_excess: float | None = metric()
    final_loss: float | None = metric()
    ortho_error: float | None = metric()
    e2e_error: float | None = metric()
    seconds: float | None = metric()
    seconds_per_step: float | None = metric()
    theory_rate: float | None = metric()         # exact local rate of the loss at this μ (theory.py)
    theory_mu_opt: float | None = metric()
    theory_rate_opt: float | None = metric()
    theory_mu_max: float | None = metric()
    value: float | None = metric()               # the searched key's value (search.key; μ for optim.lr)
    success: bool | None = None                  # converged to stop.tol (what objective=edge and bisect read)
    start_distance: float | None = metric()      # ‖W_0 − W_T‖/‖W_T‖ over all layers: start to the last iterate
    teacher_distance: float | None = metric()    # ‖W_0 − W*‖/‖W*‖: start to the planted solution (teacher)
    solution_rate: float | None = metric()       # exact local loss rate at μ at the solution reached (converged)
    solution_rate_opt: float | None = metric()   # and the best one over μ there
    device: str = ""
    node: str = ""                               # host name of the process that ran it
    node_id: str | None = None                   # Ray node id (set by the runner)
    pid: int | None = None
    python: str = ""
    curve_steps: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)  # rel_excess, loss, ortho_error[, e2e_error]

    @classmethod
    def metrics(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("metric"))

    @classmethod
    def from_dict(cls, data: dict) -> TrialResult:
        """From a record or a Tune result: known fields only (Tune's own keys are dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        """The fields as a dict; lists and the curves' dict are copied one level deep (dataclasses.asdict copies
        every value recursively: ~2 ms of the driver's CPU per trial with 200-point curves)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["curves"] = {k: list(v) for k, v in out["curves"].items()}
        for k, v in out.items():
            if isinstance(v, list):
                out[k] = list(v)
        return out

    @property
    def finished(self) -> bool:
        return self.outcome != "pruned"
