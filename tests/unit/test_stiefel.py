"""Stiefel manifold St(n, p): tangent projection, retractions, polar factors, Haar points."""
from __future__ import annotations

import pytest
import torch

from orthoscale import scan, stiefel

F64, F32 = torch.float64, torch.float32
ORTHO_TOL = {F64: 1e-12, F32: 1e-5}
# (n, p) plus batch dims: square, tall, and a (3, 2) batch of tall matrices
SHAPES = [((), 5, 5), ((), 7, 3), ((4,), 6, 6), ((3, 2), 9, 4), ((3, 2), 8, 1)]


def point_and_tangent(batch, n, p, generator, dtype=F64, scale=1.0):
    """A Haar point W and a tangent ξ at W with ‖ξ‖_F = scale (per matrix), built in f64 then cast."""
    W = stiefel.random_point(n, p, *batch, generator=generator, dtype=F64)
    Z = torch.randn(*batch, n, p, generator=generator, dtype=F64)
    xi = stiefel.project(W, Z)
    xi = scale * xi / torch.linalg.matrix_norm(xi)[..., None, None]
    return W.to(dtype), xi.to(dtype)


# ---------------------------------------------------------------- projection

@pytest.mark.parametrize("batch,n,p", SHAPES)
def test_projection_is_idempotent_and_tangent(batch, n, p, gen):
    g = gen(1)
    W = stiefel.random_point(n, p, *batch, generator=g)
    Z = torch.randn(*batch, n, p, generator=g, dtype=F64)
    PZ = stiefel.project(W, Z)
    assert PZ.shape == Z.shape
    assert float(torch.linalg.matrix_norm(stiefel.sym(W.mT @ PZ)).max()) <= 1e-12
    assert float((stiefel.project(W, PZ) - PZ).abs().max()) <= 1e-12
    # the normal space {W S : S symmetric} is its kernel, so Z − P(Z) is normal
    S = stiefel.sym(torch.randn(*batch, p, p, generator=g, dtype=F64))
    assert float(stiefel.project(W, W @ S).abs().max()) <= 1e-12
    N = Z - PZ
    assert float((N - W @ stiefel.sym(W.mT @ N)).abs().max()) <= 1e-12
    # and it is an orthogonal projection: ⟨P(Z), Z − P(Z)⟩ = 0
    assert float((PZ * N).sum(dim=(-2, -1)).abs().max()) <= 1e-12


def test_projection_float32(gen):
    W, _ = point_and_tangent((3, 2), 9, 4, gen(2), F32)
    Z = torch.randn(3, 2, 9, 4, generator=gen(3)).to(F32)
    PZ = stiefel.project(W, Z)
    assert PZ.dtype == F32
    assert float(torch.linalg.matrix_norm(stiefel.sym(W.mT @ PZ)).max()) <= 1e-5


def test_sym_and_eye_like():
    A = torch.arange(6.0, dtype=F64).reshape(1, 2, 3)[..., :2]  # (1, 2, 2)
    S = stiefel.sym(A)
    assert torch.equal(S, S.mT)
    assert torch.equal(S + (A - A.mT) / 2, A)
    W = torch.zeros(4, 7, 3, dtype=F32)
    I = stiefel.eye_like(W)
    assert I.shape == (3, 3) and I.dtype == F32 and torch.equal(I, torch.eye(3, dtype=F32))


# ---------------------------------------------------------------- random points

@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("batch,n,p", SHAPES)
def test_random_point_is_orthonormal(batch, n, p, dtype, gen):
    W = stiefel.random_point(n, p, *batch, generator=gen(4), dtype=dtype)
    assert W.shape == (*batch, n, p) and W.dtype == dtype
    assert float(stiefel.orthonormality_error(W).max()) <= ORTHO_TOL[dtype]


def test_random_point_is_seeded_and_rejects_wide(gen):
    assert torch.equal(stiefel.random_point(6, 3, 2, generator=gen(5)),
                       stiefel.random_point(6, 3, 2, generator=gen(5)))
    assert not torch.equal(stiefel.random_point(6, 3, generator=gen(5)),
                           stiefel.random_point(6, 3, generator=gen(6)))
    with pytest.raises(ValueError, match=r"n=3, p=5"):
        stiefel.random_point(3, 5, generator=gen(0))


