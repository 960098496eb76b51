"""The names of op families' members, without the modules: what a space declaration lists.

A space comes before the ops in the data flow (``docs/architecture.md``): it declares cells
by op *names*, which :mod:`avsearch.ops.registry` resolves, and builds no module itself. The
names it enumerates (the TAM variants of Table 4, the downsampling modes and teacher
schedules of Table 3, AutoSSVH's frame samplers) are defined here, once; the op modules
import them from here.
"""
from __future__ import annotations

import re
from typing import Sequence

__all__ = ["TAM_VARIANTS", "WAVELETS", "DOWNSAMPLE_MODES", "SAMPLERS", "TABLE3_SCHEDULES",
           "TEACHER_ENCODER", "teacher_encoder_op", "parse_teacher_encoder_op", "TIME_POOLS",
           "POOL_SUFFIX", "pooled_op", "STUDENT_BLOCKS", "MU_PATTERN", "mu_name",
           "ATTENTION_POSITIONS"]

# How a T op pools its sequence over time. The paper's T pools by the mean; its plain block
# name (``SelfSSM``) keeps that meaning, another pool is named ``<block>/<pool>``.
TIME_POOLS = ("mean", "max")
POOL_SUFFIX = "/(?P<pool>" + "|".join(TIME_POOLS[1:]) + ")"

# What an M cell's SelfAttention may add to its input (OpConfig.attention_positions): nothing
# (the authors' code), learned positions, or Vaswani et al.'s sinusoidal encoding
ATTENTION_POSITIONS = ("none", "learned", "sinusoidal")

# Table 4: the token mixer and second sub-block of a TAM block (the paper's TAM is MHA+TRE)
TAM_VARIANTS = ("MHA", "MHA+MLP", "MHA+KAN", "Mamba+TRE", "MHA+TRE")

# between the teacher's stages (Eq. 4): one DWT level's low band, or a pooling
WAVELETS = ("haar", "db4", "sym8")
DOWNSAMPLE_MODES = WAVELETS + ("maxpool", "avgpool")

# The candidates of a sampler cell (kind ``FS``): Table 3 (II) "w/ Random", the paper's
# adversarial sampler, and (I) "w/o ADV" (Gumbel top-k without the gradient reversal).
SAMPLERS = ("random", "adversarial", "gumbel")

# VHMT's student encoder blocks: Mamba (the paper's), or temporal convolutions (``TCN_<n>``,
# the temporal CNN baseline's layers, which self-supervised runs train as a baseline)
STUDENT_BLOCKS = ("Mamba", "TCN")

# Table 3's teacher depth schedules E_T
TABLE3_SCHEDULES = ((4, 2), (4, 2, 2), (8, 4, 2), (16, 8, 4, 2))

# The teacher encoders' names: one stage ``8``, or stages and a downsampling ``8-4-2/haar``
_DEPTH = r"[1-9][0-9]*"
TEACHER_ENCODER = re.compile(rf"(?P<single>{_DEPTH})|(?P<stages>{_DEPTH}(?:-{_DEPTH})+)"
                             rf"/(?P<down>{'|'.join(DOWNSAMPLE_MODES)})")


def teacher_encoder_op(depths: Sequence[int], downsample: str) -> str:
    """The ET candidate name of a schedule and a downsampling.

    ``(8, 4, 2), "haar"`` → ``"8-4-2/haar"``; a one-stage schedule has no downsampling and
    is named by its depth alone (``"8"``).
    """
    depths = tuple(int(e) for e in depths)
    if not depths or min(depths) < 1:
        raise ValueError(f"teacher depths must be >= 1 per stage, got {list(depths)}")
    if downsample not in DOWNSAMPLE_MODES:
        raise ValueError(f"unknown downsampling {downsample!r}; choose one of "
                         f"{', '.join(DOWNSAMPLE_MODES)}")
    return "-".join(map(str, depths)) + (f"/{downsample}" if len(depths) > 1 else "")


def parse_teacher_encoder_op(name: str) -> tuple[tuple[int, ...], str | None]:
    """``"8-4-2/haar"`` → ``((8, 4, 2), "haar")``; ``"8"`` → ``((8,), None)``."""
    schedule, _, down = name.partition("/")
    return tuple(int(e) for e in schedule.split("-")), (down or None)


def pooled_op(block: str, pool: str) -> str:
    """The T candidate name of a sequence block pooled one way: ``"SelfSSM", "max"`` →
    ``"SelfSSM/max"``; the mean is the block's own name."""
    if pool not in TIME_POOLS:
        raise ValueError(f"unknown pool {pool!r}; expected one of {TIME_POOLS}")
    return block if pool == TIME_POOLS[0] else f"{block}/{pool}"


# LAGNH's fusion-factor candidates (the ``fusion`` cell): ``mu1``, ``mu0p1`` (μ = 0.1: module
# names cannot hold a dot), ``mu10``
MU_PATTERN = r"mu(?P<mu>[0-9]+(p[0-9]+)?)"


def mu_name(mu: float) -> str:
    """The candidate name of fusion factor ``mu``: 0.1 → ``mu0p1``."""
    return "mu" + f"{mu:g}".replace(".", "p")
