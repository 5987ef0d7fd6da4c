"""The local rate theory at a realizable solution: the P-space operator against a dense parameter Hessian,
the linearisation against the actual step map, predicted against measured rates, μ_opt and the stability
edge, retraction independence, the iterative eigensolver against the dense one, and non-solutions."""
from __future__ import annotations

import pytest
import torch

from orthoscale import data, init, losses, network, optim, rates, stiefel, theory, train
from orthoscale.network import Architecture, to_tall
from orthoscale.optim import Optimizer
from orthoscale.train import StopRules

F64 = torch.float64
TINY = [  # (widths, orientation, free_layer, method, balance, correlated inputs)
    ((3, 4, 4, 3), "rows", "first", "rgd", "spectral", False),
    ((3, 3, 4, 5), "columns", "first", "rgd", "frobenius", True),
    ((4, 4, 4, 4), "columns", "last", "rgd", "spectral", True),
    ((4, 3, 3), "rows", "none", "rgd", "none", False),
    ((3, 2, 4), "columns", "first", "rgd", "spectral", True),   # rank-2 products in R^{4×3}: K has a null space
    ((3, 4, 4, 3), "rows", "first", "gd", "spectral", True),
]


def teacher_problem(arch, generator, *, condition=3.0, scale=1.0, correlated=False, samples=40, noise=0.0):
    """Teacher–student with the teacher of ``arch``'s kind; correlated=True replaces the whitened inputs by
    X = A Z, A symmetric with eigenvalues in [1, 2] (Σ_xx = A² ≠ I), and refits the moments."""
    free = arch.free_layer
    prob = data.teacher_student(arch, samples=samples, condition=condition, scale=scale, noise=noise,
                                teacher_free_layer=free, generator=generator)
    if correlated:
        d0 = arch.widths[0]
        Q = stiefel.random_point(d0, d0, generator=generator)
        A = (Q * torch.linspace(1.0, 2.0, d0, dtype=F64)) @ Q.mT
        X = A @ data.whitened_gaussian(d0, samples, generator=generator)
        Y = prob.target @ X
        prob = data.Problem(X, Y, data.second_moments(X, Y), prob.target, prob.teacher, prob.name)
        assert prob.moments.sxx is not None
    return prob


def solution(prob, arch):
    return network.stack(list(prob.teacher), arch)


def excess(blocks, moments):
    """L − L* = ½ tr((P − P*) Σ (P − P*)ᵀ), written out (independent of losses.py)."""
    D = network.end_to_end(blocks) - moments.p_star
    return 0.5 * (D * (D if moments.sxx is None else D @ moments.sxx)).sum()


def tangent(blocks, arch, method, Z, layout=None):
    """P_T per block (identity on free layers and for GD)."""
    return [to_tall(stiefel.project(to_tall(B, arch), to_tall(C, arch)), arch) if method == "rgd" and b.constrained
            else C for B, C, b in zip(blocks, Z, layout or arch.blocks())]


def scales(blocks, arch, method, balance):
    """D per block: 1 on the free layer (and for GD), 1/s² on orthonormal layers."""
    free = next((B[0] for B, b in zip(blocks, arch.blocks()) if not b.constrained), None)
    s2 = float(optim.balance(free, balance))
    return [1 / s2 if method == "rgd" and b.constrained else 1.0 for b in arch.blocks()]


def tangent_basis(blocks, arch, method):
    """Block-diagonal orthonormal basis U (n_params × dim T) of the product tangent space, and block ids."""
    cols, ids, offset, n = [], [], 0, sum(B.numel() for B in blocks)
    for k, B in enumerate(blocks):
        m = B.numel()
        E = torch.eye(m, dtype=F64).reshape(m, *B.shape)
        Pm = torch.stack([tangent([B], arch, method, [e], [arch.blocks()[k]])[0] for e in E]).reshape(m, m)
        w, Q = torch.linalg.eigh(0.5 * (Pm + Pm.mT))
        Q = Q[:, w > 0.5]
        U = torch.zeros(n, Q.shape[1], dtype=F64)
        U[offset:offset + m] = Q
        cols.append(U)
        ids += [k] * Q.shape[1]
        offset += m
    return torch.cat(cols, dim=1), torch.tensor(ids)


def unflatten(theta, like):
    out, offset = [], 0
    for B in like:
        out.append(theta[offset:offset + B.numel()].reshape(B.shape))
        offset += B.numel()
    return out


def flat(blocks):
    return torch.cat([B.reshape(-1) for B in blocks])


def nonzero(lam):
    return lam[lam > 1e-9 * lam.max()]


# ---------------------------------------------------------------- the operator

