"""The graph IR: declaration-time validation, counting, sampling, ids."""
from __future__ import annotations

import random

import pytest

from avsearch import SearchSpace, SpaceError
from avsearch.errors import ArchError


def small_space() -> SearchSpace:
    s = SearchSpace("small", {"d": 8, "e": 2, "bits": 4})
    x = s.input("v", width="d")
    up = s.fixed("v.up", "Linear", [x], width="e*d")
    a = s.choice("v.M", "M", ["Skip", "FFN", "Conv_k"], [up])
    b = s.choice("v.U", "U", ["Skip", "SiLU"], [up])
    c = s.choice("v.D", "D", ["Add", "Hadamard"], [a, b])
    t = s.choice("T", "T", ["SelfAttention", "SelfSSM"], [c])
    s.output(s.fixed("hash", "Hash", [t], width="bits"))
    return s


def test_types_and_widths_propagate():
    s = small_space()
    assert s.type_of("v.up").width == 16 and s.type_of("v.up").width_expr == "e*d"
    assert s.type_of("v.D").width == 16 and not s.type_of("v.D").pooled
    assert s.type_of("T").pooled and s.type_of("hash").width == 4
    assert s.inputs_of("v.D") == ["v.M", "v.U"]  # argument order kept
    assert s.cells == ["v.M", "v.U", "v.D", "T"]


def test_count_is_the_product_and_matches_enumeration():
    s = small_space()
    assert s.count() == 3 * 2 * 2 * 2
    seen = {s.canonical(s.sample(random.Random(i))) for i in range(400)}
    assert len(seen) == s.count()  # sample reaches every architecture


def test_sample_is_deterministic_and_valid():
    s = small_space()
    assert s.sample(3) == s.sample(random.Random(3))
    assert s.validate(s.sample(5)) == s.sample(5)


def test_arch_id_is_stable_and_order_free():
    s = small_space()
    arch = {"v.M": "FFN", "v.U": "SiLU", "v.D": "Add", "T": "SelfSSM"}
    reordered = dict(reversed(list(arch.items())))
    assert s.arch_id(arch) == s.arch_id(reordered)
    assert s.arch_id(arch) == small_space().arch_id(arch)  # stable across builds
    assert s.arch_id(arch) != s.arch_id({**arch, "T": "SelfAttention"})
    assert len(s.arch_id(arch)) == 16


@pytest.mark.parametrize("bad, message", [
    ({"v.M": "FFN", "v.U": "SiLU", "v.D": "Add"}, "no choice for cell(s) T"),
    ({"v.M": "FFN", "v.U": "SiLU", "v.D": "Add", "T": "Conv_k"}, "cell 'T': 'Conv_k' is not a candidate"),
    ({"v.M": "FFN", "v.U": "SiLU", "v.D": "Add", "T": "SelfSSM", "X": "Skip"}, "unknown cell(s) X"),
])
def test_validate_names_the_problem(bad, message):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        small_space().validate(bad)


def test_declaration_errors_name_node_and_candidate():
    s = SearchSpace("bad", {"d": 8})
    x = s.input("v", width="d")
    with pytest.raises(SpaceError, match=r"cell 'v\.M': candidate 'Nope': unknown op 'Nope'"):
        s.choice("v.M", "M", ["Skip", "Nope"], [x])
    with pytest.raises(SpaceError, match=r"cell 'v\.M2': candidate 'Add' takes 2 input\(s\)"):
        s.choice("v.M2", "D", ["Add"], [x])
    with pytest.raises(SpaceError, match=r"'CrossAttention' is not available in M cells"):
        s.choice("v.M3", "M", ["CrossAttention"], [x])
    with pytest.raises(SpaceError, match=r"node 'v\.x': input 'ghost' is not declared"):
        s.fixed("v.x", "Linear", ["ghost"], width="d")
    with pytest.raises(SpaceError, match=r"'q' is not an integer option"):
        s.fixed("v.y", "Linear", [x], width="q*d")
    with pytest.raises(SpaceError, match=r"declared twice"):
        s.input("v", width=8)
    with pytest.raises(SpaceError, match=r"mix pooled and sequence"):
        s.choice("v.T", "T", ["SelfAttention", "Skip"], [x])


