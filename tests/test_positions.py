"""Positions in an M cell's SelfAttention (av_nas option ``positions``, OpConfig
``attention_positions``).

References: the sinusoidal encoding computed with ``math.sin``/``math.cos`` by hand; the bare
attention core on the hand-shifted input; permutation equivariance as the property that
positions must break; a real ``avsearch run`` for the option.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

import avsearch
from avsearch.cli import main
from avsearch.ops.attention import AttentionCore, PositionedAttention, SinusoidalPositionalEncoding
from avsearch.ops.registry import OpConfig, get_op
from avsearch.supernet import key


def _hand_encoding(length: int, width: int) -> torch.Tensor:
    pe = torch.zeros(length, width)
    for t in range(length):
        for j in range(width):
            angle = t / 10000 ** (2 * (j // 2) / width)
            pe[t, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


@pytest.mark.parametrize("width", [6, 7])
def test_sinusoidal_encoding_against_a_hand_computation(width):
    x = torch.randn(2, 5, width)
    got = SinusoidalPositionalEncoding(width)(x)
    torch.testing.assert_close(got, x + _hand_encoding(5, width))
    # step 0: sin 0 = 0 on even features, cos 0 = 1 on odd ones
    torch.testing.assert_close(got[:, 0] - x[:, 0], torch.tensor([0.0, 1.0] * 4)[:width].expand(2, -1))


def _permuted(op, x, perm):
    with torch.no_grad():
        return op(x[:, perm]), op(x)[:, perm]


def test_bare_attention_is_order_blind_and_positions_make_it_order_sensitive():
    torch.manual_seed(0)
    x, perm = torch.randn(3, 6, 8), torch.tensor([2, 0, 5, 1, 4, 3])
    bare = get_op("SelfAttention", "M").build("SelfAttention", 8, OpConfig(heads=2)).eval()
    assert type(bare) is AttentionCore                  # the default: no positions
    a, b = _permuted(bare, x, perm)
    torch.testing.assert_close(a, b)                    # permuting the steps permutes the output
    for kind in ("learned", "sinusoidal"):
        op = get_op("SelfAttention", "M").build(
            "SelfAttention", 8, OpConfig(heads=2, attention_positions=kind)).eval()
        assert isinstance(op, PositionedAttention)
        a, b = _permuted(op, x, perm)
        assert (a - b).abs().max() > 1e-3, kind
        # the op is the bare core on the input plus its positions
        pe = op.pos.weight[:6] if kind == "learned" else _hand_encoding(6, 8)
        with torch.no_grad():
            torch.testing.assert_close(op(x), op.core(x + pe))


def test_the_option_reaches_the_m_cells_only():
    small = dict(d=16, heads=2, d_state=4, modalities="visual:16,audio:8")
    assert avsearch.get_space("av_nas", **small).config["positions"] == "none"
    space = avsearch.get_space("av_nas", positions="sinusoidal", **small)
    net = avsearch.compile_space(space, "fixed", space.presets["transformer"])
    assert isinstance(net.cells[key("visual.M1")].ops["SelfAttention"], PositionedAttention)
    # the cross-attention and T cells are as before (T has its own learned positions)
    plain = avsearch.compile_space(avsearch.get_space("av_nas", **small), "fixed",
                                   space.presets["transformer"])
    for cell in ("I1", "T"):
        assert ({k for k, _ in net.cells[key(cell)].named_parameters()}
                == {k for k, _ in plain.cells[key(cell)].named_parameters()})


def test_a_run_trains_the_transformer_preset_with_positions(tmp_path, one_thread):
    out = tmp_path / "run"
    assert main(["run", "--space", "av_nas", "--arch", "transformer", "--set",
                 "positions=sinusoidal", "--budget", "smoke", "--bits", "16", "--no-baselines",
                 "--quiet", "--out", str(out)]) == 0
    arch = json.loads((out / "best.arch").read_text())
    assert arch["space_config"]["positions"] == "sinusoidal"
    net = avsearch.Architecture.load(out / "best.arch").network().eval()
    op = net.cells[key("visual.M1")].ops["SelfAttention"]
    assert isinstance(op, PositionedAttention)
    # the trained network's M1 is its trained core on the input plus the hand-computed
    # encoding, and reversing the steps does not just reverse its output (the bare core's would)
    h = torch.randn(2, 25, op.core.q_proj.in_features)
    with torch.no_grad():
        torch.testing.assert_close(op(h), op.core(h + _hand_encoding(25, h.shape[-1])))
        torch.testing.assert_close(op.core(h.flip(1)), op.core(h).flip(1))
        assert (op(h.flip(1)) - op(h).flip(1)).abs().max() > 1e-3


def test_an_unknown_position_kind_is_refused(capsys):
    assert main(["space", "av_nas", "--set", "positions=rotary"]) == 2
    err = capsys.readouterr().err
    assert "positions" in err and "none, learned or sinusoidal" in err and "Traceback" not in err