@pytest.mark.parametrize("widths,orientation,free,method,balance,correlated", TINY)
def test_p_space_operator_equals_dense_tangent_hessian(widths, orientation, free, method, balance, correlated, gen):
    arch = Architecture(widths, free, orientation)
    prob = teacher_problem(arch, gen(1), correlated=correlated)
    W = solution(prob, arch)
    spec = theory.local_spectrum(W, arch, prob.moments, method=method, balance=balance)
    H = torch.func.hessian(lambda th: excess(unflatten(th, W), prob.moments))(flat(W))
    U, ids = tangent_basis(W, arch, method)
    d = torch.tensor(scales(W, arch, method, balance), dtype=F64)[ids].sqrt()
    lam = nonzero(torch.linalg.eigvalsh(d[:, None] * (U.mT @ H @ U) * d[None, :]))
    assert spec.count == lam.numel()
    assert spec.lam_min == pytest.approx(float(lam[0]), rel=1e-8)
    assert spec.lam_max == pytest.approx(float(lam[-1]), rel=1e-8)
    if widths == (3, 2, 4):  # the rank-2 matrices of R^{4×3} form a manifold of dimension 2·(4 + 3 − 2) = 10 < 12
        assert spec.count == 10


@pytest.mark.parametrize("N,balance", [(2, "spectral"), (5, "spectral"), (5, "frobenius"), (5, "none"), (9, "none")])
def test_square_network_closed_form(N, balance, gen):
    """Square widths, free layer first (RGD): λ ∈ {1} ∪ {1 + (N−1)(σ_a² + σ_b²)/(2s²)}; GD: 1 + (N−1)σ_b²."""
    arch = Architecture((5,) * (N + 1))
    prob = teacher_problem(arch, gen(2), condition=4.0, scale=1.5)
    sv = torch.linalg.svdvals(prob.teacher[0])
    s2 = {"spectral": sv[0] ** 2, "frobenius": (sv ** 2).sum(), "none": 1.0}[balance]
    spec = theory.local_spectrum(solution(prob, arch), arch, prob.moments, balance=balance)
    assert spec.lam_min == pytest.approx(1.0, rel=1e-10)
    assert spec.lam_max == pytest.approx(float(1 + (N - 1) * (sv[0] ** 2 + sv[1] ** 2) / (2 * s2)), rel=1e-10)
    gd = theory.local_spectrum(solution(prob, arch), arch, prob.moments, method="gd")
    assert (gd.lam_min, gd.lam_max) == pytest.approx((float(1 + (N - 1) * sv[-1] ** 2),
                                                      float(1 + (N - 1) * sv[0] ** 2)), rel=1e-10)


# ---------------------------------------------------------------- the linearisation

def step_map(arch, prob, opt):
    return lambda blocks: optim.step(blocks, losses.squared_fast(blocks, prob).grads, arch, opt)


def central_difference(phi, W, v, eps=1e-5):
    plus = phi([B + eps * V for B, V in zip(W, v)])
    minus = phi([B - eps * V for B, V in zip(W, v)])
    return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]


@pytest.mark.parametrize("retraction", stiefel.RETRACTIONS)
@pytest.mark.parametrize("widths,orientation,free,method,balance,correlated", TINY)
def test_linearisation_of_the_step_map(retraction, widths, orientation, free, method, balance, correlated, gen):
    arch = Architecture(widths, free, orientation)
    prob = teacher_problem(arch, gen(3), correlated=correlated)
    W = solution(prob, arch)
    spec = theory.local_spectrum(W, arch, prob.moments, method=method, balance=balance)
    mu = spec.mu_opt
    phi = step_map(arch, prob, Optimizer(mu, method=method, retraction=retraction, balance=balance))
    grad = torch.func.grad(lambda *bs: excess(list(bs), prob.moments), argnums=tuple(range(len(W))))
    D = scales(W, arch, method, balance)
    g = torch.Generator().manual_seed(4)
    for _ in range(2):  # DΦ[v] = v − μ D P_T(H v) for random tangent v, H v by forward-over-reverse autodiff
        v = tangent(W, arch, method, [torch.randn(B.shape, generator=g, dtype=F64) for B in W])
        Hv = torch.func.jvp(grad, tuple(W), tuple(v))[1]
        want = [V - mu * d * C for V, d, C in zip(v, D, tangent(W, arch, method, list(Hv)))]
        got = central_difference(phi, W, v)
        assert torch.allclose(flat(got), flat(want), rtol=0, atol=1e-7 * float(flat(v).norm()))
    # the whole linearisation on the tangent space: eigenvalues ≠ 1 are 1 − μλ, λ ∈ [λ_min, λ_max], count of them
    U, _ = tangent_basis(W, arch, method)
    J = torch.stack([flat(central_difference(phi, W, unflatten(u, W))) for u in U.mT], dim=1)
    ev = torch.linalg.eigvals(U.mT @ J)
    assert float(ev.imag.abs().max()) < 1e-6
    moving = ev.real[(ev.real - 1).abs() > 1e-6]
    assert moving.numel() == spec.count
    lam = (1 - moving) / mu
    assert (float(lam.min()), float(lam.max())) == pytest.approx((spec.lam_min, spec.lam_max), rel=1e-6)
    assert float(moving.abs().max()) == pytest.approx(spec.error_rate(mu), rel=1e-6)
    assert spec.error_rate(mu) == pytest.approx(spec.rate_opt, rel=1e-12)


