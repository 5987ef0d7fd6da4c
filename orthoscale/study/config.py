"""The typed schema of a study's configuration, mirrored 1:1 by the groups in ``conf/``, and its validation.

Every key has one type, one default and its allowed values here; :func:`validate` turns a plain dict
(Hydra's composed config) into a :class:`Config` (by typed.build) or raises :class:`ConfigError` with one line
naming the key, the value and what is allowed, then checks the rules across keys. Nothing runs before it passes.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from .. import specs
from ..architecture import ACTIVATION_NAMES, FREE_LAYERS, ORIENTATIONS, Architecture
from ..checks import bounded, declared
from ..specs import InitSpec, Optimizer, StopRules, TeacherSpec
from .typed import ConfigError, build, variant, variants


def choice(default: str, allowed) -> Any:
    return bounded(default, choices=allowed)


number = bounded
TEACHER_ACTIVATIONS = ("identity", "model")  # model: the teacher has the student's model.activation
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class ModelCfg:
    """The network: depth N, hidden width, the free layer and the initialisation."""
    depth: int = number(8, ge=1, le=4096)
    width: int = number(16, ge=1, le=8192)
    free_layer: str = choice("first", FREE_LAYERS)
    orientation: str = choice("columns", ORIENTATIONS)
    activation: str = choice("identity", ACTIVATION_NAMES)
    init: str = declared(InitSpec, "init")
    init_scale: float = declared(InitSpec, "init_scale")
    init_delta: float = declared(InitSpec, "init_delta")


@dataclass(frozen=True)
class TeacherData:
    """Group ``data=teacher``: a whitened teacher–student problem, (1/m) X Xᵀ = I, Y = f_teacher(X) (+ noise)."""
    kind: str = choice("teacher", ("teacher",))
    input_dim: int = number(16, ge=1, le=100_000)
    output_dim: int = number(16, ge=1, le=100_000)
    samples: int = declared(TeacherSpec, "samples")
    condition: float = declared(TeacherSpec, "condition")
    scale: float = declared(TeacherSpec, "scale")
    noise: float = declared(TeacherSpec, "noise")
    teacher_free_layer: str = declared(TeacherSpec, "teacher_free_layer")
    teacher_activation: str = choice("identity", TEACHER_ACTIVATIONS)
    dtype: str = choice("float64", DTYPES)


@dataclass(frozen=True)
class MnistData:
    """Group ``data=mnist``: whitened MNIST images with one-hot labels or a teacher's outputs as targets."""
    kind: str = choice("mnist", ("mnist",))
    samples: int = number(0, ge=0)             # the first m images; 0 = all 60 000
    targets: str = choice("onehot", specs.TARGETS)
    whiten: str = choice("subspace", specs.WHITENINGS)
    whiten_eps: float = number(1e-6, gt=0, lt=1)
    root: str | None = None                    # MNIST folder; default: <project>/.orthoscale/data/mnist
    condition: float = declared(TeacherSpec, "condition")  # targets=teacher: κ of the teacher's free layer
    teacher_activation: str = choice("identity", TEACHER_ACTIVATIONS)
    dtype: str = choice("float64", DTYPES)


DataCfg = TeacherData | MnistData  # chosen by data.kind (the data group)


@dataclass(frozen=True)
class OptimCfg:
    """The optimiser and how its step size μ is chosen per cell."""
    method: str = declared(Optimizer, "method")
    retraction: str = declared(Optimizer, "retraction")
    balance: str = declared(Optimizer, "balance")
    loss: str = choice("squared", specs.LOSS_NAMES)
    path: str = choice("auto", specs.PATHS)
    lr: float = declared(Optimizer, "lr")
    # μ by Optuna | μ = lr | μ = lr / N | μ = lr · μ_opt, the exact local optimum at the teacher (theory.py)
    protocol: str = choice("tuned", ("tuned", "fixed", "inverse_depth", "theory"))
    device: str = choice("auto", ("auto", "cpu", "cuda"))


SEARCH_KEYS = ("optim.lr", "model.init_delta", "model.init_scale")


@dataclass(frozen=True)
class SearchCfg:
    """Per-cell Optuna search of one config key: μ (optim.lr, on [lr_min, lr_max]) or another (on [low, high])."""
    key: str = choice("optim.lr", SEARCH_KEYS)
    trials: int = number(12, ge=1, le=100_000)
    lr_min: float = number(1e-3, gt=0)
    lr_max: float = number(3.0, gt=0)
    low: float | None = number(None, ge=0)    # range of a searched key other than optim.lr (required for it)
    high: float | None = number(None, gt=0)
    scale: str = choice("log", ("log", "linear"))  # of a key other than optim.lr (μ is always searched on log)
    # minimised: observed loss rate | steps to tol | edge: −value (edge=rising: −1/value) when the run converges
    # to tol, else 0 (the largest value that still converges is the best; rising: the smallest)
    objective: str = choice("rate", ("rate", "steps", "edge"))
    edge: str = choice("falling", ("falling", "rising"))  # objective=edge: success falls or rises with the value
    sampler: str = choice("rate", ("rate", "bisect", "tpe", "gp", "random", "qmc"))
    bisect_confidence: float = number(0.8, gt=0.5, lt=1)  # bisect: how far one outcome is trusted (basin.py)
    startup_trials: int = number(4, ge=0)
    pruner: str = choice("none", ("none", "median"))
    report_every: int = number(50, ge=1)
    penalty: float = number(1.0, ge=0)      # objective of a trial short of tol: 1 + penalty · share left
    edge_rounds: int = number(2, ge=0)      # best μ on an edge of the range: widen it and re-search, ≤ this often
    edge_factor: float = number(4.0, gt=1)  # a widening moves the bound by this factor
    seed: int = number(0, ge=0)


