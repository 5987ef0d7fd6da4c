"""Hydra: compose ``conf/`` with command-line overrides into validated configs (the one place Hydra is wired).

Overrides follow Hydra's grammar. Without ``-m``, a sweep value (``model.depth=2,4,8``, ``seed=range(3)``)
becomes an axis of the study's grid, and a plain value of a grid key pins that axis; with ``-m``,
sweeps expand into one study per combination (Hydra's multirun, e.g. ``-m family=depth,width``).
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .cells import Cell, expand, resolve
from .config import Config, ConfigError, validate
from .typed import get_path, keys_under, leaf_keys
from .locations import PROJECT

CONF = Path(os.environ.get("ORTHOSCALE_CONF", PROJECT / "conf"))


def _groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _explain(err: Exception, overrides: list[str]) -> ConfigError:
    """One line naming the key for Hydra's and OmegaConf's composition errors."""
    text = str(err)
    for ov in overrides:
        key, _, value = ov.lstrip("+~").partition("=")
        if key in _groups() and (isinstance(err, MissingConfigException) or f"'{key}/" in text):
            return ConfigError(f"{key}={value!r}: must be one of {', '.join(_options(key))}")
        if f"'{key}'" in text or f"full_key: {key}" in text:
            parent = key.rsplit(".", 1)[0]
            return ConfigError(f"{key}: unknown key; allowed under {parent}: {keys_under(Config, parent)}")
    return ConfigError(text.strip().splitlines()[0])


def _compose(overrides: list[str]) -> dict:
    try:
        if not GlobalHydra.instance().is_initialized():  # once per process: later compositions reuse it
            initialize_config_dir(config_dir=str(CONF), version_base="1.3")
        cfg = compose("config", overrides=overrides)
        return OmegaConf.to_container(cfg, resolve=False)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise _explain(err, overrides) from None


def plan(args: list[str], multirun: bool = False, grid: bool = True) -> list[tuple[Config, list[str], list[Cell]]]:
    """(config, overrides, validated cells) per study; every cell of every study is checked before any runs.

    Cells are resolved from the unresolved composition, so interpolations (``${model.width}``) follow
    each cell's grid values. The study-level sections (search, ray, tracking, study) are the same in
    every cell; the returned config is the first cell's. ``grid=False`` ignores the family's grid: the
    overrides alone define a single cell (reruns of one trial)."""
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    sweeps = [o for o in parsed if o.is_sweep_override()]
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    if multirun:
        combos = itertools.product(*[[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] for o in sweeps])
        runs = [(plain + list(c), {}) for c in combos]
    else:
        runs = [(plain, {o.key_or_group: list(o.sweep_iterator()) for o in sweeps})]
    out = []
    for overrides, axes in runs:
        raw = _compose(overrides)
        if not isinstance(raw.get("family"), dict) or not isinstance(raw["family"].get("grid"), dict):
            raise ConfigError(f"family.grid={raw.get('family', {}).get('grid')!r}: must be a mapping of "
                              "config keys to lists of values")
        if not grid:
            raw["family"]["grid"] = {}
        for ov in OverridesParser.create().parse_overrides(overrides):
            if ov.key_or_group in raw["family"]["grid"]:  # a plain value pins a grid axis
                axes.setdefault(ov.key_or_group, [get_path(resolve(raw), ov.key_or_group)])
        raw["family"]["grid"] = {**raw["family"]["grid"], **axes}
        for key in axes:
            if key not in leaf_keys(Config):
                raise ConfigError(f"{key}: unknown key; a grid axis must be a config key such as model.depth")
        cells = expand(raw)
        out.append((validate(cells[0].config), overrides, cells))
    return out
