"""Loss and gradients: the moment-based fast path against autograd on samples, closed forms and loops."""
from __future__ import annotations

import math

import pytest
import torch

from orthoscale import data, init, losses, network, optim, specs
from tests import loop
from orthoscale.data import Problem
from orthoscale.network import Architecture
from orthoscale.workspace import Workspace

F64 = torch.float64
ARCHS = [((5, 6, 6, 6, 8, 8, 9), "columns"), ((9, 8, 8, 6, 6, 5), "rows"), ((6,) * 5, "columns"),
         ((4, 7), "columns"), ((5, 6, 6), "columns"), ((7, 6, 6, 6), "rows")]  # last two: one short block
FREE = ["first", "last", "none"]


def make_problem(arch: Architecture, kind: str, generator: torch.Generator, samples: int = 40) -> Problem:
    """'whitened': a noisy teacher–student problem (Σ_xx = I); 'raw': correlated Gaussian inputs (Σ_xx ≠ I)."""
    if kind == "whitened":
        prob = data.teacher_student(arch, samples=samples, condition=3, noise=0.1, generator=generator)
        assert prob.moments.sxx is None
        return prob
    d0, dN = arch.widths[0], arch.widths[-1]
    A = torch.randn(d0, d0, generator=generator, dtype=F64) + 2 * torch.eye(d0, dtype=F64)
    X = A @ torch.randn(d0, samples, generator=generator, dtype=F64) + 0.5
    Y = torch.randn(dN, d0, generator=generator, dtype=F64) @ X + 0.3 * torch.randn(dN, samples, generator=generator,
                                                                                    dtype=F64)
    prob = Problem(X, Y, data.second_moments(X, Y))
    assert prob.moments.sxx is not None
    return prob


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b)) / max(float(torch.linalg.vector_norm(b)), 1e-300)


CASES = [(w, o, f, k) for w, o in ARCHS for f in FREE for k in ("whitened", "raw")]


@pytest.mark.parametrize("widths,orientation,free,kind", CASES)
def test_fast_path_equals_generic_path(widths, orientation, free, kind, gen):
    arch = Architecture(widths, free, orientation)
    prob = make_problem(arch, kind, gen(1))
    blocks = init.random_blocks(arch, scale=1.5, generator=gen(2))
    fast = losses.squared_fast(blocks, prob)
    slow = losses.generic(blocks, arch, prob, "squared")
    assert abs(float(fast.loss) - float(slow.loss)) <= 1e-10 * abs(float(slow.loss))
    assert abs(float(fast.excess) - float(slow.excess)) <= 1e-10 * abs(float(slow.loss))
    assert float(fast.excess) > 0
    assert len(fast.grads) == len(slow.grads) == len(blocks)
    for Gf, Gs, B in zip(fast.grads, slow.grads, blocks):
        assert Gf.shape == Gs.shape == B.shape
        assert rel(Gf, Gs) <= 1e-10
    assert float((fast.product - slow.product).abs().max()) <= 1e-12
    assert float((fast.product - network.end_to_end(blocks)).abs().max()) <= 1e-12


def moment_loss(Ws, prob):
    """½ tr((P − P*) Σ_xx (P − P*)ᵀ) with P multiplied layer by layer (for autograd)."""
    P = Ws[0]
    for W in Ws[1:]:
        P = W @ P
    D = P - prob.moments.p_star
    S = prob.moments.sxx if prob.moments.sxx is not None else torch.eye(P.shape[1], dtype=F64)
    return 0.5 * torch.trace(D @ S @ D.mT)


@pytest.mark.parametrize("widths,orientation,free,kind", CASES)
def test_closed_form_gradients_equal_autograd(widths, orientation, free, kind, gen):
    arch = Architecture(widths, free, orientation)
    prob = make_problem(arch, kind, gen(3))
    blocks = init.random_blocks(arch, generator=gen(4))
    Ws = [W.detach().clone().requires_grad_() for W in network.layers(blocks)]
    value = moment_loss(Ws, prob)
    auto = torch.autograd.grad(value, Ws)
    fast = losses.squared_fast(blocks, prob)
    value = float(value.detach())
    assert abs(float(fast.excess) - value) <= 1e-12 * value
    for G, A in zip(network.layers(fast.grads), auto):
        assert rel(G, A) <= 1e-12


@pytest.mark.parametrize("widths,orientation,free,kind", CASES + [((4,) * 33, "columns", "last", "raw")])
def test_stacked_fast_path_equals_per_layer_loop(widths, orientation, free, kind, gen):
    arch = Architecture(widths, free, orientation)
    prob = make_problem(arch, kind, gen(5))
    blocks = init.random_blocks(arch, generator=gen(6))
    excess, grads = loop.gradients(network.layers(blocks), prob)
    fast = losses.squared_fast(blocks, prob)
    assert abs(float(fast.excess) - float(excess)) <= 1e-12 * float(excess)
    stacked = network.layers(fast.grads)
    assert len(stacked) == len(grads) == arch.depth
    for G, R in zip(stacked, grads):
        assert float((G - R).abs().max()) <= 1e-12 * max(1.0, float(R.abs().max()))


