"""Products of a stack of square matrices W_0, …, W_{k−1} (shape (k, d, d)) in few batched calls.

Matrices of width ≥ ``WIDE`` (≥ ``MID`` in stacks of up to ``SHORT``): one product after the other
(k − 1 matmuls, no redundant work; each product is large enough to keep the cores busy). Narrower stacks
of up to ``SHORT``: Hillis–Steele doubling (after the round with offset o, entry j holds the product of
the min(j+1, 2o) matrices ending at j; ⌈log₂k⌉ calls). Longer narrow stacks are cut into n chunks of
``CHUNK`` consecutive matrices (identities in front fill the first): CHUNK − 1 batched products run the
prefixes of all chunks at once and the prefixes of the n chunk totals come from the same scan
(:class:`Chunked`); one batched product per chunk position continues every chunk from those before it
where all prefixes are needed (k + O(k/CHUNK) matmuls, 2k with the continuation, in CHUNK + O(log k) calls).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .workspace import Workspace, get

CHUNK = 16   # chunk length of long stacks: up to k = CHUNK·SHORT − 1 the chunk totals need no chunks of their own
SHORT = 64   # stacks up to this length are scanned by doubling alone (fewer calls, little redundancy)
WIDE = 64    # from this width on a d×d product costs more than a call: no scan, a sequential chain
MID = 16     # from this width on a short stack (≤ SHORT) is chained too: doubling's ⌈log₂k⌉-fold products
             # cost more than the calls they save (the n ≤ SHORT chunk totals of a long stack, above all)
BLOCK = 2 ** 17  # elements of a group of chunks (:meth:`Chunked.groups`): a few such stacks fit in L2


def _doubling(W: torch.Tensor) -> torch.Tensor:
    """Inclusive prefix products along dim −3 (the stack), batched over any leading dims."""
    out, offset, k = W, 1, W.shape[-3]
    mul = torch.bmm if W.dim() == 3 else torch.matmul  # bmm: no broadcasting views around the kernel
    while offset < k:
        out = torch.cat([out[..., :offset, :, :], mul(out[..., offset:, :, :], out[..., :-offset, :, :])], dim=-3)
        offset *= 2
    return out


def _sequential(W: torch.Tensor, lead: int, out: torch.Tensor | None) -> torch.Tensor:
    """Inclusive prefix products of W (k, d, d) by k − 1 products into one buffer, after I if ``lead``."""
    if out is None:
        out = torch.empty(lead + W.shape[0], *W.shape[1:], dtype=W.dtype, device=W.device)
    if lead:
        out[0] = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    out[lead] = W[0]
    Ws, outs = W.unbind(0), out.unbind(0)  # all views in two calls
    for j in range(1, W.shape[0]):
        torch.mm(Ws[j], outs[lead + j - 1], out=outs[lead + j])
    return out


@dataclass(frozen=True)
class Chunked:
    """The prefixes C_0 = I, C_j = W_{j−1}···W_0 (j = 1 … k) of a stack W (k, d, d), held in chunks.

    The stack, padded in front by ``pad`` identities, is cut into n chunks of T; L (n·T, d, d) holds at
    slot q = c·T + t the prefix of chunk c up to that slot (its first t + 1 matrices), and B (n, d, d)
    the product of the chunks before (B[c] = L[c·T − 1]···L[T − 1], B[0] = I; None when n = 1). Then
    C_j = L[q] B[c] for slot q = pad + j − 1 in chunk c. Whatever needs C_j A C_{j−1}ᵀ (:meth:`sandwich`)
    takes the chunk product B[c] A B[c]ᵀ once per chunk instead of continuing every prefix.
    """
    L: torch.Tensor
    B: torch.Tensor | None
    pad: int

    @staticmethod
    def whole(C: torch.Tensor) -> "Chunked":
        """One chunk: the prefixes C (k+1, d, d) themselves, C[0] = I."""
        return Chunked(C[1:].contiguous(), None, 0)

    @property
    def slots(self) -> int:
        """n·T: the length of the padded stack, the size of :meth:`sandwich`'s buffers."""
        return self.L.shape[0]

    def _rows(self, X: torch.Tensor) -> torch.Tensor:
        """A (n·T, d, d) stack as n chunks of T·d rows: (n, T·d, d)."""
        n = 1 if self.B is None else self.B.shape[0]
        return X.view(n, -1, X.shape[-1])

    def last(self) -> torch.Tensor:
        """C_k = W_{k−1}···W_0 (d, d)."""
        return self.L[-1] if self.B is None else self.L[-1] @ self.B[-1]

    def full(self, lead: int = 1, out: torch.Tensor | None = None) -> torch.Tensor:
        """(k + lead, d, d): [C_0,] C_1, …, C_k (C_0 = I first with ``lead``): every chunk's rows times its
        B[c], one (T·d × d)·(d × d) product per chunk, into ``out`` ((n·T, d, d)) if given; needs pad ≥ lead
        when chunked."""
        if self.B is None:
            C = self.L
            return torch.cat([torch.eye(C.shape[-1], dtype=C.dtype, device=C.device)[None], C]) if lead else C
        rows = self._rows(self.L)
        X = rows @ self.B if out is None else torch.bmm(rows, self.B, out=self._rows(out))
        return X.view(self.L.shape)[self.pad - lead:]

    def groups(self) -> list[tuple["Chunked", int, int, slice]]:
        """The chunks in consecutive groups of about ``BLOCK`` elements, as (part, q, j, cs): ``part`` the
        same prefixes restricted to slots q … q + part.slots − 1 and chunks ``cs`` (C_j = L[q] B[c] still
        holds there), j the 0-based index of its first layer. A pass over the stack done group by group
        (every step on one group before the next) keeps its temporaries in cache. One group when unchunked."""
        if self.B is None:
            return [(self, 0, 0, slice(None))]
        n = self.B.shape[0]
        T = self.slots // n
        per = max(1, BLOCK // (T * self.L[0].numel()))
        return [(Chunked(self.L[c * T:(c + per) * T], self.B[c:c + per], self.pad if c == 0 else 0), c * T,
                 max(0, c * T - self.pad), slice(c, c + per)) for c in range(0, n, per)]

    def middles(self, A: torch.Tensor) -> torch.Tensor:
        """B[c] A B[c]ᵀ (n, d, d) for every chunk c; A itself (d, d) when unchunked."""
        return A if self.B is None else torch.bmm(torch.matmul(self.B, A), self.B.mT)

    def sandwich(self, A: torch.Tensor, bufs: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                 middles: torch.Tensor | None = None) -> torch.Tensor:
        """(k, d, d): C_j A C_{j−1}ᵀ for j = 1 … k, A (d, d), as L[q] (B[c] A B[c]ᵀ) L[q−1]ᵀ: one
        (T·d × d)·(d × d) product per chunk, then one batched product by the slot before (I at a chunk's
        first slot). ``middles``: :meth:`middles` of A when already formed. With ``bufs`` (two (n·T, d, d))
        the result is a view of the second; the first is free again on return."""
        b0, b1 = bufs if bufs is not None else (None, None)
        R = self.middles(A) if middles is None else middles
        mul = torch.bmm if R.dim() == 3 else torch.matmul
        Y = mul(self._rows(self.L), R, out=None if b0 is None else self._rows(b0)).view(self.L.shape)
        Z = torch.bmm(Y[1:], self.L[:-1].mT, out=None if b1 is None else b1[1:])
        Z = torch.cat([Y[:1], Z]) if b1 is None else b1
        T = self.L.shape[0] // self._rows(self.L).shape[0]
        Z[::T] = Y[::T]  # a chunk's first slot: L[q − 1] of the chunk before stands for I there
        return Z[self.pad:]


def _chunked(W: torch.Tensor, stack: torch.Tensor | None, work: torch.Tensor | None) -> Chunked:
    """The :class:`Chunked` prefixes of W (k, d, d) in chunks of T = CHUNK, after pad = n·T − k ≥ 1
    identities: T − 1 batched products give every chunk's prefixes, a scan of the n chunk totals gives B.
    ``work`` holds the prefixes position-major (P[t, c]: slot t of chunk c), each product reading one
    position of every chunk straight from W (a strided view: slot c·T + t is W[c·T + t − pad]) and writing
    one contiguous stack (a strided ``out`` would make torch.bmm loop over the batch one matrix at a time);
    ``stack`` then takes them in slot order. Both (n·T, d, d), buffers or None.
    """
    k, d = W.shape[0], W.shape[-1]
    T = CHUNK
    n = -(-(k + 1) // T)
    pad = n * T - k
    stack, work = (torch.empty((n * T, d, d), dtype=W.dtype, device=W.device) if B is None else B
                   for B in (stack, work))
    P = work.view(T, n, d, d)
    P[:pad, 0] = torch.eye(d, dtype=W.dtype, device=W.device)  # chunk 0 up to slot t < pad: identities
    late, early = _positions(W, T, 0, T - pad, n), _positions(W, T, T - pad, pad, n - 1)
    P[0, 1:] = early[0]
    Ps = P.unbind(0)
    for t in range(1, T):  # slot t of every chunk from W; chunk 0 enters W at slot pad
        if t >= pad:
            torch.bmm(late[t - pad], Ps[t - 1], out=Ps[t])
        else:
            torch.bmm(early[t], Ps[t - 1][1:], out=Ps[t][1:])
    stack.view(n, T, d, d).copy_(P.transpose(0, 1))
    return Chunked(stack, prefix_products(P[-1, :n - 1], identity_first=True), pad)


def _positions(W: torch.Tensor, T: int, first: int, count: int, chunks: int) -> tuple[torch.Tensor, ...]:
    """Views V_0 … V_{count−1} of W (k, d, d), V_t (chunks, d, d) = W[first + t], W[first + t + T], …:
    slot t of consecutive chunks of T, for every t at once (one strided view, unbound)."""
    W = W.contiguous()
    d2 = W.shape[-1] * W.shape[-2]
    view = W.as_strided((count, chunks) + tuple(W.shape[1:]), (d2, T * d2) + W.stride()[1:],
                        W.storage_offset() + first * d2)
    return view.unbind(0)


def frame_prefixes(W: torch.Tensor, *, ws: Workspace | None = None, name: object = "frame") -> Chunked:
    """The prefixes C_0 = I, …, C_k of W (k, d, d) as :class:`Chunked`: in chunks for a long narrow
    stack, else one chunk (:func:`prefix_products` with the identity first); buffers in ``ws``."""
    k, d = W.shape[0], W.shape[-1]
    if d >= WIDE or k + 1 <= SHORT:
        return Chunked.whole(prefix_products(W, identity_first=True, ws=ws, name=name))
    size = (-(-(k + 1) // CHUNK) * CHUNK, d, d)
    return _chunked(W, get(ws, (name, 0), size, W), get(ws, (name, 1), size, W))


def prefix_products(W: torch.Tensor, *, identity_first: bool = False, ws: Workspace | None = None,
                    name: object = "prefix") -> torch.Tensor:
    """out[j] = W_j ··· W_1 W_0 for a stack W of shape (k, d, d); with ``identity_first`` the (k+1, d, d)
    stack [I, W_0, W_1 W_0, …] instead (the empty product first). With ``ws`` the result may be a view
    of its buffers under ``name`` (valid until their next use)."""
    k, d = W.shape[0], W.shape[-1]
    lead = int(identity_first)
    if d >= WIDE or (d >= MID and k + lead <= SHORT):
        return _sequential(W, lead, get(ws, name, (lead + k, d, d), W))
    if k + lead > SHORT:
        size = (-(-(k + 1) // CHUNK) * CHUNK, d, d)
        return frame_prefixes(W, ws=ws, name=name).full(lead, out=get(ws, (name, 1), size, W))
    out = _doubling(W)
    return torch.cat([torch.eye(d, dtype=W.dtype, device=W.device)[None], out]) if lead else out


def suffix_products(W: torch.Tensor) -> torch.Tensor:
    """out[j] = W_{k−1} ··· W_{j+1} W_j, via prefixes of the reversed, transposed stack."""
    return prefix_products(W.flip(0).mT).mT.flip(0)


def total_product(W: torch.Tensor) -> torch.Tensor:
    """W_{k−1} ··· W_0 by pairwise reduction (O(k) work, O(log k) calls); k ≥ 1."""
    while W.shape[0] > 1:
        odd = W[-1:] if W.shape[0] % 2 else None
        W = W[1::2] @ W[0:W.shape[0] - 1:2]
        if odd is not None:
            W = torch.cat([W, odd])  # the latest matrix stays last, so order is kept
    return W[0]
