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

from . import carry, scan, stiefel
from .architecture import ACTIVATION_NAMES, Architecture
from .workspace import Workspace

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "relu": F.relu,
    "tanh": torch.tanh,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.1),
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


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
                         f"free_layer={arch.free_layer} (expected {want}); "
                         "use network.stack(network.layers(blocks), arch)")


def stack(Ws: list[torch.Tensor], arch: Architecture) -> list[torch.Tensor]:
    """The inverse of :func:`layers`: group W_1 … W_N into ``arch``'s blocks."""
    return [torch.stack(Ws[b.start:b.start + b.count]) for b in arch.blocks()]


@dataclass(frozen=True)
class Frame:
    """An orthogonal square block W_a … W_b as W_i = C_j C_{j−1}ᵀ (j = i − a + 1), C (k+1, d, d),
    C_j = W_{a+j−1}···W_a, C_0 = I; its gradient has the form G_i = C_j M C_{j−1}ᵀ with one M (d, d).
    ``prefixes``: C itself or the same prefixes in chunks (scan.Chunked), C then formed on first use.
    ``age``: None for prefixes from a scan; for a frame carried from the last step (carry.frame_of), the
    carried steps since its last Newton–Schulz step."""
    prefixes: torch.Tensor | scan.Chunked
    M: torch.Tensor | None = None
    age: int | None = None

    @property
    def chunks(self) -> scan.Chunked:
        P = self.prefixes
        return P if isinstance(P, scan.Chunked) else scan.Chunked.whole(P)

    @functools.cached_property
    def C(self) -> torch.Tensor:
        """(k+1, d, d): C_0 = I, C_1, …, C_k."""
        P = self.prefixes
        return P.full() if isinstance(P, scan.Chunked) else P

    def gradient(self) -> torch.Tensor:
        """(k, d, d): G_i = C_j M C_{j−1}ᵀ."""
        return self.chunks.sandwich(self.M)


@dataclass(frozen=True)
class Chain:
    """Products along W_2 … W_N (blocks[1:]) for the gradients; entry b is block b + 1 = W_a … W_b.

    below[b] = W_{a−1}···W_2 and above[b] = W_N···W_{b+1} (None for the identity), top = W_N···W_2.
    An orthogonal square block of k > 2 layers is held as its Frame (one prefix scan: W_i = C_j C_{j−1}ᵀ
    gives every suffix as C_k C_jᵀ); any other block as its prefixes ``inner`` and suffixes (two scans).
    """
    below: list[torch.Tensor | None]
    above: list[torch.Tensor | None]
    frames: list[Frame | None]
    inner: list[torch.Tensor | None]
    suffixes: list[torch.Tensor | None]
    top: torch.Tensor

    def T(self, b: int) -> torch.Tensor:
        """(k, d_{i−1}, d_1): W_{i−1}···W_2 for every layer i of block b."""
        lo, F = self.below[b], self.frames[b]
        T = F.C[:-1] if F is not None else _with_eye(self.inner[b][:-1], self.inner[b].shape[-1], first=True)
        return T if lo is None else T @ lo

    def S(self, b: int) -> torch.Tensor:
        """(k, d_N, d_i): W_N···W_{i+1} for every layer i of block b."""
        hi, F = self.above[b], self.frames[b]
        S = F.C[-1] @ F.C[1:].mT if F is not None else _with_eye(self.suffixes[b][1:], self.suffixes[b].shape[-2],
                                                                   first=False)
        return S if hi is None else hi @ S

    def gradient(self, b: int, K: torch.Tensor) -> tuple[torch.Tensor | None, Frame | None]:
        """G_i = S_iᵀ K T_iᵀ for the layers of block b, K (d_N, d_1), as (G, None); for a framed block
        (None, Frame) with M = C_kᵀ aboveᵀ K belowᵀ, so that G_i = C_j M C_{j−1}ᵀ (Frame.gradient)."""
        F = self.frames[b]
        if F is None:
            return (self._short_gradient(b, K) if self.inner[b].shape[0] <= 2
                    else self.S(b).mT @ K @ self.T(b).mT), None
        lo, hi = self.below[b], self.above[b]
        M = F.chunks.last().mT @ (K if hi is None else hi.mT @ K)
        M = M if lo is None else M @ lo.mT
        return None, Frame(F.prefixes, M, F.age)


    def _short_gradient(self, b: int, K: torch.Tensor) -> torch.Tensor:
        """G_i = S_iᵀ K T_iᵀ layer by layer for a block of k ≤ 2, without the factors that are the identity
        (T_i of its first layer with nothing below, S_i of its last with nothing above): at N = 2 the
        gradient of W_2 is K itself, not I·K·I (two d³ products in a step of a few)."""
        k = self.inner[b].shape[0]
        S = None if k == 1 and self.above[b] is None else self.S(b)  # formed only where a layer needs it
        T = None if k == 1 and self.below[b] is None else self.T(b)
        grads = []
        for i in range(k):
            G = K if i == k - 1 and self.above[b] is None else S[i].mT @ K
            grads.append(G if i == 0 and self.below[b] is None else G @ T[i].mT)
        return grads[0][None] if k == 1 else torch.stack(grads)


