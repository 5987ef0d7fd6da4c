"""Argument checks the core's dataclasses share: a field declares its bounds once, in its metadata, and the same
declaration serves the dataclass's own check and the study schema (orthoscale/study/config.py)."""
from __future__ import annotations

import dataclasses
import operator
from typing import Any

BOUNDS = {"ge": (operator.ge, "≥"), "gt": (operator.gt, ">"), "le": (operator.le, "≤"), "lt": (operator.lt, "<")}


def bounded(default, *, ge=None, gt=None, le=None, lt=None) -> Any:
    """A dataclass field with ``default`` whose value must satisfy the given bounds (value ≥ ge, > gt, …)."""
    bounds = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}
    return dataclasses.field(default=default, metadata=bounds)


def check_bounds(obj, prefix: str) -> None:
    """ValueError naming ``prefix.field`` for the first field of dataclass ``obj`` outside its bounds."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for name, (holds, word) in BOUNDS.items():
            if name in f.metadata and not holds(value, f.metadata[name]):
                raise ValueError(f"{prefix}.{f.name} must be {word} {f.metadata[name]:g}, got {value}")