def test_random_point_is_haar(gen):
    """Haar moments: E[W] = 0 and E[W Wᵀ] = (p/n) I. A QR without the sign fix biases E[W]."""
    n, p, count = 5, 2, 4000
    W = stiefel.random_point(n, p, count, generator=gen(7))
    assert float(W.mean(dim=0).abs().max()) < 0.03
    second = (W @ W.mT).mean(dim=0)
    assert float((second - (p / n) * torch.eye(n, dtype=F64)).abs().max()) < 0.03
    # the first column is uniform on the sphere: its first coordinate is symmetric about 0
    assert abs(float((W[:, 0, 0] > 0).double().mean()) - 0.5) < 0.04


def test_qr_q_has_positive_diagonal_r(gen):
    A = torch.randn(3, 2, 8, 4, generator=gen(8), dtype=F64)
    Q = stiefel.qr_q(A)
    R = Q.mT @ A
    assert float((Q @ R - A).abs().max()) <= 1e-12
    assert float(R.tril(-1).abs().max()) <= 1e-12
    assert bool((torch.diagonal(R, dim1=-2, dim2=-1) > 0).all())
    assert float(stiefel.orthonormality_error(Q).max()) <= 1e-12


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("batch,n,p", SHAPES)
def test_cholesky_qr_matches_householder_near_the_manifold(batch, n, p, dtype, gen):
    """W + ξ with ‖ξ‖_F ≤ 1: CholeskyQR gives qr_q's Q (diag(R) > 0) to rounding, as orthonormal."""
    for scale in (1e-3, 1.0):
        W, xi = point_and_tangent(batch, n, p, gen(15), dtype, scale)
        Q = stiefel.qr_q_near_orthonormal(W + xi)
        assert float((Q - stiefel.qr_q(W + xi)).abs().max()) <= 50 * ORTHO_TOL[dtype]
        assert float(stiefel.orthonormality_error(Q).max()) <= ORTHO_TOL[dtype]
        R = Q.mT @ (W + xi)
        assert bool((torch.diagonal(R, dim1=-2, dim2=-1) > 0).all())


def test_near_manifold_bounds_the_condition_number(gen):
    """near_manifold(ξ) holds exactly while ‖ξ‖_F ≤ NEAR_STEP for every matrix of the stack, and then
    κ(W + ξ)² ≤ 2, the bound CholeskyQR's accuracy rests on."""
    W, xi = point_and_tangent((4,), 9, 5, gen(17), F64, 1.0)
    s = torch.linalg.svdvals(W + 0.999 * xi)
    assert stiefel.near_manifold(0.999 * xi) and float((s[..., 0] / s[..., -1]).max()) ** 2 <= 2
    far = xi.clone()
    far[2] *= 1.01
    assert not stiefel.near_manifold(far)


def test_cholesky_qr_falls_back_where_the_factorisation_fails(gen):
    """A rank-deficient matrix in the stack (its Gram matrix is not positive definite): the whole stack takes
    Householder's QR, the same Q as qr_q."""
    A = stiefel.random_point(6, 4, 3, generator=gen(16))
    A[1, :, 2] = 0
    assert torch.equal(stiefel.qr_q_near_orthonormal(A), stiefel.qr_q(A))


# ---------------------------------------------------------------- retractions

@pytest.mark.parametrize("method", stiefel.RETRACTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("batch,n,p", SHAPES)
@pytest.mark.parametrize("scale", [1e-3, 0.7, 8.0])
def test_retraction_stays_on_manifold(method, dtype, batch, n, p, scale, gen):
    W, xi = point_and_tangent(batch, n, p, gen(9), dtype, scale)
    R = stiefel.retract(W, xi, method)
    assert R.shape == W.shape and R.dtype == dtype
    assert bool(torch.isfinite(R).all())
    assert float(stiefel.orthonormality_error(R).max()) <= ORTHO_TOL[dtype]


@pytest.mark.parametrize("method", stiefel.RETRACTIONS)
@pytest.mark.parametrize("batch,n,p", SHAPES)
def test_retraction_is_first_order(method, batch, n, p, gen):
    """‖Retr_W(tξ) − (W + tξ)‖ = O(t²): err/t² bounded, err/t → 0."""
    W, xi = point_and_tangent(batch, n, p, gen(10), F64)
    ts = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4]
    errs = [float(torch.linalg.matrix_norm(stiefel.retract(W, t * xi, method) - (W + t * xi)).max()) for t in ts]
    second = [e / t ** 2 for e, t in zip(errs, ts)]
    first = [e / t for e, t in zip(errs, ts)]
    assert max(second) <= 2.0 * second[0] + 1e-6, second       # bounded by its value at the largest t
    assert max(second) <= 10.0, second                          # ‖ξ‖ = 1: the constant is O(1)
    assert all(b < a for a, b in zip(first, first[1:])), first  # err/t decreases with t …
    assert first[-1] <= 1e-3, first                             # … towards 0


