"""What a run is told, declared once and torch-free: the start, the teacher data, the optimiser, the loss and
the stop rules, each field with its default and allowed values (``checks.bounded``).

The core's modules take these objects; the study's schema repeats their declarations (``checks.declared``)
and checks a configuration with them, so a driver validates a study without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from .architecture import FREE_LAYERS, Architecture, check_choice
from .checks import bounded, check_fields

INITS = ("random", "teacher_perturbed", "spectral", "spectral_perturbed")
WHITENINGS = ("subspace", "epsilon")
TARGETS = ("onehot", "teacher")  # of MNIST: the one-hot labels, or a teacher network's outputs
METHODS = ("rgd", "gd")
RETRACTIONS = ("polar", "polar_svd", "qr", "cayley")
BALANCES = ("spectral", "frobenius", "none")
LOSS_NAMES = ("squared", "huber", "cross_entropy")  # losses.LOSSES holds them
PATHS = ("auto", "fast", "generic")
OUTCOMES = ("converged", "diverged", "stalled", "budget", "pruned")


@dataclass(frozen=True)
class InitSpec:
    """How a network starts: ``init`` ∈ INITS, the random free layer's ``init_scale`` and the relative
    distance δ = ``init_delta`` of a perturbed start (the declarations the study's model.* keys use)."""
    init: str = bounded("teacher_perturbed", choices=INITS)
    init_scale: float = bounded(1.0, gt=0)
    init_delta: float = bounded(0.2, ge=0)

    def __post_init__(self):
        check_fields(self, "model")


def check_start(init: str, arch: Architecture) -> None:
    """A spectral start places the least-squares map in the free layer: it needs one."""
    if init.startswith("spectral") and arch.free_index is None:
        raise ValueError("a spectral start needs a free layer (model.free_layer=first or last)")


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher–student problem: m = ``samples`` whitened inputs, a teacher whose free layer has condition
    number κ = ``condition`` and largest singular value ``scale``, label noise of std ``noise``, and the
    teacher's kind (``teacher_free_layer``); the declarations the study's data.* keys use."""
    samples: int = bounded(256, ge=1)
    condition: float = bounded(2.0, ge=1)
    scale: float = bounded(1.0, gt=0)
    noise: float = bounded(0.0, ge=0)
    teacher_free_layer: str = bounded("first", choices=FREE_LAYERS)

    def __post_init__(self):
        check_fields(self, "data")


def check_samples(m: int, d: int) -> None:
    """Exact whitening of m samples in R^d needs m ≥ d."""
    if m < d:
        raise ValueError(f"data.samples={m} must be ≥ d_0={d} for exact whitening")


@dataclass(frozen=True)
class Optimizer:
    """Step size μ = ``lr``, RGD or GD, the retraction and the balance s² of the orthonormal layers' step."""
    lr: float = bounded(0.1, gt=0)
    method: str = bounded("rgd", choices=METHODS)
    retraction: str = bounded("polar", choices=RETRACTIONS)
    balance: str = bounded("spectral", choices=BALANCES)

    def __post_init__(self):
        check_fields(self, "optim")


def resolve_path(arch: Architecture, loss: str, path: str) -> str:
    """'auto' picks the fast path (gradients through the second moments) wherever it applies: squared loss,
    no activation; else the generic path (autograd on the samples)."""
    check_choice("optim.loss", loss, LOSS_NAMES)
    check_choice("optim.path", path, PATHS)
    fast_ok = loss == "squared" and arch.linear
    if path == "fast" and not fast_ok:
        raise ValueError("optim.path=fast needs optim.loss=squared and model.activation=identity")
    return "fast" if path == "auto" and fast_ok else ("generic" if path == "auto" else path)


@dataclass(frozen=True)
class StopRules:
    """When a run ends (see train's module docstring); each field's bounds are declared here once (the study's
    schema, group ``stop``, is this class)."""
    tol: float = bounded(1e-10, gt=0, lt=1)
    max_iters: int = bounded(2000, ge=1)
    diverge_factor: float = bounded(1e6, gt=1)
    stall_window: int = bounded(200, ge=1)
    stall_improvement: float = bounded(1e-3, ge=0, lt=1)
    max_seconds: float = bounded(600.0, gt=0)
    extend_to: int = bounded(0, ge=0)  # read by the study's trial (its extension), not here: see study/trial.py
    measure_every: int = bounded(10, ge=1)  # steps between measurements of ‖WᵀW − I‖, ‖P − W*‖ (see train.py)

    def __post_init__(self):
        check_fields(self, "stop")
