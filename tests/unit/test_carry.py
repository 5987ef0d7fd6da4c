"""The frame carried from one polar step to the next (carry.py): the Schur form behind it, agreement of
carried steps with steps from a fresh scan and with the per-layer loop, its drift, bit-identical workspace
runs, and that a written stack drops its frame."""
from __future__ import annotations

import pytest
import torch

from orthoscale import carry, data, init, losses, network, optim, stiefel
from orthoscale.network import Architecture
from orthoscale.workspace import Workspace
from tests import loop

F64 = torch.float64
EVEN = [(6,) * 31, (6,) * 101, (8,) * 9]  # whole frames (one chunk) and chunked ones (k > scan.SHORT)
WIDE = [(64,) * 9, (64,) * 34, (130,) * 6, (64,) * 3, (130,) * 4]  # d ≥ scan.WIDE: carried by the powers Qʲ
# (the last two: stacks of one and two layers, framed too at this width)


def rotations(omega: torch.Tensor) -> torch.Tensor:
    """The block-diagonal R with [[c, s], [−s, c]] = polar(I + [[0, ω], [−ω, 0]]) on each column pair."""
    c, s = 1 / torch.sqrt(1 + omega ** 2), omega / torch.sqrt(1 + omega ** 2)
    return torch.block_diag(*[torch.stack([torch.stack([a, b]), torch.stack([-b, a])]) for a, b in zip(c, s)])