@pytest.mark.parametrize("method", stiefel.RETRACTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_retraction_of_zero_is_identity(method, dtype, gen):
    W = stiefel.random_point(9, 4, 3, 2, generator=gen(11), dtype=dtype)
    R = stiefel.retract(W, torch.zeros_like(W), method)
    assert float((R - W).abs().max()) <= ORTHO_TOL[dtype]


def test_qr_retraction_is_sign_fixed(gen):
    """Without the sign fix Q of W = Q R could flip columns: Retr_W(0) = W needs diag(R) > 0."""
    W = stiefel.random_point(7, 3, 5, generator=gen(12))
    W = W * torch.tensor([1.0, -1.0, 1.0], dtype=F64)  # still a point; sign of columns must be kept
    assert float((stiefel.retract(W, torch.zeros_like(W), "qr") - W).abs().max()) <= 1e-12
    xi = 1e-2 * stiefel.project(W, torch.randn(5, 7, 3, generator=gen(13), dtype=F64))
    assert float((stiefel.retract(W, xi, "qr") - W).abs().max()) <= 0.05


def test_retractions_agree_to_second_order(gen):
    W, xi = point_and_tangent((4,), 8, 3, gen(14), F64, 1e-3)
    ref = stiefel.retract(W, xi, "polar_svd")
    for method in stiefel.RETRACTIONS:
        assert float((stiefel.retract(W, xi, method) - ref).abs().max()) <= 1e-5


def test_unknown_retraction_is_rejected(gen):
    W, xi = point_and_tangent((), 4, 2, gen(0))
    with pytest.raises(ValueError, match=r"retraction='householder'.*polar"):
        stiefel.retract(W, xi, "householder")


# ---------------------------------------------------------------- polar factors

def check_polar(A, Q, tol):
    """Q is the polar factor of A: orthonormal columns and QᵀA symmetric positive definite."""
    assert float(stiefel.orthonormality_error(Q).max()) <= tol
    H = Q.mT @ A
    assert float((H - H.mT).abs().max()) <= tol * max(1.0, float(A.abs().max()))
    assert bool((torch.linalg.eigvalsh(stiefel.sym(H)) > 0).all())


@pytest.mark.parametrize("batch,n,p", SHAPES)
def test_polar_svd_is_the_polar_factor(batch, n, p, gen):
    A = torch.randn(*batch, n, p, generator=gen(15), dtype=F64)
    check_polar(A, stiefel.polar_svd(A), 1e-12)
    A32 = A.to(F32)
    Q32 = stiefel.polar_svd(A32)
    assert Q32.dtype == F32
    assert float((Q32.double() - stiefel.polar_svd(A)).abs().max()) <= 1e-6


@pytest.mark.parametrize("batch,n,p", SHAPES)
def test_newton_schulz_equals_svd_polar(batch, n, p, gen):
    A = torch.randn(*batch, n, p, generator=gen(16), dtype=F64)
    NS = stiefel.polar_newton_schulz(A)
    assert NS.shape == A.shape
    assert float((NS - stiefel.polar_svd(A)).abs().max()) <= 1e-10
    check_polar(A, NS, 1e-12)


@pytest.mark.parametrize("batch,n,p", SHAPES)
@pytest.mark.parametrize("scale", [1e-2, 1.0, 20.0])
def test_polar_retraction_equals_svd_polar(batch, n, p, scale, gen):
    W, xi = point_and_tangent(batch, n, p, gen(17), F64, scale)
    assert float((stiefel.retract(W, xi, "polar") - stiefel.retract(W, xi, "polar_svd")).abs().max()) <= 1e-10
    assert float((stiefel.retract(W, xi, "polar_svd") - stiefel.polar_svd(W + xi)).abs().max()) <= 1e-14


@pytest.mark.parametrize("batch,n,p", SHAPES)
@pytest.mark.parametrize("scale", [1e-2, 0.9, 1.1, 20.0])
def test_tangent_scale_keeps_singular_values_below_root_two(batch, n, p, scale, gen):
    """σ_max(W + ξ)/c ≤ √2 (Newton–Schulz converges below √3), and c = 1 (no scaling) while ‖ξ‖_F ≤ 1."""
    W, xi = point_and_tangent(batch, n, p, gen(20), F64, scale)
    c = stiefel.tangent_scale(xi)
    assert c.shape == xi.shape[:-2]
    assert bool((torch.linalg.matrix_norm(W + xi, ord=2) / c <= 2 ** 0.5 + 1e-12).all())
    assert bool((c == 1).all()) == (scale <= 1)


@pytest.mark.parametrize("d", [6, 70])  # polar(I − Ω) by one eigh; by Newton–Schulz from d = scan.WIDE on
@pytest.mark.parametrize("scale", [1e-3, 0.3, 5.0])
def test_polar_in_frame_equals_the_polar_retraction_of_every_layer(scale, d, gen):
    """W_j = C_j C_{j−1}ᵀ and ξ_j = −C_j Ω C_{j−1}ᵀ (Ω skew, the form of a tangent vector in the frame):
    C_j polar(I − Ω) C_{j−1}ᵀ is the polar retraction of every layer, and stays orthogonal to rounding."""
    assert (d >= scan.WIDE) == (d == 70)
    g = gen(31)
    C = stiefel.random_point(d, d, 40, generator=g)
    C[0] = torch.eye(d, dtype=F64)
    Z = torch.randn(d, d, generator=g, dtype=F64)
    Omega = scale * (Z - Z.mT) / 2
    W = C[1:] @ C[:-1].mT
    xi = -(C[1:] @ Omega) @ C[:-1].mT
    assert float((stiefel.project(W, xi) - xi).abs().max()) <= 1e-13  # ξ is tangent
    X = stiefel.polar_in_frame(C, torch.eye(d, dtype=F64) - Omega)
    assert float((X - stiefel.retract(W, xi, "polar_svd")).abs().max()) <= 1e-12
    assert float(stiefel.orthonormality_error(X).max()) <= 1e-14


def test_polar_in_frame_removes_drift_of_the_frame(gen):
    """Prefixes off orthogonality by 1e-9 (as rounding accumulates along a deep chain): the result is
    orthogonal to rounding again, not 1e-9 off."""
    g = gen(32)
    C = stiefel.random_point(5, 5, 30, generator=g)
    C = C + 1e-9 * torch.randn(C.shape, generator=g, dtype=F64)
    X = stiefel.polar_in_frame(C, torch.eye(5, dtype=F64))
    assert float(stiefel.orthonormality_error(C[1:] @ C[:-1].mT).max()) > 1e-10
    assert float(stiefel.orthonormality_error(X).max()) <= 1e-14


@pytest.mark.parametrize("batch,n,p", SHAPES)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 5.0])
def test_polar_eigh_equals_svd_polar(batch, n, p, scale, gen):
    """A (AᵀA)^{−1/2} by one eigh: the polar factor of a point plus a tangent vector to 1e-12."""
    W, xi = point_and_tangent(batch, n, p, gen(33), F64, scale)
    Q = stiefel.polar_eigh(W + xi)
    assert Q.shape == W.shape
    assert float((Q - stiefel.polar_svd(W + xi)).abs().max()) <= 1e-12
    check_polar(W + xi, Q, 1e-12)


