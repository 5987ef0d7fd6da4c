"""An ODLNN's shape, torch-free: widths d_0 … d_N, which layer is free, the orientation of the orthonormal
layers, the activation σ, and the stacked layout of its layers (blocks of equal shape and kind).

Torch-free so that a configuration can be checked (by the study's driver) without loading torch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

FREE_LAYERS = ("first", "last", "none")
ORIENTATIONS = ("columns", "rows")
ACTIVATION_NAMES = ("identity", "relu", "tanh", "leaky_relu")  # σ; network.ACTIVATIONS holds them


def check_choice(key: str, value: str, allowed) -> None:
    """Raise ValueError naming ``key`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Block:
    """Layers start … start+count−1 (0-based), all of one shape (rows, cols) and one kind."""
    start: int
    count: int
    rows: int
    cols: int
    constrained: bool


@dataclass(frozen=True)
class Architecture:
    """Widths d_0 … d_N and which layers are orthonormal (layer indices below are 1-based, as in the math)."""
    widths: tuple[int, ...]
    free_layer: str = "first"
    orientation: str = "columns"
    activation: str = "identity"

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        check_choice("model.free_layer", self.free_layer, FREE_LAYERS)
        check_choice("model.orientation", self.orientation, ORIENTATIONS)
        check_choice("model.activation", self.activation, ACTIVATION_NAMES)
        if len(self.widths) < 2:
            raise ValueError(f"model.widths needs d_0 and at least one layer, got {list(self.widths)}")
        if min(self.widths) < 1:
            raise ValueError(f"model.widths must be positive, got {list(self.widths)}")
        for i in range(1, self.depth + 1):
            if self.constrained(i):
                d_out, d_in = self.widths[i], self.widths[i - 1]
                if self.orientation == "columns" and d_out < d_in:
                    raise ValueError(
                        f"layer {i} ({d_out}×{d_in}) cannot have orthonormal columns: needs d_{i} ≥ d_{i-1}; "
                        "use model.orientation=rows or other widths")
                if self.orientation == "rows" and d_out > d_in:
                    raise ValueError(
                        f"layer {i} ({d_out}×{d_in}) cannot have orthonormal rows: needs d_{i} ≤ d_{i-1}; "
                        "use model.orientation=columns or other widths")

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def free_index(self) -> int | None:
        """1-based index of the free layer, or None."""
        return {"first": 1, "last": self.depth, "none": None}[self.free_layer]

    @property
    def linear(self) -> bool:
        return self.activation == "identity"

    def constrained(self, i: int) -> bool:
        return i != self.free_index

    def blocks(self) -> tuple[Block, ...]:
        """Layer 1 alone (it alone touches d_0), then maximal runs of equal (shape, kind); computed once."""
        return self._blocks

    @functools.cached_property
    def _blocks(self) -> tuple[Block, ...]:
        """Kept on the instance: the shared cache's key is a hash of all N + 1 widths (~10 µs at N = 1024)."""
        return _layout(self)


@functools.lru_cache(maxsize=256)
def _layout(arch: Architecture) -> tuple[Block, ...]:
    out: list[Block] = []
    for i in range(1, arch.depth + 1):
        rows, cols, con = arch.widths[i], arch.widths[i - 1], arch.constrained(i)
        last = out[-1] if out else None
        if i > 2 and last and (last.rows, last.cols, last.constrained) == (rows, cols, con):
            out[-1] = Block(last.start, last.count + 1, rows, cols, con)
        else:
            out.append(Block(i - 1, 1, rows, cols, con))
    return tuple(out)
