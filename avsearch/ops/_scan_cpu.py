"""Fused CPU kernels (numba) for the selective scan, forward and backward.

Why a hand-written kernel: at the shapes the search uses (L ~ 25, N = 16) the scan is bound by
memory traffic, so every formulation that materialises (batch, dim, L, N) tensors loses. Here
a tile of 16 neighbouring channels of one batch element keeps its states in SIMD lanes and L1,
reads u, Δ, B, C once and writes only y; the inputs and outputs stay in the models'
channels-last (batch, L, dim) memory. The backward recomputes the tile's states into a small
local L×N×16 buffer (no stored states) and runs the reverse recurrence. ``exp`` is a
vectorisable polynomial for float32 (numba has no SVML here, and a scalar libm call per state
update would dominate the run time).

Work split: the forward's (batch, tile) items and the backward's batch elements are cut into
contiguous blocks, a few per worker thread (``torch.get_num_threads()`` workers, plain Python
threads; the kernels release the GIL), which the workers take from a shared counter.
Per-channel gradients (dA, dD, dbias) go to per-block partial rows, summed in block order, so
results are bit-reproducible; a block owns its batch elements' dB and dC. No races, no
(batch, dim, ...) partials.

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


# 'reassoc' lets reductions vectorise; no 'nnan'/'ninf', so NaN/inf still propagate.
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
# Kernels. Layouts (all C-contiguous): u, delta, z, dout and the outputs: (b, L, d), the
# channels-last memory of the models' (b, L, d) activations, so no transposing copies;
# A^T: (N, d); Bt, Ct: (b, L, N); D, bias: (d,) (zeros when not given).
#
# Work goes by tiles of W neighbouring channels of one batch element: every O(L·N) loop runs
# over the tile's W lanes (one or two SIMD registers), so the state update, y's sum over the
# states and every gradient term are lane-wise; nothing is reduced across SIMD lanes inside
# the recurrence. A tile's inputs are first copied into small per-worker buffers, zero-padded
# past the last channel (a padded lane has u = dy = A = 0, so its state and gradients stay 0
# and it adds nothing to the sums over channels). Indices into the big arrays are made unsigned
# so that numba's negative-index wraparound (a per-lane select) cannot turn the copies into
# gathers.
# ---------------------------------------------------------------------------------------------
W = 16  # lanes per tile: one AVX-512 register of float32


@njit(inline="always")
def _softplus(x, thr, zero, one):
    """torch's softplus (threshold ``thr``: x above it, log1p(exp(x)) below, computed stably)
    and its derivative (1 above the threshold, sigmoid(x) below), sharing one exp."""
    e = _vexp(-abs(x))
    sp = max(x, zero) + _vlog1p01(e)
    sg = (one if x >= zero else e) / (one + e)
    return (x, one) if x > thr else (sp, sg)


@njit(inline="always")
def _lane(d0, w):
    return np.uint64(d0 + w)


@njit(inline="always")
def _load_tile(b, d0, wl, u, delta, bias, AT, D, softplus, ub, dtb, spb, dub, ab, Db, zero, one,
               thr):
    """Copy tile (b, d0..d0+wl) into the buffers: u, Δ (+ bias, softplus), softplus', Δ·u,
    A^T and D; lanes past wl are zero."""
    L = u.shape[1]
    N = AT.shape[0]
    for t in range(L):
        for w in range(wl):
            c = _lane(d0, w)
            ub[t, w] = u[b, t, c]
            dtb[t, w] = delta[b, t, c] + bias[c]
        for w in range(wl, W):
            ub[t, w] = zero
            dtb[t, w] = zero
    for n in range(N):
        for w in range(wl):
            ab[n, w] = AT[n, _lane(d0, w)]
        for w in range(wl, W):
            ab[n, w] = zero
    for w in range(wl):
        Db[w] = D[_lane(d0, w)]
    for w in range(wl, W):
        Db[w] = zero
    for t in range(L):
        for w in range(W):
            if softplus:
                x, s = _softplus(dtb[t, w], thr, zero, one)
                dtb[t, w] = x
                spb[t, w] = s
            else:
                spb[t, w] = one
            dub[t, w] = dtb[t, w] * ub[t, w]


@njit(**_JIT)
def _fwd_block(u, delta, AT, Bt, Ct, D, z, bias, has_z, softplus, out,
               s_u, s_dt, s_sp, s_du, s_a, s_D, s_h, s_y, blk, nblocks, wk):
    """Forward over block ``blk`` of ``nblocks`` of the (batch, channel tile) items, run by
    worker ``wk`` (its row of the scratch s_*)."""
    nb, L, nd = u.shape
    N = AT.shape[0]
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    thr = u.dtype.type(20)  # torch's softplus threshold
    ntile = (nd + W - 1) // W
    total = nb * ntile
    ub, dtb, spb, dub, ab, Db, h, yb = (s_u[wk], s_dt[wk], s_sp[wk], s_du[wk], s_a[wk],
                                        s_D[wk, 0], s_h[wk], s_y[wk])
    for item in range(blk * total // nblocks, (blk + 1) * total // nblocks):
        b = item // ntile
        d0 = (item - b * ntile) * W
        wl = min(W, nd - d0)
        _load_tile(b, d0, wl, u, delta, bias, AT, D, softplus, ub, dtb, spb, dub, ab, Db, zero,
                   one, thr)
        for n in range(N):
            for w in range(W):
                h[n, w] = zero
        for t in range(L):
            for w in range(W):
                yb[t, w] = Db[w] * ub[t, w]
            for n in range(N):
                bn = Bt[b, t, n]
                cn = Ct[b, t, n]
                for w in range(W):
                    hn = _vexp(dtb[t, w] * ab[n, w]) * h[n, w] + dub[t, w] * bn
                    h[n, w] = hn
                    yb[t, w] += cn * hn
        if has_z:
            for t in range(L):
                for w in range(wl):
                    c = _lane(d0, w)
                    zv = z[b, t, c]
                    out[b, t, c] = yb[t, w] * zv / (one + _vexp(-zv))
        else:
            for t in range(L):
                for w in range(wl):
                    out[b, t, _lane(d0, w)] = yb[t, w]


@njit(**_JIT)
def _bwd_block(dout, u, delta, AT, Bt, Ct, D, z, bias, has_z, softplus,
               du_out, ddelta_out, dz_out, dA_part, dD_part, dbias_part, dB, dC,
               s_u, s_dt, s_sp, s_du, s_a, s_D, s_h, s_y, s_dy, s_g, s_gA, s_aB, s_aC, s_dD,
               s_gb, s_gha,
               blk, nblocks, wk):
    """Backward over block ``blk`` of the batch elements, run by worker ``wk``. A block owns
    its batch elements' dB and dC; per-channel gradients (dA, dD, dbias) go to the block's
    row of the partials, summed in block order afterwards, so results do not depend on which
    worker ran which block (bit-reproducible)."""
    nb, L, nd = u.shape
    N = AT.shape[0]
    one = u.dtype.type(1)
    zero = u.dtype.type(0)
    thr = u.dtype.type(20)
    ntile = (nd + W - 1) // W
    ub, dtb, spb, dub, ab, Db = s_u[wk], s_dt[wk], s_sp[wk], s_du[wk], s_a[wk], s_D[wk, 0]
    hb = s_h[wk]      # (L + 1, N, W): hb[t + 1] = h_t, hb[0] = h_{-1} = 0
    yb = s_y[wk]      # (L, W): C·h_t, then dL/dΔ_t
    dyb = s_dy[wk]    # (L, W): dL/dy_t (through the gate), then dL/du_t
    g = s_g[wk]       # (N, W): dL/dh_t
    gA = s_gA[wk]     # (N, W): the tile's dA
    accB = s_aB[wk]   # (L, N, W): dB, dC of the batch element, per lane until the end
    accC = s_aC[wk]
    # (W) each, separate arrays so that the compiler knows they do not overlap: dD,
    # Σ_n g B and Σ_n g h e A
    vdD, vgb, vgha = s_dD[wk, 0], s_gb[wk, 0], s_gha[wk, 0]
    for n in range(N):
        for w in range(W):
            hb[0, n, w] = zero
    for b in range(blk * nb // nblocks, (blk + 1) * nb // nblocks):
        for t in range(L):
            for n in range(N):
                for w in range(W):
                    accB[t, n, w] = zero
                    accC[t, n, w] = zero
        for tile in range(ntile):
            d0 = tile * W
            wl = min(W, nd - d0)
            _load_tile(b, d0, wl, u, delta, bias, AT, D, softplus, ub, dtb, spb, dub, ab, Db,
                       zero, one, thr)
            for t in range(L):
                for w in range(wl):
                    dyb[t, w] = dout[b, t, _lane(d0, w)]
                for w in range(wl, W):
                    dyb[t, w] = zero
            # forward recompute: states and C·h
            for t in range(L):
                for w in range(W):
                    yb[t, w] = zero
                for n in range(N):
                    bn = Bt[b, t, n]
                    cn = Ct[b, t, n]
                    for w in range(W):
                        hn = _vexp(dtb[t, w] * ab[n, w]) * hb[t, n, w] + dub[t, w] * bn
                        hb[t + 1, n, w] = hn
                        yb[t, w] += cn * hn
            # gate and skip: dL/dy, dz, dD
            if has_z:
                for t in range(L):
                    for w in range(wl):
                        c = _lane(d0, w)
                        zv = z[b, t, c]
                        sg = one / (one + _vexp(-zv))
                        go = dyb[t, w]
                        dz_out[b, t, c] = go * (yb[t, w] + Db[w] * ub[t, w]) * sg * (one + zv * (one - sg))
                        dyb[t, w] = go * zv * sg
            for w in range(W):
                vdD[w] = zero
            for t in range(L):
                for w in range(W):
                    vdD[w] += dyb[t, w] * ub[t, w]
            # reverse recurrence, g = dL/dh_t
            for n in range(N):
                for w in range(W):
                    g[n, w] = zero
                    gA[n, w] = zero
            for t in range(L - 1, -1, -1):
                for w in range(W):
                    vgb[w] = zero
                    vgha[w] = zero
                for n in range(N):
                    bn = Bt[b, t, n]
                    cn = Ct[b, t, n]
                    for w in range(W):
                        dy = dyb[t, w]
                        gn = g[n, w] + dy * cn
                        accC[t, n, w] += dy * hb[t + 1, n, w]
                        accB[t, n, w] += gn * dub[t, w]
                        an = ab[n, w]
                        e = _vexp(dtb[t, w] * an)
                        x = gn * hb[t, n, w] * e
                        vgha[w] += x * an
                        gA[n, w] += x * dtb[t, w]
                        vgb[w] += gn * bn
                        g[n, w] = gn * e
                for w in range(W):
                    sgb = vgb[w]
                    yb[t, w] = (vgha[w] + sgb * ub[t, w]) * spb[t, w]   # dL/dΔ (pre-softplus)
                    dyb[t, w] = dyb[t, w] * Db[w] + sgb * dtb[t, w]      # dL/du
            for t in range(L):
                for w in range(wl):
                    c = _lane(d0, w)
                    du_out[b, t, c] = dyb[t, w]
                    ddelta_out[b, t, c] = yb[t, w]
            for n in range(N):
                for w in range(wl):
                    dA_part[blk, n, _lane(d0, w)] += gA[n, w]
            for w in range(wl):
                c = _lane(d0, w)
                dD_part[blk, c] += vdD[w]
                s = zero
                for t in range(L):
                    s += yb[t, w]
                dbias_part[blk, c] += s
        for t in range(L):
            for n in range(N):
                sB = zero
                sC = zero
                for w in range(W):
                    sB += accB[t, n, w]
                    sC += accC[t, n, w]
                dB[b, t, n] = sB
                dC[b, t, n] = sC


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


def _split(nitems: int) -> tuple[int, int]:
    """(workers, blocks) for ``nitems`` work items under torch's thread setting."""
    nworkers = max(1, min(torch.get_num_threads(), nitems))
    nblocks = 1 if nworkers == 1 else min(nitems, nworkers * _BLOCKS_PER_WORKER)
    return nworkers, nblocks