def test_newton_schulz_step_with_and_without_buffers(gen):
    """X (3I − XᵀX)/2 against the formula to rounding, orthonormality error squared (≤ err² here); the
    buffers' old contents (NaN here) are never read."""
    g = gen(34)
    X = stiefel.random_point(7, 7, 50, generator=g) + 1e-6 * torch.randn(50, 7, 7, generator=g, dtype=F64)
    ref = X @ ((3 * torch.eye(7, dtype=F64) - X.mT @ X) / 2)
    out, scratch = torch.full_like(X, float("nan")), torch.full_like(X, float("nan"))
    got = stiefel.newton_schulz_step(X, out=out, scratch=scratch)
    assert got.data_ptr() == out.data_ptr()
    assert float((got - ref).abs().max()) <= 1e-15
    assert torch.equal(stiefel.newton_schulz_step(X), got)
    assert float(stiefel.orthonormality_error(got).max()) <= float(stiefel.orthonormality_error(X).max()) ** 2


@pytest.mark.parametrize("k,d", [(2000, 10), (300, 32)])
def test_polar_in_frame_of_a_chunked_frame_in_groups(k, d, gen):
    """A long narrow stack (scan.Chunked, updated in several groups of chunks): the same layers as the naive
    C_j polar(A) C_{j−1}ᵀ followed by one Newton–Schulz step, to 1e-12; bit-identical with and without
    buffers (NaN-filled)."""
    g = gen(35)
    W = stiefel.random_point(d, d, k, generator=g)
    Z = torch.randn(d, d, generator=g, dtype=F64)
    A = torch.eye(d, dtype=F64) - 0.05 * (Z - Z.mT)
    chunks = scan.frame_prefixes(W)
    assert len(chunks.groups()) > 1
    C = chunks.full()
    X = C[1:] @ stiefel.polar_svd(A) @ C[:-1].mT
    ref = X @ ((3 * torch.eye(d, dtype=F64) - X.mT @ X) / 2)
    got = stiefel.polar_in_frame(chunks, A)
    assert got.shape == (k, d, d) and float((got - ref).abs().max()) <= 1e-12
    bufs = tuple(torch.full((chunks.slots, d, d), float("nan"), dtype=F64) for _ in range(2))
    out = torch.full((k, d, d), float("nan"), dtype=F64)
    assert torch.equal(stiefel.polar_in_frame(chunks, A, out=out, scratch=bufs), got)
    assert float(stiefel.orthonormality_error(got).max()) <= 1e-13


