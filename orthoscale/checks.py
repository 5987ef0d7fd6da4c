"""Argument checks the core's dataclasses share: a field declares its allowed values once, in its metadata
(bounds ``ge``/``gt``/``le``/``lt`` and/or ``choices``), and the same declaration serves the dataclass's own
check, the core functions that take the value alone, and the study schema (orthoscale/study/config.py)."""
from __future__ import annotations

import dataclasses
import operator
from typing import Any

BOUNDS = {"ge": (operator.ge, "≥"), "gt": (operator.gt, ">"), "le": (operator.le, "≤"), "lt": (operator.lt, "<")}


def bounded(default, *, ge=None, gt=None, le=None, lt=None, choices=None) -> Any:
    """A dataclass field with ``default`` whose value must satisfy the given bounds (value ≥ ge, > gt, …) and
    be one of ``choices`` when given."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=meta)


def declared(owner, name: str, default=dataclasses.MISSING) -> Any:
    """A field that repeats the declaration of ``owner``'s field ``name`` (its default unless given, and its
    allowed values): the schema refers to the core's declaration instead of writing it again."""
    f = owner.__dataclass_fields__[name]
    return dataclasses.field(default=f.default if default is dataclasses.MISSING else default,
                             metadata=dict(f.metadata))


def violation(meta, value) -> str | None:
    """What is wrong with ``value`` under a field's metadata ("must be ≥ 1", "must be one of a, b"), or None."""
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}"
    for name, (holds, word) in BOUNDS.items():
        if name in meta and not holds(value, meta[name]):
            return f"must be {word} {meta[name]:g}"
    return None


def check_value(owner, name: str, value, key: str) -> None:
    """ValueError naming ``key`` when ``value`` breaks the declaration of ``owner``'s field ``name``."""
    wrong = violation(owner.__dataclass_fields__[name].metadata, value)
    if wrong:
        raise ValueError(f"{key}={value!r}: {wrong}")


def check_fields(obj, prefix: str) -> None:
    """ValueError naming ``prefix.field`` for the first field of dataclass ``obj`` outside its declaration."""
    for f in dataclasses.fields(obj):
        check_value(type(obj), f.name, getattr(obj, f.name), f"{prefix}.{f.name}")