# ---------------------------------------------------------------- trajectories

def measured_rate(prob, arch, opt, *, seed=5, delta=1e-4, max_iters=5000):
    start = init.perturb(solution(prob, arch), arch, delta=delta, generator=torch.Generator().manual_seed(seed))
    traj, _ = train.train(prob, arch, start, opt, StopRules(tol=1e-24, max_iters=max_iters))
    return traj, rates.fit_rate(traj.rel_excess)


RUNS = [  # (widths, orientation, free, method, balance, μ / μ_opt, correlated inputs)
    *[((6,) * 5, "columns", "first", m, b, f, False) for m, b in
      [("rgd", "spectral"), ("rgd", "none"), ("rgd", "frobenius"), ("gd", "spectral")] for f in (1.0, 0.5)],
    ((4, 5, 6, 6), "columns", "first", "rgd", "spectral", 1.0, False),
    ((6, 5, 5, 4), "rows", "last", "rgd", "frobenius", 0.7, True),
]


@pytest.mark.parametrize("widths,orientation,free,method,balance,factor,correlated", RUNS)
def test_measured_rate_matches_prediction(widths, orientation, free, method, balance, factor, correlated, gen):
    arch = Architecture(widths, free, orientation)
    prob = teacher_problem(arch, gen(6), scale=2.0, correlated=correlated)
    spec = theory.local_spectrum(solution(prob, arch), arch, prob.moments, method=method, balance=balance)
    mu = factor * spec.mu_opt
    traj, fit = measured_rate(prob, arch, Optimizer(mu, method=method, balance=balance))
    assert traj.outcome == "converged" and fit.found
    predicted = theory.predicted_loss_rate(prob, arch, mu, method=method, balance=balance)
    assert predicted == pytest.approx(spec.loss_rate(mu), rel=1e-12)
    assert (1 - fit.rate) / (1 - predicted) == pytest.approx(1.0, abs=0.02)


def test_mu_opt_is_optimal_and_mu_max_is_the_stability_edge(gen):
    arch = Architecture((6,) * 5)
    prob = teacher_problem(arch, gen(7), scale=2.0)
    spec = theory.local_spectrum(solution(prob, arch), arch, prob.moments, balance="none")
    assert spec.loss_rate_opt == pytest.approx(spec.loss_rate(spec.mu_opt), rel=1e-12)
    for f in (0.8, 0.95, 1.05, 1.2):
        assert spec.loss_rate(spec.mu_opt) < spec.loss_rate(f * spec.mu_opt)
    assert spec.error_rate(spec.mu_max) == pytest.approx(1.0, rel=1e-12)
    stable, fit = measured_rate(prob, arch, Optimizer(0.9 * spec.mu_max, balance="none"))
    assert stable.outcome == "converged" and fit.found
    assert (1 - fit.rate) / (1 - spec.loss_rate(0.9 * spec.mu_max)) == pytest.approx(1.0, abs=0.02)
    unstable, _ = measured_rate(prob, arch, Optimizer(1.1 * spec.mu_max, balance="none"), max_iters=300)
    assert unstable.outcome != "converged"
    assert max(unstable.rel_excess) > 1e4 * unstable.rel_excess[0]


def test_retractions_give_the_same_local_rate(gen):
    arch = Architecture((5, 6, 6, 6), "first", "columns")
    prob = teacher_problem(arch, gen(8), scale=1.5)
    spec = theory.local_spectrum(solution(prob, arch), arch, prob.moments)
    mu = 0.6 * spec.mu_opt
    measured = {r: measured_rate(prob, arch, Optimizer(mu, retraction=r))[1].rate for r in stiefel.RETRACTIONS}
    for r, rate in measured.items():
        assert rate is not None, r
        assert (1 - rate) / (1 - spec.loss_rate(mu)) == pytest.approx(1.0, abs=0.02), r
        assert (1 - rate) / (1 - measured["qr"]) == pytest.approx(1.0, abs=0.02), r


