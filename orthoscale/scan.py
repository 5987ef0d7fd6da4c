"""Products of a stack of square matrices W_0, …, W_{k−1} (shape (k, d, d)) in O(log k) batched calls.

Hillis–Steele doubling: after the round with offset o, entry j holds the product of the min(j+1, 2o)
matrices ending at j. Long stacks are scanned in two levels — inside chunks of ``CHUNK`` matrices, then
across the chunks' totals — which cuts the work from k·log₂k to about k·(log₂CHUNK + 2) matmuls
while keeping the number of batched calls logarithmic.
"""
from __future__ import annotations

import torch

CHUNK = 16


def _doubling(W: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix products along dim −3 (the stack), batched over any leading dims."""
    out, offset, k = W, 1, W.shape[-3]
    while offset < k:
        out = torch.cat([out[..., :offset, :, :], out[..., offset:, :, :] @ out[..., :-offset, :, :]], dim=-3)
        offset *= 2
    return out


def prefix_products(W: torch.Tensor) -> torch.Tensor:
    """out[j] = W_j ··· W_1 W_0 for a stack W of shape (k, d, d)."""
    k, d = W.shape[0], W.shape[-1]
    if k <= 2 * CHUNK:
        return _doubling(W)
    n = -(-k // CHUNK)
    pad = torch.eye(d, dtype=W.dtype, device=W.device).expand(n * CHUNK - k, d, d)
    inner = _doubling(torch.cat([W, pad]).view(n, CHUNK, d, d))   # prefixes inside each chunk
    carry = prefix_products(inner[:, -1])                          # products of whole chunks 0…j
    out = torch.cat([inner[:1], inner[1:] @ carry[:-1, None]])    # chunk j continues from chunks < j
    return out.reshape(n * CHUNK, d, d)[:k]


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
