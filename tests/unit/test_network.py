"""Architecture validation, the stacked block layout, and products/forward against per-layer loops."""
from __future__ import annotations

import re

import pytest
import torch

from orthoscale import init, network, stiefel
from orthoscale.architecture import Architecture, Block

MIXED = [((5, 6, 6, 6, 8, 8, 9), "columns"), ((9, 8, 8, 6, 6, 5), "rows")]
FREE = ["first", "last", "none"]


# ---------------------------------------------------------------- validation

def test_columns_rule_names_layer_and_rule():
    with pytest.raises(ValueError, match=re.escape("layer 2 (5×6) cannot have orthonormal columns: needs d_2 ≥ d_1")):
        Architecture((4, 6, 5))
    with pytest.raises(ValueError, match=re.escape("layer 4 (5×7) cannot have orthonormal columns: needs d_4 ≥ d_3")):
        Architecture((4, 6, 7, 7, 5), free_layer="first")


def test_rows_rule_names_layer_and_rule():
    with pytest.raises(ValueError, match=re.escape("layer 2 (5×4) cannot have orthonormal rows: needs d_2 ≤ d_1")):
        Architecture((6, 4, 5), orientation="rows")
    with pytest.raises(ValueError, match=re.escape("layer 1 (7×6) cannot have orthonormal rows: needs d_1 ≤ d_0")):
        Architecture((6, 7, 5), free_layer="last", orientation="rows")


def test_free_layer_is_exempt_from_the_rule():
    Architecture((6, 3, 3), free_layer="first")              # layer 1 (3×6) is free
    Architecture((3, 3, 2), free_layer="last")               # layer 2 (2×3) is free
    Architecture((2, 5, 4), free_layer="first", orientation="rows")
    with pytest.raises(ValueError, match="layer 1"):
        Architecture((6, 3, 3), free_layer="none")
    with pytest.raises(ValueError, match="layer 2"):
        Architecture((3, 3, 2), free_layer="first")


@pytest.mark.parametrize("field,value", [("free_layer", "middle"), ("orientation", "diagonal"),
                                         ("activation", "softplus")])
def test_unknown_choices_name_the_key(field, value):
    with pytest.raises(ValueError, match=rf"model\.{field}='{value}' is not one of"):
        Architecture((4, 4, 4), **{field: value})


def test_bad_widths():
    with pytest.raises(ValueError, match="model.widths needs d_0 and at least one layer"):
        Architecture((5,))
    with pytest.raises(ValueError, match="model.widths must be positive"):
        Architecture((5, 0, 5), free_layer="first")


def test_properties():
    a = Architecture([5, 6, 6, 8], free_layer="last", activation="tanh")
    assert a.widths == (5, 6, 6, 8) and a.depth == 3 and a.free_index == 3 and not a.linear
    assert [a.constrained(i) for i in (1, 2, 3)] == [True, True, False]
    assert Architecture((4, 4)).free_index == 1
    assert Architecture((4, 4, 4), free_layer="none").free_index is None


# ---------------------------------------------------------------- block layout

@pytest.mark.parametrize("widths,free,orientation,expected", [
    ((6,) * 5, "first", "columns", [Block(0, 1, 6, 6, False), Block(1, 3, 6, 6, True)]),
    ((6,) * 5, "none", "columns", [Block(0, 1, 6, 6, True), Block(1, 3, 6, 6, True)]),
    ((6,) * 5, "last", "columns", [Block(0, 1, 6, 6, True), Block(1, 2, 6, 6, True), Block(3, 1, 6, 6, False)]),
    ((4, 4, 4), "none", "columns", [Block(0, 1, 4, 4, True), Block(1, 1, 4, 4, True)]),
    ((3, 4), "first", "columns", [Block(0, 1, 4, 3, False)]),
    ((5, 6, 6, 6, 8, 8, 9), "first", "columns",
     [Block(0, 1, 6, 5, False), Block(1, 2, 6, 6, True), Block(3, 1, 8, 6, True), Block(4, 1, 8, 8, True),
      Block(5, 1, 9, 8, True)]),
    ((5, 6, 6, 6, 8, 8, 9), "last", "columns",
     [Block(0, 1, 6, 5, True), Block(1, 2, 6, 6, True), Block(3, 1, 8, 6, True), Block(4, 1, 8, 8, True),
      Block(5, 1, 9, 8, False)]),
    ((3, 5, 5, 5, 5, 7, 7, 7), "first", "columns",
     [Block(0, 1, 5, 3, False), Block(1, 3, 5, 5, True), Block(4, 1, 7, 5, True), Block(5, 2, 7, 7, True)]),
    ((9, 8, 8, 6, 6, 5), "first", "rows",
     [Block(0, 1, 8, 9, False), Block(1, 1, 8, 8, True), Block(2, 1, 6, 8, True), Block(3, 1, 6, 6, True),
      Block(4, 1, 5, 6, True)]),
    ((9, 8, 8, 8, 8, 5), "last", "rows",
     [Block(0, 1, 8, 9, True), Block(1, 3, 8, 8, True), Block(4, 1, 5, 8, False)]),
])
def test_blocks_layout(widths, free, orientation, expected):
    assert list(Architecture(widths, free, orientation).blocks()) == expected