def test_newton_schulz_falls_back_to_svd(gen):
    """Matrices that have not converged after max_iter are redone by SVD (batched and single)."""
    g = gen(18)
    A = torch.randn(4, 6, 3, generator=g, dtype=F64)
    A[1] = A[1] @ torch.diag(torch.tensor([1.0, 1e-3, 1e-6], dtype=F64))  # slow: σ_min/σ_max = 1e-6
    ref = stiefel.polar_svd(A)
    for max_iter in (1, 3, 40):
        assert float((stiefel.polar_newton_schulz(A, max_iter=max_iter) - ref).abs().max()) <= 1e-10
    single = A[1]
    assert float((stiefel.polar_newton_schulz(single, max_iter=2) - ref[1]).abs().max()) <= 1e-10


def test_newton_schulz_float32(gen):
    A = torch.randn(3, 2, 9, 4, generator=gen(19), dtype=F64)
    NS = stiefel.polar_newton_schulz(A.to(F32))
    assert NS.dtype == F32
    assert float(stiefel.orthonormality_error(NS).max()) <= 1e-5
    assert float((NS.double() - stiefel.polar_svd(A)).abs().max()) <= 1e-5


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("size", [1e-9, 1e-5, 3e-4, 0.02, 0.6, 1.5, 6.0])  # ‖S‖_F: tol, eps^(1/3), c > 1
def test_polar_near_identity_across_its_branches(dtype, size, gen):
    """polar(I + S), S skew, at d = scan.WIDE, on each of its starts: ‖S‖_F ≤ 1 (c = 1, the first error taken
    from ‖S‖_F²), ‖S‖_F = 1.5 with ‖SᵀS‖_∞ ≈ 0.35 (c = 1 from that bound), ‖S‖_F = 6 (c > 1): the factor
    is the SVD's to rounding, and orthogonal."""
    d = scan.WIDE
    K = torch.randn(d, d, generator=gen(int(1e3 * size) % 97), dtype=F64)
    S = (K - K.mT) * (size / float(torch.linalg.matrix_norm(K - K.mT)))
    A = (torch.eye(d, dtype=F64) + S).to(dtype)
    got = stiefel.polar_near_identity(A)
    tol = 1e-13 if dtype == F64 else ORTHO_TOL[F32]
    assert float((got.double() - stiefel.polar_svd(A.double())).abs().max()) <= tol
    assert float(stiefel.orthonormality_error(got)) <= tol


def test_gram_error_single_and_batched(gen):
    """E = XᵀX − I in one call, for one matrix and for a (2, 3) batch of tall ones."""
    for X in (torch.randn(6, 4, generator=gen(20), dtype=F64), torch.randn(2, 3, 7, 5, generator=gen(21), dtype=F64)):
        ref = X.mT @ X - torch.eye(X.shape[-1], dtype=F64)
        assert float((stiefel.gram_error(X) - ref).abs().max()) <= 1e-14


# ---------------------------------------------------------------- Cayley

