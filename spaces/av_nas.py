"""The AV-NAS search space (paper 000, Fig. 2, Table 1, Eqs. 3-35).

Per modality an encoder ``E2 ∘ E1`` with independent choices (Eqs. 3-5)::

    E1(X) = U3 ∘ Down( D1( M2∘U1∘M1∘Up1(X), U2∘Up2(X) ) )
    E2(X) = U4 ∘ D2( M3(X'), X' ),   X' = E1(X)

then fusion ``F(I1(E_v, E_a), I2(E_a, E_v))`` (Eq. 14), transformation ``T`` (Eq. 33) and the
hash layer ``tanh(FC(h))`` (Eq. 34). The paper's T pools its sequence by the mean; here each T
candidate also comes max-pooled (``SelfSSM/max``, option ``pools``; ``pools=mean`` is the
paper's space). With ``input_norm=search`` each modality's input first passes an input cell
``N`` (Skip or VideoNorm: the training set's standardisation alone, or then each video's own
over time). With one modality the fusion block becomes a self-fusion
cell ``S`` (SelfAttention or SelfSSM), the paper's single-signal variant (Table 2, lines 21-22).
"""
from __future__ import annotations

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace
from avsearch.ops.names import ATTENTION_POSITIONS, TIME_POOLS, pooled_op
from avsearch.ops.registry import OpConfig
from avsearch.options import (AT_LEAST_ONE, PRIOR, Check, Option, distinct_from, integers,
                              modality_widths, names, one_of)
from avsearch.spaces import register_space

UNARY = ["Skip", "SiLU", "LayerNorm"]
BINARY = ["Add", "Hadamard"]
INTERACTION = ["CrossAttention", "CrossSSM"]
FUSION = ["Add", "GatedAttention"]
TRANSFORM = ["SelfAttention", "SelfSSM"]
# input_norm=search: the training set's standardisation alone, or then each video's own
INPUT_NORMS = ["Skip", "VideoNorm"]

OPTIONS = {
    "d": Option(64, int, "model width (the paper uses 768)", AT_LEAST_ONE),
    "e": Option(2, int, "Up/Down expansion factor: M1, M2, U1, U2, D1 work at width e*d",
                AT_LEAST_ONE),
    "bits": Option(64, int, "hash code length", AT_LEAST_ONE),
    "heads": Option(4, int, "attention heads (the paper uses 12); must divide d and e*d",
                    AT_LEAST_ONE),
    "conv_kernels": Option((3,), integers,
                           "Conv kernel sizes: one size is one Conv_k candidate (the paper's "
                           "count), several expand to Conv_3, Conv_4, ... (the authors' code)",
                           Check(lambda ks: min(ks) >= 1, "kernel sizes >= 1")),
    "modalities": Option({"visual": 64, "audio": 40}, modality_widths,
                         "input widths per modality, e.g. visual:768,audio:768; a width other "
                         "than d gets an input projection; one modality = single-signal variant",
                         Check(lambda m: 1 <= len(m) <= 2, "one or two modalities")),
    "up_down": Option(True, bool, "keep the Up/Down projections (false: Table 3's plain "
                                  "Transformer beside its Transformer+)"),
    "d_state": Option(16, int, "SSM state size", AT_LEAST_ONE),
    "dropout": Option(0.1, float, "dropout of FFN, MLP and attention (Table 1)", PRIOR),
    "pools": Option(TIME_POOLS, names,
                    "how the T cell may pool over time: mean (the paper's only pool), max; with "
                    "several, pooling is searched (each T candidate in each pool) and the "
                    "presets take the first; pools=mean is the paper's space",
                    distinct_from(TIME_POOLS, "pools"), recorded_before=("mean",)),
    "positions": Option("none", str,
                        "positions added to the input of an M cell's SelfAttention: none (the "
                        "authors' code: only the T cell's attention has positions), learned, "
                        "or sinusoidal (Vaswani et al. 2017, the Transformer of Eqs. 6-8)",
                        one_of(*ATTENTION_POSITIONS)),
    "input_norm": Option("train", str,
                         "how each modality's features are normalised: train (by the training "
                         "set's mean and std per feature) or video (then also by each video's "
                         "own mean and std over time, per feature; the temporal CNN baseline "
                         "gets the same) or search (an input cell per modality, N, chooses "
                         "between Skip and VideoNorm after the training set's standardisation; "
                         "the presets and the CNN baseline take train)",
                         one_of("train", "video", "search")),
}