def test_framed_gradients_are_lazy_and_exact(gen):
    """A long orthogonal run keeps its gradient as (C, M); .grads materialises C_j M C_{j−1}ᵀ, equal to the
    per-layer loop; finite() sees a non-finite M."""
    arch = Architecture((4,) * 41, "first")
    prob = make_problem(arch, "raw", gen(7))
    blocks = init.random_blocks(arch, generator=gen(8))
    ev = losses.squared_fast(blocks, prob)
    assert ev.block_grads[1] is None and ev.frames[1].C.shape == (40, 4, 4)
    _, grads = loop.gradients(network.layers(blocks), prob)
    for G, R in zip(network.layers(ev.grads), grads):
        assert float((G - R).abs().max()) <= 1e-12 * max(1.0, float(R.abs().max()))
    assert ev.finite()
    bad = losses.Evaluation(ev.loss, ev.excess, ev.block_grads, ev.product,
                            [None, network.Frame(ev.frames[1].C, ev.frames[1].M * float("nan"))])
    assert not bad.finite()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("part", ["loss", "free", "frame"])
def test_finite_sees_one_non_finite_entry_anywhere(part, value, gen):
    """finite() is False as soon as one entry of the loss, a block gradient or a frame's M is NaN or ±inf,
    wherever it sits (first, last or inside a vectorised run of entries), and True otherwise."""
    arch = Architecture((70, 64, 64, 64))
    prob = make_problem(arch, "raw", gen(3))
    ev = losses.squared_fast(init.random_blocks(arch, generator=gen(4)), prob)
    assert ev.finite() and ev.frames[1] is not None
    for at in (0, 37, -1):
        loss, grads, frames = ev.loss.clone(), list(ev.block_grads), list(ev.frames)
        if part == "loss":
            loss.fill_(value)
        elif part == "free":
            grads[0] = grads[0].clone()
            grads[0].view(-1)[at] = value
        else:
            M = frames[1].M.clone()
            M.view(-1)[at] = value
            frames[1] = network.Frame(frames[1].C, M)
        assert not losses.Evaluation(loss, ev.excess, grads, ev.product, frames).finite()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_gradient_the_loss_sums_is_finite_where_the_loss_is(value, dtype, gen):
    """Framed and whitened, L − L* = ½‖G_1‖²: finite() leaves G_1 to the loss (in_loss), and that is sound:
    one NaN or ±inf entry of W_1 (so of G_1 = W_1 − TᵀP*), or one large enough that ‖G_1‖² overflows in the
    dtype (1e30 in float32), makes L non-finite and finite() False; the same evaluation with G_1's check
    (in_loss off) agrees on every case."""
    arch = Architecture((70, 64, 64, 64))
    prob = data.teacher_student(arch, samples=200, condition=3, noise=0.1, generator=gen(11), dtype=dtype)
    blocks = init.random_blocks(arch, generator=gen(12), dtype=dtype)
    ev = losses.squared_fast(blocks, prob)
    assert ev.in_loss and ev.finite()
    for at in (0, 37, -1):
        bad = [B.clone() for B in blocks]
        bad[0].view(-1)[at] = value
        ev = losses.squared_fast(bad, prob)
        expect = not math.isfinite(value) or value * value > torch.finfo(dtype).max
        assert ev.in_loss and (not ev.finite()) == expect and (not math.isfinite(float(ev.loss))) == expect
        checked = losses.Evaluation(ev.loss, ev.excess, ev.block_grads, ev.product, ev.frames)
        assert checked.finite() == ev.finite()


@pytest.mark.parametrize("widths", [(70, 64, 64), (70, 64, 64, 64), (64, 66, 66, 66, 66)])
def test_framed_whitened_gradient_through_the_orthogonal_top(widths, gen):
    """W_2 … W_N one orthogonal square block (wide: framed from one layer on) and Σ_xx = I: G_1 = W_1 − TᵀP*,
    L − L* = ½‖G_1‖² and M = G_1 W_1ᵀ equal autograd on the samples; P is formed on request only, from a copy
    of the top, so that it is still P of this iterate after the next step has reused the workspace."""
    arch = Architecture(widths)
    prob = make_problem(arch, "whitened", gen(9), samples=200)
    blocks = init.random_blocks(arch, generator=gen(10))
    ws = Workspace()
    fast = losses.squared_fast(blocks, prob, ws)
    assert fast.block_grads[1] is None and fast.frames[1] is not None and callable(fast.end_to_end)
    slow = losses.generic(blocks, arch, prob, "squared")
    assert abs(float(fast.excess) - float(slow.excess)) <= 1e-10 * float(slow.loss)
    for Gf, Gs in zip(fast.grads, slow.grads):
        assert rel(Gf, Gs) <= 1e-10
    optim.step(blocks, fast.block_grads, arch, optim.Optimizer(0.1), fast.frames, ws)
    losses.squared_fast(blocks, prob, ws)
    assert float((fast.product - network.end_to_end(blocks)).abs().max()) <= 1e-12


