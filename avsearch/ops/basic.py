"""Elementary candidate ops of AV-NAS Table 1 and the small modules the blocks reuse.

Every module works on channels-last sequences ``(batch, L, w)``. Binary modules take
``(x, y)`` of equal shape; :class:`MeanPool` and :class:`MaxPool` map ``(batch, L, w)`` to
``(batch, w)``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.ops.dropout import Dropout, relu_dropout
from avsearch.ops.names import TIME_POOLS
from avsearch.ops.registry import OpConfig, register_op

__all__ = [
    "Identity", "FeedForward", "LinearDropout", "CausalDepthwiseConv", "Add", "Hadamard",
    "GatedAttention", "MeanPool", "MaxPool", "POOLS", "Pooled",
    "pooled_from_shared", "VideoNorm", "normalise_per_video", "PER_VIDEO_MIN_STD",
]


class Identity(nn.Module):
    """``Skip``: returns its input unchanged (Table 1, U cells; serves every kind)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class FeedForward(nn.Module):
    """``FFN`` = FC_w ∘ Drop ∘ ReLU ∘ FC_{mult·w} (Table 1).

    Also the feed-forward half of :class:`~avsearch.ops.attention.TransformerBlock`.
    """

    def __init__(self, width: int, mult: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, mult * width)
        self.dropout = Dropout(dropout)
        self.fc2 = nn.Linear(mult * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(relu_dropout(self.fc1(x), self.dropout.p, self.training))


class LinearDropout(nn.Module):
    """``MLP`` = Drop ∘ FC_w (Table 1); in Eq. 6 it plays attention's output projection."""

    def __init__(self, width: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc(x))


class CausalDepthwiseConv(nn.Module):
    """Depthwise Conv1d over time, causal: output step t sees input steps ≤ t.

    ``Conv_k`` of Table 1 and the short convolution inside Mamba and CrossMamba blocks.
    Causal (left padding by k−1) so that Eq. 9's Conv_k matches Mamba's convolution.
    """

    def __init__(self, width: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(width, width, kernel_size, groups=width, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # k shifted multiply-adds instead of conv1d: 4x faster forward+backward on CPU for
        # Mamba-sized kernels (mkldnn's depthwise conv backward is slow); same parameters.
        k, length = self.kernel_size, x.shape[1]
        padded = F.pad(x, (0, 0, k - 1, 0))  # (B, k-1+L, w), zeros before the first step
        weight = self.conv.weight[:, 0, :]    # (w, k)
        out = padded[:, :length] * weight[:, 0]
        for j in range(1, k):
            out = out + padded[:, j:j + length] * weight[:, j]
        return out if self.conv.bias is None else out + self.conv.bias


class Add(nn.Module):
    """``Add``: x + y (D and F cells)."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


class Hadamard(nn.Module):
    """``Hadamard``: x ⊗ y, elementwise (D cells; Eq. 9's gate)."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x * y


class GatedAttention(nn.Module):
    """``GatedAttention`` (F cells): ρ·x + (1−ρ)·y with a learned, per-step gate ρ.

    ρ is the first of two softmax weights computed from [x, y] by ``Linear(2w, 2)``, so the
    output is a convex combination of x and y at every step.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * width, 2)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        rho = torch.softmax(self.gate(torch.cat([x, y], dim=-1)), dim=-1)[..., :1]
        return rho * x + (1 - rho) * y


class MeanPool(nn.Module):
    """Mean over time: (batch, L, w) → (batch, w); ends the paper's T cell's sequence."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1)


class MaxPool(nn.Module):
    """Max over time: (batch, L, w) → (batch, w). It keeps a feature that one step shows
    strongly, where a mean dilutes it among steps that do not (the temporal CNN baseline
    pools this way)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=1)


POOLS = dict(zip(TIME_POOLS, (MeanPool, MaxPool)))


class Pooled(nn.Module):
    """A sequence block followed by a pool over time (:data:`POOLS`): how T ops are built
    from S blocks."""

    def __init__(self, block: nn.Module, pool: str = "mean") -> None:
        super().__init__()
        self.block = block
        self.pool = POOLS[pool]()

    def forward(self, x: Tensor, sequence: Tensor | None = None) -> Tensor:
        """``sequence``: ``block(x)`` when the caller has it already (candidates of one cell
        that share the block pool the one sequence)."""
        return self.pool(self.block(x) if sequence is None else sequence)


def pooled_from_shared(shared: dict[str, nn.Module], key: str, build: Callable[[], nn.Module],
                       pool: str = "mean") -> Pooled:
    """A T op ``Pooled(block, pool)`` whose block is shared by every pool of one cell: the
    mean- and max-pooled candidates of a T cell train one block in the supernet, and a
    derived network inherits it whichever pool the search chose. The block is built (and
    draws from the RNG) only for the cell's first candidate that needs it."""
    if key not in shared:
        shared[key] = build()
    return Pooled(shared[key], pool)


PER_VIDEO_MIN_STD = 1e-3


def normalise_per_video(y: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """Each video's frames of ``y`` (batch, time, features) less their mean over time and,
    with ``scale``, divided by their std over time (per feature, at least
    ``PER_VIDEO_MIN_STD``): the per-utterance mean and variance normalisation of speech front
    ends, which takes out what is constant within a video (speaker, channel, a writer's
    stroke). A video of one step, or input of another shape, is returned as it is."""
    if y.dim() != 3 or y.shape[1] < 2:
        return y
    y = y - y.mean(1, keepdim=True)
    return y / y.std(1, keepdim=True).clamp_min(PER_VIDEO_MIN_STD) if scale else y


class VideoNorm(nn.Module):
    """``VideoNorm``: :func:`normalise_per_video` as a candidate of an input cell (av_nas's
    ``input_norm=search``), so that a search chooses it per modality beside ``Skip``."""

    def forward(self, x: Tensor) -> Tensor:
        return normalise_per_video(x)


# ---------------------------------------------------------------- registration (Table 1)

@register_op("Skip", kinds="*")
def _skip(width: int, config: OpConfig) -> nn.Module:
    return Identity()


@register_op("VideoNorm", kinds="N")
def _video_norm(width: int, config: OpConfig) -> nn.Module:
    return VideoNorm()


@register_op("FFN", kinds="M")
def _ffn(width: int, config: OpConfig) -> nn.Module:
    return FeedForward(width, config.ffn_mult, config.dropout)


@register_op("MLP", kinds="M")
def _mlp(width: int, config: OpConfig) -> nn.Module:
    return LinearDropout(width, config.dropout)


@register_op("Conv_k", kinds="M")
def _conv_k(width: int, config: OpConfig) -> nn.Module:
    return CausalDepthwiseConv(width, config.conv_kernel)


@register_op("Conv_<k>", kinds="M")
def _conv_family(width: int, config: OpConfig, k: int) -> nn.Module:
    return CausalDepthwiseConv(width, k)


@register_op("SiLU", kinds="U")
def _silu(width: int, config: OpConfig) -> nn.Module:
    return nn.SiLU()


@register_op("LayerNorm", kinds="U")
def _layer_norm(width: int, config: OpConfig) -> nn.Module:
    return nn.LayerNorm(width)


@register_op("Add", kinds=("D", "F"), arity=2)
def _add(width: int, config: OpConfig) -> nn.Module:
    return Add()


@register_op("Hadamard", kinds="D", arity=2)
def _hadamard(width: int, config: OpConfig) -> nn.Module:
    return Hadamard()


@register_op("GatedAttention", kinds="F", arity=2)
def _gated_attention(width: int, config: OpConfig) -> nn.Module:
    return GatedAttention(width)