@pytest.mark.parametrize("n,p", [(256, 256), (256, 64)])
def test_cayley_batch_of_large_matrices(n, p, gen):
    """A batch of 256×256 solves (pytorch#142815): every matrix right, and equal to its unbatched solve."""
    W, xi = point_and_tangent((4,), n, p, gen(20), F64, 3.0)
    R = stiefel.cayley(W, xi)
    assert R.shape == (4, n, p)
    assert float(stiefel.orthonormality_error(R).max()) <= 1e-12
    for k in range(4):
        assert float((R[k] - stiefel.cayley(W[k], xi[k])).abs().max()) <= 1e-12
    # the defining equation (I − A/2) Y = (I + A/2) W with A = ξ̂Wᵀ − Wξ̂ᵀ, ξ̂ = (I − WWᵀ/2) ξ
    xih = xi - 0.5 * W @ (W.mT @ xi)
    A = xih @ W.mT - W @ xih.mT
    I = torch.eye(n, dtype=F64)
    assert float(((I - 0.5 * A) @ R - (I + 0.5 * A) @ W).abs().max()) <= 1e-10
    assert float((A @ W - xi).abs().max()) <= 1e-12  # A W = ξ: the curve's velocity at 0 is ξ
    # and it is the same point as retract(..., 'cayley'), in float32 too
    assert torch.equal(stiefel.retract(W, xi, "cayley"), R)
    R32 = stiefel.retract(W.to(F32), xi.to(F32), "cayley")
    assert R32.dtype == F32 and float(stiefel.orthonormality_error(R32).max()) <= 1e-4
    assert float((R32.double() - R).abs().max()) <= 1e-5


@pytest.mark.parametrize("shape_c,shape_a,shape_b", [((5, 4), (5, 3), (3, 4)),
                                                     ((2, 3, 5, 4), (2, 3, 5, 3), (2, 3, 3, 4)),
                                                     ((6, 5, 4), (5, 3), (6, 3, 4))])
def test_add_product_is_c_plus_alpha_ab(shape_c, shape_a, shape_b, gen):
    """One GEMM call for equal leading dimensions, the plain sum where they broadcast: C + αAB either way."""
    g = gen(41)
    C, A, B = (torch.randn(s, generator=g, dtype=F64) for s in (shape_c, shape_a, shape_b))
    out = stiefel.add_product(C, A, B, -0.5)
    assert out.shape == C.shape
    assert float((out - (C - 0.5 * (A @ B))).abs().max()) <= 1e-14


def test_gram_error_and_projection_match_their_formulas(gen):
    g = gen(42)
    W = torch.randn(3, 7, 4, generator=g, dtype=F64)
    Z = torch.randn(3, 7, 4, generator=g, dtype=F64)
    assert float((stiefel.gram_error(W) - (W.mT @ W - torch.eye(4, dtype=F64))).abs().max()) <= 1e-14
    assert float((stiefel.project(W, Z) - (Z - W @ stiefel.sym(W.mT @ Z))).abs().max()) <= 1e-13
    rows = torch.randn(3, 4, 7, generator=g, dtype=F64).mT  # a transposed (row-orientation) view
    assert float((stiefel.project(rows, Z) - (Z - rows @ stiefel.sym(rows.mT @ Z))).abs().max()) <= 1e-13


@pytest.mark.parametrize("scale", [1e-3, 3e-3])
def test_newton_schulz_third_order_last_step(scale, gen):
    """A start with tol < max|XᵀX − I| ≤ eps^{1/3} ends in one third-order step (three products, not the
    four of two quadratic iterations) and is as accurate: the SVD polar factor to rounding."""
    from torch.utils.flop_counter import FlopCounterMode
    W, xi = point_and_tangent((3,), 9, 9, gen(43), F64, 1.0)
    xi = scale * xi / torch.linalg.matrix_norm(xi)[..., None, None]
    A = W + xi
    err = float(stiefel.gram_error(A).abs().max())
    assert 2 * torch.finfo(F64).eps ** 0.5 < err <= torch.finfo(F64).eps ** (1 / 3)
    with FlopCounterMode(display=False) as fc:
        X = stiefel.polar_newton_schulz(A, stiefel.tangent_scale(xi))
    assert fc.get_total_flops() == 3 * 3 * 2 * 9 ** 3
    assert float((X - stiefel.polar_svd(A)).abs().max()) <= 1e-14
    assert float(stiefel.orthonormality_error(X).max()) <= 1e-14
