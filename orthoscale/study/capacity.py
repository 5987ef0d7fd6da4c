"""How many trials a study can run at once, and how many it did.

Slots are what the cluster's resources allow now: ⌊CPU / ray.cpus_per_trial⌋ (and ⌊GPU / ray.gpus_per_trial⌋
when trials ask for GPUs), capped by ray.max_concurrent. They follow the cluster as nodes join or leave.
Concurrency is measured from the study's own durable records: c(t) = #trials with started ≤ t < ended;
its mean over the trial phase is Σ durations / (last end − first start).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from .config import RayCfg

UNCAPPED = 100_000  # Tune's pending-trial limit when ray.max_concurrent = 0: the searcher gates instead


def resource_slots(resources: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials the resources fit at once: min over the resources a trial asks for of ⌊total / per trial⌋."""
    fits = [math.floor(resources.get("CPU", 0.0) / cpus_per_trial + 1e-9)]
    if gpus_per_trial > 0:
        fits.append(math.floor(resources.get("GPU", 0.0) / gpus_per_trial + 1e-9))
    return max(min(fits), 0)


class Capacity:
    """Live slots of the cluster (re-read at most every ``refresh`` seconds) and the number of live trials a
    searcher may keep: the slots, plus ready proposals waiting for a slot when resources (not
    ray.max_concurrent) bind. Waiting proposals let a finished trial's worker take the next one at once and
    tell an autoscaler there is more work; with one slot there are none, so a study at concurrency 1
    proposes each μ after the previous trial ended (deterministic)."""

    def __init__(self, spec: RayCfg, resources: Callable[[], dict], refresh: float):
        self.spec, self.resources, self.refresh = spec, resources, refresh
        self.read_at, self.current, self.most = -math.inf, 0, 0

    def slots(self) -> int:
        now = time.monotonic()
        if now - self.read_at >= self.refresh:
            self.read_at = now
            fit = resource_slots(self.resources(), self.spec.cpus_per_trial, self.spec.gpus_per_trial)
            self.current = min(fit, self.spec.max_concurrent) if self.spec.max_concurrent else fit
            self.most = max(self.most, self.current)
        return self.current

    def limit(self) -> int:
        slots, cap = self.slots(), self.spec.max_concurrent
        if cap and slots >= cap:
            return cap
        live = max(slots, 1) + (slots if slots > 1 else 0)
        return min(live, cap) if cap else live


@dataclass
class Concurrency:
    """Trials running at once over a study's trial phase, from (started, ended) of its records."""
    trials: int
    span: float                 # seconds from the first start to the last end
    busy: float                 # Σ trial durations
    peak: int
    hosts: dict[str, int] = field(default_factory=dict)  # host → trials it ran

    @property
    def mean(self) -> float:
        return self.busy / self.span if self.span > 0 else float(self.trials > 0)

    def line(self, slots: int, cluster_hosts: int | None = None, lost: list[str] = ()) -> str:
        share = f" ({self.mean / slots:.0%})" if slots else ""
        hosts = f"{len(self.hosts)}" + (f"/{cluster_hosts}" if cluster_hosts else "")
        text = (f"concurrency: mean {self.mean:.2f} of {slots} slot(s){share}, peak {self.peak} · "
                f"worker hosts used {hosts}: " + ", ".join(f"{h} ({n})" for h, n in sorted(self.hosts.items())))
        if lost:
            text += f" · lost during the study: {', '.join(lost)}"
        return text


def _spans(records: list[dict]) -> list[tuple[float, float]]:
    """(started, ended) of the records that have both, by start."""
    return sorted((r["started"], r["ended"]) for r in records
                  if r.get("started") is not None and r.get("ended") is not None)


def measure(records: list[dict]) -> Concurrency:
    """Concurrency of ``records`` (each with 'started', 'ended' and optionally 'host')."""
    spans = _spans(records)
    if not spans:
        return Concurrency(0, 0.0, 0.0, 0)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    hosts: dict[str, int] = {}
    for r in records:
        if r.get("host"):
            hosts[r["host"]] = hosts.get(r["host"], 0) + 1
    return Concurrency(len(spans), max(e for _, e in spans) - min(s for s, _ in spans),
                       sum(e - s for s, e in spans), peak, hosts)


def diagnose(conc: Concurrency, slots: int, records: list[dict]) -> str | None:
    """One line saying why the mean concurrency stayed below 0.8 of the slots, or None when it did not."""
    if not slots or conc.trials == 0 or conc.mean >= 0.8 * slots:
        return None
    spans = _spans(records)
    why = []
    if conc.trials < 2 * slots:
        why.append(f"only {conc.trials} trials for {slots} slots")
    median = sorted(e - s for s, e in spans)[len(spans) // 2]
    if median < 1.0:
        why.append(f"trials are short (median {median:.2f} s), so per-trial scheduling dominates")
    last_start, last_end = spans[-1][0], max(e for _, e in spans)
    if last_end - last_start > 0.2 * conc.span:
        why.append(f"the last {last_end - last_start:.0f} s ran no new trial (cells finished; last trials serialised)")
    reason = "; ".join(why) or "slots waited for proposals from the searcher or for the driver"
    return f"low concurrency: mean {conc.mean:.2f} of {slots} slots ({conc.mean / slots:.0%}) — {reason}"


def fanout_summary(records: list[dict], slots: int, cluster_hosts: int, lost: list[str]) -> dict:
    """What a study's fan-out achieved, for its summary, its report folder and its MLflow parent run."""
    conc = measure(records)
    return {"concurrency_mean": conc.mean, "concurrency_peak": conc.peak, "slots": slots,
            "trial_phase_seconds": conc.span, "trials": conc.trials, "hosts_used": len(conc.hosts),
            "hosts_in_cluster": cluster_hosts, "hosts": conc.hosts, "lost_hosts": lost,
            "line": conc.line(slots, cluster_hosts, lost), "warning": diagnose(conc, slots, records)}
