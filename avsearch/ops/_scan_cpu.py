"""Fused CPU kernels (numba) for the selective scan, forward and backward.

Why a hand-written kernel: at the shapes the search uses (L ~ 25, N = 16) the scan is bound by
memory traffic, so every formulation that materialises (batch, dim, L, N) tensors loses. Here
each (batch, dim) chain keeps its N-dim state in registers/L1, reads u, Δ, B, C once and writes
only y. The backward recomputes the chain's states into a small local L×N buffer (no stored
states) and runs the reverse recurrence. ``exp`` is a vectorisable polynomial for float32 (numba
has no SVML here, and a scalar libm call per state update would dominate the run time).

Work split: the flattened (batch, dim) chains are cut into contiguous blocks, a few per worker
thread (``torch.get_num_threads()`` workers, plain Python threads; the kernels release the
GIL), which the workers take from a shared counter. Per-dim gradients (dA, dD, dbias) go to
per-block partial rows, summed in block order, so results are bit-reproducible; per-batch
gradients (dB, dC) are accumulated per batch element inside a block and written directly when
the block owns the whole batch element, or to one of the block's two boundary slots
otherwise. No races, no (batch, dim, ...) partials.

Kernels are compiled on first use and cached on disk (numba ``cache=True``); float64 uses libm
``exp``/``log1p`` (exact, slower; it serves tests), float32 the polynomials below.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core.compiler import Compiler
from numba.extending import intrinsic, overload

from avsearch._threads import run_workers

__all__ = ["scan_fwd_cpu", "scan_bwd_cpu"]


class _NoAliasCompiler(Compiler):
    """numba's pipeline with LLVM ``noalias`` on array arguments.

    Without it LLVM must assume any two arrays may overlap and guards every vectorised inner
    loop with runtime overlap checks, which at N = 16 cost more than the loop. Sound here:
    the kernels write only to arrays the wrappers allocate fresh (outputs and per-block
    scratch), which overlap nothing else; inputs that share memory are only read.
    """

    def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
        flags.noalias = True
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


# 'reassoc' lets the N-loop reductions vectorise; no 'nnan'/'ninf', so NaN/inf still propagate.
# error_model='numpy': IEEE division (x/0 = inf) instead of a ZeroDivisionError check, whose
# branch would stop every loop with a division from vectorising.
_FM = {"contract", "reassoc", "nsz", "arcp"}
_JIT = dict(fastmath=_FM, cache=True, nogil=True, error_model="numpy",
            pipeline_class=_NoAliasCompiler)

# ---------------------------------------------------------------------------------------------
# float32 exp that LLVM can vectorise, kept short because it runs once per state update:
# k = round(x / ln 2) by the 1.5·2^23 shifter trick, Cody-Waite reduction r = x - k ln 2,
# degree-5 polynomial for e^r (coefficients fitted here for minimal relative error on
# [-ln2/2, ln2/2]), 2^k from its exponent bits. Max relative error ~3 ulp. Inputs are clamped
# to [-87.34, 88.38] so that 2^k stays a normal float: results below 1.2e-38 come out as
# 1.2e-38 (negligible next to any state), above 2.4e38 as inf, NaN stays NaN.
# ---------------------------------------------------------------------------------------------
_F = np.float32
_LOG2E = _F(1.4426950408889634)
_SHIFTER = _F(12582912.0)  # 1.5 * 2^23
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_Q1, _Q2, _Q3 = _F(0.9999997019767761), _F(0.4999915063381195), _F(0.1666763573884964)
_Q4, _Q5 = _F(0.04189793020486832), _F(0.008290315978229046)
_X_LO, _X_HI = _F(-87.33654), _F(88.37626)
_ONE, _INF = _F(1.0), _F(np.inf)


@intrinsic
def _i32_bits_as_f32(typingctx, x):
    """Reinterpret an int32's bits as float32 (a no-op bitcast)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


# no 'reassoc' here: it would fold the shifter away
@njit(fastmath={"contract"}, error_model="numpy", cache=True)
def _exp32(x):
    xc = min(max(x, _X_LO), _X_HI)
    k = (xc * _LOG2E + _SHIFTER) - _SHIFTER  # round to nearest integer
    r = xc - k * _LN2_HI
    r = r - k * _LN2_LO
    p = _Q5
    p = p * r + _Q4
    p = p * r + _Q3
    p = p * r + _Q2
    p = p * r + _Q1
    p = p * r + _ONE
    res = p * _i32_bits_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))
    return _INF if x > _X_HI else res