@pytest.mark.parametrize("widths,orientation", MIXED + [((4,) * 9, "columns"), ((7, 7, 3, 3, 3, 3), "rows")])
@pytest.mark.parametrize("free", FREE)
def test_blocks_partition_the_layers_maximally(widths, orientation, free):
    arch = Architecture(widths, free, orientation)
    blocks = arch.blocks()
    assert blocks[0] == Block(0, 1, widths[1], widths[0], arch.constrained(1))
    assert sum(b.count for b in blocks) == arch.depth
    for b, nxt in zip(blocks, blocks[1:]):
        assert nxt.start == b.start + b.count
    for b in blocks:
        for i in range(b.start + 1, b.start + b.count + 1):  # 1-based layer index
            assert (widths[i], widths[i - 1], arch.constrained(i)) == (b.rows, b.cols, b.constrained)
    for b, nxt in zip(blocks[1:], blocks[2:]):  # runs after layer 1 are maximal
        assert (b.rows, b.cols, b.constrained) != (nxt.rows, nxt.cols, nxt.constrained)


# ---------------------------------------------------------------- products

def chain(Ws, lo, hi, d):
    """W_hi ··· W_lo (1-based, inclusive); the identity of size d when hi < lo."""
    P = torch.eye(d, dtype=torch.float64)
    for i in range(lo, hi + 1):
        P = Ws[i - 1] @ P
    return P


@pytest.mark.parametrize("widths,orientation", MIXED + [((4,) * 40, "columns"), ((3, 4), "columns"),
                                                        ((3, 4, 4), "columns")])
@pytest.mark.parametrize("free", FREE)
def test_hidden_products_and_end_to_end_match_loop(widths, orientation, free, gen):
    arch = Architecture(widths, free, orientation)
    blocks = init.random_blocks(arch, scale=1.3, generator=gen(3))
    assert [tuple(B.shape) for B in blocks] == [(b.count, b.rows, b.cols) for b in arch.blocks()]
    long_square = [B.shape[0] > 2 and B.shape[-1] == B.shape[-2] for B in blocks[1:]]
    off = [B + 1e-6 * torch.randn(B.shape, generator=gen(9), dtype=B.dtype) for B in blocks]  # off the manifold
    for bs, framed in ((blocks, long_square), (off, [False] * len(long_square))):
        Ws = network.layers(bs)
        assert len(Ws) == arch.depth
        N, d1 = arch.depth, widths[1]
        ch = network.hidden_products(bs)
        assert [F is not None for F in ch.frames] == framed  # frames exactly for orthogonal square runs
        T, S = [ch.T(b) for b in range(len(bs) - 1)], [ch.S(b) for b in range(len(bs) - 1)]
        T_flat, S_flat = [t for Tb in T for t in Tb], [s for Sb in S for s in Sb]
        assert len(T_flat) == len(S_flat) == N - 1
        for i in range(2, N + 1):
            assert float((T_flat[i - 2] - chain(Ws, 2, i - 1, d1)).abs().max()) <= 1e-12
            assert float((S_flat[i - 2] - chain(Ws, i + 1, N, widths[i])).abs().max()) <= 1e-12
        assert float((ch.top - chain(Ws, 2, N, d1)).abs().max()) <= 1e-12
        P = network.end_to_end(bs)
        assert P.shape == (widths[-1], widths[0])
        assert float((P - chain(Ws, 1, N, widths[0])).abs().max()) <= 1e-12


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("widths,orientation", MIXED)
def test_forward_matches_layer_loop(widths, orientation, activation, gen):
    arch = Architecture(widths, "first", orientation, activation)
    blocks = init.random_blocks(arch, generator=gen(4))
    X = torch.randn(widths[0], 11, generator=gen(5), dtype=torch.float64)
    acts = {"identity": lambda x: x, "relu": lambda x: x.clamp(min=0), "tanh": torch.tanh,
            "leaky_relu": lambda x: torch.where(x > 0, x, 0.1 * x)}
    H = X
    Ws = network.layers(blocks)
    for i, W in enumerate(Ws):
        H = W @ H
        if i < len(Ws) - 1:
            H = acts[activation](H)
    out = network.forward(blocks, arch, X)
    assert out.shape == (widths[-1], 11)
    assert float((out - H).abs().max()) <= 1e-12
    if activation == "relu":  # the last layer is not rectified
        assert float(out.min()) < 0


