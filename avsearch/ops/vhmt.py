"""VHMT's teacher and student as candidate ops (paper 001, §3.2-3.3, Eqs. 5-8, Tables 3-4).

Cell kinds are the paper's symbols:

====  =====================================  ==============================================
kind  part                                   candidates
====  =====================================  ==============================================
ET    teacher encoder, Eq. 5                 ``<E_1>-<E_2>-.../<down>`` e.g. ``8-4-2/haar``;
                                             ``none`` (no teacher); the TAM variants
                                             ``MHA`` ... ``MHA+TRE`` (the ``tam`` space)
DT    teacher decoder, Eq. 6                 ``TAM_<n>`` (D_T = n); the TAM variants
ES    student encoder, Eq. 7                 ``Mamba_<n>`` (E_S = n)
DS    student decoder, Eq. 8                 ``Mamba_<n>`` (D_S = n)
====  =====================================  ==============================================

Every op maps (batch, T, w) to (batch, T, w), so the candidates of a cell can be summed
(mixed mode) and the cell's width is the edge's. Hence the teacher encoder ends by bringing
its shortened sequence (one downsampling between stages: 25 → 13 → 7 → 4 frames) back to T
frames by linear interpolation — the step :class:`~avsearch.ops.tam.TAMDecoder` takes before
its blocks; here it sits at the end of the encoder so that every schedule's output has one
shape. The teacher's ops add a learned positional embedding first (TAM has no positional
signal of its own); the student's Mamba blocks are causal and need none.

Weight sharing (``shared``, see :mod:`avsearch.ops.registry`): within a cell, depth n is the
first n blocks of one stack (``Mamba_3`` is ``Mamba_16``'s first 3 blocks; ``TAM_1`` is
``TAM_2``'s first block), and teacher stage i of every schedule is a prefix of one stage-i
stack (``4-2/haar``'s stages are the first 4 and 2 blocks of ``16-8-4-2/sym8``'s first two
stages); the downsampling is parameter-free, and the positional embedding is shared too. A
derived network holding one candidate inherits these weights by name.

The TAM variant of the ``<schedule>/<down>`` and ``TAM_<n>`` ops is ``OpConfig.tam_variant``;
the variant-named ops (the ``tam`` space, Table 4) take the schedule, downsampling and decoder
depth from ``OpConfig.tam_depths``, ``tam_downsample`` and ``tam_decoder_depth``, and share
nothing across variants.

``none`` is registered ``absent``: in a mixed cell it adds zeros; a network that runs it alone
skips the teacher and gives zeros for every node that depends only on it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.ops.attention import LearnedPositionalEmbedding
from avsearch.ops.downsample import TemporalDownsample
from avsearch.ops.names import (DOWNSAMPLE_MODES, TABLE3_SCHEDULES, TAM_VARIANTS, TEACHER_ENCODER,
                                parse_teacher_encoder_op, teacher_encoder_op)
from avsearch.ops.registry import OpConfig, register_op
from avsearch.ops.ssm import MambaBlock
from avsearch.ops.tam import TAMBlock

__all__ = ["TABLE3_SCHEDULES", "BlockStack", "TeacherEncoder", "Zeros", "teacher_encoder_op",
           "parse_teacher_encoder_op"]


def _prefix(shared: dict[str, nn.Module], key: str, n: int,
            make: Callable[[], nn.Module]) -> list[nn.Module]:
    """The first ``n`` modules of the stack ``shared[key]``, growing it as needed."""
    stack = shared.setdefault(key, nn.ModuleList())
    while len(stack) < n:
        stack.append(make())
    return list(stack)[:n]


class BlockStack(nn.Module):
    """Blocks applied in order, after an optional positional embedding (Eqs. 6-8)."""

    def __init__(self, blocks: Sequence[nn.Module], pos: nn.Module | None = None) -> None:
        super().__init__()
        self.pos = pos
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        if self.pos is not None:
            x = self.pos(x)
        for block in self.blocks:
            x = block(x)
        return x

    def extra_repr(self) -> str:
        return f"depth={len(self.blocks)}"


class TeacherEncoder(nn.Module):
    """Eq. 5: TAM^{×E_n} ∘ DWT ∘ … ∘ DWT ∘ TAM^{×E_1}, then interpolated back to T frames.

    Args:
        width: d.
        config: heads, dropout, max_len, the TAM variant (``config.tam_variant``) and the
            Mamba settings of the ``Mamba+TRE`` variant.
        depths: E_T = (E_1, ..., E_n), TAM blocks per stage.
        downsample: ``haar``, ``db4``, ``sym8`` (one DWT level, low band only, Eq. 4),
            ``maxpool`` or ``avgpool``; T → ceil(T/2) between stages.
        shared: the cell's shared modules (positional embedding, one stack per stage).
    """

    def __init__(self, width: int, config: OpConfig, depths: Sequence[int], downsample: str,
                 shared: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        if not depths or min(depths) < 1:
            raise ValueError(f"teacher depths must be >= 1 per stage, got {list(depths)}")
        shared = {} if shared is None else shared
        self.depths = tuple(depths)
        self.pos = shared.setdefault("pos", LearnedPositionalEmbedding(width, config.max_len))
        self.stages = nn.ModuleList(
            nn.ModuleList(_prefix(shared, f"stage{i}", e,
                                  lambda: TAMBlock(width, config.tam_variant, config)))
            for i, e in enumerate(self.depths))
        self.down = TemporalDownsample(downsample)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        x = self.pos(x)
        for i, stage in enumerate(self.stages):
            if i:
                x = self.down(x)
            for block in stage:
                x = block(x)
        if len(self.stages) > 1:
            x = F.interpolate(x.transpose(1, 2), size=length, mode="linear",
                              align_corners=False).transpose(1, 2)
        return x

    def extra_repr(self) -> str:
        return f"depths={self.depths}"


class Zeros(nn.Module):
    """The ``none`` teacher: zeros of the input's shape (its share of a mixed cell's sum)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