# ---------------------------------------------------------------- solvers and non-solutions

@pytest.mark.parametrize("widths,orientation,free,method,correlated", [
    ((40, 20, 20, 20), "columns", "first", "rgd", False),   # K non-singular: Lanczos on λ_max·I − K
    ((40, 30, 20), "rows", "none", "rgd", False),           # null(K) of dimension 210: the K⁺ path
    ((40, 10, 20), "columns", "first", "gd", True),         # rank-10 products, Σ_xx ≠ I
])
def test_iterative_solver_equals_dense(widths, orientation, free, method, correlated, gen):
    arch = Architecture(widths, free, orientation)
    prob = teacher_problem(arch, gen(9), correlated=correlated, samples=80)
    W = solution(prob, arch)
    dense = theory.local_spectrum(W, arch, prob.moments, method=method, dense_max=10 ** 6)
    lanczos = theory.local_spectrum(W, arch, prob.moments, method=method, dense_max=0)
    assert dense.count is not None and lanczos.count is None
    assert lanczos.lam_max == pytest.approx(dense.lam_max, rel=1e-6)
    assert lanczos.lam_min == pytest.approx(dense.lam_min, rel=1e-6)
    if free == "none":
        assert dense.count == 40 * 20 - 20 * 21 // 2  # 20×40 matrices with orthonormal rows


def test_non_solutions_raise(gen):
    arch = Architecture((6,) * 4, "none", "columns")
    prob = data.teacher_student(arch, samples=30, condition=3.0, teacher_free_layer="first", generator=gen(10))
    with pytest.raises(ValueError, match="^not a solution: .*free_layer=none"):
        theory.local_spectrum(solution(prob, arch), arch, prob.moments)
    assert theory.predicted_loss_rate(prob, arch, 0.1) is None
    assert theory.local_spectrum(solution(prob, arch), arch, prob.moments, method="gd").lam_min > 0  # GD: a solution
    free = Architecture((6,) * 4)
    assert theory.predicted_loss_rate(prob, free, 0.1) is not None
    near = init.perturb(solution(prob, free), free, delta=1e-3, generator=gen(11))
    with pytest.raises(theory.NotASolution, match=r"^not a solution: ‖\(P − P\*\)Σ\^½‖"):
        theory.local_spectrum(near, free, prob.moments)
    noisy = teacher_problem(free, gen(12), noise=0.1)
    assert theory.predicted_loss_rate(noisy, free, 0.1) is None
    assert theory.predicted_loss_rate(data.Problem(prob.X, prob.Y, prob.moments), free, 0.1) is None
    with pytest.raises(ValueError, match="optim.balance"):
        theory.local_spectrum(solution(prob, free), free, prob.moments, balance="l2")


def test_float32_solution_gives_the_float64_spectrum(gen):
    """The operator is evaluated in float64; a float32 teacher passes the (looser) default solution check."""
    arch = Architecture((6, 5, 5, 4), "last", "rows")
    specs = [theory.local_spectrum(solution(p, arch), arch, p.moments, balance="frobenius") for p in
             (data.teacher_student(arch, samples=30, condition=3.0, teacher_free_layer="last", generator=gen(13),
                                   dtype=dtype) for dtype in (torch.float32, F64))]
    assert specs[0].count == specs[1].count
    assert (specs[0].lam_min, specs[0].lam_max) == pytest.approx((specs[1].lam_min, specs[1].lam_max), rel=1e-5)


@pytest.mark.parametrize("method", ["rgd", "gd"])
def test_gauge_eigenvalues_are_found_and_excluded(method, gen):
    """On (6,)*5 the step map's eigenvalue 1 has exactly the multiplicity of the gauge group acting on the three
    hidden widths — O(6)³ for RGD (3·15), GL(6)³ for plain GD (3·36) — and the theory's count is the rest."""
    widths = (6,) * 5
    arch = Architecture(widths, "first", "columns")
    prob = teacher_problem(arch, gen(3), correlated=False)
    W = solution(prob, arch)
    spec = theory.local_spectrum(W, arch, prob.moments, method=method)
    phi = step_map(arch, prob, Optimizer(spec.mu_opt, method=method, retraction="qr"))
    U, _ = tangent_basis(W, arch, method)
    J = torch.stack([flat(central_difference(phi, W, unflatten(u, W))) for u in U.mT], dim=1)
    ev = torch.linalg.eigvals(U.mT @ J).real
    gauge = sum(d * (d - 1) // 2 if method == "rgd" else d * d for d in widths[1:-1])
    assert int(((ev - 1).abs() <= 1e-6).sum()) == gauge
    assert spec.count == U.shape[1] - gauge == widths[0] * widths[-1]