@pytest.mark.parametrize("widths,orientation", MIXED)
@pytest.mark.parametrize("free", FREE)
def test_orthonormality_of_initial_layers(widths, orientation, free, gen):
    arch = Architecture(widths, free, orientation)
    blocks = init.random_blocks(arch, generator=gen(6))
    assert network.orthonormality_error(blocks, arch) <= 1e-12
    for W, i in zip(network.layers(blocks), range(1, arch.depth + 1)):
        if arch.constrained(i):
            G = W @ W.mT if orientation == "rows" else W.mT @ W
            assert float((G - torch.eye(G.shape[0], dtype=torch.float64)).abs().max()) <= 1e-12
    # a damaged orthonormal layer shows up in the error
    k = next(k for k, b in enumerate(arch.blocks()) if b.constrained)
    damaged = [B.clone() for B in blocks]
    damaged[k] = 1.01 * damaged[k]
    expected = float(stiefel.orthonormality_error(network.to_tall(1.01 * blocks[k], arch)).max())
    assert network.orthonormality_error(damaged, arch) == pytest.approx(expected, rel=1e-12)
    assert expected > 1e-2


def test_orthonormality_error_without_constrained_layers(gen):
    arch = Architecture((3, 5), "first")
    assert network.orthonormality_error(init.random_blocks(arch, generator=gen(0)), arch) == 0.0


def test_to_tall():
    W = torch.arange(6.0).reshape(1, 2, 3)
    assert torch.equal(network.to_tall(W, Architecture((3, 2), orientation="rows")), W.mT)
    assert torch.equal(network.to_tall(W, Architecture((3, 2))), W)


@pytest.mark.parametrize("widths,orientation", MIXED)
@pytest.mark.parametrize("free", FREE)
def test_stack_inverts_layers(widths, orientation, free, gen):
    arch = Architecture(widths, free, orientation)
    blocks = init.random_blocks(arch, generator=gen(7))
    again = network.stack(network.layers(blocks), arch)
    assert len(again) == len(blocks) and all(torch.equal(a, b) for a, b in zip(again, blocks))


@pytest.mark.parametrize("d", [4, 70])
def test_frame_needs_every_layer_orthogonal(d, gen):
    """The orthogonality test of a run looks at ‖Wv‖ for a few fixed vectors only: still one column of one
    layer scaled by 1 + 1e-9 (WᵀW − I with a single nonzero entry) is seen, and the run is not framed."""
    arch = Architecture((d,) * 12)
    blocks = init.random_blocks(arch, generator=gen(11))
    assert network.hidden_products(blocks).frames[0] is not None
    for layer in (0, 5, 9):
        off = [B.clone() for B in blocks]
        off[1][layer][:, d // 2] *= 1 + 1e-9
        assert network.hidden_products(off).frames[0] is None


def test_workspace_vouches_only_for_untouched_orthogonal_stacks(gen):
    """A stack that passed the probe, or a framed polar update of optim.step, is framed again without a probe
    while untouched; an in-place write (through any view) voids that, and the probe sees the change."""
    from orthoscale import data, losses, optim
    from orthoscale.workspace import Workspace
    arch = Architecture((5,) * 40)
    g = gen(12)
    blocks = init.random_blocks(arch, generator=g)
    ws = Workspace()
    assert not ws.vouches("orthogonal", blocks[1])
    assert network.hidden_products(blocks, ws).frames[0] is not None
    assert ws.vouches("orthogonal", blocks[1])
    blocks[1][7][:, 2] *= 1 + 1e-9  # through a view of the stack
    assert not ws.vouches("orthogonal", blocks[1])
    assert network.hidden_products(blocks, ws).frames[0] is None
    problem = data.teacher_student(arch, samples=50, noise=0.1, generator=g)
    fresh = init.random_blocks(arch, generator=g)
    ev = losses.squared_fast(fresh, problem, ws)
    new = optim.step(fresh, ev.block_grads, arch, optim.Optimizer(0.1), ev.frames, ws)
    assert ws.vouches("orthogonal", new[1]) and network.orthonormality_error(new, arch) <= 1e-13
    assert not ws.vouches("orthogonal", new[1].clone())
