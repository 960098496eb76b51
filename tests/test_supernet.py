"""The supernet compiler: mixed / single-path / fixed from one graph, weights keyed by (cell, op)."""
from __future__ import annotations

import math

import pytest

import torch

import avsearch
from avsearch import ArchError, compile_space
from avsearch.supernet import binarize, key


def inputs(space, batch=3, length=5):
    return [torch.randn(batch, length, space.type_of(m).width) for m in space.modalities]


def one_hot_alpha(net, choices):
    with torch.no_grad():
        for cell, op in choices.items():
            names = net.cells[key(cell)].names
            net.alpha[key(cell)].copy_(torch.tensor(
                [0.0 if n == op else float("-inf") for n in names]))


@pytest.mark.parametrize("arch", ["transformer", "mamba", "sample"])
def test_fixed_equals_mixed_with_one_hot_alpha(tiny_av, arch):
    choices = tiny_av.presets[arch] if arch != "sample" else tiny_av.sample(7)
    mixed = compile_space(tiny_av, "mixed").eval()
    one_hot_alpha(mixed, choices)
    fixed = compile_space(tiny_av, "fixed", choices).eval()
    fixed.inherit(mixed.weight_state_dict())
    x = inputs(tiny_av)
    torch.testing.assert_close(fixed(*x), mixed(*x), rtol=1e-6, atol=1e-6)
    assert mixed.derive() == choices


def test_single_path_equals_fixed_and_trains_only_its_path(tiny_av):
    choices = tiny_av.sample(3)
    sp = compile_space(tiny_av, "single-path")
    sp.set_path(choices)
    fixed = compile_space(tiny_av, "fixed", choices)
    fixed.inherit(sp.state_dict())
    sp.eval(), fixed.eval()
    x = inputs(tiny_av)
    torch.testing.assert_close(sp(*x), fixed(*x))
    sp.train()
    sp(*x).sum().backward()
    # candidates may share modules (a T cell's pools share their block): a parameter trains
    # when the chosen op holds it, whichever candidate's name lists it first
    chosen = {id(p) for key, cell in sp.cells.items()
              for p in cell.ops[choices[key.replace("__", ".")]].parameters()}
    for name, p in sp.named_parameters():
        if name.startswith("cells."):
            assert (p.grad is not None) == (id(p) in chosen), name


@pytest.mark.parametrize("preset", ["transformer", "mamba"])
@pytest.mark.parametrize("modalities", ["visual:12,audio:16", "visual:16"])
def test_every_preset_builds_and_trains(preset, modalities):
    space = avsearch.get_space("av_nas", d=16, bits=8, heads=2, d_state=4, modalities=modalities)
    net = compile_space(space, "fixed", space.presets[preset])
    x = inputs(space)
    out = net(*x)
    assert out.shape == (3, 8) and out.abs().max() <= 1
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_mixed_supernet_trains_weights_and_alpha(tiny_av):
    net = compile_space(tiny_av, "mixed")
    net(*inputs(tiny_av)).pow(2).sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    n_alpha = sum(1 for _ in net.arch_parameters())
    assert n_alpha == len(tiny_av.cells)
    assert len(list(net.weight_parameters())) + n_alpha == len(list(net.parameters()))


def test_state_dict_keys_are_cell_and_op(tiny_av):
    choices = tiny_av.presets["transformer"]
    mixed = compile_space(tiny_av, "mixed")
    fixed = compile_space(tiny_av, "fixed", choices)
    fixed_keys = set(fixed.state_dict())
    assert fixed_keys < set(mixed.state_dict())
    assert any(k.startswith("cells.visual__M1.ops.SelfAttention.") for k in fixed_keys)
    assert not any(k.startswith("cells.visual__M1.ops.FFN.") for k in fixed_keys)
    assert sum(p.numel() for p in fixed.parameters()) < sum(p.numel() for p in mixed.parameters())


def test_inherit_refuses_foreign_weights(tiny_av):
    other = avsearch.get_space("av_nas", d=16, bits=8, heads=2, d_state=4, modalities="visual:12")
    fixed = compile_space(tiny_av, "fixed", tiny_av.presets["mamba"])
    with pytest.raises(ArchError, match="missing"):
        fixed.inherit(compile_space(other, "mixed").weight_state_dict())