@pytest.mark.parametrize("d", [2, 6, 10])
@pytest.mark.parametrize("kind", ["generic", "degenerate"])
def test_skew_schur_gives_the_polar_factor(d, kind, gen):
    """V orthogonal to rounding and V R Vᵀ = polar(I + S), also where S has zero and repeated pairs
    (1 × 1 blocks of the real Schur form, anywhere on its diagonal)."""
    g = gen(d)
    for trial in range(20):
        S = torch.randn(d, d, generator=g, dtype=F64)
        S = 0.3 * (S - S.mT)
        if kind == "degenerate":
            U = stiefel.random_point(d, d, generator=g)
            omega = torch.tensor([[0.0, 1e-300, 0.2, 0.2, 1e-12][(trial + l) % 5] for l in range(d // 2)], dtype=F64)
            S = U @ torch.block_diag(*[w * torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64) for w in omega]) @ U.mT
            S = (S - S.mT) / 2
        V, omega = carry.skew_schur(S)
        eye = torch.eye(d, dtype=F64)
        assert float((V.mT @ V - eye).abs().max()) <= 4e-16 * d
        P = stiefel.polar_svd(eye + S)
        assert float((V @ rotations(omega) @ V.mT - P).abs().max()) <= 5e-15


def start(widths, seed, dtype=F64):
    arch = Architecture(widths, "first")
    g = torch.Generator().manual_seed(seed)
    prob = data.teacher_student(arch, samples=max(40, 2 * widths[0]), condition=3.0, noise=0.05, generator=g,
                                dtype=dtype)
    return arch, prob, init.random_blocks(arch, scale=1.2, generator=g, dtype=dtype)


@pytest.mark.parametrize("widths", EVEN + WIDE)
@pytest.mark.parametrize("with_ws", [False, True])
def test_carried_steps_equal_scanned_and_loop_steps(widths, with_ws):
    """Over 2·REORTHO + 3 steps (Newton–Schulz on the frame and carried steps in between): every step from
    a carried frame equals the step from a fresh scan of the same layers (a clone carries no frame) and the
    per-layer loop's step to 1e-12; the layers stay orthogonal to 1e-13 (‖WᵀW − I‖_F, whose rounding grows
    with d; a wide frame, carried by one product and the powers Qʲ per step, gains a few eps·d a step:
    REORTHO·eps·d for d > 28); the frame ages and is renewed."""
    arch, prob, blocks = start(widths, 3)
    opt, ws = optim.Optimizer(0.3), Workspace() if with_ws else None
    ages = []
    for _ in range(2 * carry.REORTHO + 3):
        ev = losses.squared_fast(blocks, prob, ws)
        ages.append(ev.frames[1].age)
        new = optim.step(blocks, ev.block_grads, arch, opt, ev.frames, ws)
        plain = [B.clone() for B in blocks]
        ev_plain = losses.squared_fast(plain, prob)
        assert ev_plain.frames[1].age is None  # scanned
        scanned = optim.step(plain, ev_plain.block_grads, arch, opt, ev_plain.frames)
        Ws = network.layers(plain)
        ref = loop.step(Ws, loop.gradients(Ws, prob)[1], arch, opt)
        for W, S, R in zip(network.layers(new), network.layers(scanned), ref):
            assert float((W - S).abs().max()) <= 1e-12 and float((W - R).abs().max()) <= 1e-12
        assert network.orthonormality_error(new, arch) <= max(1e-13, carry.REORTHO * 2.3e-16 * widths[0])
        assert carry.frame_of(new[1]) is not None
        blocks = new
    assert ages[:3] == [None, 0, 1] and ages[carry.REORTHO] == carry.REORTHO - 1 and ages[carry.REORTHO + 1] == 0


@pytest.mark.parametrize("widths", EVEN + WIDE)
def test_carried_workspace_steps_are_bit_identical(widths):
    """A run that writes into a Workspace gives exactly the fresh-tensor run, frames carried by both
    (Frobenius balance: the spectral one starts warm from a workspace, test_train)."""
    arch, prob, blocks = start(widths, 4)
    opt, ws = optim.Optimizer(0.3, balance="frobenius"), Workspace()
    fresh, reused = blocks, blocks
    for _ in range(carry.REORTHO + 4):
        ev_fresh, ev_ws = losses.squared_fast(fresh, prob), losses.squared_fast(reused, prob, ws)
        assert torch.equal(ev_ws.frames[1].C, ev_fresh.frames[1].C) and ev_ws.frames[1].age == ev_fresh.frames[1].age
        before = [B.clone() for B in reused]
        fresh = optim.step(fresh, ev_fresh.block_grads, arch, opt, ev_fresh.frames)
        new = optim.step(reused, ev_ws.block_grads, arch, opt, ev_ws.frames, ws)
        assert all(torch.equal(A, B) for A, B in zip(new, fresh))
        assert all(torch.equal(A, B) for A, B in zip(reused, before))
        reused = new


def test_a_written_stack_drops_its_frame():
    """Writing into a stack (or into its frame's buffer) invalidates the frame it carries: the next
    evaluation scans it again."""
    arch, prob, blocks = start((6,) * 31, 5)
    opt = optim.Optimizer(0.3)
    ev = losses.squared_fast(blocks, prob)
    new = optim.step(blocks, ev.block_grads, arch, opt, ev.frames)
    chunks, _ = carry.frame_of(new[1])
    assert losses.squared_fast(new, prob).frames[1].age == 0
    new[1][0].mul_(1.0)
    assert carry.frame_of(new[1]) is None and losses.squared_fast(new, prob).frames[1].age is None
    again = optim.step(blocks, ev.block_grads, arch, opt, ev.frames)
    carry.frame_of(again[1])[0].L.mul_(1.0)
    assert carry.frame_of(again[1]) is None


def test_float32_carried_run_stays_orthogonal():
    """float32: 40 carried steps stay orthogonal to float32 rounding, each step within float32 rounding of
    the step from a fresh scan of the same layers."""
    arch, prob, blocks = start((6,) * 101, 6, torch.float32)
    opt, ws = optim.Optimizer(0.1), Workspace()
    for _ in range(40):
        ev = losses.squared_fast(blocks, prob, ws)
        new = optim.step(blocks, ev.block_grads, arch, opt, ev.frames, ws)
        plain = [B.clone() for B in blocks]
        ev_plain = losses.squared_fast(plain, prob)
        scanned = optim.step(plain, ev_plain.block_grads, arch, opt, ev_plain.frames)
        assert max(float((a - b).abs().max()) for a, b in zip(new, scanned)) <= 1e-4
        assert network.orthonormality_error(new, arch) <= 1e-5
        blocks = new