def _scratch(nworkers: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Per-worker scratch (nworkers, *shape), each worker's slice followed by at least 128
    unused bytes, so workers running on different cores never write to a shared cache line
    (false sharing). Every kernel writes a buffer before it reads it."""
    itemsize = np.dtype(dtype).itemsize
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    pad = -(-128 // row)
    return np.empty((nworkers, shape[0] + pad, *shape[1:]), dtype=dtype)


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


_LAST = (0, 2, 1)  # (b, d, L) <-> (b, L, d); (b, N, L) <-> (b, L, N)


def _tile_scratch(nworkers: int, L: int, N: int, f) -> tuple[np.ndarray, ...]:
    """The per-tile buffers both kernels share: u, Δ, softplus', Δ·u (L, W); A^T (N, W); D (W)."""
    return (*(_scratch(nworkers, (L, W), f) for _ in range(4)), _scratch(nworkers, (N, W), f),
            _scratch(nworkers, (1, W), f))


def _inputs(u, delta, A, B, C, D, z, delta_bias, dtype) -> tuple[np.ndarray, ...]:
    nd = u.shape[1]
    return (_np(u, dtype, perm=_LAST), _np(delta, dtype, perm=_LAST), _np(A, dtype, perm=(1, 0)),
            _np(B, dtype, perm=_LAST), _np(C, dtype, perm=_LAST), _np(D, dtype, (nd,)),
            _np(z, dtype, (0, 0, 0), perm=_LAST), _np(delta_bias, dtype, (nd,)))


def _channels_first(a: np.ndarray) -> torch.Tensor:
    """A (b, L, ·) array as the (b, ·, L) tensor the op's callers expect (a view, no copy)."""
    return torch.from_numpy(a).transpose(1, 2)


def scan_fwd_cpu(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                 delta_bias: torch.Tensor | None, delta_softplus: bool,
                 dtype: torch.dtype) -> torch.Tensor:
    """Forward scan on CPU in ``dtype`` (float32/float64): (batch, dim, L), channels-last in
    memory."""
    nb, nd, L = u.shape
    N = A.shape[1]
    args = _inputs(u, delta, A, B, C, D, z, delta_bias, dtype)
    out = np.empty_like(args[0])
    f = out.dtype
    nworkers, nblocks = _split(nb * -(-nd // W))
    _run_blocks(_fwd_block, (*args[:7], args[7], z is not None, bool(delta_softplus), out,
                             *_tile_scratch(nworkers, L, N, f), _scratch(nworkers, (N, W), f),
                             _scratch(nworkers, (L, W), f)), nworkers, nblocks)
    return _channels_first(out)


def scan_bwd_cpu(dout: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                 B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None,
                 z: torch.Tensor | None, delta_bias: torch.Tensor | None, delta_softplus: bool,
                 dtype: torch.dtype) -> tuple[torch.Tensor | None, ...]:
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) in ``dtype``; None if not given.
    du, ddelta, dz, dB and dC are channels-last in memory, like u and B."""
    nb, nd, L = u.shape
    N = A.shape[1]
    has_z = z is not None
    args = _inputs(u, delta, A, B, C, D, z, delta_bias, dtype)
    un = args[0]
    f = un.dtype
    nworkers, nblocks = _split(nb)
    du = np.empty_like(un)
    ddelta = np.empty_like(un)
    dz = np.empty_like(un) if has_z else np.empty((0, 0, 0), dtype=f)
    dA_part = np.zeros((nblocks, N, nd), dtype=f)
    dD_part = np.zeros((nblocks, nd), dtype=f)
    dbias_part = np.zeros((nblocks, nd), dtype=f)
    dB = np.empty((nb, L, N), dtype=f)
    dC = np.empty((nb, L, N), dtype=f)
    scratch = (*_tile_scratch(nworkers, L, N, f), _scratch(nworkers, (L + 1, N, W), f),
               _scratch(nworkers, (L, W), f), _scratch(nworkers, (L, W), f),
               _scratch(nworkers, (N, W), f), _scratch(nworkers, (N, W), f),
               _scratch(nworkers, (L, N, W), f), _scratch(nworkers, (L, N, W), f),
               *(_scratch(nworkers, (1, W), f) for _ in range(3)))
    _run_blocks(_bwd_block, (_np(dout, dtype, perm=_LAST), *args, has_z, bool(delta_softplus),
                             du, ddelta, dz, dA_part, dD_part, dbias_part, dB, dC, *scratch),
                nworkers, nblocks)
    return (
        _channels_first(du),
        _channels_first(ddelta),
        torch.from_numpy(np.ascontiguousarray(dA_part.sum(axis=0).T)),
        _channels_first(dB),
        _channels_first(dC),
        torch.from_numpy(dD_part.sum(axis=0)) if D is not None else None,
        _channels_first(dz) if has_z else None,
        torch.from_numpy(dbias_part.sum(axis=0)) if delta_bias is not None else None,
    )