# log1p on [0, 1] for float32, vectorisable: log1p(e) = 2 atanh(s), s = e / (2 + e) <= 1/3,
# atanh series to s^15 (truncation < 2e-8 relative).
_C3, _C5, _C7 = _F(1 / 3), _F(1 / 5), _F(1 / 7)
_C9, _C11, _C13, _C15 = _F(1 / 9), _F(1 / 11), _F(1 / 13), _F(1 / 15)
_TWO = _F(2.0)


@njit(fastmath={"contract"}, error_model="numpy", cache=True)
def _log1p01_32(e):
    s = e / (_TWO + e)
    s2 = s * s
    p = _C15
    p = p * s2 + _C13
    p = p * s2 + _C11
    p = p * s2 + _C9
    p = p * s2 + _C7
    p = p * s2 + _C5
    p = p * s2 + _C3
    return _TWO * s * (p * s2 + _ONE)


# typed dispatch: float32 -> the polynomials above, float64 -> libm (accuracy for tests)
def _vexp(x):
    return math.exp(x)


def _vlog1p01(x):
    return math.log1p(x)


@overload(_vexp)
def _vexp_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _exp32(x)
    return lambda x: math.exp(x)


@overload(_vlog1p01)
def _vlog1p01_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _log1p01_32(x)
    return lambda x: math.log1p(x)


# ---------------------------------------------------------------------------------------------
# Kernels. Layouts (all C-contiguous): u, delta, z, dout: (b, d, L); A: (d, N); Bt, Ct: (b, L, N);
# D, bias: (d,) (zeros when not given). Per chain, the O(L) work (Δ's bias and softplus, the
# gate, Δ·u) runs in separate loops over t that vectorise; the O(L·N) recurrences vectorise
# over N.
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _softplus(x, thr, zero, one):
    """torch's softplus (threshold ``thr``: x above it, log1p(exp(x)) below, computed stably)
    and its derivative (1 above the threshold, sigmoid(x) below), sharing one exp."""
    e = _vexp(-abs(x))
    sp = max(x, zero) + _vlog1p01(e)
    sg = (one if x >= zero else e) / (one + e)
    return (x, one) if x > thr else (sp, sg)


