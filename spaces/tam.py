"""The TAM space: VHMT at a fixed depth configuration, searching the TAM variant (paper 001,
§3.3, Table 4).

The network is :mod:`avsearch.spaces.vhmt`'s at Table 3's adopted setting, Exp. (III)
(E_T = {8, 4, 2} with Haar, D_T = 1, E_S = 6, D_S = 1; options change it), and the choice is
the design of the TAM block (Eq. 11):

=========  ===============  ================  ==================
preset     Table 4          token mixer       second sub-block
=========  ===============  ================  ==================
exp1       (I)              MHA               none
exp2       (II)             MHA               MLP (Eq. 13)
exp3       (III)            MHA               TKAN
exp4       (IV)             Mamba             TRE
exp5       (V)              MHA               TRE (the paper's TAM)
=========  ===============  ================  ==================

One decision for the whole teacher: Table 4 ablates "the TAM module's components with other
settings fixed", one variant per row, and the teacher is built of that one module (Eqs. 5-6),
so every TAM block of the teacher — all encoder stages and the decoder — is of the chosen
variant. The cell ``teacher.encoder`` holds the choice; ``teacher.decoder`` *follows* it (its
own weights, no choice of its own), so the space has exactly Table 4's five architectures.
The student (Mamba) is not a TAM and stays as it is; its cells have one candidate each.
"""
from __future__ import annotations

from avsearch.graph import SearchSpace
from avsearch.ops.names import DOWNSAMPLE_MODES, TAM_VARIANTS
from avsearch.ops.registry import OpConfig
from avsearch.options import AT_LEAST_ONE, Option, one_of
from avsearch.spaces import register_space
from avsearch.spaces.vhmt import build_vhmt, check_common, common_options, parse_schedule, preset_sampler

OPTIONS = {
    **common_options(),
    "schedule": Option((8, 4, 2), parse_schedule, "teacher depths per stage E_T (Exp. III: 8-4-2)"),
    "downsample": Option("haar", str, "downsampling between teacher stages: "
                                      + ", ".join(DOWNSAMPLE_MODES), one_of(*DOWNSAMPLE_MODES)),
    "teacher_decoder_depth": Option(1, int, "teacher decoder depth D_T", AT_LEAST_ONE),
    "student_depth": Option(6, int, "student encoder depth E_S", AT_LEAST_ONE),
    "student_decoder_depth": Option(1, int, "student decoder depth D_S", AT_LEAST_ONE),
}


@register_space("tam", "VHMT with the TAM variant of the whole teacher searched (Table 4)", OPTIONS)
def tam(d, d_dec, bits, heads, d_state, dropout, samplers, drop_ratio, modalities, schedule,
        downsample, teacher_decoder_depth, student_depth, student_decoder_depth) -> SearchSpace:
    name = "tam"
    modality, width = check_common(name, d, heads, modalities)
    config = dict(d=d, d_dec=d_dec, bits=bits, heads=heads, d_state=d_state, dropout=dropout,
                  samplers=list(samplers), drop_ratio=drop_ratio, modalities={modality: width},
                  schedule="-".join(map(str, schedule)),
                  downsample=downsample, teacher_decoder_depth=teacher_decoder_depth,
                  student_depth=student_depth, student_decoder_depth=student_decoder_depth)
    op_config = OpConfig(heads=heads, d_state=d_state, dropout=dropout, tam_depths=schedule,
                         tam_downsample=downsample, tam_decoder_depth=teacher_decoder_depth,
                         drop_ratio=drop_ratio)
    space = SearchSpace(name, config, op_config)
    variants = list(TAM_VARIANTS)
    build_vhmt(space, modality, width, variants, variants, [f"Mamba_{student_depth}"],
               [f"Mamba_{student_decoder_depth}"], samplers, teacher_decoder_follows=True)
    for i, variant in enumerate(variants, start=1):
        space.preset(f"exp{i}", {"teacher.encoder": variant,
                                 "student.encoder": f"Mamba_{student_depth}",
                                 "student.decoder": f"Mamba_{student_decoder_depth}",
                                 **preset_sampler(space)})
    return space
