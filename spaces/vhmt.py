"""The VHMT search space (paper 001, §3.2-3.3, Eqs. 5-10, Table 3).

A teacher-student network on one modality of frame features F (batch, T, D)::

    student:  F → embed → E_S = Mamba^{×E_S} → LN = student.latent (B, T, d)
                → FrameHash (Eq. 9) = student.frame_codes (B, T, k)
                → mean over T (Eq. 10 before the sign) = student.codes (B, k)   [the output]
              student.frame_codes → Linear → D_S = Mamba^{×D_S} → Linear = student.recon (B, T, D)
    teacher:  F → embed → E_T = TAM^{×E_n} ∘ DWT ∘ … ∘ TAM^{×E_1}, back to T frames → LN
                = teacher.latent (B, T, d) → FrameHash → teacher.frame_codes → mean = teacher.codes
              teacher.frame_codes → Linear → D_T = TAM^{×D_T} → Linear = teacher.recon (B, T, D)

Cells (kinds are the paper's symbols; ops in :mod:`avsearch.ops.vhmt`):

* ``teacher.encoder`` (ET): schedule × downsampling, one candidate each, named
  ``<E_1>-…-<E_n>/<down>`` (``8-4-2/haar``): Table 3's schedules {4-2, 4-2-2, 8-4-2,
  16-8-4-2} × {haar, db4, sym8, maxpool, avgpool}, plus ``none``: no teacher, the student
  alone (Table 3, Exp. X). One cell, because the downsampling has no weights and the
  schedules share their stages' weights, so a schedule and a downsampling are one decision
  about one set of weights.
* ``teacher.decoder`` (DT): ``TAM_1``, ``TAM_2`` (D_T).
* ``student.encoder`` (ES): ``Mamba_3``, ``Mamba_6``, ``Mamba_12``, ``Mamba_16`` (E_S); with
  the option ``student_blocks`` also temporal convolutions ``TCN_<n>`` (not in the paper: the
  self-supervised runs' CNN baseline, :func:`avsearch.baselines.student_cnn`, is one).
* ``student.decoder`` (DS): ``Mamba_1``, ``Mamba_2`` (D_S).
* ``sampler`` (FS), only with the option ``samplers`` (which ``--objective autossvh`` sets to
  ``random,adversarial``): AutoSSVH's frame sampler, which picks the frames each training
  view drops (:class:`~avsearch.ops.frame_sampler.DropMask`); training only, the codes never
  depend on it.

21 × 2 × 4 × 2 = 336 architectures (times the samplers with a sampler cell). With ``none``
the D_T choice has no effect, so the 16 ``none`` architectures are 8 distinct networks.

Depth choices share weights (a depth-n candidate is the first n blocks of one stack; stage i
of every schedule is a prefix of one stage-i stack), so one-shot strategies train one set of
weights for the whole cell and a derived network inherits its blocks by name.

Named nodes for objectives (``Network.node_outputs``): ``student.codes`` (the output),
``student.latent``, ``student.recon``, ``teacher.latent``, ``teacher.codes``,
``teacher.recon``, and the per-frame codes ``student.frame_codes`` / ``teacher.frame_codes``
(Eq. 9's H̃). The reconstructions target the *standardised* input, ``node_outputs[modality]``.
With the ``none`` teacher every ``teacher.*`` node is zeros of its shape ((B, T, d),
(B, T, k), (B, k), (B, T, D)), so a mixed cell's sum and the objectives see the same shapes
in every architecture; a derived network with ``none`` holds no teacher layers at all.

What the paper leaves open, and what we chose:

* the decoders decode the per-frame soft codes H̃ (§3.4: "temporal reconstruction via hash
  code decoding"), through a linear layer to the decoder width and one back to D;
* the student decoder works at ``d_dec`` (§4.3: 192 beside the encoder's 256), the teacher's
  decoder at d;
* the teacher's sequence, shortened by each downsampling (25 → 13 → 7 → 4), is interpolated
  back to T frames at the end of the encoder (see :mod:`avsearch.ops.vhmt`), so teacher.latent
  has T frames in every schedule;
* the teacher adds a learned positional embedding before its first block (encoder and
  decoder); the causal Mamba student has none;
* each branch has its own input projection D → d (``student.embed``, ``teacher.embed``; none
  when D = d), a final LayerNorm on its encoder (``*.latent``) and its own hash layer;
* inference codes are sign(mean_t H̃) (avsearch's sign of the output), not Eq. 10's majority
  vote sign(mean_t sign(H̃)); :meth:`avsearch.ops.tam.FrameHashLayer.codes` gives the vote.
"""
from __future__ import annotations

