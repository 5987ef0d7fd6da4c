"""Products of a stack of square matrices W_0, …, W_{k−1} (shape (k, d, d)) in few batched calls.

Matrices of width ≥ ``WIDE``: one product after the other (k − 1 matmuls, no redundant work; each
product is large enough to keep the cores busy). Narrower stacks of up to ``SHORT``: Hillis–Steele doubling (after the round with offset o, entry j holds the
product of the min(j+1, 2o) matrices ending at j; ⌈log₂k⌉ calls). Long stacks are cut into chunks of ``CHUNK``
consecutive matrices: CHUNK − 1 batched products run the prefixes of all chunks at once, a doubling
scan takes the chunks' totals, and one batched product continues every chunk from those before it —
k + O(k/CHUNK · log k) matmuls in CHUNK + O(log k) calls, written in place into one buffer.
"""
from __future__ import annotations

import torch

CHUNK = 8    # chunk length of long stacks
SHORT = 64   # stacks up to this length are scanned by doubling alone (fewer calls, little redundancy)
WIDE = 64    # from this width on a d×d product costs more than a call: no scan, a sequential chain


def _doubling(W: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix products along dim −3 (the stack), batched over any leading dims."""
    out, offset, k = W, 1, W.shape[-3]
    while offset < k:
        out = torch.cat([out[..., :offset, :, :], out[..., offset:, :, :] @ out[..., :-offset, :, :]], dim=-3)
        offset *= 2
    return out


def _sequential(W: torch.Tensor, first: torch.Tensor | None, out: torch.Tensor | None) -> torch.Tensor:
    """Inclusive prefix products of W (k, d, d) by k − 1 products into one buffer, after ``first`` if given."""
    lead = int(first is not None)
    if out is None:
        out = torch.empty(lead + W.shape[0], *W.shape[1:], dtype=W.dtype, device=W.device)
    if lead:
        out[0] = first
    out[lead] = W[0]
    for j in range(1, W.shape[0]):
        torch.mm(W[j], out[lead + j - 1], out=out[lead + j])
    return out


def prefix_products(W: torch.Tensor, *, identity_first: bool = False,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """out[j] = W_j ··· W_1 W_0 for a stack W of shape (k, d, d); with ``identity_first`` the (k+1, d, d)
    stack [I, W_0, W_1 W_0, …] instead (the empty product first). Written into ``out`` when given."""
    if out is not None and W.shape[-1] < WIDE:
        return out.copy_(prefix_products(W, identity_first=identity_first))
    k, d = W.shape[0], W.shape[-1]
    lead, n = int(identity_first), -(-k // CHUNK)
    eye = torch.eye(d, dtype=W.dtype, device=W.device)
    if d >= WIDE:
        return _sequential(W, eye if lead else None, out)
    if k <= SHORT:
        out = _doubling(W)
        return torch.cat([eye[None], out]) if lead else out
    buf = torch.empty(lead + n * CHUNK, d, d, dtype=W.dtype, device=W.device)
    buf[:lead] = eye
    buf[lead:lead + k] = W
    buf[lead + k:] = eye                                            # padding to whole chunks
    chunks = buf[lead:].view(n, CHUNK, d, d)
    for j in range(1, CHUNK):                                       # prefixes inside every chunk
        chunks[:, j] = torch.bmm(chunks[:, j], chunks[:, j - 1])
    carry = _doubling(chunks[:, -1])                                # chunks 0…c as one product each
    out = torch.empty_like(buf)
    out[:lead + CHUNK] = buf[:lead + CHUNK]
    rows = (n - 1, CHUNK * d, d)  # chunk c continues from chunks < c: one (CHUNK·d × d)·(d × d) product each
    torch.bmm(buf[lead + CHUNK:].view(rows), carry[:-1], out=out[lead + CHUNK:].view(rows))
    return out[:lead + k]


def suffix_products(W: torch.Tensor) -> torch.Tensor:
    """out[j] = W_{k−1} ··· W_{j+1} W_j, via prefixes of the reversed, transposed stack."""
    return prefix_products(W.flip(0).mT).mT.flip(0)


def total_product(W: torch.Tensor) -> torch.Tensor:
    """W_{k−1} ··· W_0 by pairwise reduction (O(k) work, O(log k) calls); k ≥ 1."""
    while W.shape[0] > 1:
        odd = W[-1:] if W.shape[0] % 2 else None
        W = W[1::2] @ W[0:W.shape[0] - 1:2]
        if odd is not None:
            W = torch.cat([W, odd])  # the latest matrix stays last, so order is kept
    return W[0]
