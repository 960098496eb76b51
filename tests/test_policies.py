"""The supernet's training policies that strategies choose (issue 10, item 4): ProxylessNAS's
binary gates and single path, their draws and the pair-mass rescaling, against hand
computations; and that strategies leave α and the supernet's keys to the supernet."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

import avsearch
from avsearch.data import register_builtin
from avsearch.run import RunSettings, run
from avsearch.testing.helpers import class_mean_dataset

STRATEGIES = Path(__file__).resolve().parents[1] / "strategies"


@pytest.fixture
def space():
    """tiny av_nas without dropout, so a training forward pass depends only on the draw."""
    return avsearch.get_space("av_nas", d=16, e=2, bits=8, heads=2, d_state=4, dropout=0.0,
                              modalities={"visual": 12, "audio": 16})


def _inputs():
    return torch.randn(3, 5, 12), torch.randn(3, 5, 16)


def _spy(net) -> dict[str, list[str]]:
    """Per cell, the names of the ops that ran, in order (forward hooks)."""
    ran: dict[str, list[str]] = {}
    for cell, module in net.cells.items():
        for name, op in module.ops.items():
            op.register_forward_hook(lambda *_, c=cell, n=name: ran.setdefault(c, []).append(n))
    return ran


def _hand_draws(net, seed: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """ProxylessNAS's draws as its strategy made them by hand, cell after cell: a pair from
    softmax(α) without replacement, then the active one from softmax over the pair."""
    torch.manual_seed(seed)
    pairs, active = {}, {}
    for cell in net.space.cells:
        names, alpha = net.space.candidates(cell), net.alpha[cell.replace(".", "__")].detach()
        pair = torch.multinomial(alpha.softmax(0), 2, replacement=False).tolist()
        pairs[cell] = [names[i] for i in pair]
        active[cell] = pairs[cell][int(torch.multinomial(alpha[pair].softmax(0), 1))]
    return pairs, active


def test_binary_policy_runs_the_pair_forwards_the_active_path_and_grads_only_the_pair(space):
    net = avsearch.compile_space(space, "mixed").train()
    with torch.no_grad():                       # distinct probabilities, so draws vary
        for a in net.arch_parameters():
            a.copy_(torch.randn(len(a)))
    x = _inputs()
    pairs, active = _hand_draws(net, seed=3)
    ran = _spy(net)
    net.set_policy("binary")
    torch.manual_seed(3)
    out = net(*x)
    out.sum().backward()
    assert {c.replace("__", "."): sorted(n) for c, n in ran.items()} == \
        {c: sorted(p) for c, p in pairs.items()}            # the two drawn candidates, once each
    net.set_path(active)
    torch.testing.assert_close(out, net(*x))                # the forward value: the active path's
    moved = 0
    for cell in space.cells:
        grad = net.alpha[cell.replace(".", "__")].grad
        drawn = [space.candidates(cell).index(n) for n in pairs[cell]]
        assert all(g == 0 for i, g in enumerate(grad.tolist()) if i not in drawn), cell
        moved += bool((grad[drawn] != 0).all())
    assert moved > len(space.cells) // 2                    # the pair's α do get the estimate


def test_single_policy_runs_one_drawn_path_and_leaves_alpha_alone(space):
    net = avsearch.compile_space(space, "mixed").train()
    ran, x = _spy(net), _inputs()
    net.set_policy("single")
    torch.manual_seed(5)
    expected = {c: space.candidates(c)[int(torch.multinomial(
        net.alpha[c.replace(".", "__")].detach().softmax(0), 1, replacement=False))]
        for c in space.cells}
    torch.manual_seed(5)
    net(*x).sum().backward()
    assert {c.replace("__", "."): n for c, n in ran.items()} == {c: [n] for c, n in expected.items()}
    assert all(a.grad is None for a in net.arch_parameters())


def test_keep_drawn_mass_keeps_the_pair_mass_and_every_other_probability(space):
    net = avsearch.compile_space(space, "mixed").train()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn(len(a)))
    before = {c: torch.tensor(list(p.values())) for c, p in net.probabilities().items()}
    x = _inputs()
    pairs, _ = _hand_draws(net, seed=7)
    net.set_policy("binary")
    torch.manual_seed(7)
    net(*x).pow(2).sum().backward()
    lr = 0.5
    opt = torch.optim.SGD(net.arch_parameters(), lr=lr)
    stepped = {c: (a - lr * a.grad).detach() for c, a in zip(space.cells, net.arch_parameters())}
    opt.step()
    net.keep_drawn_mass()
    for cell, p in net.probabilities().items():
        p = torch.tensor(list(p.values()))
        drawn = [space.candidates(cell).index(n) for n in pairs[cell]]
        # by hand: the pair splits the mass it had as softmax over its stepped logits
        want = before[cell].clone()
        want[drawn] = before[cell][drawn].sum() * stepped[cell][drawn].softmax(0)
        torch.testing.assert_close(p, want, rtol=1e-5, atol=1e-7)


def test_one_draw_per_leader_and_forward_pass_held_by_one_draw_and_mixture_in_eval():
    s = avsearch.get_space("tam", d=8, d_dec=6, bits=8, heads=2, d_state=4, modalities="visual:12")
    net = avsearch.compile_space(s, "mixed").train()
    ran = _spy(net)
    net.set_policy("binary")
    x = torch.randn(2, 9, 12)

    def draw() -> list[str]:
        ran.clear()
        net.node_outputs(x)      # the teacher's recon too, which needs the follower
        assert ran["teacher__decoder"] == ran["teacher__encoder"]   # the follower shares it
        return ran["teacher__encoder"]

    torch.manual_seed(0)
    draws = [draw() for _ in range(8)]
    assert len({tuple(d) for d in draws}) > 1                         # a new draw each pass
    with net.one_draw():
        held = [draw() for _ in range(8)]
    assert all(d == held[0] for d in held)                            # one draw inside
    net.eval()
    with torch.no_grad():
        draw()
    assert len(ran["teacher__encoder"]) == len(s.candidates("teacher.encoder"))   # the mixture


def test_strategies_leave_alpha_and_the_supernets_keys_to_the_supernet():
    for path in sorted(STRATEGIES.glob("*.py")):
        text = path.read_text()
        assert not re.search(r"\bnet\.alpha\b", text), path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module == "avsearch.supernet":
                assert "key" not in [a.name for a in node.names], path.name


register_builtin("policies-av", lambda: class_mean_dataset(
    "policies-av", {"visual": 6, "audio": 5}, {"train": 48, "val": 12, "test": 12, "retrieval": 48},
    classes=4))


def test_proxyless_in_a_real_run_moves_alpha_and_derives(tmp_path, one_thread):
    run(RunSettings(space="av_nas", data="policies-av", budget="smoke", strategy="proxyless",
                    epochs=2, baselines=False,
                    space_options={"d": "8", "e": "2", "heads": "2", "d_state": "4", "bits": "8"}),
        out=tmp_path, progress=False)
    search = json.loads((tmp_path / "metrics.json").read_text())["search"]
    arch = json.loads((tmp_path / "best.arch").read_text())
    space = avsearch.get_space("av_nas", d=8, e=2, heads=2, d_state=4, bits=8,
                               modalities={"visual": 6, "audio": 5})
    assert search["travel"] > 0 and search["cells"] == len(space.cells)
    assert space.validate(arch["choices"]) == arch["choices"]
    assert arch["choices"] == {c: max(p, key=p.get) for c, p in arch["probabilities"].items()}


def test_csp_with_binary_gates_in_a_real_run_moves_only_the_drawn_pairs(tmp_path, one_thread,
                                                                         monkeypatch):
    """`csp --strategy-set policy=binary`: every step's α update leaves each candidate outside
    the step's drawn pair where it was (no momentum carries it), and the rescaling after it
    gives every undrawn candidate its probability back."""
    from avsearch.supernet import Network

    original, last, steps = Network.keep_drawn_mass, {}, []   # last: α after the last step

    def spy(net):
        pairs = {cell.replace(".", "__"): pair for cell, (pair, _) in net._pairs.items()}
        stepped = {c: a.detach().clone() for c, a in net.alpha.items()}
        original(net)
        for cell, a in net.alpha.items():
            others = [i for i in range(len(a)) if i not in pairs[cell]]
            if cell in last:     # the stage restores its best state only after its last step
                assert torch.equal(stepped[cell][others], last[cell][others])
                torch.testing.assert_close(a.detach().softmax(0)[others],
                                           last[cell].softmax(0)[others], rtol=0, atol=1e-6)
            last[cell] = a.detach().clone()
        steps.append("step")

    monkeypatch.setattr(Network, "keep_drawn_mass", spy)
    run(RunSettings(space="av_nas", data="policies-av", budget="smoke", strategy="csp",
                    strategy_options={"policy": "binary"}, epochs=2, baselines=False,
                    space_options={"d": "8", "e": "2", "heads": "2", "d_state": "4", "bits": "8"}),
        out=tmp_path, progress=False)
    search = json.loads((tmp_path / "metrics.json").read_text())["search"]
    assert len(steps) >= 4 and search["travel"] > 0
