"""Prefix, suffix and total products of a stack of matrices against naive loops."""
from __future__ import annotations

import pytest
import torch

from orthoscale import scan, stiefel
from orthoscale.workspace import Workspace

KS = [1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 64, 100, 255, 256, 257, 1024, 1025]
D = 3


def near_orthogonal(k, generator, d=D):
    """Haar orthogonal matrices plus a 1e-3 Gaussian perturbation: products stay O(1) for k ≤ 1025."""
    Q = stiefel.random_point(d, d, k, generator=generator)
    return Q + 1e-3 * torch.randn(k, d, d, generator=generator, dtype=torch.float64)


def naive_prefix(W):
    out, acc = [], torch.eye(W.shape[-1], dtype=W.dtype)
    for j in range(W.shape[0]):
        acc = W[j] @ acc
        out.append(acc)
    return torch.stack(out)


def naive_suffix(W):
    out, acc = [], torch.eye(W.shape[-1], dtype=W.dtype)
    for j in reversed(range(W.shape[0])):
        acc = acc @ W[j]
        out.append(acc)
    return torch.stack(out[::-1])


@pytest.mark.parametrize("k", KS)
def test_products_match_naive_loops(k, gen):
    W = near_orthogonal(k, gen(k))
    pre, suf, tot = scan.prefix_products(W), scan.suffix_products(W), scan.total_product(W)
    ref_pre, ref_suf = naive_prefix(W), naive_suffix(W)
    assert pre.shape == (k, D, D) and suf.shape == (k, D, D) and tot.shape == (D, D)
    assert float((pre - ref_pre).abs().max()) <= 1e-12
    assert float((suf - ref_suf).abs().max()) <= 1e-12
    assert float((tot - ref_pre[-1]).abs().max()) <= 1e-12
    assert float((tot - ref_suf[0]).abs().max()) <= 1e-12


def signed_permutations(k, generator, d=4):
    """Exactly representable orthogonal matrices: products are exact, so order errors cannot hide."""
    perms = torch.stack([torch.randperm(d, generator=generator) for _ in range(k)])
    signs = torch.randint(0, 2, (k, d), generator=generator).to(torch.float64) * 2 - 1
    P = torch.zeros(k, d, d, dtype=torch.float64)
    P.scatter_(2, perms[:, :, None], 1.0)
    return P * signs[:, :, None]


@pytest.mark.parametrize("k", [1, 2, 3, 6, 13, 32, 47, 129])
def test_products_are_exact_on_signed_permutations(k, gen):
    W = signed_permutations(k, gen(100 + k))
    assert torch.equal(scan.prefix_products(W), naive_prefix(W))
    assert torch.equal(scan.suffix_products(W), naive_suffix(W))
    assert torch.equal(scan.total_product(W), naive_prefix(W)[-1])


def test_order_matters(gen):
    """The product is W_{k−1}···W_0, not its reverse (non-commuting factors)."""
    W = torch.randn(5, D, D, generator=gen(1), dtype=torch.float64)
    reverse = W[0] @ W[1] @ W[2] @ W[3] @ W[4]
    forward = W[4] @ W[3] @ W[2] @ W[1] @ W[0]
    assert float((forward - reverse).abs().max()) > 1e-3
    assert float((scan.total_product(W) - forward).abs().max()) <= 1e-12
    assert float((scan.prefix_products(W)[-1] - forward).abs().max()) <= 1e-12
    assert float((scan.suffix_products(W)[0] - forward).abs().max()) <= 1e-12


def test_float32_stack(gen):
    W = near_orthogonal(37, gen(2)).to(torch.float32)
    ref = naive_prefix(W.double())
    assert scan.prefix_products(W).dtype == torch.float32
    assert float((scan.prefix_products(W).double() - ref).abs().max()) <= 1e-4
    assert float((scan.total_product(W).double() - ref[-1]).abs().max()) <= 1e-4


