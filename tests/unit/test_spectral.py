"""spectral.lambda_max: λ_max of a PSD Gram matrix to working precision, warm from the last call, by Lanczos to
Temple's bound, or densely (LAPACK ?syevr)."""
from __future__ import annotations

import pytest
import torch

from orthoscale import spectral


def gram(d: int, d0: int, sigma: torch.Tensor | None, generator, dtype) -> torch.Tensor:
    """W Wᵀ for W (d, d0): Gaussian, or with singular values ``sigma`` between Haar factors."""
    W = torch.randn(d, d0, generator=generator, dtype=torch.float64) / d0 ** 0.5
    if sigma is not None:
        U, _, Vh = torch.linalg.svd(W, full_matrices=False)
        W = (U * sigma) @ Vh
    return (W @ W.mT).to(dtype)


def spectra(d: int) -> dict[str, torch.Tensor | None]:
    j = torch.arange(d, dtype=torch.float64)
    return {"gaussian": None, "geometric": 3.0 ** (-j / (d - 1)), "cluster_at_top": torch.where(j < 3, 1.0, 0.5),
            "near_cluster": 1.0 - 1e-9 * j, "rank_deficient": torch.where(j < d // 3, 1.0 / (1 + j), 0.0)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", list(spectra(8)))
@pytest.mark.parametrize("d,d0", [(60, 90), (120, 100)])
def test_lanczos_path_agrees_with_eigvalsh_to_working_precision(d, d0, kind, dtype, gen, monkeypatch):
    """The Lanczos path (forced on for small n) either answers within a few eps of eigvalsh or hands over
    (to ?syevr)."""
    monkeypatch.setattr(spectral, "LANCZOS_MIN", 1)
    G = gram(d, d0, spectra(min(d, d0))[kind], gen(40), dtype)
    ref = torch.linalg.eigvalsh(G.double())[-1]
    got = spectral.lambda_max(G)
    assert got.dtype == dtype and got.shape == ()
    assert abs(float(got) - float(ref)) <= 32 * torch.finfo(dtype).eps * float(ref)


def test_lanczos_answers_on_a_spread_spectrum_and_hands_over_on_a_multiple_top(gen, monkeypatch):
    """A Gaussian Gram is answered by Lanczos itself (Temple's bound met); σ²I (one invariant direction,
    no gap) and a zero matrix are handed to the dense path."""
    monkeypatch.setattr(spectral, "LANCZOS_MIN", 1)
    G = gram(100, 150, None, gen(41), torch.float64)
    top, y, _ = spectral._lanczos(G)
    assert float(y @ G @ y) == pytest.approx(float(top), rel=1e-14)
    assert float(top) == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-14)
    assert spectral._lanczos(2.5 * torch.eye(50, dtype=torch.float64)) is None
    assert float(spectral.lambda_max(2.5 * torch.eye(50, dtype=torch.float64))) == pytest.approx(2.5, rel=1e-15)
    assert float(spectral.lambda_max(torch.zeros(50, 50, dtype=torch.float64))) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wide_gram_by_lanczos(dtype, gen):
    """n = 512 (≥ LANCZOS_MIN), the bench's widths: Lanczos, within a few eps of eigvalsh."""
    assert 512 >= spectral.LANCZOS_MIN
    G = gram(512, 784, None, gen(42), dtype)
    top = spectral._lanczos(G)[0]
    ref = float(torch.linalg.eigvalsh(G.double())[-1])
    assert abs(float(top) - ref) <= 32 * torch.finfo(dtype).eps * ref


def test_top_pair_of_a_tridiagonal_matrix(gen):
    """spectral._top_pair (LAPACK's dstemr for the two largest eigenvalues) against numpy's dense eigh: both
    eigenvalues and the top eigenvector (up to sign) to rounding."""
    import numpy as np

    g = gen(44)
    for k in (2, 16, 40):
        alpha = torch.randn(k, generator=g, dtype=torch.float64).tolist()
        beta = torch.rand(k - 1, generator=g, dtype=torch.float64).tolist()
        t1, t2, s = spectral._top_pair(alpha, beta)
        T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        theta, S = np.linalg.eigh(T)
        assert abs(t1 - theta[-1]) <= 1e-14 * abs(theta).max() and abs(t2 - theta[-2]) <= 1e-14 * abs(theta).max()
        assert abs(abs(float(s @ S[:, -1])) - 1) <= 1e-12


def drifting_grams(n: int, d0: int, steps: int, generator, dtype) -> list[torch.Tensor]:
    """W_t W_tᵀ along W_{t+1} = W_t + 10^{−t/2}·E_t/√d0 (E_t Gaussian): large steps first, then tiny ones, as
    a converging run's Gram matrices move."""
    W = torch.randn(n, d0, generator=generator, dtype=torch.float64) / d0 ** 0.5
    out = []
    for t in range(steps):
        out.append((W @ W.mT).to(dtype))
        W = W + 10 ** (-t / 2) * torch.randn(n, d0, generator=generator, dtype=torch.float64) / d0 ** 0.5
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d0", [(60, 90), (512, 784)])  # eigh, then Lanczos, as the cold path
def test_warm_start_along_a_run_agrees_with_eigvalsh(n, d0, dtype, gen):
    """Along a run of Gram matrices whose steps shrink from 1 to 1e-16 (relative), every answer is within a
    few eps of eigvalsh; the large steps are answered cold and most of the small ones warm."""
    warm, hits = spectral.Warm(), []
    for G in drifting_grams(n, d0, 34, gen(45), dtype):
        before = warm.hits
        got = spectral.lambda_max(G, warm)
        ref = float(torch.linalg.eigvalsh(G.double())[-1])
        assert got.dtype == dtype and abs(float(got) - ref) <= 32 * torch.finfo(dtype).eps * ref
        hits.append(warm.hits - before)
    assert hits[:3] == [0, 0, 0]  # steps of ≥ 10 % of ‖G‖: the bound by Weyl leaves no room
    assert sum(hits[-12:]) >= 10


def test_warm_start_is_not_fooled_by_a_swapped_top_or_a_rewritten_matrix(gen):
    """A step that swaps the top two eigenvalues (the kept vector now belongs to λ_2), a matrix written in
    place after the call (its version moved), and a matrix of another size: each answered right."""
    g = gen(46)
    Q = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=torch.float64))[0]
    spec = torch.linspace(0.1, 0.9, 80, dtype=torch.float64)
    spec[-2:] = torch.tensor([0.999, 1.0], dtype=torch.float64)
    warm = spectral.Warm()
    G = (Q * spec) @ Q.mT
    assert float(spectral.lambda_max(G, warm)) == pytest.approx(1.0, rel=1e-14)
    swapped = spec.clone()
    swapped[-2:] = torch.tensor([1.0005, 0.999], dtype=torch.float64)  # v_80 now at 0.999, v_79 at the top
    H = (Q * swapped) @ Q.mT
    assert float(spectral.lambda_max(H, warm)) == pytest.approx(1.0005, rel=1e-14)
    assert warm.hits == 0
    for _ in range(2):  # the same matrix again: the first call takes the vector (eigh), the next is warm
        assert float(spectral.lambda_max(H.clone(), warm)) == pytest.approx(1.0005, rel=1e-14)
    assert warm.hits == 1
    kept = warm.G
    kept.mul_(3)  # written after the call: not the matrix the bound was made for
    assert not warm.usable(kept)
    assert float(spectral.lambda_max(kept, warm)) == pytest.approx(3.0015, rel=1e-14)
    small = gram(40, 60, None, g, torch.float64)
    assert float(spectral.lambda_max(small, warm)) == pytest.approx(float(torch.linalg.eigvalsh(small)[-1]),
                                                                    rel=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 50, 200])
def test_dense_top_pair(n, dtype, gen):
    """spectral._dense_top (LAPACK ?syevr for the top two): λ_1 and λ_2 within a few eps of eigvalsh, and the
    vector an eigenvector of λ_1 to rounding; λ_2 = 0 for a 1×1 matrix."""
    G = gram(n, n + 30, None, gen(47), dtype)
    ref = torch.linalg.eigvalsh(G.double())
    tol = 32 * torch.finfo(dtype).eps * float(ref[-1])
    for vector in (False, True):
        top, second, y = spectral._dense_top(G, vector)
        assert top.dtype == dtype and top.shape == () and abs(float(top) - float(ref[-1])) <= tol
        assert abs(second - (float(ref[-2]) if n > 1 else 0.0)) <= tol
        if vector:
            y = y.double()
            assert abs(float(y.norm()) - 1) <= tol and float((G.double() @ y - ref[-1] * y).norm()) <= n * tol
        else:
            assert y is None
