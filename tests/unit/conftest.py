"""Shared fixtures of the unit suite: seeded generators and the location of the MNIST files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
MNIST_ROOT = REPO_ROOT / ".orthoscale" / "data" / "mnist"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The unit tests work on small matrices: threads only add contention (and noise on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def gen():
    """gen(seed) → a CPU torch.Generator seeded with ``seed`` (default 0)."""
    def make(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)
    return make


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The directory `make data` fills with MNIST's four IDX files."""
    return MNIST_ROOT
