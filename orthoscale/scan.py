"""Products of a stack of square matrices W_0, …, W_{k−1} (shape (k, d, d)) in few batched calls.

Matrices of width ≥ ``WIDE``: one product after the other (k − 1 matmuls, no redundant work; each
product is large enough to keep the cores busy). Narrower stacks of up to ``SHORT``: Hillis–Steele doubling
(after the round with offset o, entry j holds the product of the min(j+1, 2o) matrices ending at j;
⌈log₂k⌉ calls). Longer narrow stacks are cut into n chunks of ``CHUNK`` consecutive matrices (identities
in front fill the first): CHUNK − 1 batched products run the prefixes of all chunks at once, the prefixes
of the n chunk totals come from the same scan, and one batched (CHUNK·d × d)·(d × d) product continues
every chunk from those before it — 2k + O(k/CHUNK) matmuls in CHUNK + O(log k) calls, in two buffers
and no other copy than the stack's into the first.
"""
from __future__ import annotations

import torch

from .workspace import Workspace, get

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


def _sequential(W: torch.Tensor, lead: int, out: torch.Tensor | None) -> torch.Tensor:
    """Inclusive prefix products of W (k, d, d) by k − 1 products into one buffer, after I if ``lead``."""
    if out is None:
        out = torch.empty(lead + W.shape[0], *W.shape[1:], dtype=W.dtype, device=W.device)
    if lead:
        out[0] = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    out[lead] = W[0]
    for j in range(1, W.shape[0]):
        torch.mm(W[j], out[lead + j - 1], out=out[lead + j])
    return out


def _chunked(W: torch.Tensor, lead: int, buffers: tuple[torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
    """Inclusive prefix products of W (k, d, d), after I if ``lead``, chunk by chunk (module docstring).

    The stack sits at the end of n·CHUNK slots after p = n·CHUNK − k ≥ lead identities, so every chunk is
    whole and the prefix at slot p − 1 is the empty product I. ``buffers`` (two of n·CHUNK matrices, or
    None): the padded stack, whose chunks then receive their own prefixes, and the prefixes of one chunk
    position at a time for all chunks, then the result. Every product writes a contiguous stack (a
    strided ``out`` would make torch.bmm loop over the batch one matrix at a time).
    """
    k, d = W.shape[0], W.shape[-1]
    n = -(-(k + lead) // CHUNK)
    p = n * CHUNK - k
    size = (n * CHUNK, d, d)
    stack, work = (B if B is not None else torch.empty(size, dtype=W.dtype, device=W.device) for B in buffers)
    stack[:p] = torch.eye(d, dtype=W.dtype, device=W.device)
    stack[p:] = W
    S, L = stack.view(n, CHUNK, d, d), work.view(CHUNK, n, d, d)  # L[j]: position j of every chunk
    torch.bmm(S[:, 1], S[:, 0], out=L[1])
    for j in range(2, CHUNK):                          # prefixes inside every chunk
        torch.bmm(S[:, j], L[j - 1], out=L[j])
    before = prefix_products(L[-1, :n - 1], identity_first=True)  # before[c]: chunks 0 … c−1 as one product
    S[:, 1:] = L[1:].transpose(0, 1)                   # each chunk's own prefixes, in stack order
    rows = (n, CHUNK * d, d)                           # chunk c times before[c]
    torch.bmm(stack.view(rows), before, out=work.view(rows))
    return work[p - lead:]


def prefix_products(W: torch.Tensor, *, identity_first: bool = False, ws: Workspace | None = None,
                    name: object = "prefix") -> torch.Tensor:
    """out[j] = W_j ··· W_1 W_0 for a stack W of shape (k, d, d); with ``identity_first`` the (k+1, d, d)
    stack [I, W_0, W_1 W_0, …] instead (the empty product first). With ``ws`` the result may be a view
    of its buffers under ``name`` (valid until their next use)."""
    k, d = W.shape[0], W.shape[-1]
    lead = int(identity_first)
    if d >= WIDE:
        return _sequential(W, lead, get(ws, name, (lead + k, d, d), W))
    if k + lead > SHORT:
        size = (-(-(k + lead) // CHUNK) * CHUNK, d, d)
        return _chunked(W, lead, (get(ws, (name, 0), size, W), get(ws, (name, 1), size, W)))
    out = _doubling(W)
    return torch.cat([torch.eye(d, dtype=W.dtype, device=W.device)[None], out]) if lead else out


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