def test_binary_cells_need_equal_widths():
    s = SearchSpace("bad", {"d": 8})
    x = s.input("v", width=8)
    y = s.input("a", width=4)
    with pytest.raises(SpaceError, match=r"cell 'I': inputs differ in width"):
        s.choice("I", "I", ["CrossAttention"], [x, y])


def test_output_checks_dangling_nodes_and_shape():
    s = SearchSpace("bad", {"d": 8, "bits": 4})
    x = s.input("v", width=8)
    s.choice("dead", "M", ["Skip"], [x])
    t = s.choice("T", "T", ["SelfSSM"], [x])
    h = s.fixed("hash", "Hash", [t], width="bits")
    with pytest.raises(SpaceError, match=r"\['dead'\] feed nothing"):
        s.output(h)
    s2 = SearchSpace("bad2", {"d": 8})
    x2 = s2.input("v", width=8)
    with pytest.raises(SpaceError, match=r"must be pooled"):
        s2.output(s2.choice("M", "M", ["Skip"], [x2]))
    with pytest.raises(SpaceError, match=r"hash layer needs a pooled input"):
        s2.fixed("hash", "Hash", [x2], width=4)


def test_bad_node_names_are_rejected():
    s = SearchSpace("bad", {})
    with pytest.raises(SpaceError, match="bad node name"):
        s.input("has space", width=4)


def test_auxiliary_outputs_may_end_a_branch():
    s = SearchSpace("aux", {"d": 8, "bits": 4})
    x = s.input("v", width=8)
    side = s.fixed("side", "LayerNorm", [x], width="d")
    codes = s.fixed("codes", "MeanPool", [s.fixed("frames", "FrameHash", [x], width="bits")],
                    width="bits")
    s.output(codes, auxiliary=["side"])
    assert s.auxiliary == ("side",) and s.targets == ("codes", "side")
    assert s.type_of("frames").width == 4 and not s.type_of("frames").pooled
    assert s.type_of("codes").pooled and not s.type_of(side).pooled
    s2 = SearchSpace("w", {"d": 8})
    x2 = s2.input("v", width=8)
    with pytest.raises(SpaceError, match="LayerNorm keeps the width, 4 != input width 8"):
        s2.fixed("n", "LayerNorm", [x2], width=4)
    with pytest.raises(SpaceError, match="MeanPool needs a sequence"):
        s2.fixed("p", "MeanPool", [s2.fixed("q", "MeanPool", [x2], width=8)], width=8)
    with pytest.raises(SpaceError, match=r"\['dead'\] feed nothing; every node must lead to the "
                                         r"output 'codes' or an auxiliary output"):
        s3 = SearchSpace("w3", {"bits": 4})
        y = s3.input("v", width=8)
        s3.fixed("dead", "Linear", [y], width=3)
        s3.output(s3.fixed("codes", "MeanPool", [y], width=8))


def test_a_cell_can_follow_another():
    s = SearchSpace("tied", {"d": 8, "bits": 4})
    x = s.input("v", width=8)
    a = s.choice("a", "M", ["Skip", "FFN"], [x])
    b = s.choice("b", "U", ["Skip", "LayerNorm"], [a])
    with pytest.raises(SpaceError, match=r"cell 'c': a cell that follows 'a' needs its candidates"):
        s.choice("c", "M", ["FFN", "Skip"], [b], follows="a")
    c = s.choice("c", "M", ["Skip", "FFN"], [b], follows="a")
    with pytest.raises(SpaceError, match=r"follows 'c', which is not a cell with a choice"):
        s.choice("d", "M", ["Skip", "FFN"], [c], follows="c")
    s.output(s.fixed("hash", "Hash", [s.choice("T", "T", ["SelfSSM"], [c])], width="bits"))
    assert s.cells == ["a", "b", "T"] and s.followers == {"c": "a"} and s.leader("c") == "a"
    assert s.count() == 2 * 2
    assert s.validate({"a": "FFN", "b": "Skip", "T": "SelfSSM"})
