"""spectral.lambda_max: λ_max of a PSD Gram matrix to working precision, by Lanczos to Temple's bound or eigvalsh."""
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
    """The Lanczos path (forced on for small n) either answers within a few eps of eigvalsh or hands over."""
    monkeypatch.setattr(spectral, "LANCZOS_MIN", 1)
    G = gram(d, d0, spectra(min(d, d0))[kind], gen(40), dtype)
    ref = torch.linalg.eigvalsh(G.double())[-1]
    got = spectral.lambda_max(G)
    assert got.dtype == dtype and got.shape == ()
    assert abs(float(got) - float(ref)) <= 32 * torch.finfo(dtype).eps * float(ref)


def test_lanczos_answers_on_a_spread_spectrum_and_hands_over_on_a_multiple_top(gen, monkeypatch):
    """A Gaussian Gram is answered by Lanczos itself (Temple's bound met); σ²I (one invariant direction,
    no gap) and a zero matrix are handed to eigvalsh."""
    monkeypatch.setattr(spectral, "LANCZOS_MIN", 1)
    G = gram(100, 150, None, gen(41), torch.float64)
    top = spectral._lanczos(G)
    assert top is not None and float(top) == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-14)
    assert spectral._lanczos(2.5 * torch.eye(50, dtype=torch.float64)) is None
    assert float(spectral.lambda_max(2.5 * torch.eye(50, dtype=torch.float64))) == pytest.approx(2.5, rel=1e-15)
    assert float(spectral.lambda_max(torch.zeros(50, 50, dtype=torch.float64))) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wide_gram_by_lanczos(dtype, gen):
    """n = 512 (≥ LANCZOS_MIN), the bench's widths: Lanczos, within a few eps of eigvalsh."""
    assert 512 >= spectral.LANCZOS_MIN
    G = gram(512, 784, None, gen(42), dtype)
    top = spectral._lanczos(G)
    assert top is not None
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
