"""Buffers kept from one step to the next, so that a long run allocates its large temporaries once.

A stack of N d×d layers is (N, d, d); above a few tens of MiB every fresh one is new pages from the
kernel (page faults, zeroing) on every step. A :class:`Workspace` hands out named buffers instead: the
same name gives the same storage again. Whatever is written into a workspace is overwritten when the
same name is asked for again, so only the owner of the loop (train.train) passes one; every function
that takes ``ws`` works without it, on fresh tensors, with bit-identical results — except where the
workspace carries a warm start (:meth:`Workspace.keep`): the spectral balance's λ_max starts from the last
step's top eigenvector (spectral.Warm), the same value to working precision, not bit for bit.

A workspace also remembers facts about tensors (:meth:`Workspace.vouch`) for as long as they are not
written: a stack that passed network's orthogonality probe is not probed again, nor is a framed polar
update (orthogonal to rounding after its Newton–Schulz step, far inside the probe's tolerance).
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


class Workspace:
    """Named buffers; a name's buffer is reallocated only when its shape, dtype or device changes."""

    def __init__(self):
        self._buffers: dict[object, torch.Tensor] = {}
        self._facts: dict[tuple[str, int], tuple] = {}
        self._kept: dict[object, object] = {}

    def buffer(self, name: object, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The buffer ``name`` of ``shape``, with ``like``'s dtype and device (contents undefined)."""
        B = self._buffers.get(name)
        if B is None or B.shape != shape or B.dtype != like.dtype or B.device != like.device:
            B = self._buffers[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return B

    def other(self, name: object, like: torch.Tensor) -> torch.Tensor:
        """One of the two buffers ``name`` shaped like ``like`` that is not ``like`` itself: the next
        iterate is written there while the current one (in the other buffer, or the caller's) is read."""
        first = self.buffer((name, 0), tuple(like.shape), like)
        return self.buffer((name, 1), tuple(like.shape), like) if first.data_ptr() == like.data_ptr() else first

    def keep(self, name: object, make: Callable[[], T]) -> T:
        """The object ``name`` that a run carries from one step to the next (``make()`` on first use)."""
        kept = self._kept.get(name)
        if kept is None:
            kept = self._kept[name] = make()
        return kept

    def vouch(self, fact: str, T: torch.Tensor) -> None:
        """Record that ``fact`` (e.g. "orthogonal") holds for T as it is now."""
        self._facts[(fact, T.data_ptr())] = _stamp(T)

    def vouches(self, fact: str, T: torch.Tensor) -> bool:
        """Whether ``fact`` was recorded for this very T (storage, shape, strides) and T has not been written
        since: every in-place write, through T or any view of its storage, bumps the version counter."""
        return self._facts.get((fact, T.data_ptr())) == _stamp(T)


def _stamp(T: torch.Tensor) -> tuple:
    return T.data_ptr(), tuple(T.shape), T.stride(), T.dtype, T.device, T._version


def get(ws: Workspace | None, name: object, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
    """``ws.buffer(name, shape, like)``, or None (a fresh tensor) without a workspace."""
    return None if ws is None else ws.buffer(name, shape, like)
