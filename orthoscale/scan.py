"""Products of a stack of square matrices W_0, …, W_{k−1} (shape (k, d, d)) in O(log k) batched calls.

Hillis–Steele doubling: after the round with offset o, entry j holds the product of the
min(j+1, 2o) matrices ending at j; ⌈log₂ k⌉ rounds give every prefix (or suffix) at once.
"""
from __future__ import annotations

import torch


def prefix_products(W: torch.Tensor) -> torch.Tensor:
    """out[j] = W_j ··· W_1 W_0 for a stack W of shape (k, d, d)."""
    out, offset = W, 1
    while offset < W.shape[0]:
        out = torch.cat([out[:offset], out[offset:] @ out[:-offset]])
        offset *= 2
    return out


def suffix_products(W: torch.Tensor) -> torch.Tensor:
    """out[j] = W_{k−1} ··· W_{j+1} W_j for a stack W of shape (k, d, d)."""
    out, offset = W, 1
    while offset < W.shape[0]:
        out = torch.cat([out[offset:] @ out[:-offset], out[-offset:]])
        offset *= 2
    return out


def total_product(W: torch.Tensor) -> torch.Tensor:
    """W_{k−1} ··· W_0 by pairwise reduction (O(k) work, O(log k) calls); k ≥ 1."""
    while W.shape[0] > 1:
        odd = W[-1:] if W.shape[0] % 2 else None
        W = W[1::2] @ W[0:W.shape[0] - 1:2]
        if odd is not None:
            W = torch.cat([W, odd])  # the latest matrix stays last, so order is kept
    return W[0]