def _with_eye(rest: torch.Tensor, n: int, *, first: bool) -> torch.Tensor:
    """``rest`` (m, ·, ·) with I_n put first or last along the stack (I_n alone when m = 0)."""
    eye = stiefel.identity(n, rest.dtype, rest.device)[None]
    if not rest.shape[0]:
        return eye
    return torch.cat([eye, rest] if first else [rest, eye])


def hidden_products(blocks: list[torch.Tensor], ws: Workspace | None = None) -> Chain:
    """The :class:`Chain` of blocks[1:]: one prefix scan per block (two for a non-orthogonal one, none for one
    that carries its frame from the last step); the frames' C in ``ws`` (valid until its next use) if given."""
    chain = blocks[1:]
    frames = [_frame(B, b, ws) for b, B in enumerate(chain)]
    inner = [scan.prefix_products(B) if F is None else None for B, F in zip(chain, frames)]  # W_j···W_a
    totals = [P[-1] if F is None else F.chunks.last() for P, F in zip(inner, frames)]  # each block's product
    below, carry = [], None
    for tot in totals:
        below.append(carry)
        carry = tot if carry is None else tot @ carry
    top = carry if carry is not None else stiefel.identity(blocks[0].shape[-2], blocks[0].dtype, blocks[0].device)
    above, carry = [None] * len(chain), None
    for b in range(len(chain) - 1, -1, -1):
        above[b] = carry
        carry = totals[b] if carry is None else carry @ totals[b]
    suffixes = [scan.suffix_products(B) if F is None else None for B, F in zip(chain, frames)]
    return Chain(below, above, frames, inner, suffixes, top)


def _frame(B: torch.Tensor, b: int, ws: Workspace | None) -> Frame | None:
    """Block b's frame: the one it carries from the step that wrote it (carry.frame_of), else from a prefix
    scan if it is an orthogonal square stack, else None."""
    carried = carry.frame_of(B)
    if carried is not None:
        return Frame(carried[0], age=carried[1])
    return Frame(scan.frame_prefixes(B, ws=ws, name=("frame", b))) if _orthogonal_square(B, ws) else None


def frameable(k: int, d: int) -> bool:
    """Whether an orthogonal stack of k square d×d layers is held by its :class:`Frame`: k > 2, or any k from
    d = scan.WIDE on (there the frame of one or two layers costs no product the chain does not form anyway)."""
    return k > 2 or d >= scan.WIDE


def _orthogonal_square(B: torch.Tensor, ws: Workspace | None = None) -> bool:
    """A :func:`frameable` stack of square layers, each orthogonal to rounding: |‖Wv‖² − 1| = |vᵀ(WᵀW − I)v| ≤
    16·eps·d for PROBES fixed generic unit vectors v (directions that no such matrix singles out); one
    (kd × d)·(d × PROBES) product, O(k d²), instead of k Gram matrices. No probe for a stack that ``ws``
    vouches for as "orthogonal", untouched since: one that passed the probe before, or a framed polar update
    (optim.step)."""
    k, d = B.shape[0], B.shape[-1]
    if B.shape[-2] != d or not frameable(k, d):
        return False
    if ws is not None and ws.vouches("orthogonal", B):
        return True
    U = B @ _probes(d, B.dtype, B.device)  # folded into one (kd × d) product; no copy of a strided B (a QR's Q)
    lo, hi = torch.aminmax(U.square().sum(dim=1) - 1)
    ok = max(-float(lo), float(hi)) <= 16 * torch.finfo(B.dtype).eps * d
    if ok and ws is not None:
        ws.vouch("orthogonal", B)
    return ok


PROBES = 4


@functools.lru_cache(maxsize=64)
def _probes(d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Fixed unit vectors as the columns of a (d, PROBES) matrix, Gaussian directions (seed 0, drawn on the CPU)."""
    V = torch.randn(d, PROBES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (V / torch.linalg.vector_norm(V, dim=0)).to(dtype=dtype, device=device)


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
    return max((float(stiefel.orthonormality_error(to_tall(B, arch)).amax())
                for B, blk in zip(blocks, arch.blocks()) if blk.constrained), default=0.0)
