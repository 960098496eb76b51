"""Dropout with a mask that is cheap to draw on the CPU.

torch's CPU dropout draws one Bernoulli sample per element through a scalar generator: about
12 ms per million elements on these cores, 18% of a mixed av_nas training step at d=64.
Here every 64-bit random integer gives four 16-bit uniforms, and an element is kept when its
uniform clears p quantised to 1/65536 (p = 0.1 drops 6554/65536 = 0.100006), with the kept
values scaled by 1/(1 − p). The integers come from torch's generator, so runs stay seeded
and resumable. Elsewhere (CUDA) torch's fused dropout is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["dropout", "Dropout"]

_LEVELS = 65536


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by 1/(1 − p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    dropped = round(p * _LEVELS)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2**63, None)
    uniform = words.view(torch.int16)[:x.numel()].view(x.shape)   # uniform on [-32768, 32767]
    keep = uniform >= dropped - _LEVELS // 2
    return x * keep * (_LEVELS / (_LEVELS - dropped))


class Dropout(nn.Module):
    """:func:`dropout` as a module (active in training mode only)."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