@pytest.mark.parametrize("k", [1, 2, 3, 9])
def test_wide_stacks_are_chained_sequentially(k, gen):
    """From width scan.WIDE on, prefixes are the naive chain itself: bit-identical, with and without I first."""
    W = near_orthogonal(k, gen(k), d=scan.WIDE)
    assert torch.equal(scan.prefix_products(W), naive_prefix(W))
    assert torch.equal(scan.suffix_products(W), naive_suffix(W))
    with_eye = scan.prefix_products(W, identity_first=True)
    assert torch.equal(with_eye[0], torch.eye(scan.WIDE, dtype=W.dtype)) and torch.equal(with_eye[1:], naive_prefix(W))


def test_short_stacks_of_middle_width_are_chained_sequentially(gen):
    """From width scan.MID on, a stack of up to scan.SHORT is the naive chain too (bit-identical)."""
    W = near_orthogonal(scan.SHORT - 1, gen(5), d=scan.MID)
    assert torch.equal(scan.prefix_products(W, identity_first=True)[1:], naive_prefix(W))


@pytest.mark.parametrize("k", [scan.SHORT - 1, scan.SHORT, scan.SHORT + 1, 100, 1023, 1024])
def test_identity_first_in_a_workspace(k, gen):
    """Narrow stacks longer than scan.SHORT (chunked, identities in front): [I, prefixes] to 1e-12, exact on
    signed permutations, the same when a Workspace's buffers are reused for another stack."""
    ws = Workspace()
    for seed in (k, k + 1):
        W = near_orthogonal(k, gen(seed))
        got = scan.prefix_products(W, identity_first=True, ws=ws)
        assert got.shape == (k + 1, D, D) and torch.equal(got[0], torch.eye(D, dtype=W.dtype))
        assert float((got[1:] - naive_prefix(W)).abs().max()) <= 1e-12
    P = signed_permutations(k, gen(k + 2))
    assert torch.equal(scan.prefix_products(P, identity_first=True, ws=ws)[1:], naive_prefix(P))


@pytest.mark.parametrize("k,d", [(5, D), (scan.SHORT, D), (100, D), (1023, D), (3, scan.WIDE)])
def test_frame_prefixes_sandwich_and_last(k, d, gen):
    """scan.frame_prefixes (chunked for long narrow stacks, one chunk otherwise): C_j A C_{j−1}ᵀ for
    j = 1 … k and C_k against the naive prefixes to 1e-12, exact on signed permutations, and bit-identical
    with a Workspace's buffers reused for another stack."""
    W = near_orthogonal(k, gen(k), d)
    C = torch.cat([torch.eye(d, dtype=torch.float64)[None], naive_prefix(W)])
    A = torch.randn(d, d, generator=gen(k + 1), dtype=torch.float64)
    ref = C[1:] @ A @ C[:-1].mT
    ws = Workspace()
    for stack in (W, near_orthogonal(k, gen(k + 2), d), W):
        fr = scan.frame_prefixes(stack, ws=ws)
        bufs = tuple(torch.empty(fr.slots, d, d, dtype=stack.dtype) for _ in range(2))
        got = fr.sandwich(A, bufs)
        assert torch.equal(got, scan.frame_prefixes(stack).sandwich(A))
    assert got.shape == (k, d, d) and float((got - ref).abs().max()) <= 1e-12
    assert float((fr.last() - C[-1]).abs().max()) <= 1e-12
    assert float((fr.full() - C).abs().max()) <= 1e-12
    P = signed_permutations(k, gen(k + 3), d=4)
    Cp = torch.cat([torch.eye(4, dtype=torch.float64)[None], naive_prefix(P)])
    Ap = signed_permutations(1, gen(k + 4), d=4)[0]
    assert torch.equal(scan.frame_prefixes(P).sandwich(Ap), Cp[1:] @ Ap @ Cp[:-1].mT)
