"""The av_nas space: the paper's count, presets (Eqs. 6-11), options, one-modality variant."""
from __future__ import annotations

import pytest

import avsearch
from avsearch import SpaceError


def test_paper_count_and_expanded_kernels():
    paper = avsearch.get_space("av_nas", pools="mean")   # the paper's T pools by the mean
    assert paper.count() == 78_364_164_096  # (6^3·3^4·2^2)^2·2^2·2·2
    assert avsearch.get_space("av_nas").count() == 2 * 78_364_164_096   # T: × mean or max
    expanded = avsearch.get_space("av_nas", conv_kernels="3,4,5", pools="mean")
    assert expanded.count() == 440_301_256_704  # (8^3·3^4·2^2)^2·2^4
    assert "Conv_4" in expanded.candidates("visual.M1")
    assert "Conv_k" in avsearch.get_space("av_nas").candidates("audio.M3")


def test_cells_and_widths_follow_eqs_3_to_5():
    s = avsearch.get_space("av_nas", d=32, e=3, heads=4, modalities="visual:32,audio:40")
    cells = s.cells
    for m in ("visual", "audio"):
        for c in ("M1", "U1", "M2", "U2", "D1", "U3", "M3", "D2", "U4"):
            assert f"{m}.{c}" in cells
        for c in ("M1", "U1", "M2", "U2", "D1"):
            assert s.type_of(f"{m}.{c}").width == 96  # e·d
        for c in ("U3", "M3", "D2", "U4"):
            assert s.type_of(f"{m}.{c}").width == 32
    assert {"I1", "I2", "F", "T"} <= set(cells)
    assert s.inputs_of("I1") == ["visual.U4", "audio.U4"]
    assert s.inputs_of("I2") == ["audio.U4", "visual.U4"]
    assert "audio.proj" in s.graph and "visual.proj" not in s.graph  # only widths ≠ d project
    assert len(s.candidates("visual.M1")) == 6 and len(s.candidates("audio.U3")) == 3


def test_presets_are_eqs_6_to_11():
    s = avsearch.get_space("av_nas")
    t, m = s.presets["transformer"], s.presets["mamba"]
    assert [t[f"visual.{c}"] for c in ("M1", "U1", "M2", "U2", "D1", "U3", "M3", "D2", "U4")] == \
        ["SelfAttention", "Skip", "MLP", "Skip", "Add", "LayerNorm", "FFN", "Add", "LayerNorm"]
    assert [m[f"audio.{c}"] for c in ("M1", "U1", "M2", "U2", "D1", "U3", "M3", "D2", "U4")] == \
        ["Conv_k", "SiLU", "SelfSSM", "SiLU", "Hadamard", "Skip", "Skip", "Add", "LayerNorm"]
    assert (t["I1"], t["T"], m["I2"], m["T"]) == ("CrossAttention", "SelfAttention", "CrossSSM", "SelfSSM")
    assert avsearch.get_space("av_nas", conv_kernels="4,5").presets["mamba"]["visual.M1"] == "Conv_4"


def test_up_down_false_gives_the_plain_transformer():
    plain = avsearch.get_space("av_nas", up_down=False)
    assert not any(n.endswith((".Up1", ".Up2", ".Down")) for n in plain.graph)
    assert plain.type_of("visual.M1").width == 64
    assert plain.count() == avsearch.get_space("av_nas").count()
    plain.validate(plain.presets["transformer"])


def test_one_modality_is_the_single_signal_variant():
    s = avsearch.get_space("av_nas", modalities="visual:768")
    assert "S" in s.cells and not {"I1", "I2", "F"} & set(s.cells)
    assert s.candidates("S") == ("SelfAttention", "SelfSSM")
    assert s.presets["mamba"]["S"] == "SelfSSM"
    assert s.count() == 6**3 * 3**4 * 2**2 * 2 * 4     # S; T: 2 blocks × mean or max


@pytest.mark.parametrize("options, message", [
    ({"heads": 5}, "heads=5 must divide"),
    ({"modalities": "a,b,c"}, "one or two modalities"),
    ({"bits": 0}, "option bits=0 must be an integer >= 1"),
    ({"d": "x"}, "option d='x'"),
    ({"up_down": "maybe"}, "expected true or false"),
    ({"depth": 3}, "has no option 'depth'"),
])
def test_bad_options(options, message):
    with pytest.raises(SpaceError, match=message):
        avsearch.get_space("av_nas", **options)


def test_unknown_space():
    with pytest.raises(SpaceError, match="unknown space 'nope'"):
        avsearch.get_space("nope")