def test_probabilities_and_derive(tiny_av):
    net = compile_space(tiny_av, "mixed")
    logits = torch.tensor([0.0 if op != "SelfSSM" else 2.0 for op in tiny_av.candidates("T")])
    with torch.no_grad():
        net.alpha[key("T")].copy_(logits)
    probs = net.probabilities()
    assert set(probs) == set(tiny_av.cells)
    assert probs["T"]["SelfSSM"] == pytest.approx(math.e ** 2 / (math.e ** 2 + len(logits) - 1))
    assert all(sum(p.values()) == pytest.approx(1.0) for p in probs.values())
    assert net.derive()["T"] == "SelfSSM"


def test_codes_are_signs_with_zero_positive():
    f = torch.tensor([[-0.5, 0.0, 0.3]])
    assert binarize(f).tolist() == [[-1, 1, 1]] and binarize(f).dtype == torch.int8


def test_fixed_needs_choices_and_modes_are_checked(tiny_av):
    with pytest.raises(ArchError):
        compile_space(tiny_av, "fixed")
    with pytest.raises(ValueError, match="mode must be one of"):
        compile_space(tiny_av, "weird")
    with pytest.raises(ValueError, match="expected 2 inputs"):
        compile_space(tiny_av, "mixed")(torch.randn(2, 5, 12))


def test_candidates_sharing_weights_train_together_and_a_derived_network_inherits_them(monkeypatch):
    """A depth choice whose candidates are prefixes of one stack (ops.registry's ``shared``)."""
    from torch import nn

    from avsearch import SearchSpace
    from avsearch.ops.basic import MeanPool
    from avsearch.ops.registry import OPS, register_op

    OPS.load()   # the test's ops leave the registry with the test (test_ops counts families)
    monkeypatch.setattr(OPS, "_entries", dict(OPS._entries))

    class Prefix(nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return x

    @register_op("Depth<n>", kinds="test_depth")
    def depth(width, config, n, shared):
        stack = shared.setdefault("stack", nn.ModuleList())
        while len(stack) < n:
            stack.append(nn.Linear(width, width))
        return Prefix(list(stack)[:n])

    @register_op("Mean", kinds="test_pool", pooled=True)
    def mean(width, config):
        return MeanPool()

    space = SearchSpace("shared_depth", {})
    x = space.input("visual", width=6)
    h = space.choice("depth", kind="test_depth", candidates=["Depth1", "Depth3"], inputs=[x])
    h = space.choice("pool", kind="test_pool", candidates=["Mean"], inputs=[h])
    space.output(space.fixed("hash", "Hash", [h], width=4))
    supernet = compile_space(space, "mixed")
    ops = supernet.cells["depth"].ops
    assert ops["Depth1"].layers[0].weight is ops["Depth3"].layers[0].weight
    assert sum(p.numel() for p in ops.parameters()) == 3 * (6 * 6 + 6)   # three layers, once
    derived = compile_space(space, "fixed", {"depth": "Depth1", "pool": "Mean"})
    derived.inherit(supernet.weight_state_dict())
    inp = torch.randn(2, 5, 6)
    supernet.set_path({"depth": "Depth1", "pool": "Mean"})
    torch.testing.assert_close(derived(inp), supernet(inp))


def test_pooled_candidates_sharing_a_block_run_it_once_per_forward():
    """The T cell's mean- and max-pooled candidates share their block's weights; the mixed
    forward runs each block once and pools the one sequence, and each candidate still runs
    (its hooks fire) with the value of pooling that block's own output."""
    space = avsearch.get_space("av_nas", d=16, e=2, bits=8, heads=2, d_state=4,
                               modalities={"visual": 12, "audio": 16}, pools="mean,max")
    net = compile_space(space, "mixed").train()
    cell = net.cells["T"]
    blocks = {id(op.block): op.block for op in cell.ops.values()}
    assert len(blocks) < len(cell.ops)            # several candidates per block
    block_calls, candidates = [], []
    for block in blocks.values():
        block.register_forward_hook(lambda *_, b=block: block_calls.append(b))
    for name, op in cell.ops.items():
        op.register_forward_hook(lambda *_, n=name: candidates.append(n))
    net(*inputs(space))
    assert sorted(map(id, block_calls)) == sorted(blocks)
    assert sorted(candidates) == sorted(cell.ops)
    x = torch.randn(2, 5, next(iter(blocks.values())).norm.normalized_shape[0])
    net.eval()
    with torch.no_grad():
        for op in cell.ops.values():
            torch.testing.assert_close(op(x, sequence=op.block(x)), op.pool(op.block(x)))
