"""Dropout with a mask that is cheap to draw on the CPU.

torch's CPU dropout draws one Bernoulli sample per element through a scalar generator: about
12 ms per million elements on these cores, 18% of a mixed av_nas training step at d=64.
Here every 64-bit random integer gives four 16-bit uniforms, and an element is kept when its
uniform clears p quantised to 1/65536 (p = 0.1 drops 6554/65536 = 0.100006), with the kept
values scaled by 1/(1 − p). The integers come from torch's generator, so runs stay seeded
and resumable. Elsewhere (CUDA) torch's fused dropout is used.

The mask is built once as the factor itself (0 or 1/(1 − p), in ``x``'s dtype), so the forward
is one product and the backward one more; :func:`relu_dropout` folds a ReLU into the same mask
(the FFN's ReLU then costs no pass of its own in the backward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["dropout", "relu_dropout", "Dropout"]

_LEVELS = 65536
_SAME_WIDTH_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _keep(x: Tensor, p: float) -> tuple[Tensor, float]:
    """A boolean keep-mask shaped like ``x`` and the kept values' scale."""
    dropped = round(p * _LEVELS)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2**63, None)
    uniform = words.view(torch.int16)[:x.numel()].view(x.shape)   # uniform on [-32768, 32767]
    return uniform >= dropped - _LEVELS // 2, _LEVELS / (_LEVELS - dropped)


def _scaled(x: Tensor, keep: Tensor, scale: float) -> Tensor:
    """``x`` times the mask (``scale`` where ``keep``, else 0); the backward is one product.
    The mask goes through uint8 because torch's bool-to-float conversions are 5-50× slower."""
    return x * keep.view(torch.uint8).to(x.dtype).mul_(scale)


def _fast(x: Tensor, p: float, training: bool) -> bool:
    return training and x.device.type == "cpu" and 0.0 < p < 1.0


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by 1/(1 − p)."""
    if not training or p == 0.0:
        return x
    if not _fast(x, p, training):
        return F.dropout(x, p, training)
    return _scaled(x, *_keep(x, p))


def relu_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``dropout(relu(x), p)``, equal to it value for value (the same draws), with the ReLU's
    zeros folded into the dropout mask."""
    if not _fast(x, p, training):
        return dropout(F.relu(x), p, training)
    keep, scale = _keep(x, p)
    # x > 0 read from the bits (sign clear, not zero): torch's bfloat16 comparison is twice as
    # slow as the same comparison of integers (float32's is as fast)
    positive = x.view(_SAME_WIDTH_INT[x.element_size()]) > 0
    return _scaled(x, keep.bitwise_and_(positive), scale)


class Dropout(nn.Module):
    """:func:`dropout` as a module (active in training mode only)."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