def _encoder(space: SearchSpace, m: str, width: int, d: int, up_down: bool, m_ops: list[str],
             input_norm: str) -> str:
    x = space.input(m, width)
    if input_norm == "search":
        x = space.choice(f"{m}.N", "N", INPUT_NORMS, [x])
    if width != d:
        x = space.fixed(f"{m}.proj", "Linear", [x], "d")
    wide = "e*d" if up_down else "d"
    up1 = space.fixed(f"{m}.Up1", "Linear", [x], wide) if up_down else x
    up2 = space.fixed(f"{m}.Up2", "Linear", [x], wide) if up_down else x
    h = space.choice(f"{m}.M1", "M", m_ops, [up1])
    h = space.choice(f"{m}.U1", "U", UNARY, [h])
    h = space.choice(f"{m}.M2", "M", m_ops, [h])
    g = space.choice(f"{m}.U2", "U", UNARY, [up2])
    h = space.choice(f"{m}.D1", "D", BINARY, [h, g])
    if up_down:
        h = space.fixed(f"{m}.Down", "Linear", [h], "d")
    x1 = space.choice(f"{m}.U3", "U", UNARY, [h])
    h = space.choice(f"{m}.M3", "M", m_ops, [x1])
    h = space.choice(f"{m}.D2", "D", BINARY, [h, x1])
    return space.choice(f"{m}.U4", "U", UNARY, [h])


@register_space("av_nas", "AV-NAS audio-visual hashing space (M/U/D/I/F/T cells, Table 1)", OPTIONS)
def av_nas(d, e, bits, heads, conv_kernels, modalities, up_down, d_state, dropout,
           pools, positions, input_norm) -> SearchSpace:
    if d % heads or (e * d) % heads:
        raise SpaceError(f"space 'av_nas': heads={heads} must divide d={d} and e*d={e * d}")
    modalities = {m: (w if w is not None else d) for m, w in modalities.items()}
    conv = ["Conv_k"] if len(conv_kernels) == 1 else [f"Conv_{k}" for k in conv_kernels]
    m_ops = ["Skip", "FFN", "MLP", *conv, "SelfAttention", "SelfSSM"]

    config = dict(d=d, e=e, bits=bits, heads=heads, conv_kernels=list(conv_kernels),
                  modalities=modalities, up_down=up_down, d_state=d_state, dropout=dropout,
                  pools=list(pools), positions=positions, input_norm=input_norm)
    space = SearchSpace("av_nas", config, OpConfig(heads=heads, d_state=d_state, dropout=dropout,
                                                   conv_kernel=conv_kernels[0],
                                                   attention_positions=positions,
                                                   input_norm=input_norm))
    encoded = [_encoder(space, m, w, d, up_down, m_ops, input_norm)
               for m, w in modalities.items()]
    if len(encoded) == 2:
        v, a = encoded
        i1 = space.choice("I1", "I", INTERACTION, [v, a])
        i2 = space.choice("I2", "I", INTERACTION, [a, v])
        fused = space.choice("F", "F", FUSION, [i1, i2])
    else:
        fused = space.choice("S", "S", TRANSFORM, encoded)
    # the paper's T pools by the mean; a T that max-pools keeps what few frames show (the
    # temporal CNN's pooling). Searching both is the default: over 3 seeds of 4 data sets csp
    # did at least as well on average as with the mean alone (experiments/generality)
    h = space.choice("T", "T", [pooled_op(op, pool) for op in TRANSFORM for pool in pools],
                     [fused])
    space.output(space.fixed("hash", "Hash", [h], "bits"))

    conv_op = conv[0]
    experts = {
        # Eqs. 6-8: E1 = LN∘Down(MLP∘Skip∘SelfAttention∘Up(X) + Skip∘Up(X)), E2 = LN(FFN(X) + X)
        "transformer": (dict(M1="SelfAttention", U1="Skip", M2="MLP", U2="Skip", D1="Add",
                             U3="LayerNorm", M3="FFN", D2="Add", U4="LayerNorm"),
                        "CrossAttention", "SelfAttention"),
        # Eqs. 9-11: E1 = Skip∘Down(SSM∘SiLU∘Conv_k∘Up(X) ⊗ SiLU∘Up(X)), E2 = LN(Skip(X) + X)
        "mamba": (dict(M1=conv_op, U1="SiLU", M2="SelfSSM", U2="SiLU", D1="Hadamard", U3="Skip",
                       M3="Skip", D2="Add", U4="LayerNorm"),
                  "CrossSSM", "SelfSSM"),
    }
    for name, (enc, interaction, seq_op) in experts.items():
        choices = {f"{m}.{cell}": op for m in modalities for cell, op in enc.items()}
        if input_norm == "search":
            choices.update({f"{m}.N": INPUT_NORMS[0] for m in modalities})
        if len(modalities) == 2:
            choices.update(I1=interaction, I2=interaction, F="Add")
        else:
            choices["S"] = seq_op
        choices["T"] = pooled_op(seq_op, pools[0])
        space.preset(name, choices)
    return space
