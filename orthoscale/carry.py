"""A framed orthogonal stack carried from one polar step to the next, without a new prefix scan.

An orthogonal square stack W_i = C_j C_{j−1}ᵀ (network.Frame) takes the framed polar step
W_i ← C_j Q C_{j−1}ᵀ, Q = polar(I + S), S skew (d × d). The new layers have the prefixes C_j Qʲ
(Qʲ Q^{−(j−1)} = Q), so the next frame needs no scan. In the real Schur basis of S, S = V Σ Vᵀ with
2 × 2 blocks [[0, ω], [−ω, 0]] on column pairs (v_{2l}, v_{2l+1}), Q = V R Vᵀ where R rotates each pair
by φ = atan ω; Qʲ = V Rʲ Vᵀ, Rʲ the rotation by jφ. With the frame held in a rotating basis,
C_j = L_q B (scan.Chunked, slot q = pad + j − 1), the new frame is L'_q = (L_q B V) Rʲ, B' = Vᵀ:
one (stack·d × d)·(d × d) product and one elementwise pass (each pair of columns is a complex number,
Rʲ multiplies it by e^{ijφ}); the new layers are W_i = L'_q L'_{q−1}ᵀ, one batched product.

Orthogonality drift: L' inherits the rounding of L and adds a few eps per step (V and Rʲ are orthogonal to
rounding); a scanned frame carries ≈ j·eps from its j products. One Newton–Schulz step on L' (two batched
products) squares that away: on the first carried step and every ``REORTHO`` steps after.
"""
from __future__ import annotations

import torch

from . import scan, stiefel
from .workspace import Workspace

REORTHO = 16  # carried steps between two Newton–Schulz steps on the frame (drift ≲ REORTHO · few eps)
ATTR = "_orthoscale_frame"  # where a stack carries its frame: (stamp, chunks, age)


def skew_schur(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, ω) with S ≈ V Σ Vᵀ for a skew S (d × d, d even): V orthogonal, Σ zero but for the 2 × 2 blocks
    [[0, ω_l], [−ω_l, 0]] on columns (2l, 2l + 1). The real Schur form (LAPACK, float64, on the CPU) of a
    normal matrix is block diagonal: its 2 × 2 blocks first, then its 1 × 1 blocks (real eigenvalues, ≈ 0)
    in consecutive pairs, each at ω = its (≈ 0) coupling. V gets one Newton–Schulz step (orthogonal to
    rounding, not d·eps)."""
    import scipy.linalg
    T, V = scipy.linalg.schur(S.detach().to("cpu", torch.float64).numpy(), output="real")
    d, i, pairs, singles = T.shape[0], 0, [], []
    while i < d:
        if i + 1 < d and T[i + 1, i] != 0:
            pairs += [i, i + 1]
            i += 2
        else:
            singles.append(i)
            i += 1
    order = torch.tensor(pairs + singles)
    T, V = torch.from_numpy(T)[order][:, order], torch.from_numpy(V)[:, order]
    omega = (T.diagonal(1)[::2] - T.diagonal(-1)[::2]) / 2
    V = V @ (1.5 * torch.eye(d, dtype=V.dtype) - 0.5 * V.mT @ V)
    return V.to(S), omega.to(S)


def applies(chunks: scan.Chunked) -> bool:
    """Whether a framed stack is carried: narrow (a d × d Schur form costs far less than the stack's
    products below scan.WIDE), of even width (column pairs), in a real floating dtype with a complex twin."""
    d = chunks.L.shape[-1]
    return d < scan.WIDE and d % 2 == 0 and chunks.L.dtype in (torch.float32, torch.float64)


def frame_of(X: torch.Tensor) -> tuple[scan.Chunked, int] | None:
    """(chunks, age) of a stack written by :func:`polar_step`, while neither it nor its frame was written
    since; else None. ``age``: carried steps since the frame's last Newton–Schulz step."""
    got = getattr(X, ATTR, None)
    if got is None or got[0] != _stamp(X, got[1]):
        return None
    return got[1], got[2]


def _stamp(X: torch.Tensor, chunks: scan.Chunked) -> tuple:
    return X.data_ptr(), X._version, chunks.L.data_ptr(), chunks.L._version


def polar_step(chunks: scan.Chunked, age: int | None, A: torch.Tensor, *, ws: Workspace | None = None,
               name: object = "carry", out: torch.Tensor | None = None) -> torch.Tensor:
    """The layers C_j polar(A) C_{j−1}ᵀ (k, d, d) of the framed stack C_j = L_q B (see the module
    docstring), A = I + S, S skew; the result carries its own frame (:func:`frame_of`), of age ``age`` + 1
    (0 after a Newton–Schulz step: when ``age`` is None, a scanned frame, or reaches REORTHO). With
    ``ws`` the frame goes into its buffers ``name`` (two, alternating) and the result into ``out``."""
    L, B, pad = chunks.L, chunks.B, chunks.pad
    d, m = L.shape[-1], L.shape[-1] // 2
    lead = max(pad, 1)  # slot lead − 1 holds C_0 = I (a whole frame keeps it implicit: one slot more)
    slots = L.shape[0] + lead - pad
    V, omega = skew_schur(A - stiefel.eye_like(A))
    fresh = lambda: torch.empty((slots, d, d), dtype=L.dtype, device=L.device)
    new = fresh() if ws is None else next(b for b in (ws.buffer((name, i), (slots, d, d), L) for i in range(2))
                                          if b.data_ptr() != L.data_ptr())
    reortho = age is None or age + 1 >= REORTHO
    E = (fresh() if ws is None else ws.buffer((name, "tmp"), (slots, d, d), L)) if reortho else new
    if B is None:  # E = [C_0; L] V
        E[0] = V
        torch.mm(L.reshape(-1, d), V, out=E[1:].view(-1, d))
    elif B.shape[0] == 1:  # E = L (B V): one basis (a carried frame), one product over all rows
        torch.mm(L.view(-1, d), B[0] @ V, out=E.view(-1, d))
    else:  # chunk by chunk (a scanned frame)
        torch.bmm(chunks._rows(L), B @ V, out=chunks._rows(E))
    j = torch.arange(1 - lead, slots - lead + 1, dtype=torch.float64, device=L.device)
    angle = j[:, None] * torch.atan(omega.double())  # in float64 whatever the stack's dtype: |jφ| ≫ 1
    phase = torch.complex(torch.cos(angle), torch.sin(angle)).to(L.dtype.to_complex())
    torch.view_as_complex(E.view(slots, d, m, 2)).mul_(phase[:, None])
    if reortho:
        scratch = None if ws is None else ws.buffer((name, "scratch"), (slots, d, d), L)
        stiefel.newton_schulz_step(E, out=new, scratch=scratch)
    X = torch.bmm(new[lead:], new[lead - 1:-1].mT, out=out)
    frame = scan.Chunked(new, V.mT.contiguous()[None], lead)
    setattr(X, ATTR, (_stamp(X, frame), frame, 0 if reortho else age + 1))
    return X
