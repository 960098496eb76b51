"""Selective scan (Mamba's S6 recurrence) as one exportable, differentiable custom op.

``selective_scan`` has the semantics and shapes of mamba-ssm's ``selective_scan_fn``. It is
registered as the ``torch.library`` op ``avsearch::selective_scan`` (CPU kernel, fake kernel,
autograd whose backward is the op ``avsearch::selective_scan_backward``), so ``torch.export``
keeps it as a single node and exported programs reload after ``import avsearch``.

Dispatch, kept small:

- CPU: the fused numba kernels of :mod:`avsearch.ops._scan_cpu` (the search's hot path).
- CUDA with ``mamba_ssm`` importable: mamba-ssm's own ``selective_scan_fn`` (its autograd).
- anything else: a plain torch forward loop and an explicit reverse-scan backward.

``selective_scan_ref`` is the independent reference: a sequential loop over time in torch ops,
differentiated by autograd.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan", "selective_scan_ref"]

_OP = "avsearch::selective_scan"
_BWD_OP = "avsearch::selective_scan_backward"
_ARGS = ("Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
         "Tensor? delta_bias=None, bool delta_softplus=False")


# ---------------------------------------------------------------------------------------------
# reference
# ---------------------------------------------------------------------------------------------


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32 (half inputs compute in float32)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64
                                for t in tensors) else torch.float32


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Tensor | None = None, z: Tensor | None = None,
                       delta_bias: Tensor | None = None,
                       delta_softplus: bool = False) -> Tensor:
    """Reference selective scan: a sequential loop over time in torch ops (autograd-able).

    Args:
        u: input, (batch, dim, L).
        delta: step Δ, (batch, dim, L).
        A: state matrix (diagonal per dim), real, (dim, N).
        B: input projection, (batch, N, L).
        C: output projection, (batch, N, L).
        D: skip, (dim,).
        z: gate, (batch, dim, L); the output is multiplied by silu(z).
        delta_bias: added to Δ, (dim,).
        delta_softplus: apply softplus to Δ (after the bias).

    Returns:
        (batch, dim, L) in u's dtype.
    """
    ct = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uc, Ac = u.to(ct), A.to(ct)
    h = uc.new_zeros(u.shape[0], A.shape[0], A.shape[1])                      # (b, d, N)
    ys = []
    # per step: only (b, d, N) temporaries, no (b, d, L, N) tensors (faster, fairer baseline)
    for u_t, dt_t, b_t, c_t in zip(uc.unbind(2), dt.unbind(2), B.to(ct).unbind(2),
                                   C.to(ct).unbind(2)):
        h = torch.exp(dt_t.unsqueeze(-1) * Ac) * h + (dt_t * u_t).unsqueeze(-1) * b_t.unsqueeze(1)
        ys.append(torch.bmm(h, c_t.unsqueeze(-1)).squeeze(-1))              # y_t = h_t · C_t
    out = torch.stack(ys, dim=2)
    if D is not None:
        out = out + uc * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    return out.to(u.dtype)


# ---------------------------------------------------------------------------------------------
# device-generic fallback (no autograd inside: custom-op kernels run below autograd)
# ---------------------------------------------------------------------------------------------


def _torch_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
               z: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool,
               ct: torch.dtype) -> Tensor:
    with torch.no_grad():
        return selective_scan_ref(u.to(ct), delta, A, B, C, D, z, delta_bias, delta_softplus)


def _torch_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
               D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None,
               delta_softplus: bool, ct: torch.dtype) -> tuple[Tensor | None, ...]:
    """Explicit backward: recompute the states, then run the reverse recurrence."""
    u, dout, A = u.to(ct), dout.to(ct), A.to(ct)
    Bc, Cc = B.to(ct), C.to(ct)
    x = delta.to(ct) if delta_bias is None else delta.to(ct) + delta_bias.to(ct)[:, None]
    dt = F.softplus(x) if delta_softplus else x
    decay = torch.exp(dt.unsqueeze(-1) * A[:, None])                                # (b, d, L, N)
    h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    hs, ys = [], []
    for t in range(u.shape[2]):
        h = decay[:, :, t] * h + (dt[:, :, t] * u[:, :, t]).unsqueeze(-1) * Bc[:, None, :, t]
        hs.append(h)
        ys.append(torch.einsum("bdn,bn->bd", h, Cc[:, :, t]))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D.to(ct)[:, None]
    dz = None
    dy = dout
    if z is not None:
        zc = z.to(ct)
        sg = torch.sigmoid(zc)
        dz = dout * y * sg * (1 + zc * (1 - sg))
        dy = dout * zc * sg
    du = dy * D.to(ct)[:, None] if D is not None else torch.zeros_like(u)
    ddt = torch.empty_like(u)
    dA = torch.zeros_like(A)
    dB = torch.empty_like(Bc)
    dC = torch.empty_like(Cc)
    g = torch.zeros_like(h)                                                    # dL/dh_t
    for t in range(u.shape[2] - 1, -1, -1):
        g = g + dy[:, :, t, None] * Cc[:, None, :, t]
        dC[:, :, t] = torch.einsum("bdn,bd->bn", hs[t], dy[:, :, t])
        dB[:, :, t] = torch.einsum("bdn,bd->bn", g, dt[:, :, t] * u[:, :, t])
        gb = (g * Bc[:, None, :, t]).sum(-1)
        if t > 0:
            w = g * hs[t - 1] * decay[:, :, t]
            dA += (w * dt[:, :, t, None]).sum(0)
            ddt[:, :, t] = (w * A).sum(-1) + gb * u[:, :, t]
        else:
            ddt[:, :, t] = gb * u[:, :, t]
        du[:, :, t] += gb * dt[:, :, t]
        g = g * decay[:, :, t]
    if delta_softplus:
        ddt = torch.where(x > 20, ddt, ddt * torch.sigmoid(x))
    return (du, ddt, dA, dB, dC,
            (dy * u).sum((0, 2)) if D is not None else None,
            dz,
            ddt.sum((0, 2)) if delta_bias is not None else None)


# ---------------------------------------------------------------------------------------------
# optional back ends, imported lazily
# ---------------------------------------------------------------------------------------------


@functools.cache
def _mamba_scan_fn() -> Callable[..., Tensor] | None:
    """mamba-ssm's CUDA ``selective_scan_fn`` if it imports (it needs CUDA), else None."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA extension
        return None
    return selective_scan_fn


