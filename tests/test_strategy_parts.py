"""The numerical parts of individual strategies, each against an independent reference."""
from __future__ import annotations

import numpy as np
import torch

import avsearch
from avsearch.data import Split
from avsearch.supernet import compile_space, key


def test_darts_unrolled_gradient_matches_exact_hypergradient():
    """Eqs. 7-8 with finite differences ≈ the exact ∇α L_val(w − ξ∇w L_train(w, α), α)."""
    from avsearch.strategies.darts import unrolled_alpha_grad

    torch.manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x_t, x_v = torch.randn(7, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)

    def loss(x, weights):  # a toy "mixed op": softmax(α)-weighted columns of a nonlinear map
        return (torch.tanh(x @ weights) * a.softmax(0)).sum(1).pow(2).mean()

    xi = 0.1
    (g,) = torch.autograd.grad(loss(x_t, w), w, create_graph=True)
    (exact,) = torch.autograd.grad(loss(x_v, w - xi * g), a)
    before = w.detach().clone()
    (approx,) = unrolled_alpha_grad([w], [a], lambda: loss(x_t, w), lambda: loss(x_v, w), xi)
    torch.testing.assert_close(approx, exact, rtol=1e-4, atol=1e-7)
    assert torch.equal(w.detach(), before)                 # weights restored
    (first,) = torch.autograd.grad(loss(x_v, w), a)        # and it is not the first-order one
    assert not torch.allclose(first, exact, rtol=1e-3)


def test_gates_forward_is_the_active_path_and_gradient_is_proxyless_estimate(tiny_av):
    """Σ_i (g_i + p_i − sg(p_i)) o_i: value of the active op; ∂L/∂p_i = ⟨∂L/∂out, o_i⟩."""
    net = compile_space(tiny_av, "mixed").eval()
    cell = "visual.M1"
    names = tiny_av.candidates(cell)
    pair = [names[1], names[2]]
    x = [torch.randn(3, 5, 12), torch.randn(3, 5, 16)]
    path = tiny_av.sample(0)
    others = {c: {path[c]: None} for c in tiny_av.cells if c != cell}

    p = torch.tensor([0.3, 0.7], requires_grad=True)
    hard = torch.tensor([0.0, 1.0])
    net.set_gates({**others, cell: dict(zip(pair, hard + p - p.detach()))})
    out = net.node_outputs(*x)
    net.set_path({**path, cell: pair[1]})
    torch.testing.assert_close(out[net.space.output_node], net(*x))   # forward = active path
    # the estimate: each candidate's output dotted with the upstream gradient at the cell
    upstream = torch.randn_like(out[cell])
    (grad_p,) = torch.autograd.grad((out[cell] * upstream).sum(), p)
    ops = net.cells[key(cell)].ops
    args = [out[i] for i in tiny_av.inputs_of(cell)]
    expected = torch.stack([(ops[n](*args) * upstream).sum() for n in pair])
    torch.testing.assert_close(grad_p, expected.detach())


def test_held_out_split_is_a_disjoint_cover_and_streams_lazily():
    from avsearch.strategies import held_out_split

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(10, 3, 4)).astype(np.float32)
    train = Split([f"v{i}" for i in range(10)], np.eye(5, dtype=bool)[np.arange(10) % 5], {"x": feats})
    first, second = held_out_split(train, 0.3, 3)
    assert len(first) == 7 and len(second) == 3
    assert sorted(first.ids + second.ids) == sorted(train.ids)
    rows = [train.ids.index(i) for i in second.ids]
    np.testing.assert_array_equal(second.take([2, 0, 2])[0], feats[[rows[2], rows[0], rows[2]]])
    np.testing.assert_array_equal(second.labels, train.labels[rows])


def test_enas_controller_learns_toward_rewarded_choice(tiny_av):
    """REINFORCE with a baseline: rewarding one candidate of one cell raises its probability."""
    from avsearch.strategies.enas import Controller

    torch.manual_seed(0)
    ctrl = Controller(tiny_av)
    cell, target = "visual.U1", tiny_av.candidates("visual.U1")[0]
    idx = ctrl.cells.index(cell)
    opt = torch.optim.Adam(ctrl.parameters(), lr=0.05)

    @torch.no_grad()
    def prob() -> float:
        x, state = ctrl.start, None
        for i in range(idx + 1):  # replay greedy decisions up to the cell
            state = ctrl.lstm(x, state)
            logits = ctrl.tanh_constant * torch.tanh(ctrl.heads[i](state[0]) / ctrl.temperature)
            x = ctrl.embed[i](logits.argmax(1))
        return float(logits.softmax(1)[0, tiny_av.candidates(cell).index(target)])

    before, baseline = prob(), 0.0
    for _ in range(60):
        choices, log_prob, _ = ctrl()
        reward = float(choices[cell] == target)
        loss = -(reward - baseline) * log_prob
        baseline = 0.9 * baseline + 0.1 * reward
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert ctrl(greedy=True)[0][cell] == target
    assert prob() > before + 0.2


def test_spos_evolution_finds_the_optimum_of_a_separable_fitness(tmp_path):
    """NSGA-II over the cells (Optuna) beats its own random first generation on a fitness
    whose optimum is known, and the same seed gives the same search."""
    from avsearch.strategies import RunContext
    from avsearch.strategies.spos import evolve

    space = avsearch.get_space("av_nas", d=8, e=1, bits=8, heads=2, d_state=4,
                               modalities={"visual": 4})
    best = {c: space.candidates(c)[-1] for c in space.cells}

    def fitness(choices):
        return sum(choices[c] == best[c] for c in space.cells) / len(space.cells)

    class Memo:  # the trainer's ``remember`` without a checkpoint; keeps each trial's score
        def __init__(self):
            self.trials = {}

        def remember(self, name, compute, *, phase, log=None):
            value = compute()
            if "generation" not in name:   # not a generation's scores
                self.trials[int(name.rsplit("/", 1)[1])] = value["score"]
            return value

    memo = Memo()
    found = evolve(RunContext(space, memo, torch.device("cpu"), seed=0), fitness, trials=60,
                   population=12)
    again = evolve(RunContext(space, Memo(), torch.device("cpu"), seed=0), fitness, trials=60,
                   population=12)
    assert found == again
    # the evolution's own first generation: trials 0-11, NSGA-II's random initial population
    first_generation = max(memo.trials[i] for i in range(12))
    assert fitness(found) == max(memo.trials.values()) > first_generation
