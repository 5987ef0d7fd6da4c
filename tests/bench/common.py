"""Shared helpers of the benchmarks in tests/bench: timing, machine header, data, geoopt baseline, flops.

Every bench_*.py is a plain script (``.venv/bin/python tests/bench/bench_X.py [--quick]``); this module
is imported from the script's own directory, so it needs no package layout.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import statistics
import time
from typing import Callable

import torch

from orthoscale import losses, optim, scan, stiefel
from orthoscale.data import Problem, second_moments
from orthoscale.network import Architecture, hidden_products
from orthoscale.workspace import Workspace

DTYPES = {"f32": torch.float32, "f64": torch.float64}


# ----------------------------------------------------------------------------------------------- CLI / header
def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="reduced grid and repeats (smoke run, < 1 minute)")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="total seconds the script may wait for other processes to leave the CPU before "
                        "measurements (default 20 with --quick, 300 otherwise; 0 disables the wait)")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    Quiet.configure(args.wait if args.wait is not None else (20.0 if args.quick else 300.0))
    return args


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class CpuLoad:
    """CPU time used by *other* processes (and hypervisor steal) while this benchmark runs, in cores.

    The machine has few cores and other jobs may share it; a busy machine slows small-kernel code most
    (OpenMP threads wait for a descheduled peer), so every benchmark reports this next to its table.
    """

    def __init__(self):
        self.t, self.busy, self.own = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return float("nan")
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others(self) -> float:
        """Average number of cores busy with something else since construction."""
        dt = time.monotonic() - self.t
        return max(0.0, (self._busy() - self.busy) - (self._own() - self.own)) / dt if dt > 0 else 0.0


def idle_check(seconds: float = 1.0) -> str:
    """A line saying how busy the machine is right now (before the benchmark starts)."""
    probe = CpuLoad()
    time.sleep(seconds)
    load = probe.others()
    warn = "  ** WARNING: machine busy, timings are inflated **" if load > 0.2 else ""
    return f"other CPU load before start: {load:.2f} cores of {os.cpu_count()}{warn}"


def footer_load(load: CpuLoad) -> None:
    busy = load.others()
    print(f"other CPU load during the whole run: {busy:.2f} cores of {os.cpu_count()} (others' user+system+steal); "
          f"waited {Quiet.waited_s:.0f} s for quiet before measurements (guard: wait until others < "
          f"{Quiet.QUIET_CORES} cores, retry a measurement if they used ≥ {Quiet.DIRTY_CORES}).")
    if Quiet.flagged:
        print(f"** WARNING: {Quiet.flagged} measurement(s) stayed contaminated by other processes after "
              f"{Quiet.tries} tries (rows marked '*'); rerun on a quiet machine **")
    else:
        print("every measurement was taken while other processes used < "
              f"{Quiet.DIRTY_CORES} cores on average.")


def code_version() -> str:
    """The git commit the measured core comes from, with '+dirty' when orthoscale/ has local changes."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "orthoscale"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"git {rev or 'unknown'}{'+dirty orthoscale/' if dirty else ''}"


def header(title: str, quick: bool) -> None:
    """Machine line first: torch version and the (default, untouched) thread count."""
    try:
        import geoopt
        geo = geoopt.__version__
    except ImportError:  # pragma: no cover - the bench extra is missing
        geo = "not installed"
    print(f"== {title}{'  [--quick]' if quick else ''}")
    print(f"torch {torch.__version__} | torch.get_num_threads() = {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()}) | os.cpu_count() = {os.cpu_count()} | "
          f"geoopt {geo} | python {platform.python_version()}")
    print(f"CPU: {cpu_model()} | code: {code_version()}")
    allocator_warmup()
    print("allocator: glibc mmap threshold raised once by a 31 MiB alloc/free (see common.allocator_warmup)")
    print(idle_check())
    print(flush=True)


# ------------------------------------------------------------------------------------------------- timing
class Quiet:
    """Guard against other processes sharing this (small) machine.

    Before each measurement wait (from a per-script budget of seconds) until other processes use
    < QUIET_CORES cores; after it, if others used ≥ DIRTY_CORES cores on average meanwhile, measure again
    (up to ``tries`` times). A measurement still contaminated after that is kept and flagged: the
    tables mark its row with '*' and the footer counts them.
    """
    QUIET_CORES = 0.1
    DIRTY_CORES = 0.25
    budget_s = 0.0       # seconds this script may still spend waiting (set by configure)
    waited_s = 0.0
    tries = 5
    flagged = 0          # measurements that stayed contaminated

    @classmethod
    def configure(cls, wait_budget_s: float, tries: int = 5) -> None:
        cls.budget_s, cls.tries = wait_budget_s, tries

    @classmethod
    def wait(cls, window: float = 0.2) -> None:
        while cls.budget_s > 0:
            probe = CpuLoad()
            time.sleep(window)
            cls.budget_s -= window
            cls.waited_s += window
            if probe.others() < cls.QUIET_CORES:
                return