from typing import Any, Sequence

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace
from avsearch.ops.names import (DOWNSAMPLE_MODES, SAMPLERS, STUDENT_BLOCKS, TABLE3_SCHEDULES,
                                TAM_VARIANTS, teacher_encoder_op)
from avsearch.ops.registry import OpConfig
from avsearch.options import (AT_LEAST_ONE, FRACTION, PRIOR, Check, Option, distinct_from,
                              integers, modality_widths, names, one_of)
from avsearch.spaces import register_space

__all__ = ["build_vhmt", "TABLE3", "AUXILIARY", "SAMPLER", "STUDENT_LATENT", "STUDENT_RECON",
           "TEACHER_LATENT", "TEACHER_CODES", "TEACHER_RECON"]

# The nodes objectives read (``Network.node_outputs``), named here only: the vhmt and autossvh
# objectives import these names.
STUDENT_LATENT, STUDENT_RECON = "student.latent", "student.recon"
TEACHER_LATENT, TEACHER_CODES, TEACHER_RECON = "teacher.latent", "teacher.codes", "teacher.recon"
AUXILIARY = (STUDENT_LATENT, STUDENT_RECON, TEACHER_LATENT, TEACHER_CODES, TEACHER_RECON)
SAMPLER = "sampler"   # the frame-sampler cell (option ``samplers``), read by --objective autossvh

# Table 3: (E_T or None for "M^S only", downsampling, D_T, E_S, D_S) per experiment
TABLE3 = {
    "exp1": ((4, 2), "haar", 1, 3, 1),
    "exp2": ((4, 2, 2), "haar", 1, 6, 1),
    "exp3": ((8, 4, 2), "haar", 1, 6, 1),      # the configuration the paper adopts
    "exp4": ((8, 4, 2), "haar", 2, 12, 2),
    "exp5": ((16, 8, 4, 2), "haar", 2, 16, 2),
    "exp6": ((8, 4, 2), "db4", 1, 6, 1),
    "exp7": ((8, 4, 2), "sym8", 1, 6, 1),
    "exp8": ((8, 4, 2), "maxpool", 1, 6, 1),
    "exp9": ((8, 4, 2), "avgpool", 1, 6, 1),
    "exp10": (None, None, 1, 6, 1),            # M^S only (the D_T choice has no effect)
}


# ---------------------------------------------------------------- option types and checks
def parse_schedule(value: Any) -> tuple[int, ...]:
    """``"8-4-2"`` or ``[8, 4, 2]`` → ``(8, 4, 2)``."""
    parts = value.split("-") if isinstance(value, str) else list(value)
    depths = tuple(int(p) for p in parts)
    if not depths or min(depths) < 1:
        raise ValueError(f"a schedule is depths >= 1 joined by '-', e.g. 8-4-2; got {value!r}")
    return depths


def parse_schedules(value: Any) -> tuple[tuple[int, ...], ...]:
    """``"4-2,8-4-2"`` or ``["4-2", "8-4-2"]`` → ``((4, 2), (8, 4, 2))``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(parse_schedule(s.strip() if isinstance(s, str) else s) for s in items
                if not isinstance(s, str) or s.strip())
    if not out:
        raise ValueError("expected comma-separated schedules such as 4-2,8-4-2")
    return out


def parse_samplers(value: Any) -> tuple[str, ...]:
    """``"random,adversarial"`` → ``("random", "adversarial")``; ``""``, ``"none"`` or ``[]``
    → ``()``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(s).strip() for s in items if str(s).strip())
    return () if names == ("none",) else names


DEPTHS = Check(lambda v: min(v) >= 1 and len(set(v)) == len(v), "distinct depths >= 1")