def test_excess_is_distance_to_teacher_on_whitened_data(gen):
    """Σ_xx = I and no noise: L* = 0 and L − L* = ½‖P − W*‖_F²."""
    arch = Architecture((5, 6, 6, 6))
    prob = data.teacher_student(arch, samples=30, condition=2, generator=gen(7))
    blocks = init.random_blocks(arch, generator=gen(8))
    ev = losses.squared_fast(blocks, prob)
    assert prob.moments.loss_star <= 1e-14 * prob.moments.loss_zero
    assert float(ev.excess) == pytest.approx(0.5 * float(((ev.product - prob.target) ** 2).sum()), rel=1e-12)
    at_teacher = [B.clone() for B in init.teacher_blocks(arch, condition=2, generator=gen(7))]
    assert float(losses.squared_fast(at_teacher, prob).excess) <= 1e-28
    assert all(float(G.abs().max()) <= 1e-14 for G in losses.squared_fast(at_teacher, prob).grads)


# ---------------------------------------------------------------- generic path, nonlinear

@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("loss", ["squared", "huber", "cross_entropy"])
def test_generic_path_nonlinear(activation, loss, gen):
    arch = Architecture((5, 6, 6, 10), "last", activation=activation)
    prob = make_problem(Architecture((5, 6, 6, 10), "last"), "raw", gen(9), samples=25)
    blocks = init.random_blocks(arch, generator=gen(10))
    ev = losses.generic(blocks, arch, prob, loss)
    out = network.forward(blocks, arch, prob.X)
    assert float(ev.loss) == pytest.approx(float(losses.LOSSES[loss](out, prob.Y)), rel=1e-14)
    assert float(ev.excess) == float(ev.loss)  # L* is only subtracted for linear networks
    assert ev.product is None
    # directional derivative by central differences
    dirs = [torch.randn(B.shape, generator=gen(11), dtype=F64) for B in blocks]
    h = 1e-6
    plus = losses.LOSSES[loss](network.forward([B + h * E for B, E in zip(blocks, dirs)], arch, prob.X), prob.Y)
    minus = losses.LOSSES[loss](network.forward([B - h * E for B, E in zip(blocks, dirs)], arch, prob.X), prob.Y)
    fd = float(plus - minus) / (2 * h)
    analytic = sum(float((G * E).sum()) for G, E in zip(ev.grads, dirs))
    assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_generic_squared_on_linear_network_subtracts_loss_star(gen):
    arch = Architecture((5, 6, 6, 6), "first")
    prob = make_problem(arch, "raw", gen(12))
    blocks = init.random_blocks(arch, generator=gen(13))
    ev = losses.generic(blocks, arch, prob, "squared")
    assert float(ev.excess) == pytest.approx(float(ev.loss) - prob.moments.loss_star, rel=1e-12)
    assert prob.moments.loss_star > 0


# ---------------------------------------------------------------- path resolution

def test_resolve_path():
    lin, relu = Architecture((4, 4, 4)), Architecture((4, 4, 4), activation="relu")
    assert specs.resolve_path(lin, "squared", "auto") == "fast"
    assert specs.resolve_path(lin, "squared", "fast") == "fast"
    assert specs.resolve_path(lin, "squared", "generic") == "generic"
    assert specs.resolve_path(lin, "huber", "auto") == "generic"
    assert specs.resolve_path(relu, "squared", "auto") == "generic"
    assert specs.resolve_path(relu, "cross_entropy", "generic") == "generic"


@pytest.mark.parametrize("activation,loss", [("relu", "squared"), ("tanh", "squared"), ("identity", "huber"),
                                             ("identity", "cross_entropy")])
def test_fast_path_refused_where_it_does_not_apply(activation, loss):
    arch = Architecture((4, 4, 4), activation=activation)
    with pytest.raises(ValueError, match=r"optim\.path=fast needs optim\.loss=squared and model\.activation=identity"):
        specs.resolve_path(arch, loss, "fast")


def test_unknown_loss_or_path_named():
    arch = Architecture((4, 4, 4))
    with pytest.raises(ValueError, match=r"optim\.loss='hinge' is not one of"):
        specs.resolve_path(arch, "hinge", "auto")
    with pytest.raises(ValueError, match=r"optim\.path='slow' is not one of"):
        specs.resolve_path(arch, "squared", "slow")


def test_evaluate_dispatches(gen):
    arch = Architecture((5, 6, 6, 6), "first")
    prob = make_problem(arch, "raw", gen(14))
    blocks = init.random_blocks(arch, generator=gen(15))
    a, b = losses.evaluate(blocks, arch, prob, "squared", "fast"), losses.squared_fast(blocks, prob)
    assert torch.equal(a.loss, b.loss) and all(torch.equal(x, y) for x, y in zip(a.grads, b.grads))
    c, d = losses.evaluate(blocks, arch, prob, "squared", "generic"), losses.generic(blocks, arch, prob, "squared")
    assert torch.equal(c.loss, d.loss) and all(torch.equal(x, y) for x, y in zip(c.grads, d.grads))