class Timing(tuple):
    """(seconds, reps, clean, faults): the median time, how many timed repeats, False if other processes
    competed, and the median of the minor page faults per call (memory the allocator had to get fresh from
    the kernel, in the steady state: the heap's growth in the first calls of a new size is not counted)."""

    def __new__(cls, seconds: float, reps: int, clean: bool, faults: float):
        return super().__new__(cls, (seconds, reps, clean, faults))

    seconds = property(lambda self: self[0])
    reps = property(lambda self: self[1])
    clean = property(lambda self: self[2])
    faults = property(lambda self: self[3])


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def allocator_warmup() -> None:
    """Put glibc's malloc in the state a long-running process is in, before anything is timed.

    glibc serves blocks above its mmap threshold (initially 128 KiB) with fresh mmap'd pages and returns
    them on free, so every large temporary is page-faulted in again (1 000 faults and 2× the time per step
    at N = 1024, d = 10); the threshold rises to the size of the first freed large block (≤ 32 MiB). Any
    real run crosses that early (data loading); a fresh benchmark process would otherwise measure a state
    that depends on which configs ran before. One 31 MiB block allocated and freed sets it once. Faults
    that remain (blocks > 32 MiB) are inherent and are reported per step ('pf/step').
    """
    block = torch.empty(31 * 2 ** 20 // 8, dtype=torch.float64)
    block.fill_(0.0)
    del block


def median_time(fn: Callable[[], object], *, setup: Callable[[], object] | None = None, warmup: int = 1,
                min_reps: int = 3, max_reps: int = 50, budget_s: float = 1.0) -> Timing:
    """Median seconds of fn() over repeated calls (see Timing), guarded by :class:`Quiet`.

    ``warmup`` untimed calls first; then timed calls until ``budget_s`` of timed work is spent, at least
    ``min_reps`` and at most ``max_reps``. ``setup`` (untimed) runs before every call, e.g. to reset state.
    """
    gc.collect()
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    for _ in range(Quiet.tries):
        Quiet.wait()
        probe = CpuLoad()
        times: list[float] = []
        counts: list[int] = []
        spent = 0.0
        while len(times) < min_reps or (spent < budget_s and len(times) < max_reps):
            if setup is not None:
                setup()
            faults0 = _minor_faults()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            counts.append(_minor_faults() - faults0)
            times.append(dt)
            spent += dt
        faults = statistics.median(counts)
        if probe.others() < Quiet.DIRTY_CORES:
            return Timing(statistics.median(times), len(times), True, faults)
    Quiet.flagged += 1
    return Timing(statistics.median(times), len(times), False, faults)


def matmul_peak(dtype: torch.dtype, n: int = 2048, quick: bool = False) -> float:
    """FLOP/s of an n×n @ n×n matmul in ``dtype`` (median): this machine's practical GEMM peak."""
    g = torch.Generator().manual_seed(1234)
    A = torch.randn(n, n, generator=g, dtype=dtype)
    B = torch.randn(n, n, generator=g, dtype=dtype)
    C = torch.empty(n, n, dtype=dtype)
    t = median_time(lambda: torch.mm(A, B, out=C), warmup=2, min_reps=3 if quick else 7, max_reps=30,
                       budget_s=0.5 if quick else 2.0).seconds
    return 2.0 * n ** 3 / t


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_ratio(r: float) -> str:
    return f"{r:.0f}x" if r >= 100 else (f"{r:.1f}x" if r >= 10 else f"{r:.2f}x")


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |a − b| over lists of layers or blocks (compared in float64)."""
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))


def check_tol(dtype: torch.dtype) -> float:
    """Tolerance of the 'same step' checks: 1e-8 in float64 (the brief), 1e-3 in float32 (rounding of 1e-7
    amplified by m-sample sums and by the Newton–Schulz stopping test, tol = 2√eps ≈ 7e-4)."""
    return 1e-8 if dtype == torch.float64 else 1e-3


def fmt_check(diff: float, dtype: torch.dtype) -> str:
    return f"{diff:.0e} {'ok' if diff <= check_tol(dtype) else 'FAIL'}"


# --------------------------------------------------------------------------------------------------- data
def whitened_inputs(d0: int, m: int, *, generator: torch.Generator) -> torch.Tensor:
    """Gaussian X (d0 × m, float64) whitened by the Cholesky factor of its Gram: (1/m) X Xᵀ = I to rounding.

    Same convention as data.whitened_gaussian (the project whitens MNIST so that Σ_xx = I), but a
    Cholesky solve instead of a 60 000 × 784 QR (≈ 6× faster to generate).
    """
    G = torch.randn(d0, m, generator=generator, dtype=torch.float64)
    L = torch.linalg.cholesky(G @ G.mT / m)
    return torch.linalg.solve_triangular(L, G, upper=False)


def regression_problem(X: torch.Tensor, d_out: int, *, noise: float, generator: torch.Generator,
                       dtype: torch.dtype) -> Problem:
    """Y = W* X + noise·Gaussian with a Gaussian W* (d_out × d0, scaled by 1/√d0), in ``dtype``."""
    d0, m = X.shape
    W_star = torch.randn(d_out, d0, generator=generator, dtype=torch.float64) / math.sqrt(d0)
    Y = W_star @ X + noise * torch.randn(d_out, m, generator=generator, dtype=torch.float64)
    Xd, Yd = X.to(dtype), Y.to(dtype)
    return Problem(Xd, Yd, second_moments(Xd, Yd), None, f"gaussian(d0={d0}, m={m})")


# ------------------------------------------------------------------------------------------------- geoopt
class GeooptRGD:
    """The same RGD written with geoopt: one parameter per layer, RiemannianSGD.

    Layer 1 is free (plain nn.Parameter, Euclidean step W − μG); layers 2…N are ManifoldParameters on
    geoopt.Stiefel(canonical=False) (Euclidean metric: projection Z − W sym(WᵀZ), QR retraction with
    diag(R) > 0). Column orientation only (tall layers d_i ≥ d_{i−1}). No s² balancing: geoopt has no
    such notion, so its step equals optim.step with balance='none', retraction='qr' (that is what the
    'same step' check compares against); for timing the difference is a d×d λ_max and a scalar.

    The end-to-end map is built in the cheapest order for d_0 ≥ d: P = (W_N ··· W_2) W_1, the square
    chain first (N−2 products d³), then one d·d·d_0 product; loss functions receive P.
    """

    def __init__(self, layers: list[torch.Tensor], lr: float):
        import geoopt
        man = geoopt.Stiefel(canonical=False)
        self.params = [torch.nn.Parameter(layers[0].detach().clone())]
        self.params += [geoopt.ManifoldParameter(W.detach().clone(), manifold=man) for W in layers[1:]]
        self.opt = geoopt.optim.RiemannianSGD(self.params, lr=lr)

    def product(self) -> torch.Tensor:
        Q = self.params[-1]
        for W in reversed(self.params[1:-1]):
            Q = Q @ W
        return Q @ self.params[0] if len(self.params) > 1 else self.params[0]

    def step(self, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.opt.zero_grad()
        loss = loss_fn(self.product())
        loss.backward()
        self.opt.step()

    def load(self, layers: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, W in zip(self.params, layers):
                p.copy_(W)

    def layers(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]


def samples_loss(problem: Problem) -> Callable[[torch.Tensor], torch.Tensor]:
    """L(P) = ½/m ‖P X − Y‖_F² on the m samples (the project's 'squared' loss)."""
    X, Y = problem.X, problem.Y
    return lambda P: 0.5 * ((P @ X - Y) ** 2).sum() / Y.shape[1]


def moments_loss(problem: Problem) -> Callable[[torch.Tensor], torch.Tensor]:
    """L(P) = L* + ½ tr((P − P*) Σ_xx (P − P*)ᵀ): the same loss through the second moments."""
    mom = problem.moments
    if mom.sxx is None:
        return lambda P: mom.loss_star + 0.5 * ((P - mom.p_star) ** 2).sum()
    return lambda P: mom.loss_star + 0.5 * ((P - mom.p_star) * ((P - mom.p_star) @ mom.sxx)).sum()


# -------------------------------------------------------------------------------------------------- flops
def ns_iterations(V: torch.Tensor, xi: torch.Tensor) -> float:
    """Newton–Schulz iterations that stiefel.retract(V, xi, 'polar') runs (mirrors its stopping rule;
    the batch runs until its slowest matrix converges); a third-order last step counts 1.5 (three
    products, not two), so that 2× this is the d×d products per matrix. Used only to count flops."""
    A = V + xi
    eps = torch.finfo(A.dtype).eps
    tol = 2 * math.sqrt(eps)
    X = A / stiefel.tangent_scale(xi)[..., None, None]
    for it in range(1, 41):
        E = stiefel.gram_error(X)
        err = E.abs().amax(dim=(-2, -1))
        if bool((err <= tol).all()):
            return it
        if bool((err <= eps ** (1 / 3)).all()):
            return it + 0.5
        X = X - 0.5 * (X @ E)
    return 40


def count_aten_ops(fn: Callable[[], object]) -> int:
    """Number of ATen operator calls (kernels launched, views included) that fn() dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            _Count.n += 1
            return func(*args, **(kwargs or {}))

    with _Count():
        fn()
    return _Count.n


def counted_matmul_flops(fn: Callable[[], object]) -> int:
    """Matmul flops torch actually executes in fn() (torch.utils.flop_counter: mm/bmm/addmm/… = 2mnk)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def fast_step(blocks: list[torch.Tensor], problem: Problem, arch: Architecture, opt: optim.Optimizer,
              ws: Workspace | None = None) -> list[torch.Tensor]:
    """One RGD step as train.train takes it on the fast path: gradients with their frames, then the update,
    reusing the buffers of ``ws`` (train.train keeps one per run)."""
    ev = losses.squared_fast(blocks, problem, ws)
    return optim.step(blocks, ev.block_grads, arch, opt, ev.frames, ws)


# ---------------------------------------------------------------------------------------------- breakdown
def breakdown(arch: Architecture, problem: Problem, blocks: list[torch.Tensor], lr: float, *, budget: float,
              min_reps: int, profile: bool = False) -> None:
    """Median time and ATen call count of each phase of the fast (stacked) step, each phase run alone.

    Layout assumed: blocks[0] the free first layer, blocks[1] the stack of orthonormal layers.
    """
    opt, ws = optim.Optimizer(lr), Workspace()
    ev = losses.squared_fast(blocks, problem)
    V, G, W1 = blocks[1], ev.grads[1], blocks[0][0]
    xi = -(lr / optim.balance(W1, "spectral")) * stiefel.project(V, G)
    phases = [
        ("network.hidden_products (prefixes, frames)", lambda: hidden_products(blocks)),
        ("  of which one scan.prefix_products", lambda: scan.prefix_products(V)),
        ("losses.squared_fast (whole gradient)", lambda: losses.squared_fast(blocks, problem)),
        ("optim.balance (spectral s², cold)", lambda: optim.balance(W1, "spectral")),
        ("optim.step in the frame (whole update)", lambda: optim.step(blocks, ev.block_grads, arch, opt, ev.frames)),
        ("  per layer instead: stiefel.project", lambda: stiefel.project(V, G)),
        (f"  per layer instead: retract polar ({ns_iterations(V, xi)} NS it)",
         lambda: stiefel.retract(V, xi, "polar")),
        ("full step (gradient + update)", lambda: fast_step(blocks, problem, arch, opt, ws)),
    ]
    results = [(name, median_time(fn, warmup=2, min_reps=min_reps, max_reps=500, budget_s=budget),
                count_aten_ops(fn)) for name, fn in phases]
    total = results[-1][1].seconds
    print(f"{'phase':>46}  {'ms':>8}  {'% step':>6}  {'ATen calls':>10}  {'pf/call':>7}")
    for name, t, n in results:
        print(f"{name:>46}  {fmt_ms(t.seconds) + ('' if t.clean else '*'):>8}  {100 * t.seconds / total:>5.0f}%  "
              f"{n:>10}  {t.faults:>7.0f}")
    if profile:
        profile_table(phases[-1][1], total, budget, "full steps")


def profile_table(fn, seconds: float, budget: float, what: str) -> None:
    """torch.profiler's table of ``fn`` (a call of ~``seconds``), repeated within ``budget`` seconds."""
    from torch.profiler import ProfilerActivity, profile as prof

    for _ in range(3):
        fn()
    reps = max(3, min(50, int(budget / max(seconds, 1e-6))))
    with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(reps):
            fn()
    print(f"\ntorch.profiler, {reps} {what} (self CPU time, by op and input shape):")
    print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20,
                                                           max_name_column_width=28, max_shapes_column_width=50))