@dataclass(frozen=True)
class RayCfg:
    """Where trials run (group ``cluster/``, package ``ray``)."""
    address: str | None = None               # None: $RAY_ADDRESS, else an embedded local Ray
    num_cpus: int | None = None              # embedded Ray only; None = all cores
    cpus_per_trial: float = number(1.0, gt=0)
    gpus_per_trial: float = number(0.0, ge=0)
    max_concurrent: int = number(0, ge=0)    # 0 = as many as the resources allow
    max_failures: int = number(2, ge=0)
    pack: int = number(0, ge=0)              # trials (μ values) per Tune trial; 0 = auto (study/pack.py)
    pack_gap: float = number(0.05, gt=0, lt=1)  # auto packs: worker gap / pack compute and driver busy ≤ this
    refresh: float = number(2.0, ge=0)       # seconds between reads of the cluster's resources (joined hosts)


@dataclass(frozen=True)
class TrackingCfg:
    """Where the MLflow record goes."""
    enabled: bool = True                     # false: no MLflow; the study folder still holds results and report
    uri: str | None = None                   # None: sqlite:///<state>/mlflow.db
    experiment: str | None = None            # None: orthoscale-<family>
    curve_points: int = number(64, ge=2, le=10_000)


@dataclass(frozen=True)
class FamilyCfg:
    """An experiment family: a name and the grid of cells (dotted config key → list of values)."""
    name: str = "custom"
    description: str = ""
    grid: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StudyCfg:
    name: str | None = None                  # None: <family>-<hash of the config>, so a rerun resumes
    resume: bool = True
    verbose: int = number(0, ge=0, le=3)     # 0: one compact progress line; ≥ 1: Ray's own tables
    progress_every: float = number(10.0, gt=0)
    state_dir: str | None = None             # None: <project>/.orthoscale
    theory_max_dim: int = number(100_000, ge=0)  # exact local rate per cell when d_N·d_0 ≤ this; 0 = off
    theory_at_solution: bool = False         # also the exact local rate at the solution each converged run reached


@dataclass(frozen=True)
class Config:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=TeacherData)
    optim: OptimCfg = field(default_factory=OptimCfg)
    stop: StopRules = field(default_factory=StopRules)  # the core's own dataclass: one declaration per key
    search: SearchCfg = field(default_factory=SearchCfg)
    ray: RayCfg = field(default_factory=RayCfg)
    tracking: TrackingCfg = field(default_factory=TrackingCfg)
    family: FamilyCfg = field(default_factory=FamilyCfg)
    study: StudyCfg = field(default_factory=StudyCfg)
    seed: int = number(0, ge=0)              # data and initialisation seed of a cell


MNIST_DIM = 784
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def step_size(cfg: Config, lr: float | None, mu_opt: float | None = None) -> float | None:
    """μ of a trial: the searched one (tuned), optim.lr (fixed), optim.lr / N (inverse_depth) or optim.lr · μ_opt
    (theory: the exact local optimum at the teacher, ``mu_opt``; None without it)."""
    o = cfg.optim
    if o.protocol == "tuned" and lr is not None:
        return float(lr)
    if o.protocol == "theory":
        return o.lr * mu_opt if mu_opt else None
    return o.lr / cfg.model.depth if o.protocol == "inverse_depth" else o.lr


def widths(cfg: Config, input_dim: int | None = None) -> tuple[int, ...]:
    """(d_0, width, …, width, d_N): d_0/d_N from ``data`` (MNIST: 784 before whitening, 10 classes)."""
    m, d = cfg.model, cfg.data
    d0 = input_dim or (MNIST_DIM if d.kind == "mnist" else d.input_dim)
    dn = 10 if d.kind == "mnist" else d.output_dim
    return (d0,) + (m.width,) * (m.depth - 1) + (dn,)


