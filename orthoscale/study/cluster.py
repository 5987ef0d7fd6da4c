"""The study's Ray: join ``ray.address`` or start an embedded one, in the background, and what the cluster offers.

Only Ray's core is used here, and it is imported on the thread that starts Ray (importing it takes about a
second): a study loads Tune, its searcher and its tracking store while Ray loads and starts."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from .cells import Cell
from .config import ConfigError, RayCfg


def connect(spec: RayCfg, verbose: int) -> str:
    """Join ``ray.address`` / $RAY_ADDRESS, or start an embedded Ray bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return "existing"
    address = spec.address or os.environ.get("RAY_ADDRESS")
    quiet = dict(log_to_driver=verbose > 0, logging_level=logging.WARNING if verbose < 2 else logging.INFO)
    if address:
        ray.init(address=address, **quiet)
        return address
    ray.init(address="local", num_cpus=spec.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return "local"


class _NoStartNotices(logging.Filter):
    """Drops two notices of ray.init about what RayStart does on purpose: it set no SIGTERM handler off the main
    thread (RayStart sets the same one), and a new local Ray turned token authentication on (its default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("SIGTERM handler is not set", "Token authentication is enabled"))


class RayStart:
    """:func:`connect` on a thread of its own while the caller goes on. The thread outlives the call: the
    processes of an embedded Ray are tied to the thread that started them (they end with it), so it waits
    for the process's end."""

    def __init__(self, spec: RayCfg, verbose: int):
        self.started, self.seconds, self.error, self.joined = time.perf_counter(), None, None, None
        self.done = threading.Event()
        if threading.current_thread() is threading.main_thread():  # what ray.init sets in a main thread
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        for name in ("ray._private.worker", "ray._private.authentication.authentication_token_setup"):
            logging.getLogger(name).addFilter(_NoStartNotices())
        threading.Thread(target=self._run, args=(spec, verbose), name="orthoscale-ray", daemon=True).start()

    def _run(self, spec: RayCfg, verbose: int) -> None:
        try:
            self.joined = connect(spec, verbose)  # "local", the address joined, or "existing"
        except BaseException as err:  # raised again in the caller, by wait()
            self.error = err
        finally:
            self.seconds = time.perf_counter() - self.started
            self.done.set()
        threading.Event().wait()

    def wait(self) -> float:
        """Block until Ray is up (or raise what starting it raised); the seconds its start took."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.seconds


_RELEASE: list[threading.Thread] = []


def release() -> None:
    """``ray.shutdown()`` on a thread of its own: an embedded Ray's processes stop (≈ 1.5 s) while the study
    writes its report; :func:`settle` waits for it. Ray's core worker ends the process (exit code 1) when the
    main thread reaches into it while it shuts down, as a finalizer of Tune's garbage did: that garbage is
    collected first, and the collector stays off until the command exits (it writes only its report)."""
    import gc

    import ray

    gc.collect()
    gc.disable()
    thread = threading.Thread(target=ray.shutdown, name="orthoscale-ray-shutdown", daemon=True)
    thread.start()
    _RELEASE.append(thread)


def settle() -> None:
    """Wait for a :func:`release` in progress."""
    while _RELEASE:
        _RELEASE.pop().join()


def check_resources(spec: RayCfg, cells: list[Cell]) -> None:
    """Requests the cluster cannot meet fail before any trial starts."""
    import ray

    total = ray.cluster_resources()
    if any(c.cfg.optim.device == "cuda" for c in cells) and total.get("GPU", 0) == 0:
        raise ConfigError("optim.device=cuda: the cluster has no GPU; use optim.device=auto or cpu")
    if spec.gpus_per_trial > 0 and total.get("GPU", 0) < spec.gpus_per_trial:
        raise ConfigError(f"ray.gpus_per_trial={spec.gpus_per_trial}: the cluster has {total.get('GPU', 0):g} GPU(s)")
    if total.get("CPU", 0) < spec.cpus_per_trial:
        raise ConfigError(f"ray.cpus_per_trial={spec.cpus_per_trial}: the cluster has {total.get('CPU', 0):g} CPU(s)")


def worker_hosts() -> dict[str, str]:
    """Alive nodes that can run a trial (some CPU or GPU): node id → its address."""
    import ray

    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()
            if n["Alive"] and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)}
