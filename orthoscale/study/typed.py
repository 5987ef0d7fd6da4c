"""A tree of frozen dataclasses as a configuration schema: built from a plain dict, every leaf checked against its
annotation and its field's bounds (checks.bounded), its dotted keys listed, read and replaced.

Knows no schema of its own: study/config.py declares the study's.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing

from ..checks import violation


class ConfigError(ValueError):
    """A configuration value that is not allowed; str() is one line that names the key."""


def fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_value(key: str, value, tp, meta: dict):
    """Coerce/check one leaf value against its annotation and metadata."""
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}=null: a value is required")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={fmt(value)}: must be true or false")
    elif tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}={fmt(value)}: must be an integer")
        value = int(value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}={fmt(value)}: must be a finite number")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={fmt(value)}: must be a string")
    elif tp is dict and not isinstance(value, dict):
        raise ConfigError(f"{key}={fmt(value)}: must be a mapping")
    wrong = violation(meta, value)
    if wrong:
        raise ConfigError(f"{key}={fmt(value)}: {wrong}")
    return value


def variants(tp) -> tuple:
    """The dataclasses of a field typed as one dataclass or a union of them (chosen by their ``kind``)."""
    args = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    return tuple(a for a in args if dataclasses.is_dataclass(a))


def variant(options: tuple, raw, prefix: str):
    """The dataclass of ``options`` whose ``kind`` default is raw["kind"] (the first one without a kind)."""
    if len(options) == 1 or not isinstance(raw, dict):
        return options[0]
    kinds = {cls.__dataclass_fields__["kind"].default: cls for cls in options}
    kind = raw.get("kind", next(iter(kinds)))
    if kind not in kinds:
        raise ConfigError(f"{prefix}kind={fmt(kind)}: must be one of {', '.join(kinds)}")
    return kinds[kind]


def build(cls, raw: dict, prefix: str = ""):
    """An instance of the dataclass ``cls`` from the plain dict ``raw``, every leaf checked (keys named from
    ``prefix``); a field typed as a union of dataclasses takes the one its ``kind`` names."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}={fmt(raw)}: must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            group = f" of {prefix}kind={fmt(raw['kind'])} (the group {prefix.rstrip('.')}={raw['kind']})" \
                if "kind" in names else ""
            raise ConfigError(f"{prefix}{key}: unknown key{group}; allowed: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if variants(tp):
            kwargs[f.name] = build(variant(variants(tp), raw[f.name], key + "."), raw[f.name], key + ".")
        else:
            kwargs[f.name] = check_value(key, raw[f.name], tp, dict(f.metadata))
    return cls(**kwargs)


def leaf_keys(cls, prefix: str = "") -> dict[str, tuple]:
    """Every dotted leaf key → (type, default, metadata): the reference of README's key table. A key of
    several variants of a group (data=teacher | mnist) is listed once, as its first variant declares it."""
    out, hints = {}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if variants(tp):
            for variant in variants(tp):
                for key, spec in leaf_keys(variant, f"{prefix}{f.name}.").items():
                    out.setdefault(key, spec)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out[f"{prefix}{f.name}"] = (tp, default, dict(f.metadata))
    return out


def keys_under(cls, parent: str) -> str:
    """The keys of ``cls`` under the dotted ``parent`` for an error message; per variant for a group of variants."""
    hints = typing.get_type_hints(cls)
    options = variants(hints[parent]) if parent in hints else ()
    if len(options) > 1:
        return "; ".join(f"{parent}={v.__dataclass_fields__['kind'].default}: "
                         f"{', '.join(f.name for f in dataclasses.fields(v))}" for v in options)
    return ", ".join(sorted({k[len(parent) + 1:].split(".")[0] for k in leaf_keys(cls)
                             if k.startswith(parent + ".")}))


def get_path(raw: dict, key: str):
    """raw[a][b][c] for the dotted key a.b.c."""
    node = raw
    for part in key.split("."):
        node = node[part]
    return node


def set_path(raw: dict, key: str, value) -> dict:
    """A deep copy of ``raw`` with the dotted ``key`` set to ``value``."""
    out = copy.deepcopy(raw)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def replace_path(cfg, key: str, value, prefix: str = ""):
    """A copy of the frozen config ``cfg`` with the dotted ``key`` set to ``value`` (checked against its bounds)."""
    head, _, rest = key.partition(".")
    if not rest:
        field_ = next(f for f in dataclasses.fields(cfg) if f.name == head)
        checked = check_value(prefix + key, value, typing.get_type_hints(type(cfg))[head], dict(field_.metadata))
        return dataclasses.replace(cfg, **{head: checked})
    return dataclasses.replace(cfg, **{head: replace_path(getattr(cfg, head), rest, value, f"{prefix}{head}.")})