def check_rules(cfg: Config) -> None:
    """Rules across keys (shapes, ranges that depend on each other)."""
    s, d, m = cfg.search, cfg.data, cfg.model
    if s.lr_min >= s.lr_max:
        raise ConfigError(f"search.lr_min={s.lr_min}: must be < search.lr_max={s.lr_max}")
    check_search_key(cfg)
    try:
        arch = Architecture(widths(cfg), m.free_layer, m.orientation, m.activation)
        specs.resolve_path(arch, cfg.optim.loss, cfg.optim.path)
    except ValueError as err:  # the widths come from the model and the data: name both
        ends = ("data.kind='mnist'" if d.kind == "mnist"
                else f"data.input_dim={d.input_dim}, data.output_dim={d.output_dim}")
        raise ConfigError(f"model.depth={m.depth}, model.width={m.width}, {ends}: {err}") from None
    if d.kind == "teacher":
        try:
            specs.check_samples(d.samples, d.input_dim)
        except ValueError:
            raise ConfigError(f"data.samples={d.samples}: must be ≥ data.input_dim={d.input_dim} for exact "
                              "whitening") from None
        try:
            Architecture(widths(cfg), d.teacher_free_layer, m.orientation)
        except ValueError as err:
            raise ConfigError(f"data.teacher_free_layer={d.teacher_free_layer!r}: {err}") from None
    if m.init == "teacher_perturbed" and d.kind == "mnist" and d.targets != "teacher":
        raise ConfigError("model.init='teacher_perturbed': needs a teacher; use data.targets=teacher or "
                          "model.init=random or spectral")
    scheme = (cfg.tracking.uri or "sqlite:").split(":", 1)[0].split("+")[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(f"tracking.uri={cfg.tracking.uri!r}: MLflow cannot use {scheme!r}; use one of "
                          f"{', '.join(s + '://' for s in TRACKING_SCHEMES)}")
    try:
        specs.check_start(m.init, arch)
    except ValueError as err:
        raise ConfigError(f"model.init={m.init!r}: {err}") from None


def upgrade(raw: dict) -> dict:
    """A saved config as this schema reads it: plans saved before data=teacher | mnist became two groups
    carry both groups' data keys; the keys the chosen group does not declare are dropped."""
    if not isinstance(raw.get("data"), dict):
        return raw
    cls = variant(variants(typing.get_type_hints(Config)["data"]), raw["data"], "data.")
    names = {f.name for f in dataclasses.fields(cls)}
    return {**raw, "data": {k: v for k, v in raw["data"].items() if k in names}}


INIT_OF_KEY = {"model.init_delta": ("teacher_perturbed", "spectral_perturbed"), "model.init_scale": ("random",)}


def check_search_key(cfg: Config) -> None:
    """The searched key, its range and scale, and the sampler, objective and μ protocol that go with it."""
    s, o, m, d = cfg.search, cfg.optim, cfg.model, cfg.data
    if s.key == "optim.lr":
        if s.low is not None or s.high is not None:
            raise ConfigError(f"search.low/high={s.low}/{s.high}: the range of search.key=optim.lr is "
                              "search.lr_min … lr_max; leave low and high null")
    else:
        if s.low is None or s.high is None:
            raise ConfigError(f"search.key={s.key!r}: needs its range search.low and search.high")
        if s.low >= s.high:
            raise ConfigError(f"search.low={s.low}: must be < search.high={s.high}")
        if s.scale == "log" and s.low <= 0:
            raise ConfigError(f"search.low={s.low}: must be > 0 on search.scale=log")
        if o.protocol == "tuned":
            raise ConfigError(f"optim.protocol='tuned': μ is searched only when search.key=optim.lr, not "
                              f"{s.key!r}; use fixed, inverse_depth or theory")
        if s.sampler == "rate":
            raise ConfigError(f"search.sampler='rate': it models the step size, not {s.key}; use bisect, tpe, gp, "
                              "random or qmc")
        if m.init not in INIT_OF_KEY[s.key]:
            raise ConfigError(f"search.key={s.key!r}: has no effect with model.init={m.init!r}; use "
                              f"{' or '.join(INIT_OF_KEY[s.key])}")
    if s.objective == "edge" and s.edge == "rising" and s.low is not None and s.low <= 0:
        raise ConfigError(f"search.low={s.low}: must be > 0 with search.edge=rising (a converged run scores −1/value)")
    if s.sampler == "bisect" and s.objective != "edge":
        raise ConfigError(f"search.sampler='bisect': brackets the edge of success; needs search.objective=edge, "
                          f"not {s.objective!r}")
    if o.protocol == "theory":
        teacher = d.noise == 0 if d.kind == "teacher" else d.targets == "teacher"
        if not (teacher and m.activation == "identity" and o.loss == "squared"
                and cfg.study.theory_max_dim > 0):
            raise ConfigError("optim.protocol='theory': μ = optim.lr · μ_opt needs the exact local rate: a linear "
                              "network (model.activation=identity), optim.loss=squared, a noiseless teacher and "
                              "study.theory_max_dim > 0")


def validate(raw: dict) -> Config:
    """Plain dict → Config, or ConfigError naming the first bad key."""
    cfg = build(Config, raw, "")
    check_rules(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
