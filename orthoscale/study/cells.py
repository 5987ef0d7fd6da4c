"""The cells of a study: the Cartesian product of the family's grid, each a fully resolved, validated config."""
from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass

from omegaconf import OmegaConf

from .config import Config, ConfigError, to_dict, validate
from .typed import get_path, leaf_keys, set_path


@dataclass(frozen=True)
class Cell:
    index: int
    values: tuple[tuple[str, object], ...]   # (axis, value) per grid axis; a variant's value is its name
    settings: tuple[tuple[str, object], ...]  # (dotted key, value) that the cell sets
    cfg: Config                              # the resolved, validated config of this cell

    @functools.cached_property
    def config(self) -> dict:
        """``cfg`` as a plain, JSON-safe dict (durable records, MLflow params, reports)."""
        return to_dict(self.cfg)

    def label(self, leave_out: tuple[str, ...] = ()) -> str:
        """'depth=4,seed=1'-style name of the cell's grid values but those of the axes in ``leave_out``."""
        return ",".join(f"{k.split('.')[-1]}={v}" for k, v in self.values if k not in leave_out) or "all"

    @property
    def id(self) -> str:
        return self.label()

    @property
    def overrides(self) -> list[str]:
        """Hydra overrides that set this cell's values (for reruns)."""
        return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in self.settings]

    def get(self, key: str):
        return get_path(self.config, key)

    def to_dict(self) -> dict:
        return {"index": self.index, "values": self.values, "settings": self.settings, "config": self.config}

    @staticmethod
    def from_dict(d: dict) -> "Cell":
        return Cell(d["index"], tuple(map(tuple, d["values"])), tuple(map(tuple, d["settings"])),
                    validate(d["config"]))

    @property
    def series(self) -> str:
        """The cell's grid values other than depth and seed: cells of one series differ only in those."""
        return self.label(("model.depth", "seed"))


def resolve(raw: dict) -> dict:
    """Resolve ``${…}`` interpolations of a plain config dict."""
    return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)


def axis_settings(key: str, value) -> list[tuple[str, object]]:
    """A grid axis is a config key (value = its value) or a variant name (value = {name, key: value, …})."""
    if key in leaf_keys(Config):
        return [(key, value)]
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"family.grid.{key}: not a config key, so its values must be mappings "
                          "{name: …, <dotted key>: value, …}")
    bad = [k for k in value if k != "name" and k not in leaf_keys(Config)]
    if bad:
        raise ConfigError(f"family.grid.{key}.{bad[0]}: unknown key")
    return [(k, v) for k, v in value.items() if k != "name"]


def expand(raw: dict) -> list[Cell]:
    """One validated cell per point of ``family.grid`` of the unresolved config ``raw``."""
    grid = raw["family"]["grid"]
    for key, values in grid.items():
        if key.startswith(("family.", "study.", "ray.", "tracking.", "search.")):
            raise ConfigError(f"family.grid.{key}: not a key a cell can vary; allowed: model.*, data.*, optim.*, "
                              "stop.*, seed, or a named variant")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"family.grid.{key}={values!r}: must be a non-empty list")
    cells = []
    for i, combo in enumerate(itertools.product(*grid.values())):
        cell_raw, settings = raw, []
        for key, value in zip(grid, combo):
            for k, v in axis_settings(key, value):
                cell_raw = set_path(cell_raw, k, v)
                settings.append((k, v))
        cfg = validate(resolve(cell_raw))
        config = to_dict(cfg)
        values = tuple((k, v["name"] if isinstance(v, dict) else get_path(config, k)) for k, v in zip(grid, combo))
        cells.append(Cell(i, values, tuple((k, get_path(config, k)) for k, _ in settings), cfg))
    return cells