# ---------------------------------------------------------------- teacher encoders
@register_op("<E_1>-<E_2>-…/<down>", kinds="ET", pattern=TEACHER_ENCODER)
def _teacher_encoder(width: int, config: OpConfig, shared: dict[str, nn.Module], single: str | None,
                     stages: str | None, down: str | None) -> nn.Module:
    """Every schedule × downsampling (:func:`~avsearch.ops.names.teacher_encoder_op` names
    them): Table 3's and any other a space's options give."""
    depths, _ = parse_teacher_encoder_op(single or f"{stages}/{down}")
    return TeacherEncoder(width, config, depths, down or DOWNSAMPLE_MODES[0], shared)


@register_op("none", kinds="ET", absent=True)
def _no_teacher(width: int, config: OpConfig) -> nn.Module:
    return Zeros()


# ---------------------------------------------------------------- depth stacks
@register_op("TAM_<n>", kinds="DT")
def _teacher_decoder(width: int, config: OpConfig, n: int, shared: dict[str, nn.Module]) -> nn.Module:
    pos = shared.setdefault("pos", LearnedPositionalEmbedding(width, config.max_len))
    return BlockStack(_prefix(shared, "blocks", n,
                              lambda: TAMBlock(width, config.tam_variant, config)), pos)


@register_op("Mamba_<n>", kinds=("ES", "DS"))
def _mamba_stack(width: int, config: OpConfig, n: int, shared: dict[str, nn.Module]) -> nn.Module:
    return BlockStack(_prefix(shared, "blocks", n, lambda: MambaBlock(width, config)))


class TemporalConv(nn.Module):
    """Conv1d(kernel 3, same width, zero-padded) over time, then ReLU: one layer of the
    temporal CNN baseline (:class:`avsearch.baselines.TemporalCNN`) as a student block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)


@register_op("TCN_<n>", kinds="ES")
def _conv_stack(width: int, config: OpConfig, n: int, shared: dict[str, nn.Module]) -> nn.Module:
    """A student encoder of ``n`` temporal convolutions: the self-supervised runs' CNN
    baseline trains one with the run's objective."""
    return BlockStack(_prefix(shared, "conv_blocks", n, lambda: TemporalConv(width)))


# ---------------------------------------------------------------- TAM variants (Table 4)
def _register_variant(variant: str) -> None:
    def encoder(width: int, config: OpConfig) -> nn.Module:
        config = dataclasses.replace(config, tam_variant=variant)
        return TeacherEncoder(width, config, config.tam_depths, config.tam_downsample)

    def decoder(width: int, config: OpConfig) -> nn.Module:
        config = dataclasses.replace(config, tam_variant=variant)
        return BlockStack([TAMBlock(width, variant, config) for _ in range(config.tam_decoder_depth)],
                          LearnedPositionalEmbedding(width, config.max_len))

    register_op(variant, kinds="ET")(encoder)
    register_op(variant, kinds="DT")(decoder)


for _variant in TAM_VARIANTS:
    _register_variant(_variant)
