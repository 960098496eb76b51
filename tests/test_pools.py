"""How the T cell pools over time: the mean (the paper's T) or the max (``<block>/max``).

References: a loop over time steps for the pools; the block itself for the sharing (both
pools of a block must run one set of weights in the supernet and hand them to the derived
network); a real ``avsearch run`` for the option and the presets.
"""
from __future__ import annotations

import json

import torch

import avsearch
from avsearch.cli import main
from avsearch.ops.basic import Pooled
from avsearch.supernet import key

SMALL = dict(d=16, e=2, heads=2, d_state=4, modalities="visual:16,audio:8")


def test_pools_against_a_loop_over_time():
    x = torch.randn(3, 7, 5)
    loop_max, loop_sum = x[:, 0], x[:, 0]
    for t in range(1, 7):
        loop_max, loop_sum = torch.maximum(loop_max, x[:, t]), loop_sum + x[:, t]
    torch.testing.assert_close(Pooled(torch.nn.Identity(), "max")(x), loop_max, rtol=0, atol=0)
    torch.testing.assert_close(Pooled(torch.nn.Identity(), "mean")(x), loop_sum / 7)


def test_the_pools_are_candidates_and_the_paper_space_pools_by_the_mean():
    default = avsearch.get_space("av_nas")
    assert default.candidates("T") == ("SelfAttention", "SelfAttention/max", "SelfSSM", "SelfSSM/max")
    assert default.presets["mamba"]["T"] == "SelfSSM"            # the paper's presets
    paper = avsearch.get_space("av_nas", pools="mean")
    assert paper.candidates("T") == ("SelfAttention", "SelfSSM")
    space = avsearch.get_space("av_nas", pools="max,mean")
    assert space.candidates("T") == ("SelfAttention/max", "SelfAttention", "SelfSSM/max", "SelfSSM")
    assert space.count() == 2 * paper.count()
    # the presets take the first pool listed
    assert space.presets["transformer"]["T"] == "SelfAttention/max"
    assert space.presets["mamba"]["T"] == "SelfSSM/max"


def test_both_pools_of_a_block_share_it_and_the_derived_network_inherits_it():
    space = avsearch.get_space("av_nas", pools="mean,max", **SMALL)
    torch.manual_seed(0)
    supernet = avsearch.compile_space(space, "mixed").eval()
    ops = supernet.cells[key("T")].ops
    for block in ("SelfAttention", "SelfSSM"):
        assert ops[f"{block}/max"].block is ops[block].block      # one module, not a copy
    n_params = sum(p.numel() for p in ops.parameters())
    assert n_params == sum(p.numel() for b in ("SelfAttention", "SelfSSM")
                           for p in ops[b].block.parameters())

    choices = dict(space.presets["mamba"], T="SelfSSM/max")
    derived = avsearch.compile_space(space, "fixed", choices).eval()
    derived.inherit(supernet.weight_state_dict())
    h = torch.randn(2, 6, 16)
    with torch.no_grad():
        expected = ops["SelfSSM"].block(h).amax(1)           # the shared block, max-pooled
        got = derived.cells[key("T")].ops["SelfSSM/max"](h)
    torch.testing.assert_close(got, expected)


def test_a_run_trains_the_max_pooled_preset(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--space", "av_nas", "--arch", "transformer", "--set", "pools=max",
                 "--budget", "smoke", "--bits", "16", "--no-baselines", "--quiet",
                 "--out", str(out)]) == 0
    arch = json.loads((out / "best.arch").read_text())
    assert arch["choices"]["T"] == "SelfAttention/max"
    assert arch["space_config"]["pools"] == ["max"]
    # the trained weights load into a network that max-pools: its codes are the max-pooled
    # block's, computed here from the block's own output
    net = avsearch.Architecture.load(out / "best.arch").network().eval()
    t_op = net.cells[key("T")].ops["SelfAttention/max"]
    h = torch.randn(2, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(t_op(h), t_op.block(h).amax(1))


def test_an_unknown_pool_is_refused(capsys):
    assert main(["space", "av_nas", "--set", "pools=sum"]) == 2
    err = capsys.readouterr().err
    assert "pools" in err and "distinct pools from mean, max" in err and "Traceback" not in err