@functools.cache
def _cpu_kernels():
    """The numba kernels module, or None (with a warning) if numba is unavailable."""
    try:
        from avsearch.ops import _scan_cpu
    except ImportError as e:
        warnings.warn(f"selective_scan: numba CPU kernel unavailable ({e}); using the slow "
                      "torch loop", RuntimeWarning, stacklevel=3)
        return None
    return _scan_cpu


# ---------------------------------------------------------------------------------------------
# the custom ops
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op(_OP, mutates_args=(), schema=f"({_ARGS}) -> Tensor")
def _scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
             z: Tensor | None = None, delta_bias: Tensor | None = None,
             delta_softplus: bool = False) -> Tensor:
    # (the dispatcher drops trailing arguments equal to their schema defaults)
    ct = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type == "cpu" and (k := _cpu_kernels()) is not None:
        out = k.scan_fwd_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, ct)
    elif u.is_cuda and (fn := _mamba_scan_fn()) is not None:  # reached when exporting/compiling
        with torch.no_grad():
            out = fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    else:
        out = _torch_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, ct)
    return _channels_last(out.to(u.dtype))


def _channels_last(x: Tensor) -> Tensor:
    """x (b, ·, L) with (b, L, ·) memory, as the CPU kernels write it and the models read it
    (copied only when another back end wrote it channels-first)."""
    return x if x.transpose(1, 2).is_contiguous() else x.transpose(1, 2).contiguous().transpose(1, 2)


def _empty_channels_last(x: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[2], x.shape[1]).transpose(1, 2)


@_scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    return _empty_channels_last(u)


@torch.library.custom_op(_BWD_OP, mutates_args=(),
                         schema=f"(Tensor dout, {_ARGS}) -> (Tensor, Tensor, Tensor, Tensor, "
                                "Tensor, Tensor, Tensor, Tensor)")
def _scan_bwd_op(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                 D: Tensor | None = None, z: Tensor | None = None,
                 delta_bias: Tensor | None = None,
                 delta_softplus: bool = False) -> tuple[Tensor, ...]:
    """Gradients for (u, delta, A, B, C, D, z, delta_bias); empty tensors for absent inputs."""
    ct = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type == "cpu" and (k := _cpu_kernels()) is not None:
        grads = k.scan_bwd_cpu(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ct)
    else:
        grads = _torch_bwd(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ct)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(u.new_empty(0) if x is None else
                 _channels_last(g.to(x.dtype)) if x.dim() == 3 else g.to(x.dtype).contiguous()
                 for g, x in zip(grads, inputs))


@_scan_bwd_op.register_fake
def _scan_bwd_op_fake(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      delta_softplus=False):
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(u.new_empty(0) if x is None else
                 _empty_channels_last(x) if x.dim() == 3 else x.new_empty(x.shape)
                 for x in inputs)


def _setup_context(ctx, inputs, output) -> None:
    *tensors, delta_softplus = inputs  # normalised: all 9 schema arguments
    ctx.save_for_backward(*tensors)
    ctx.delta_softplus = delta_softplus


def _backward(ctx, dout: Tensor):
    tensors = ctx.saved_tensors
    grads = torch.ops.avsearch.selective_scan_backward(dout, *tensors, ctx.delta_softplus)
    # no gradient for absent optionals, nor for delta_softplus
    return (*(g if x is not None else None for g, x in zip(grads, tensors)), None)


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                  z: Tensor | None, delta_bias: Tensor | None) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, L), got shape {tuple(u.shape)}")
    b, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d or A.is_complex():
        raise ValueError(f"A must be real (dim={d}, N), got {tuple(A.shape)} {A.dtype}")
    n = A.shape[1]
    expected = {"delta": (delta, (b, d, L)), "B": (B, (b, n, L)), "C": (C, (b, n, L)),
                "D": (D, (d,)), "z": (z, (b, d, L)), "delta_bias": (delta_bias, (d,))}
    for name, (x, shape) in expected.items():
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None, z: Tensor | None = None,
                   delta_bias: Tensor | None = None, delta_softplus: bool = False) -> Tensor:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics.

    ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t`` (per dim and state, h_0 = 0),
    ``y_t = C_t · h_t + D u_t``, times ``silu(z_t)`` if z is given; Δ gets ``delta_bias`` and
    then softplus first if asked. Shapes as in :func:`selective_scan_ref`. The result has u's
    dtype; float32 and float64 are computed natively, half types in float32.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if u.is_cuda and not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
        fn = _mamba_scan_fn()
        if fn is not None:  # its own autograd.Function: fused CUDA forward and backward
            return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return torch.ops.avsearch.selective_scan(u, delta, A, B, C, D, z, delta_bias,
                                             delta_softplus)
