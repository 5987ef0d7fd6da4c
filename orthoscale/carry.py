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

Wide stacks (d ≥ scan.WIDE, one chunk) take the powers Qʲ by doubling instead (:func:`_powers`): a d × d
Schur form (LAPACK's dgees, or a symmetric eigendecomposition) costs ~100 products of d³ at d = 512, more
than the k − 1 products of the powers for any stack that bench_core runs (N ≤ 32). With the new frame
C_j Qʲ (one batched product) and the layers C'_j C'_{j−1}ᵀ (one more), a step runs ~3 products over the
stack against ~5 from a scan (scan, sandwich, Newton–Schulz). Drift: each step adds a few eps·d to
‖C'ᵀC' − I‖_F (one product and Qʲ's ⌈log₂ j⌉ + 1 products of rounding); the same Newton–Schulz step every
``REORTHO`` steps removes it, so the layers stay within ~REORTHO·eps·d of orthogonal (a step from a scan,
with its own Newton–Schulz step: ~eps·d).
"""
from __future__ import annotations

import numpy as np
import torch

from . import scan, stiefel
from .workspace import Workspace

REORTHO = 16  # carried steps between two Newton–Schulz steps on the frame (drift ≲ REORTHO · few eps)
ATTR = "_orthoscale_frame"  # where a stack carries its frame: (stamp, chunks, age)


def skew_schur(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, ω) with S ≈ V Σ Vᵀ for a skew S (d × d, d even): V orthogonal, Σ zero but for the 2 × 2 blocks
    [[0, ω_l], [−ω_l, 0]] on columns (2l, 2l + 1) (:func:`_skew_schur`, in float64 on the CPU)."""
    V, omega = _skew_schur(S.detach().to("cpu", torch.float64).numpy())
    return torch.from_numpy(V).to(S), torch.from_numpy(omega).to(S)


def _skew_schur(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`skew_schur` in numpy (a d × d problem: a handful of numpy calls cost less than torch's). The
    real Schur form (LAPACK) of a normal matrix is block diagonal: its 2 × 2 blocks first, then its 1 × 1
    blocks (real eigenvalues, ≈ 0) in consecutive pairs, each at ω = its (≈ 0) coupling. V gets one
    Newton–Schulz step (orthogonal to rounding, not d·eps)."""
    T, V = _gees(S)
    d, i, pairs, singles = T.shape[0], 0, [], []
    while i < d:
        if i + 1 < d and T[i + 1, i] != 0:
            pairs += [i, i + 1]
            i += 2
        else:
            singles.append(i)
            i += 1
    if singles:
        order = pairs + singles
        T, V = T[np.ix_(order, order)], V[:, order]
    omega = (np.diagonal(T, 1)[::2] - np.diagonal(T, -1)[::2]) / 2
    return V @ (1.5 * np.eye(d) - 0.5 * (V.T @ V)), omega


def _gees(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, V), S = V T Vᵀ, by LAPACK's dgees directly (scipy.linalg.schur's checks cost as much as the
    decomposition at d = 10)."""
    from scipy.linalg import lapack  # on first use: scipy.linalg costs ~0.4 s to import, a driver never needs it

    gees, = lapack.get_lapack_funcs(("gees",), (S,))
    T, _, _, _, V, _, info = gees(lambda re, im: None, S, compute_v=1, sort_t=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgees failed (info = {info})")
    return T, V


def _phases(phi: np.ndarray, first: int, count: int) -> torch.Tensor:
    """e^{ijφ} (count, len(φ)), complex128, for j = first, first + 1, …: e^{i(a + b)φ} = e^{iaφ} e^{ibφ}
    with a the multiples of n = ⌈√count⌉ and b < n, so that only 2n rows of sines and cosines are taken."""
    n = int(np.ceil(np.sqrt(count)))
    a = np.arange(n, dtype=np.float64)[:, None]
    x = np.concatenate([(first + n * a) * phi, a * phi])
    e = torch.from_numpy(np.cos(x) + 1j * np.sin(x))
    return (e[:n, None, :] * e[None, n:, :]).view(n * n, -1)[:count]


def applies(chunks: scan.Chunked) -> bool:
    """Whether a framed stack is carried, in a real floating dtype: narrow ones (d < scan.WIDE, where a
    d × d Schur form costs far less than the stack's products) of even width (column pairs), by the Schur
    form; wide ones (d ≥ scan.WIDE, held in one chunk as scan.frame_prefixes does there) by the powers Qʲ
    (:func:`_wide_step`: ~k products of d³ for the powers instead of ~3k for a scan and a Newton–Schulz
    step over the stack; the Schur form would cost ~100 such products at d = 512)."""
    d = chunks.L.shape[-1]
    if chunks.L.dtype not in (torch.float32, torch.float64):
        return False
    return d % 2 == 0 if d < scan.WIDE else chunks.B is None and chunks.pad == 0


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
    if chunks.L.shape[-1] >= scan.WIDE:
        return _wide_step(chunks, age, A, ws=ws, name=name, out=out)
    L, B, pad = chunks.L, chunks.B, chunks.pad
    d, m = L.shape[-1], L.shape[-1] // 2
    lead = max(pad, 1)  # slot lead − 1 holds C_0 = I (a whole frame keeps it implicit: one slot more)
    slots = L.shape[0] + lead - pad
    S = A.detach().to("cpu", torch.float64).numpy() - np.eye(d)
    V, omega = _skew_schur(S)
    phase = _phases(np.arctan(omega), 1 - lead, slots).to(L.device, L.dtype.to_complex())
    fresh = lambda: torch.empty((slots, d, d), dtype=L.dtype, device=L.device)
    new = fresh() if ws is None else next(b for b in (ws.buffer((name, i), (slots, d, d), L) for i in range(2))
                                          if b.data_ptr() != L.data_ptr())
    reortho = age is None or age + 1 >= REORTHO
    E = (fresh() if ws is None else ws.buffer((name, "tmp"), (slots, d, d), L)) if reortho else new
    if B is None:  # E = [C_0; L] V
        Vt = torch.from_numpy(V).to(L)
        E[0] = Vt
        torch.mm(L.reshape(-1, d), Vt, out=E[1:].view(-1, d))
    elif B.shape[0] == 1:  # E = L (B V): one basis (a carried frame), one product over all rows
        BV = B[0].detach().to("cpu", torch.float64).numpy() @ V  # in float64: B = V_oldᵀ
        torch.mm(L.view(-1, d), torch.from_numpy(BV).to(L), out=E.view(-1, d))
    else:  # chunk by chunk (a scanned frame)
        torch.bmm(chunks._rows(L), B @ torch.from_numpy(V).to(L), out=chunks._rows(E))
    torch.view_as_complex(E.view(slots, d, m, 2)).mul_(phase[:, None])  # the pairs times e^{ijφ}
    if reortho:
        scratch = None if ws is None else ws.buffer((name, "scratch"), (slots, d, d), L)
        stiefel.newton_schulz_step(E, out=new, scratch=scratch)
    X = torch.bmm(new[lead:], new[lead - 1:-1].mT, out=out)
    frame = scan.Chunked(new, torch.from_numpy(V.T.copy()).to(L)[None], lead)
    setattr(X, ATTR, (_stamp(X, frame), frame, 0 if reortho else age + 1))
    return X


def _powers(Q: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Qʲ (j = 1 … k) into ``out`` (k, d, d) by doubling: with Q¹ … Qⁿ formed, Q^{n+i} = Qⁱ Qⁿ for the next
    n at once, one (n·d × d)·(d × d) product (⌈log₂ k⌉ products, k − 1 matrices of work). Each multiplier
    Qⁿ (and Q itself, whose Newton–Schulz iteration stops short of rounding) first takes one Newton–Schulz
    step (orthogonal to rounding again), so that Qʲ carries the rounding of ⌈log₂ j⌉ + 1 products rather
    than of j, as a chain Q·Q···Q would."""
    k, d = out.shape[0], out.shape[-1]
    stiefel.newton_schulz_step(Q[None], out=out[:1])
    n = 1
    while n < k:
        m = min(n, k - n)
        P = out[0] if n == 1 else stiefel.newton_schulz_step(out[n - 1:n])[0]
        torch.mm(out[:m].view(-1, d), P, out=out[n:n + m].view(-1, d))
        n += m
    return out


def _wide_step(chunks: scan.Chunked, age: int | None, A: torch.Tensor, *, ws: Workspace | None, name: object,
               out: torch.Tensor | None) -> torch.Tensor:
    """:func:`polar_step` for a wide stack held in one chunk (C_j = L[j − 1], C_0 = I): Q = polar(A)
    (stiefel.polar_near_identity, as the scanned step takes it), its powers Qʲ (:func:`_powers`), the new
    frame C'_j = C_j Qʲ by one batched product (with a Newton–Schulz step as in :func:`polar_step`), the
    layers C'_1 and C'_j C'_{j−1}ᵀ by one more. A stack of one layer takes Q itself (no power to carry
    rounding into), as the per-layer polar retraction would, and is returned as its own frame (not in
    ``out``)."""
    L = chunks.L
    k, d = L.shape[0], L.shape[-1]
    get = lambda key: torch.empty((k, d, d), dtype=L.dtype, device=L.device) if ws is None else \
        ws.buffer((name, key), (k, d, d), L)
    Q = stiefel.polar_near_identity(A)
    powers = Q[None] if k == 1 else _powers(Q, get("powers"))  # one layer: Q as a per-layer retraction leaves it
    new = get(0) if ws is None or get(0).data_ptr() != L.data_ptr() else get(1)
    reortho = age is None or age + 1 >= REORTHO
    E = get("tmp") if reortho else new
    torch.bmm(L, powers, out=E)
    if reortho:
        stiefel.newton_schulz_step(E, out=new, scratch=powers)  # the powers are spent
    if k == 1:  # one layer is its own frame, C'_1: no copy
        X = new
    else:
        X = torch.empty_like(L) if out is None else out
        X[0] = new[0]
        torch.bmm(new[1:], new[:-1].mT, out=X[1:])
    frame = scan.Chunked(new, None, 0)
    setattr(X, ATTR, (_stamp(X, frame), frame, 0 if reortho else age + 1))
    return X
