"""The orthonormal deep linear network f(X) = W_N σ(··· σ(W_2 σ(W_1 X))), W_i ∈ R^{d_i × d_{i−1}}.

One layer may be free; the others are orthonormal: columns (W_iᵀW_i = I, needs d_i ≥ d_{i−1}) or
rows (W_iW_iᵀ = I, needs d_i ≤ d_{i−1}). Layers are stored *stacked*: layer 1 alone, then maximal
runs of consecutive layers with equal shape and kind as one tensor (k, d_i, d_{i−1}) each, so the
whole network is a handful of tensors whatever its depth.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import scan, stiefel

FREE_LAYERS = ("first", "last", "none")
ORIENTATIONS = ("columns", "rows")
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "relu": F.relu,
    "tanh": torch.tanh,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.1),
}


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
        check_choice("model.activation", self.activation, tuple(ACTIVATIONS))
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


def to_tall(W: torch.Tensor, arch: Architecture) -> torch.Tensor:
    """The Stiefel representative of an orthonormal layer stack: W itself, or Wᵀ for row orientation."""
    return W.mT if arch.orientation == "rows" else W


def layers(blocks: list[torch.Tensor]) -> list[torch.Tensor]:
    """The layers W_1 … W_N as a list of views into the stacked blocks."""
    return [W for B in blocks for W in B]


def check_blocks(blocks: list[torch.Tensor], arch: Architecture) -> None:
    """ValueError unless ``blocks`` are laid out as ``arch.blocks()`` (count, rows, cols) each."""
    got = [tuple(B.shape) for B in blocks]
    want = [(b.count, b.rows, b.cols) for b in arch.blocks()]
    if got != want:
        raise ValueError(f"blocks of shapes {got} are not laid out for widths {list(arch.widths)} with "
                         f"free_layer={arch.free_layer} (expected {want}); use network.stack(network.layers(blocks), arch)")


def stack(Ws: list[torch.Tensor], arch: Architecture) -> list[torch.Tensor]:
    """The inverse of :func:`layers`: group W_1 … W_N into ``arch``'s blocks."""
    return [torch.stack(Ws[b.start:b.start + b.count]) for b in arch.blocks()]


def hidden_products(blocks: list[torch.Tensor]):
    """Exclusive prefix/suffix products of the chain W_2 … W_N (blocks[1:]).

    Returns (T, S, top): for each block, T (k, d_{i−1}, d_1) holds W_{i−1}···W_2, S (k, d_N, d_i) holds
    W_N···W_{i+1}, and top = W_N···W_2 (d_N × d_1). O(log k) batched matmuls per block.
    """
    W1 = blocks[0]
    d1 = W1.shape[-2]
    eye = lambda d: torch.eye(d, dtype=W1.dtype, device=W1.device)  # noqa: E731
    inner = [scan.prefix_products(B) for B in blocks[1:]]  # W_j···W_0 inside each block
    T, carry = [], eye(d1)
    for B, pre in zip(blocks[1:], inner):
        pre = pre @ carry
        T.append(torch.cat([carry[None], pre[:-1]]) if B.shape[0] > 1 else carry[None])  # k > 1 ⇒ square
        carry = pre[-1]
    top = carry
    S, carry = [None] * (len(blocks) - 1), eye(top.shape[0])
    for b in range(len(blocks) - 1, 0, -1):
        suf = carry @ _suffixes(blocks[b], inner[b - 1])
        S[b - 1] = torch.cat([suf[1:], carry[None]]) if blocks[b].shape[0] > 1 else carry[None]
        carry = suf[0]
    return T, S, top


def _suffixes(B: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """W_{k−1}···W_j for every j. For orthogonal square matrices (to rounding) it is P_{k−1} P_{j−1}ᵀ from
    the block's prefixes P — one batched product instead of a second scan; otherwise a scan."""
    k, d = B.shape[0], B.shape[-1]
    if k > 2 and B.shape[-2] == d:
        tol = 16 * torch.finfo(B.dtype).eps * d
        if float((B.mT @ B - torch.eye(d, dtype=B.dtype, device=B.device)).abs().amax()) <= tol:
            return torch.cat([pre[-1:], pre[-1] @ pre[:-1].mT])
    return scan.suffix_products(B)


def end_to_end(blocks: list[torch.Tensor]) -> torch.Tensor:
    """P = W_N ··· W_1 (d_N × d_0)."""
    P = blocks[0][0]
    for B in blocks[1:]:
        P = scan.total_product(B) @ P
    return P


def forward(blocks: list[torch.Tensor], arch: Architecture, X: torch.Tensor) -> torch.Tensor:
    """f(X) for X of shape (d_0, m); the product form when there is no activation."""
    if arch.linear:
        return end_to_end(blocks) @ X
    act, H = ACTIVATIONS[arch.activation], X
    Ws = layers(blocks)
    for i, W in enumerate(Ws):
        H = W @ H
        H = act(H) if i < len(Ws) - 1 else H
    return H


def orthonormality_error(blocks: list[torch.Tensor], arch: Architecture) -> float:
    """max_i ‖W_iᵀW_i − I‖_F over the orthonormal layers (0 when there are none)."""
    errs = [stiefel.orthonormality_error(to_tall(B, arch)).max() for B, blk in zip(blocks, arch.blocks())
            if blk.constrained]
    return float(torch.stack(errs).max()) if errs else 0.0