def common_options(d: int = 64) -> dict[str, Option]:
    """The options the ``vhmt`` and ``tam`` spaces share."""
    return {
        "d": Option(d, int, "width of both encoders and the teacher decoder (the paper: 256)",
                    AT_LEAST_ONE),
        "d_dec": Option(48, int, "width of the student decoder (the paper: 192)", AT_LEAST_ONE),
        "bits": Option(64, int, "hash code length k", AT_LEAST_ONE),
        "heads": Option(4, int, "attention heads of the teacher's MHA; must divide d",
                        AT_LEAST_ONE),
        "d_state": Option(16, int, "Mamba state size u (the paper: 16)", AT_LEAST_ONE),
        "dropout": Option(0.1, float, "dropout of attention probabilities and TRE's MLP", PRIOR),
        "samplers": Option((), parse_samplers,
                           "candidates of AutoSSVH's frame-sampler cell, from "
                           + ", ".join(SAMPLERS) + " (none: no sampler cell; the autossvh "
                           "objective makes it random,adversarial unless set)",
                           Check(distinct_from(SAMPLERS, "names").test,
                                 f"distinct names from {', '.join(SAMPLERS)} (or none)")),
        "drop_ratio": Option(0.75, float, "share of frames the sampler drops per view (M/M0; "
                                          "the AutoSSVH code's 0.75)", FRACTION),
        "modalities": Option({"visual": 64}, modality_widths,
                             "the one input, frame features NAME:WIDTH (e.g. visual:4096); "
                             "a width other than d gets an input projection per branch"),
    }


def check_common(space: str, d: int, heads: int,
                 modalities: dict[str, int | None]) -> tuple[str, int]:
    """What the shared options' own checks cannot see; returns the modality and its width."""
    if d % heads:
        raise SpaceError(f"space {space!r}: heads={heads} must divide d={d}")
    if len(modalities) != 1:
        raise SpaceError(f"space {space!r} takes one modality (frame features), got "
                         f"{list(modalities)}; use a one-modality data set (an SSVH folder), select "
                         f"one (data NAME:visual) or join them (data NAME:visual+audio)")
    (modality, width), = modalities.items()
    return modality, (width if width is not None else d)


def build_vhmt(space: SearchSpace, modality: str, width: int, teacher: Sequence[str],
               teacher_decoder: Sequence[str], student: Sequence[str],
               student_decoder: Sequence[str], samplers: Sequence[str] = (),
               teacher_decoder_follows: bool = False) -> None:
    """Declare the VHMT network (module docstring) with these candidates per cell."""
    d = space.config["d"]
    x = space.input(modality, width)
    if samplers:
        space.choice(SAMPLER, "FS", samplers, [x])
    s_in = space.fixed("student.embed", "Linear", [x], "d") if width != d else x
    h = space.choice("student.encoder", "ES", student, [s_in])
    s_lat = space.fixed(STUDENT_LATENT, "LayerNorm", [h], "d")
    s_frames = space.fixed("student.frame_codes", "FrameHash", [s_lat], "bits")
    s_codes = space.fixed("student.codes", "MeanPool", [s_frames], "bits")
    h = space.fixed("student.dec_in", "Linear", [s_frames], "d_dec")
    h = space.choice("student.decoder", "DS", student_decoder, [h])
    space.fixed(STUDENT_RECON, "Linear", [h], width)

    t_in = space.fixed("teacher.embed", "Linear", [x], "d") if width != d else x
    t = space.choice("teacher.encoder", "ET", teacher, [t_in])
    t_lat = space.fixed(TEACHER_LATENT, "LayerNorm", [t], "d")
    t_frames = space.fixed("teacher.frame_codes", "FrameHash", [t_lat], "bits")
    space.fixed(TEACHER_CODES, "MeanPool", [t_frames], "bits")
    h = space.fixed("teacher.dec_in", "Linear", [t_frames], "d")
    h = space.choice("teacher.decoder", "DT", teacher_decoder, [h],
                     follows=t if teacher_decoder_follows else None)
    space.fixed(TEACHER_RECON, "Linear", [h], width)
    space.output(s_codes, auxiliary=AUXILIARY + ((SAMPLER,) if samplers else ()))


