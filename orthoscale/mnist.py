"""MNIST from its four original IDX files, checked by MD5, as a regression problem for an ODLNN.

Images are flattened (784 × m), scaled to [0, 1], centred and whitened (:func:`data.whiten`);
targets are one-hot labels (10 × m) or the output of a teacher network on the whitened inputs.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch

from .checks import check_value
from .data import Problem, TeacherSpec, second_moments, teacher_outputs, whiten
from .init import teacher_blocks
from .network import Architecture, layers
from .specs import TARGETS

FILES = {  # name → MD5 of the uncompressed original
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class MnistError(RuntimeError):
    """A missing or malformed MNIST file."""


def read_idx(path: Path, *, md5: str | None = None) -> np.ndarray:
    """An IDX file (magic 0x0000, type byte 0x08 = uint8, ndim byte, big-endian int32 dims, data)."""
    path = Path(path)
    if not path.exists():
        raise MnistError(f"MNIST file {path} is missing: run `make data`")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise MnistError(f"MNIST file {path} has MD5 {hashlib.md5(raw).hexdigest()}, expected {md5}: "
                         "delete it and run `make data`")
    if len(raw) < 4:
        raise MnistError(f"MNIST file {path} is truncated: {len(raw)} bytes, shorter than an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise MnistError(f"MNIST file {path} is not an IDX file of unsigned bytes (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise MnistError(f"MNIST file {path} is truncated in its header")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise MnistError(f"MNIST file {path} is truncated: {body.size} bytes of data for dims {dims}")
    return body.reshape(dims)


_GIVEN: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def provide(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Arrays that stand in for the files of ``split`` under ``root`` in this process (a host without them)."""
    _GIVEN[(str(root), split)] = (images, labels)


def load(root: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (m, 28, 28) uint8, labels (m,) uint8) of ``split`` ∈ {train, t10k}, MD5-verified (or the
    arrays :func:`provide` gave for that folder)."""
    if split not in ("train", "t10k"):
        raise ValueError(f"data split={split!r} is not one of train, t10k")
    if (str(root), split) in _GIVEN:
        return _GIVEN[(str(root), split)]
    images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
    return (read_idx(Path(root) / images, md5=FILES[images]),
            read_idx(Path(root) / labels, md5=FILES[labels]))


@functools.lru_cache(maxsize=4)
def whitened_images(root: str, split: str, samples: int | None, mode: str,
                    eps: float) -> tuple[torch.Tensor, np.ndarray]:
    """(whitened images (d_0 × m) in float64, labels): the costly part of a problem, shared by every
    network size that uses the same data (cached per process)."""
    images, labels = load(Path(root), split)
    if samples is not None:
        images, labels = images[:samples], labels[:samples]
    X = whiten(torch.from_numpy(images.reshape(len(images), -1).T.astype(np.float64) / 255.0), mode=mode, eps=eps)
    return X, labels


def mnist_problem(root: Path, *, split: str = "train", samples: int | None = None, whiten_mode: str = "subspace",
                  whiten_eps: float = 1e-6, targets: str = "onehot", arch: Architecture | None = None,
                  condition: float = 1.0, activation: str = "identity", generator: torch.Generator | None = None,
                  dtype=torch.float64, device="cpu") -> Problem:
    """Whitened MNIST inputs (d_0 = rank kept by the whitening) with one-hot or teacher targets (a teacher
    with ``activation`` between its layers when it is not the identity)."""
    if targets not in TARGETS:
        raise ValueError(f"data.targets={targets!r} is not one of {', '.join(TARGETS)}")
    X, labels = whitened_images(str(root), split, samples, whiten_mode, whiten_eps)
    X = X.to(dtype)
    if targets == "onehot":
        Y = torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), 10).T.to(dtype)
        target, teacher_layers = None, None
    else:
        if arch is None or generator is None:
            raise ValueError("data.targets=teacher needs the model's architecture and a seed")
        check_value(TeacherSpec, "condition", condition, "data.condition")
        teacher = Architecture((X.shape[0],) + arch.widths[1:], "first", arch.orientation, activation)
        T = teacher_blocks(teacher, condition=condition, generator=generator, dtype=dtype)
        Y, target = teacher_outputs(T, teacher, X)
        teacher_layers = tuple(W.to(device) for W in layers(T))
    X, Y = X.to(device), Y.to(device)
    return Problem(X, Y, second_moments(X, Y), None if target is None else target.to(device), teacher_layers,
                   f"mnist-{targets}")