@njit(**_JIT)
def _fwd_block(u, delta, A, Bt, Ct, D, z, bias, has_z, softplus, out, s_h, s_dt, s_du,
               blk, nblocks, wk):
    """Forward over block ``blk`` of ``nblocks`` of the flattened (batch, dim) chains, run by
    worker ``wk`` (its row of the scratch s_*)."""
    nb, nd, L = u.shape
    N = A.shape[1]
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    thr = u.dtype.type(20)  # torch's softplus threshold
    total = nb * nd
    h = s_h[wk, :N]
    dtb = s_dt[wk, :L]
    dub = s_du[wk, :L]
    for idx in range(blk * total // nblocks, (blk + 1) * total // nblocks):
        b = idx // nd
        d = idx - b * nd
        # effective Δ of the chain (written out here: passing arrays to a helper would make
        # numba touch their shared reference counts, which stalls the other threads)
        bd = bias[d]
        if softplus:
            for t in range(L):
                x, _ = _softplus(delta[b, d, t] + bd, thr, zero, one)
                dtb[t] = x
                dub[t] = x * u[b, d, t]
        else:
            for t in range(L):
                x = delta[b, d, t] + bd
                dtb[t] = x
                dub[t] = x * u[b, d, t]
        for n in range(N):
            h[n] = 0
        for t in range(L):
            dtv = dtb[t]
            duv = dub[t]
            acc = zero
            for n in range(N):
                hn = _vexp(dtv * A[d, n]) * h[n] + duv * Bt[b, t, n]
                h[n] = hn
                acc += Ct[b, t, n] * hn
            out[b, d, t] = acc
        Dd = D[d]
        if has_z:
            for t in range(L):
                zv = z[b, d, t]
                out[b, d, t] = (out[b, d, t] + Dd * u[b, d, t]) * zv / (one + _vexp(-zv))
        else:
            for t in range(L):
                out[b, d, t] += Dd * u[b, d, t]


@njit(**_JIT)
def _bwd_block(dout, u, delta, A, Bt, Ct, D, z, bias, has_z, softplus,
               du_out, ddelta_out, dz_out, dA_part, dD_part, dbias_part, dB, dC,
               slot_B, slot_C, slot_b, s_h, s_e, s_g, s_gA, s_aB, s_aC,
               s_x, s_dt, s_du, s_y, s_dy, s_ddt, blk, nblocks, wk):
    """Backward over block ``blk`` of the flattened chains, run by worker ``wk`` (its scratch
    row). Per-dim partials go to row ``blk`` and dB/dC boundary partials to the block's slots,
    so results do not depend on which worker ran which block (bit-reproducible)."""
    nb, nd, L = u.shape
    N = A.shape[1]
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    thr = u.dtype.type(20)
    total = nb * nd
    start = blk * total // nblocks
    stop = (blk + 1) * total // nblocks
    # scratch, one slice per block, each a separate array (see _NoAliasCompiler)
    hbuf = s_h[wk]    # (L + 1 + pad, N): hbuf[t + 1] = h_t, hbuf[0] = h_{-1} = 0
    ebuf = s_e[wk]    # (L + pad, N): exp(Δ_t A)
    g = s_g[wk, :N]   # dL/dh_t
    gA = s_gA[wk, :N]  # this chain's dA
    accB = s_aB[wk]   # (L + pad, N): dB / dC of the current batch element
    accC = s_aC[wk]
    xb = s_x[wk, :L]  # per-step buffers: softplus', Δ, Δ·u, y, dL/dy, dL/dΔ
    dtb = s_dt[wk, :L]
    dub = s_du[wk, :L]
    yb = s_y[wk, :L]
    dyb = s_dy[wk, :L]
    ddtb = s_ddt[wk, :L]
    accB[:] = 0
    accC[:] = 0
    for n in range(N):
        hbuf[0, n] = 0
    run_start = start
    for idx in range(start, stop):
        b = idx // nd
        d = idx - b * nd
        Dd = D[d]
        # effective Δ of the chain (written out here: passing arrays to a helper would make
        # numba touch their shared reference counts, which stalls the other threads)
        bd = bias[d]
        if softplus:
            for t in range(L):
                x, dsp = _softplus(delta[b, d, t] + bd, thr, zero, one)
                xb[t] = dsp
                dtb[t] = x
                dub[t] = x * u[b, d, t]
        else:
            for t in range(L):
                x = delta[b, d, t] + bd
                dtb[t] = x
                dub[t] = x * u[b, d, t]
        # forward recompute: states, decays, y
        for t in range(L):
            dtv = dtb[t]
            duv = dub[t]
            acc = zero
            for n in range(N):
                e = _vexp(dtv * A[d, n])
                hn = e * hbuf[t, n] + duv * Bt[b, t, n]
                ebuf[t, n] = e
                hbuf[t + 1, n] = hn
                acc += Ct[b, t, n] * hn
            yb[t] = acc
        # gate and skip: dL/dy and dz
        dDv = zero
        if has_z:
            for t in range(L):
                zv = z[b, d, t]
                sg = one / (one + _vexp(-zv))
                go = dout[b, d, t]
                dz_out[b, d, t] = go * (yb[t] + Dd * u[b, d, t]) * sg * (one + zv * (one - sg))
                dyb[t] = go * zv * sg
                dDv += dyb[t] * u[b, d, t]
        else:
            for t in range(L):
                dyb[t] = dout[b, d, t]
                dDv += dyb[t] * u[b, d, t]
        # reverse recurrence, g = dL/dh_t
        for n in range(N):
            g[n] = 0
            gA[n] = 0
        for t in range(L - 1, -1, -1):
            dy = dyb[t]
            dtv = dtb[t]
            duv = dub[t]
            s_gb = zero    # sum_n g_n B_n
            s_gha = zero   # sum_n g_n h_{t-1,n} e_n A_n
            for n in range(N):
                gn = g[n] + dy * Ct[b, t, n]
                accC[t, n] += dy * hbuf[t + 1, n]
                accB[t, n] += gn * duv
                en = ebuf[t, n]
                w = gn * hbuf[t, n] * en
                s_gha += w * A[d, n]
                gA[n] += w * dtv
                s_gb += gn * Bt[b, t, n]
                g[n] = gn * en
            du_out[b, d, t] = dy * Dd + s_gb * dtv
            ddtb[t] = s_gha + s_gb * u[b, d, t]
        # through softplus and bias
        dbv = zero
        if softplus:
            for t in range(L):
                gx = ddtb[t] * xb[t]
                ddelta_out[b, d, t] = gx
                dbv += gx
        else:
            for t in range(L):
                ddelta_out[b, d, t] = ddtb[t]
                dbv += ddtb[t]
        for n in range(N):
            dA_part[blk, d, n] += gA[n]
        dD_part[blk, d] += dDv
        dbias_part[blk, d] += dbv
        # end of this block's run over batch element b: flush dB/dC
        if d == nd - 1 or idx == stop - 1:
            if run_start == b * nd and d == nd - 1:  # whole batch element owned
                for t in range(L):
                    for n in range(N):
                        dB[b, t, n] = accB[t, n]
                        dC[b, t, n] = accC[t, n]
            else:  # only the block's first and last runs can be partial
                s = 0 if run_start == start else 1
                slot_b[blk, s] = b
                for t in range(L):
                    for n in range(N):
                        slot_B[blk, s, t, n] = accB[t, n]
                        slot_C[blk, s, t, n] = accC[t, n]
            for t in range(L):
                for n in range(N):
                    accB[t, n] = 0
                    accC[t, n] = 0
            run_start = idx + 1


@njit(**_JIT)
def _reduce_slots(dB, dC, slot_B, slot_C, slot_b):
    """Add the blocks' boundary partials of dB/dC (at most two per block)."""
    for blk in range(slot_b.shape[0]):
        for s in range(2):
            bb = slot_b[blk, s]
            if bb >= 0:
                dB[bb] += slot_B[blk, s]
                dC[bb] += slot_C[blk, s]


# ---------------------------------------------------------------------------------------------
# torch-facing wrappers
# ---------------------------------------------------------------------------------------------


_BLOCKS_PER_WORKER = 4


def _run_blocks(kernel, args: tuple, nworkers: int, nblocks: int) -> None:
    """Run ``kernel(*args, blk, nblocks, worker)`` for every block on ``nworkers`` threads.

    Workers take the next block from a shared counter, so a core that is busy elsewhere (e.g.
    with torch's OpenMP workers, which spin for a while after every torch op) simply runs fewer
    blocks. Results stay bit-for-bit reproducible whichever worker runs which block: every
    partial sum is kept per block (see _bwd_block) and reduced in block order.
    """
    counter = itertools.count()  # next() on it is atomic under the GIL

    def work(w: int) -> None:
        while (blk := next(counter)) < nblocks:
            kernel(*args, blk, nblocks, w)

    run_workers(work, nworkers)


def _split(nchains: int) -> tuple[int, int]:
    """(workers, blocks) for ``nchains`` chains under torch's thread setting."""
    nworkers = max(1, min(torch.get_num_threads(), nchains))
    nblocks = 1 if nworkers == 1 else min(nchains, nworkers * _BLOCKS_PER_WORKER)
    return nworkers, nblocks


def _scratch(nworkers: int, shape: int | tuple[int, int], dtype) -> np.ndarray:
    """Zeroed per-worker scratch, (nworkers, n + pad) or (nworkers, rows + pad, n): each
    worker's slice is followed by at least 128 unused bytes, so workers running on different
    cores never write to a shared cache line (false sharing)."""
    itemsize = np.dtype(dtype).itemsize
    if isinstance(shape, int):
        return np.zeros((nworkers, shape + -(-128 // itemsize)), dtype=dtype)
    rows, n = shape
    return np.zeros((nworkers, rows + -(-128 // (n * itemsize)), n), dtype=dtype)


def _np(x: torch.Tensor | None, dtype: torch.dtype, fill_shape: tuple[int, ...] = (),
        perm: tuple[int, ...] | None = None) -> np.ndarray:
    """x (axes permuted by ``perm``) as a C-contiguous numpy array of ``dtype``, copied only if
    needed; zeros of ``fill_shape`` if x is None.

    Conversions and copies are done by numpy on purpose: a torch op here would start torch's
    OpenMP pool between our kernels, and on small or busy machines waking it costs more than
    the copy itself.
    """
    npdt = np.float32 if dtype == torch.float32 else np.float64
    if x is None:
        return np.zeros(fill_shape, dtype=npdt)
    x = x.detach()
    a = x.numpy() if x.dtype in (torch.float32, torch.float64) else x.to(dtype).numpy()
    if perm is not None:
        a = a.transpose(perm)
    return np.ascontiguousarray(a, dtype=npdt)


def scan_fwd_cpu(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                 delta_bias: torch.Tensor | None, delta_softplus: bool,
                 dtype: torch.dtype) -> torch.Tensor:
    """Forward scan on CPU in ``dtype`` (float32/float64); returns (batch, dim, L)."""
    nb, nd, L = u.shape
    un = _np(u, dtype)
    out = np.empty_like(un)
    nworkers, nblocks = _split(nb * nd)
    N = A.shape[1]
    args = (un, _np(delta, dtype), _np(A, dtype), _np(B, dtype, perm=(0, 2, 1)),
            _np(C, dtype, perm=(0, 2, 1)), _np(D, dtype, (nd,)), _np(z, dtype, (0, 0, 0)),
            _np(delta_bias, dtype, (nd,)), z is not None, bool(delta_softplus), out,
            _scratch(nworkers, N, un.dtype), _scratch(nworkers, L, un.dtype),
            _scratch(nworkers, L, un.dtype))
    _run_blocks(_fwd_block, args, nworkers, nblocks)
    return torch.from_numpy(out)


def scan_bwd_cpu(dout: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                 B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None,
                 z: torch.Tensor | None, delta_bias: torch.Tensor | None, delta_softplus: bool,
                 dtype: torch.dtype) -> tuple[torch.Tensor | None, ...]:
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) in ``dtype``; None if not given."""
    nb, nd, L = u.shape
    N = A.shape[1]
    un = _np(u, dtype)
    has_z = z is not None
    nworkers, nblocks = _split(nb * nd)
    f = un.dtype
    du = np.empty_like(un)
    ddelta = np.empty_like(un)
    dz = np.empty_like(un) if has_z else np.empty((0, 0, 0), dtype=f)
    dA_part = np.zeros((nblocks, nd, N), dtype=f)
    dD_part = np.zeros((nblocks, nd), dtype=f)
    dbias_part = np.zeros((nblocks, nd), dtype=f)
    dB = np.zeros((nb, L, N), dtype=f)
    dC = np.zeros((nb, L, N), dtype=f)
    slot_B = np.empty((nblocks, 2, L, N), dtype=f)
    slot_C = np.empty((nblocks, 2, L, N), dtype=f)
    slot_b = np.full((nblocks, 2), -1, dtype=np.int64)
    args = (_np(dout, dtype), un, _np(delta, dtype), _np(A, dtype),
            _np(B, dtype, perm=(0, 2, 1)), _np(C, dtype, perm=(0, 2, 1)),
            _np(D, dtype, (nd,)), _np(z, dtype, (0, 0, 0)), _np(delta_bias, dtype, (nd,)),
            has_z, bool(delta_softplus), du, ddelta, dz, dA_part, dD_part, dbias_part,
            dB, dC, slot_B, slot_C, slot_b,
            _scratch(nworkers, (L + 1, N), f), _scratch(nworkers, (L, N), f),
            _scratch(nworkers, N, f), _scratch(nworkers, N, f),
            _scratch(nworkers, (L, N), f), _scratch(nworkers, (L, N), f),
            *(_scratch(nworkers, L, f) for _ in range(6)))
    _run_blocks(_bwd_block, args, nworkers, nblocks)
    _reduce_slots(dB, dC, slot_B, slot_C, slot_b)
    return (
        torch.from_numpy(du),
        torch.from_numpy(ddelta),
        torch.from_numpy(dA_part.sum(axis=0)),
        torch.from_numpy(np.ascontiguousarray(dB.transpose(0, 2, 1))),
        torch.from_numpy(np.ascontiguousarray(dC.transpose(0, 2, 1))),
        torch.from_numpy(dD_part.sum(axis=0)) if D is not None else None,
        torch.from_numpy(dz) if has_z else None,
        torch.from_numpy(dbias_part.sum(axis=0)) if delta_bias is not None else None,
    )
