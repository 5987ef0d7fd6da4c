"""Regression problems: teacher–student data, second moments, whitening, teachers; MNIST's IDX files."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest
import torch

from orthoscale import data, init, mnist, network, optim, train
from orthoscale.data import Problem
from orthoscale.network import Architecture

F64 = torch.float64


def eye(d):
    return torch.eye(d, dtype=F64)


def sample_loss(P, X, Y):
    return 0.5 * float(((P @ X - Y) ** 2).sum()) / X.shape[1]


# ---------------------------------------------------------------- teacher–student

@pytest.mark.parametrize("widths,orientation,teacher_free", [((5, 6, 6, 8), "columns", "first"),
                                                             ((9, 8, 8, 6, 6, 5), "rows", "first"),
                                                             ((6,) * 5, "columns", "last")])
def test_teacher_student_is_whitened_and_noiseless(widths, orientation, teacher_free, gen):
    arch = Architecture(widths, "first", orientation)
    m = 37
    prob = data.teacher_student(arch, samples=m, condition=3, scale=1.5, teacher_free_layer=teacher_free,
                                generator=gen(1))
    X, Y, W = prob.X, prob.Y, prob.target
    assert X.shape == (widths[0], m) and Y.shape == (widths[-1], m) and W.shape == (widths[-1], widths[0])
    assert float((X @ X.mT / m - eye(widths[0])).abs().max()) <= 1e-12
    assert float((Y - W @ X).abs().max()) <= 1e-12
    mom = prob.moments
    assert mom.sxx is None
    assert float((mom.p_star - W).abs().max()) <= 1e-12
    assert float((mom.syx - W).abs().max()) <= 1e-12
    assert mom.loss_star <= 1e-14 * mom.loss_zero
    assert mom.loss_zero == pytest.approx(0.5 * float((W ** 2).sum()), rel=1e-12)
    # the same generator seed rebuilds the teacher: teacher_student draws it first
    teacher_arch = Architecture(widths, teacher_free, orientation)
    T = init.teacher_blocks(teacher_arch, condition=3, scale=1.5, generator=gen(1))
    assert torch.equal(network.end_to_end(T), W)
    assert prob.teacher is not None and len(prob.teacher) == arch.depth
    assert all(torch.equal(a, b) for a, b in zip(prob.teacher, network.layers(T)))


def test_teacher_student_with_noise(gen):
    arch = Architecture((5, 6, 6, 6))
    m, noise = 400, 0.1
    prob = data.teacher_student(arch, samples=m, condition=2, noise=noise, generator=gen(2))
    R = prob.Y - prob.target @ prob.X
    assert 0.05 < float(R.std()) < 0.15
    mom = prob.moments
    # L* is the residual of the noise after projecting out the d_0-dimensional row space of X
    expected = 0.5 * noise ** 2 * arch.widths[-1] * (m - arch.widths[0]) / m
    assert mom.loss_star == pytest.approx(expected, rel=0.2)
    assert mom.loss_star == pytest.approx(sample_loss(mom.p_star, prob.X, prob.Y), rel=1e-10)


def test_whitened_gaussian(gen):
    X = data.whitened_gaussian(7, 20, generator=gen(3))
    assert X.shape == (7, 20)
    assert float((X @ X.mT / 20 - eye(7)).abs().max()) <= 1e-13
    square = data.whitened_gaussian(7, 7, generator=gen(3))
    assert float((square @ square.mT / 7 - eye(7)).abs().max()) <= 1e-13
    with pytest.raises(ValueError, match=r"data\.samples=6 must be ≥ d_0=7"):
        data.whitened_gaussian(7, 6, generator=gen(3))


# ---------------------------------------------------------------- second moments

def raw_problem(generator, d0=5, dN=4, m=200, rank=None):
    B = torch.randn(d0, rank or d0, generator=generator, dtype=F64)
    X = B @ torch.randn(rank or d0, m, generator=generator, dtype=F64) + 0.7
    Y = torch.randn(dN, d0, generator=generator, dtype=F64) @ X + 0.5 * torch.randn(dN, m, generator=generator,
                                                                                    dtype=F64)
    return X, Y


@pytest.mark.parametrize("rank", [None, 3])
def test_loss_splits_into_loss_star_plus_excess(rank, gen):
    """L(P) on the samples = L* + ½ tr((P − P*) Σ_xx (P − P*)ᵀ) for every P, Σ_xx ≠ I (rank-deficient too)."""
    g = gen(4)
    X, Y = raw_problem(g, rank=rank)
    mom = data.second_moments(X, Y)
    assert mom.sxx is not None
    m = X.shape[1]
    assert float((mom.sxx - X @ X.mT / m).abs().max()) <= 1e-14 * float(mom.sxx.abs().max())
    assert float((mom.syx - Y @ X.mT / m).abs().max()) <= 1e-12
    assert mom.loss_zero == pytest.approx(sample_loss(torch.zeros(4, 5, dtype=F64), X, Y), rel=1e-14)
    assert mom.loss_star == pytest.approx(sample_loss(mom.p_star, X, Y), rel=1e-10)
    for k in range(5):
        P = mom.p_star + torch.randn(4, 5, generator=g, dtype=F64) * 10.0 ** (k - 3)
        D = P - mom.p_star
        excess = 0.5 * float(torch.trace(D @ mom.sxx @ D.mT))
        assert sample_loss(P, X, Y) == pytest.approx(mom.loss_star + excess, rel=1e-12)
    # P* is the least-squares map (its prediction, in the rank-deficient case)
    lstsq = torch.linalg.lstsq(X.mT, Y.mT, driver="gelsd").solution.mT
    assert float((mom.p_star @ X - lstsq @ X).abs().max()) <= 1e-9


def test_second_moments_recognises_identity(gen):
    X = data.whitened_gaussian(6, 50, generator=gen(5))
    Y = torch.randn(3, 50, generator=gen(6), dtype=F64)
    mom = data.second_moments(X, Y)
    assert mom.sxx is None and torch.equal(mom.p_star, mom.syx)
    assert mom.loss_star == pytest.approx(sample_loss(mom.p_star, X, Y), rel=1e-12)
    assert data.second_moments(1.01 * X, Y).sxx is not None


# ---------------------------------------------------------------- whitening

def test_whiten_subspace(gen):
    g = gen(7)
    full = torch.randn(6, 6, generator=g, dtype=F64) @ torch.randn(6, 300, generator=g, dtype=F64) + 3.0
    W = data.whiten(full, mode="subspace")
    assert W.shape == (6, 300)
    assert float(W.mean(dim=1).abs().max()) <= 1e-12
    assert float((W @ W.mT / 300 - eye(6)).abs().max()) <= 1e-12
    low = torch.randn(6, 4, generator=g, dtype=F64) @ torch.randn(4, 300, generator=g, dtype=F64)
    Wl = data.whiten(low, mode="subspace")
    assert Wl.shape == (4, 300)  # the null directions are dropped
    assert float((Wl @ Wl.mT / 300 - eye(4)).abs().max()) <= 1e-12


def test_whiten_epsilon(gen):
    g = gen(8)
    full = torch.randn(6, 6, generator=g, dtype=F64) @ torch.randn(6, 300, generator=g, dtype=F64)
    W = data.whiten(full, mode="epsilon", eps=1e-9)
    assert W.shape == (6, 300)
    assert float((W @ W.mT / 300 - eye(6)).abs().max()) <= 1e-6
    low = torch.randn(6, 4, generator=g, dtype=F64) @ torch.randn(4, 300, generator=g, dtype=F64)
    Wl = data.whiten(low, mode="epsilon", eps=1e-9)
    assert Wl.shape == (6, 300)  # keeps d rows: Σ_xx ≈ the projector on the range
    lam = torch.linalg.eigvalsh(Wl @ Wl.mT / 300)
    assert float(lam[:2].abs().max()) <= 1e-6 and float((lam[2:] - 1).abs().max()) <= 1e-6
    with pytest.raises(ValueError, match=r"data\.whiten='zca' is not one of"):
        data.whiten(full, mode="zca")


# ---------------------------------------------------------------- teachers and initialisations

@pytest.mark.parametrize("free,orientation,widths", [("first", "columns", (5, 6, 6, 8)),
                                                     ("last", "columns", (5, 6, 6, 8)),
                                                     ("first", "rows", (9, 8, 8, 6))])
def test_teacher_free_layer_has_the_condition_number(free, orientation, widths, gen):
    arch = Architecture(widths, free, orientation)
    T = init.teacher_blocks(arch, condition=4, scale=2.0, generator=gen(9))
    assert network.orthonormality_error(T, arch) <= 1e-12
    f = arch.free_index
    sv = torch.linalg.svdvals(network.layers(T)[f - 1])
    r = sv.numel()
    expected = 2.0 * 4.0 ** (-torch.arange(r, dtype=F64) / (r - 1))
    assert float((sv - expected).abs().max()) <= 1e-12


@pytest.mark.parametrize("free", ["first", "last"])
def test_spectral_init_product(free, gen):
    """Square widths: the product is exactly σ̄ U_r V_rᵀ of P*."""
    arch = Architecture((6,) * 4, free)
    P_star = torch.randn(6, 6, generator=gen(10), dtype=F64)
    blocks = init.spectral_blocks(arch, P_star, generator=gen(11))
    assert network.orthonormality_error(blocks, arch) <= 1e-12
    U, s, Vh = torch.linalg.svd(P_star)
    assert float((network.end_to_end(blocks) - s.mean() * U @ Vh).abs().max()) <= 1e-12


# ---------------------------------------------------------------- MNIST IDX files

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_roundtrip(tmp_path):
    a = (np.arange(2 * 3 * 4) * 7 % 256).reshape(2, 3, 4).astype(np.uint8)
    raw = idx_bytes(a)
    (tmp_path / "x-idx3-ubyte").write_bytes(raw)
    out = mnist.read_idx(tmp_path / "x-idx3-ubyte", md5=hashlib.md5(raw).hexdigest())
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and np.array_equal(out, a)
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(mnist.read_idx(tmp_path / "x-idx3-ubyte.gz", md5=hashlib.md5(raw).hexdigest()), a)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "y-idx1-ubyte").write_bytes(idx_bytes(labels))
    assert np.array_equal(mnist.read_idx(tmp_path / "y-idx1-ubyte"), labels)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(mnist.MnistError, match=r"missing: run `make data`"):
        mnist.read_idx(tmp_path / "train-images-idx3-ubyte")


def test_read_idx_truncated(tmp_path):
    raw = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    (tmp_path / "body").write_bytes(raw[:-7])
    with pytest.raises(mnist.MnistError, match=r"truncated: 93 bytes of data for dims \(4, 5, 5\)"):
        mnist.read_idx(tmp_path / "body")
    (tmp_path / "header").write_bytes(raw[:10])
    with pytest.raises(mnist.MnistError, match="truncated in its header"):
        mnist.read_idx(tmp_path / "header")
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(mnist.MnistError, match="truncated"):  # any size mismatch is refused
        mnist.read_idx(tmp_path / "long")


def test_read_idx_bad_magic(tmp_path):
    raw = bytearray(idx_bytes(np.zeros((3, 2), dtype=np.uint8)))
    raw[2] = 0x0D  # float32 data: not the unsigned-byte IDX MNIST uses
    (tmp_path / "f").write_bytes(bytes(raw))
    with pytest.raises(mnist.MnistError, match=r"not an IDX file of unsigned bytes \(bad magic 00000d02\)"):
        mnist.read_idx(tmp_path / "f")
    (tmp_path / "html").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(mnist.MnistError, match="bad magic"):
        mnist.read_idx(tmp_path / "html")


def test_read_idx_wrong_md5(tmp_path):
    raw = idx_bytes(np.ones((2, 2), dtype=np.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw)
    with pytest.raises(mnist.MnistError, match=r"has MD5 [0-9a-f]{32}, expected 0{32}: delete it and run `make data`"):
        mnist.read_idx(tmp_path / "t10k-labels-idx1-ubyte", md5="0" * 32)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.ones((2, 28, 28), dtype=np.uint8)))
    with pytest.raises(mnist.MnistError, match="t10k-images-idx3-ubyte has MD5"):
        mnist.load(tmp_path, "t10k")  # well-formed but not the real file: refused


# ---------------------------------------------------------------- the real MNIST

@pytest.fixture(scope="module")
def mnist_train(mnist_root):
    return mnist.load(mnist_root, "train")


def test_real_mnist_files(mnist_train, mnist_root):
    images, labels = mnist_train
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels, minlength=10).min() > 5000  # every digit well represented
    assert 20 < images.mean() < 50 and images.max() == 255
    test_images, test_labels = mnist.load(mnist_root, "t10k")
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,)
    assert set(np.unique(test_labels)) == set(range(10))


def test_mnist_problem_onehot(mnist_root, mnist_train):
    prob = mnist.mnist_problem(mnist_root, samples=2000)
    X, Y = prob.X, prob.Y
    d, m = X.shape
    assert m == 2000 and 100 < d <= 784
    assert float(X.mean(dim=1).abs().max()) <= 1e-10
    assert float((X @ X.mT / m - eye(d)).abs().max()) <= 1e-10
    assert prob.moments.sxx is None
    assert Y.shape == (10, 2000)
    assert torch.equal(Y.sum(dim=0), torch.ones(2000, dtype=F64))
    assert bool(((Y == 0) | (Y == 1)).all())
    assert torch.equal(Y.argmax(dim=0), torch.from_numpy(mnist_train[1][:2000].astype(np.int64)))
    assert prob.target is None and prob.teacher is None
    assert 0 < prob.moments.loss_star < prob.moments.loss_zero == pytest.approx(0.5, rel=1e-12)


def test_mnist_problem_teacher_targets(mnist_root):
    arch = Architecture((784, 10, 10, 10), "first")
    prob = mnist.mnist_problem(mnist_root, samples=1500, targets="teacher", arch=arch, condition=3,
                               generator=torch.Generator().manual_seed(12))
    d = prob.X.shape[0]
    assert prob.target.shape == (10, d) and prob.Y.shape == (10, 1500)
    assert float((prob.Y - prob.target @ prob.X).abs().max()) <= 1e-12
    assert prob.moments.sxx is None
    assert float((prob.moments.p_star - prob.target).abs().max()) <= 1e-10
    assert prob.moments.loss_star <= 1e-12 * prob.moments.loss_zero
    assert prob.teacher is not None and prob.teacher[0].shape == (10, d)
    P = prob.teacher[0]
    for W in prob.teacher[1:]:
        P = W @ P
    assert float((P - prob.target).abs().max()) <= 1e-12
    sv = torch.linalg.svdvals(prob.target)
    assert float(sv[0] / sv[-1]) == pytest.approx(3.0, rel=1e-10)
    again = mnist.mnist_problem(mnist_root, samples=1500, targets="teacher", arch=arch, condition=3,
                                generator=torch.Generator().manual_seed(12))
    assert torch.equal(again.target, prob.target)


def test_mnist_problem_input_checks(mnist_root):
    with pytest.raises(ValueError, match=r"data\.targets='digits' is not one of onehot, teacher"):
        mnist.mnist_problem(mnist_root, samples=100, targets="digits")
    with pytest.raises(ValueError, match="needs the model's architecture and a seed"):
        mnist.mnist_problem(mnist_root, samples=100, targets="teacher")
    with pytest.raises(mnist.MnistError, match="make data"):
        mnist.mnist_problem(mnist_root / "nowhere", samples=100)


def test_a_problem_without_a_teacher_is_immutable_and_trains_without_an_end_to_end_error(gen):
    """A Problem built from samples alone (no W*, no teacher layers): its moments give P* and L(0), it cannot be
    changed after the fact, and training on it tracks the loss but no end-to-end error."""
    X = data.whitened_gaussian(3, 10, generator=gen(13))
    A = torch.randn(3, 3, generator=gen(14), dtype=F64)
    prob = Problem(X, A @ X, data.second_moments(X, A @ X))
    assert prob.target is None and prob.teacher is None
    assert float((prob.moments.p_star - A).abs().max()) <= 1e-12
    assert prob.moments.loss_zero == pytest.approx(0.5 * float((A ** 2).sum()), rel=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prob.target = A
    arch = Architecture((3, 3, 3))
    traj, _ = train.train(prob, arch, init.random_blocks(arch, generator=gen(15)), optim.Optimizer(0.1),
                          train.StopRules(max_iters=50))
    assert traj.e2e_error == [] and len(traj.loss) == traj.steps + 1
    assert traj.rel_excess[-1] < 0.5 * traj.rel_excess[0]


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu"])
def test_nonlinear_teacher_is_realizable_by_its_own_architecture(activation, gen):
    """A teacher with an activation: Y = f_teacher(X), no end-to-end matrix; the student of that architecture
    at the teacher's layers fits Y exactly."""
    arch = Architecture((6, 5, 5, 5, 4), "first", "rows", activation)
    prob = data.teacher_student(arch, samples=40, activation=activation, generator=gen(41))
    assert prob.target is None and len(prob.teacher) == arch.depth
    T = network.stack(list(prob.teacher), arch)
    assert float((network.forward(T, arch, prob.X) - prob.Y).abs().max()) <= 1e-13
    linear = data.teacher_student(Architecture((6, 5, 5, 5, 4), "first", "rows"), samples=40, generator=gen(41))
    assert float((linear.Y - prob.Y).abs().max()) > 1e-3  # the activation is really applied