def preset_sampler(space: SearchSpace) -> dict[str, str]:
    """A preset's sampler choice: the paper's adversarial sampler when it is a candidate."""
    if SAMPLER not in space.cells:
        return {}
    options = space.candidates(SAMPLER)
    return {SAMPLER: "adversarial" if "adversarial" in options else options[0]}


OPTIONS = {
    **common_options(),
    "tam": Option("MHA+TRE", str, "TAM variant of every teacher block: "
                                  + ", ".join(TAM_VARIANTS) + " (Table 4; the paper's TAM is MHA+TRE)",
                  one_of(*TAM_VARIANTS)),
    "schedules": Option(TABLE3_SCHEDULES, parse_schedules,
                        "teacher depth schedules E_T, e.g. 4-2,8-4-2 (Table 3's four by default)",
                        Check(lambda v: len(set(v)) == len(v), "schedules that do not repeat")),
    "downsampling": Option(DOWNSAMPLE_MODES, names,
                           "downsampling between teacher stages: " + ", ".join(DOWNSAMPLE_MODES),
                           distinct_from(DOWNSAMPLE_MODES, "modes")),
    "teacher_decoder_depths": Option((1, 2), integers, "teacher decoder depths D_T", DEPTHS),
    "student_depths": Option((3, 6, 12, 16), integers, "student encoder depths E_S", DEPTHS),
    "student_blocks": Option(STUDENT_BLOCKS[:1], names,
                             "student encoder blocks: Mamba (the paper), TCN (temporal "
                             "convolutions); each block at each depth is an E_S candidate",
                             distinct_from(STUDENT_BLOCKS, "blocks")),
    "student_decoder_depths": Option((1, 2), integers, "student decoder depths D_S", DEPTHS),
}


@register_space("vhmt", "VHMT teacher-student hashing space (teacher schedule and downsampling, "
                        "D_T, E_S, D_S; Table 3)", OPTIONS)
def vhmt(d, d_dec, bits, heads, d_state, dropout, samplers, drop_ratio, modalities, tam,
         schedules, downsampling, teacher_decoder_depths, student_depths, student_blocks,
         student_decoder_depths) -> SearchSpace:
    name = "vhmt"
    modality, width = check_common(name, d, heads, modalities)
    lists = {"teacher_decoder_depths": teacher_decoder_depths, "student_depths": student_depths,
             "student_decoder_depths": student_decoder_depths}
    teacher = list(dict.fromkeys(teacher_encoder_op(s, m) for s in schedules for m in downsampling))
    teacher.append("none")

    config = dict(d=d, d_dec=d_dec, bits=bits, heads=heads, d_state=d_state, dropout=dropout,
                  samplers=list(samplers), drop_ratio=drop_ratio,
                  modalities={modality: width}, tam=tam,
                  schedules=["-".join(map(str, s)) for s in schedules], downsampling=list(downsampling),
                  student_blocks=list(student_blocks), **{k: list(v) for k, v in lists.items()})
    space = SearchSpace(name, config, OpConfig(heads=heads, d_state=d_state, dropout=dropout,
                                               tam_variant=tam, drop_ratio=drop_ratio))
    build_vhmt(space, modality, width, teacher,
               [f"TAM_{n}" for n in lists["teacher_decoder_depths"]],
               [f"{block}_{n}" for block in student_blocks for n in lists["student_depths"]],
               [f"Mamba_{n}" for n in lists["student_decoder_depths"]], samplers)

    for preset, (plan, down, dt, es, ds) in TABLE3.items():
        choices = {"teacher.encoder": "none" if plan is None else
                   ("-".join(map(str, plan)) + f"/{down}"),
                   "teacher.decoder": f"TAM_{dt}", "student.encoder": f"Mamba_{es}",
                   "student.decoder": f"Mamba_{ds}"}
        if plan is None:   # D_T has no effect without a teacher: its first candidate
            choices["teacher.decoder"] = space.candidates("teacher.decoder")[0]
        choices.update(preset_sampler(space))
        if all(op in space.candidates(c) for c, op in choices.items()):
            space.preset(preset, choices)
    return space
