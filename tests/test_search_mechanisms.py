"""The search mechanisms where they run: in a real ``avsearch run`` (issue 10, item 7), plus
the diagnostics and the policies against hand-computed cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import avsearch
from avsearch.data import register_builtin
from avsearch.diagnostics import bit_agreement, distribution_diagnostics
from avsearch.run import RunSettings, run
from avsearch.strategies import near_ties, runners_up
from avsearch.train import Trainer, get_budget
from avsearch.testing.helpers import class_mean_dataset

register_builtin("mech-av", lambda: class_mean_dataset(
    "mech-av", {"visual": 6, "audio": 5}, {"train": 48, "val": 12, "test": 12, "retrieval": 48},
    classes=4))
TINY = {"d": "8", "e": "2", "heads": "2", "d_state": "4", "bits": "8"}


def _run(tmp_path, **kw):
    settings = dict(space="av_nas", data="mech-av", budget="smoke", space_options=dict(TINY), baselines=False)
    settings.update(kw)
    return run(RunSettings(**settings), out=tmp_path, progress=False)


# ---------------------------------------------------------------- diagnostics, by hand
def test_distribution_diagnostics_by_hand():
    final = {"a": {"x": 0.7, "y": 0.2, "z": 0.1}, "b": {"x": 0.5, "y": 0.5}}
    d = distribution_diagnostics(final, margin=0.1)
    logp = np.log([0.7, 0.2, 0.1])
    assert d["travel"] == pytest.approx(np.abs(logp - logp.mean()).max(), abs=1e-4)
    assert d["decided"] == 1 and d["cells"] == 2                 # a: 0.5 margin; b: none
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert d["entropy"] == {"a": pytest.approx(h, abs=1e-4), "b": pytest.approx(1.0)}
    moved = distribution_diagnostics(final, initial=final)
    assert moved["travel"] == 0.0
    assert bit_agreement(np.array([[1, -1], [1, 1]]), np.array([[1, 1], [1, 1]])) == 0.75


def test_runners_up_are_distinct_draws_from_alpha_then_near_ties():
    space = avsearch.get_space("av_nas", d=8, e=2, bits=8, heads=2, d_state=4,
                               modalities={"visual": 6})
    decided = {c: {n: float(i == 0) for i, n in enumerate(space.candidates(c))} for c in space.cells}
    open_cells = {"T": {"SelfAttention": 0.5, "SelfSSM": 0.5},
                  "visual.U1": {"Skip": 0.4, "SiLU": 0.4, "LayerNorm": 0.2}}
    probs = {**decided, **open_cells}
    best = {c: max(p, key=p.get) for c, p in probs.items()}
    ups = runners_up(space, probs, 4, seed=3)
    keys = [space.canonical(u) for u in ups]
    assert len(ups) == 4 and len(set(keys)) == 4 and space.canonical(best) not in keys
    for u in ups:   # a cell α has decided (probability 1) is never drawn otherwise
        assert {c: o for c, o in u.items() if c not in open_cells} == \
               {c: o for c, o in best.items() if c not in open_cells}
    assert ups == runners_up(space, probs, 4, seed=3)          # seeded
    # 2 × 3 open combinations minus the argmax leave 5: asking for more tops up with near-ties
    # of the decided cells (their runner-up has probability 0, so no draw reaches them)
    many = runners_up(space, probs, 8, seed=3)
    assert len({space.canonical(u) for u in many}) == 8
    assert sum(any(u[c] != best[c] for c in decided if c not in open_cells) for u in many) == 3


def test_near_ties_flip_the_least_decided_cells_first():
    space = avsearch.get_space("av_nas", d=8, e=2, bits=8, heads=2, d_state=4,
                               modalities={"visual": 6})
    probs = {c: dict.fromkeys(space.candidates(c), 0.0) for c in space.cells}
    for c in space.cells:
        names = space.candidates(c)
        probs[c][names[0]], probs[c][names[1]] = 0.9, 0.1
    probs["T"] = {"SelfAttention": 0.52, "SelfSSM": 0.48}
    probs["visual.U1"] = {"Skip": 0.35, "SiLU": 0.45, "LayerNorm": 0.2}
    ties = near_ties(space, probs, 2)
    best = {c: max(p, key=p.get) for c, p in probs.items()}
    assert ties[0] == {**best, "T": "SelfSSM"}
    assert ties[1] == {**best, "visual.U1": "Skip"}


# ---------------------------------------------------------------- policies
def test_gumbel_policy_runs_exactly_one_path_and_reaches_every_alpha(tiny_av):
    net = avsearch.compile_space(tiny_av, "mixed")
    net.set_policy("gumbel", temperature=1.0)
    calls: dict[str, int] = {}
    for cell, module in net.cells.items():
        for name, op in module.ops.items():
            op.register_forward_hook(lambda *_, c=cell: calls.__setitem__(c, calls.get(c, 0) + 1))
    x = (torch.randn(3, 5, 12), torch.randn(3, 5, 16))
    net.train()
    net(*x).sum().backward()
    assert calls and all(n == 1 for n in calls.values()), calls
    for alpha in net.alpha.values():   # straight-through: every candidate's α gets a gradient
        assert alpha.grad is not None and (alpha.grad != 0).sum() >= len(alpha) - 1
    calls.clear()
    net.eval()
    with torch.no_grad():
        net(*x)
    assert max(calls.values()) > 1     # evaluation uses the whole softmax mixture


# ---------------------------------------------------------------- in a real run
def test_the_best_validation_state_is_restored_not_the_last(tmp_path, monkeypatch):
    """Epoch 2 of 3 gets the best (poisoned) score: the saved weights are epoch 2's."""
    scores, states = iter([0.2, 0.9, 0.1]), []
    original = Trainer.validate

    def poisoned(self, net, limit=None):
        metrics = original(self, net, limit)
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        return {**metrics, self.select: next(scores)}

    monkeypatch.setattr(Trainer, "validate", poisoned)
    _run(tmp_path, arch="mamba", epochs=3)
    saved = load_file(tmp_path / "best.safetensors")
    assert all(torch.equal(saved[k], states[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], states[2][k]) for k in saved)


def test_csp_finetune_starts_from_the_searched_weights(tmp_path, monkeypatch):
    seen = {}
    original = Trainer.stage

    def spy(self, name, model, *a, **kw):
        if name == "finetune":
            seen["start"] = {k: v.clone() for k, v in model.state_dict().items()}
        result = original(self, name, model, *a, **kw)
        if name == "search":
            seen["searched"] = {k: v.clone() for k, v in model.state_dict().items()}
        return result

    monkeypatch.setattr(Trainer, "stage", spy)
    _run(tmp_path, strategy="csp", strategy_options={"inherit": "yes"}, epochs=2)
    start, searched = seen["start"], seen["searched"]
    assert set(start) < set(searched)
    assert all(torch.equal(start[k], searched[k]) for k in start)


def test_darts_alpha_steps_see_only_the_held_out_part(tmp_path, monkeypatch):
    used = {"alpha": set(), "w": set()}
    last: list = []
    stage = {"name": None}
    original_loss, original_grad, original_stage = Trainer.loss, torch.autograd.grad, Trainer.stage

    def in_stage(self, name, *a, **kw):
        stage["name"] = name
        return original_stage(self, name, *a, **kw)

    def loss(self, net, batch, split=None):
        split = split or self.train_split
        ids = [split.ids[i] for i in np.asarray(batch).reshape(-1)]
        last[:] = ids if stage["name"] == "search" else []
        return original_loss(self, net, batch, split)

    def grad(outputs, inputs, *a, **kw):   # darts asks autograd for α's gradient only
        used["alpha"].update(last)
        return original_grad(outputs, inputs, *a, **kw)

    original_backward = torch.Tensor.backward

    def backward(self, *a, **kw):
        used["w"].update(last)
        return original_backward(self, *a, **kw)

    monkeypatch.setattr(Trainer, "stage", in_stage)
    monkeypatch.setattr(Trainer, "loss", loss)
    monkeypatch.setattr(torch.autograd, "grad", grad)
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    _run(tmp_path, strategy="darts", epochs=2, strategy_options={"inherit": "no"})
    assert used["alpha"] and used["w"]
    assert not used["alpha"] & used["w"]                      # disjoint halves of train
    assert len(used["alpha"] | used["w"]) > 0.8 * 48          # that together cover it


def test_enas_train_controller_moves_the_policy_toward_a_rewarded_choice(tmp_path, monkeypatch):
    """The reward is 1 when cell T runs SelfSSM: ENAS's own controller phase, in a real run,
    must make SelfSSM the likely choice there (it starts uniform)."""
    import avsearch.strategies.enas as enas

    monkeypatch.setattr(enas, "path_score", lambda ctx, net, choices, limit=None:
                        float(choices["T"] == "SelfSSM"))
    summary = _run(tmp_path, strategy="enas", epochs=2,
                   strategy_options={"controller_steps": "40", "controller_lr": "0.05"})
    policy = summary["search"]["policy"]
    assert policy["T"]["SelfSSM"] > 0.8
    assert json.loads((tmp_path / "best.arch").read_text())["choices"]["T"] == "SelfSSM"


def test_halving_keeps_the_candidate_validation_prefers(tmp_path, monkeypatch):
    """Validation is poisoned to favour the second candidate the search offers: the halving
    stage must finetune that one, not the argmax."""
    original = Trainer.validate
    target = {}

    def poisoned(self, net, limit=None):
        metrics = original(self, net, limit)
        choices = getattr(net, "choices", None)
        if choices is not None and "id" in target:
            bonus = 1.0 if net.space.arch_id(choices)[:12] == target["id"] else 0.0
            return {**metrics, self.select: metrics[self.select] * 0.01 + bonus}
        return metrics

    from avsearch import strategies
    original_halving = strategies.successive_halving

    def pick(ctx, outcome, count, inherited):
        target["id"] = ctx.space.arch_id(outcome.candidates[0])[:12]
        return original_halving(ctx, outcome, count, inherited)

    monkeypatch.setattr(Trainer, "validate", poisoned)
    monkeypatch.setattr(strategies, "successive_halving", pick)
    summary = _run(tmp_path, strategy="csp", epochs=2, strategy_options={"halving": "4"})
    halving = summary["search"]["halving"]
    assert halving["winner"] == target["id"] and not halving["derived_won"]
    assert [len(r) for r in halving["rounds"]] == [4, 2]
    assert summary["arch_id"][:12] == target["id"]


def test_compare_runs_a_strategy_variant_as_its_own_row(tmp_path):
    from avsearch.compare import CompareSettings, compare
    from avsearch.errors import AvsearchInputError

    base = dict(space="av_nas", presets=[], random_archs=0, data="mech-av", budget="smoke",
                epochs=1, seeds=[0], space_options=dict(TINY))
    with pytest.raises(AvsearchInputError, match="no option .bogus."):
        compare(CompareSettings(strategies=["csp+bogus=1"], **base), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    result = compare(CompareSettings(strategies=["csp", "csp+halving=2"], **base), tmp_path / "ok",
                     progress=False)
    assert [row["method"] for row in result["methods"]] == ["csp", "csp+halving=2"]
    variant = json.loads((tmp_path / "ok" / "runs" / "csp+halving=2-8b-s0" / "run.json").read_text())
    assert variant["strategy"] == "csp" and variant["strategy_options"] == {"halving": "2"}
    metrics = json.loads((tmp_path / "ok" / "runs" / "csp+halving=2-8b-s0" / "metrics.json").read_text())
    assert len(metrics["search"]["halving"]["rounds"][0]) == 2
    t = metrics["time"]     # the halving stage is search time beyond the supernet
    assert t["halving_s"] > 0
    record = result["methods"][1]["bits"]["8"]["runs"][0]
    assert record["search_s"] == pytest.approx(t["search_s"] + t["halving_s"] - t["supernet_s"], abs=1e-3)
    plain = json.loads((tmp_path / "ok" / "runs" / "csp-8b-s0" / "metrics.json").read_text())
    assert "halving" not in plain["search"]


def test_halving_defaults_to_the_budgets_and_an_option_overrides_it(tmp_path, monkeypatch):
    """A strategy left at halving=-1 runs the budget's stage (quick: 8); halving=0 turns it off."""
    import dataclasses

    from avsearch import train

    assert train.BUDGETS["quick"].halving == 8 and train.BUDGETS["smoke"].halving == 0
    monkeypatch.setitem(train.BUDGETS, "smoke", dataclasses.replace(train.BUDGETS["smoke"], halving=2))
    summary = _run(tmp_path / "default", strategy="csp", epochs=2)
    assert [len(r) for r in summary["search"]["halving"]["rounds"]] == [2]
    from avsearch.run import summary_table
    table = summary_table(summary)    # the closing summary names the stage and its time
    assert "successive halving over 2 candidates" in table
    assert f"successive halving {summary['time']['halving_s']:.0f} s, finetune" in table
    off = _run(tmp_path / "off", strategy="csp", epochs=2, strategy_options={"halving": "0"})
    assert "halving" not in off["search"]


def test_random_search_hands_its_other_candidates_to_the_halving_stage(tmp_path):
    summary = _run(tmp_path, strategy="random", epochs=1, strategy_options={"halving": "2"})
    rounds = summary["search"]["halving"]["rounds"]
    assert [len(r) for r in rounds] == [2]
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").open()]
    searched = [h["stage"] for h in history if h["stage"].startswith("search/candidate-")]
    halved = [h["stage"] for h in history if h["stage"].startswith("halving/")]
    assert len(searched) == 4 and len(halved) == 2    # 4 candidates searched, the best 2 halved


def test_csp_warm_up_trains_single_paths_and_leaves_alpha_alone(tmp_path, monkeypatch):
    from avsearch.supernet import Network

    seen = {"paths": 0}
    original_stage, original_set_path = Trainer.stage, Network.set_path

    def stage(self, name, model, *a, **kw):
        if name == "search/warmup":
            seen["alpha_before"] = {k: v.clone() for k, v in model.alpha.items()}
        result = original_stage(self, name, model, *a, **kw)
        if name == "search/warmup":
            seen["alpha_after"] = {k: v.clone() for k, v in model.alpha.items()}
        return result

    def set_path(self, choices):
        seen["paths"] += choices is not None
        return original_set_path(self, choices)

    monkeypatch.setattr(Trainer, "stage", stage)
    monkeypatch.setattr(Network, "set_path", set_path)
    _run(tmp_path, strategy="csp", epochs=2, strategy_options={"warmup_epochs": "1"})
    before, after = seen["alpha_before"], seen["alpha_after"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert seen["paths"] >= 2              # a new single path every warm-up step
    history = [json.loads(line)["stage"] for line in (tmp_path / "history.jsonl").open()]
    assert history[:2] == ["search/warmup", "search"]


@pytest.mark.parametrize("strategy, option, message", [
    ("csp", "policy=foo", "option policy='foo' must be softmax, gumbel or binary"),
    ("csp", "tau=0,1", "option tau=(0.0, 1.0) must be one or two numbers > 0"),
    ("spos", "inherit=maybe", "option inherit='maybe' must be auto, yes or no"),
    ("random", "halving=-2", "option halving=-2 must be an integer >= 0, or -1 for the budget's"),
])
def test_bad_shared_and_policy_options_exit_2_before_writing(tmp_path, capsys, strategy, option, message):
    from avsearch.cli import main

    out = tmp_path / "run"
    assert main(["run", "--strategy", strategy, "--strategy-set", option, "--budget", "smoke",
                 "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_spos_path_steps_train_each_path_from_the_shared_weights(tmp_path, monkeypatch):
    """spos with path_steps=2, in a real run: every architecture the evolution scores first
    trains 2 steps of its own, starting each time from the same shared weights (restored
    after each), and its recorded score is that of a fixed network holding those weights,
    trained by hand on the same batches."""
    from avsearch.arch import Architecture
    from avsearch.supernet import compile_space

    phase, steps, scored = {"evolution": False}, [], []
    original_stage, original_step, original_validate = Trainer.stage, Trainer.weight_step, Trainer.validate

    def stage(self, name, model, *a, **kw):
        phase["evolution"] = False
        result = original_stage(self, name, model, *a, **kw)
        phase["evolution"] = name == "search"
        return result

    def weight_step(self, net, optimizers, batch, split=None):
        if phase["evolution"]:
            steps.append((dict(net._path), {k: v.clone() for k, v in net.state_dict().items()},
                          batch.copy()))
        return original_step(self, net, optimizers, batch, split)

    def validate(self, net, limit=None):
        metrics = original_validate(self, net, limit)
        if phase["evolution"]:
            scored.append((dict(net._path), metrics[self.select], self))
        return metrics

    monkeypatch.setattr(Trainer, "stage", stage)
    monkeypatch.setattr(Trainer, "weight_step", weight_step)
    monkeypatch.setattr(Trainer, "validate", validate)
    _run(tmp_path, strategy="spos", epochs=1,
         strategy_options={"trials": "4", "population": "4", "path_steps": "2", "halving": "0"})
    trials = [t for t in map(json.loads, (tmp_path / "history.jsonl").read_text().splitlines())
              if t["stage"].startswith("search/evolution/") and "trial" in t]
    assert len(scored) == len({json.dumps(t["choices"], sort_keys=True) for t in trials}) >= 2
    assert len(steps) == 2 * len(scored)
    start = steps[0][1]
    for i, (path, score, trainer) in enumerate(scored):
        mine = steps[2 * i:2 * i + 2]
        assert all(p == path for p, _, _ in mine)                       # the scored path trains
        assert all(torch.equal(mine[0][1][k], start[k]) for k in start)  # from the shared weights
        assert not all(torch.equal(mine[1][1][k], start[k]) for k in start)
    # by hand: the first trial's fixed network inherits the shared weights, trains 2 steps
    path, score, trainer = scored[0]
    space = Architecture.load(tmp_path / "best.arch").build_space()
    fixed = compile_space(space, "fixed", path)
    fixed.load_state_dict({k: start[k] for k in fixed.state_dict()})
    opt = torch.optim.AdamW([p for p in fixed.parameters() if p.ndim >= 2], lr=1e-3, weight_decay=0.05)
    opt.add_param_group({"params": [p for p in fixed.parameters() if p.ndim < 2], "weight_decay": 0.0})
    fixed.train()
    for _, _, batch in steps[:2]:   # the recipe's AdamW: no decay on vectors
        opt.zero_grad()
        trainer.loss(fixed, batch).backward()
        opt.step()
    assert original_validate(trainer, fixed)[trainer.select] == pytest.approx(score, abs=1e-9)


def test_spos_fair_update_runs_every_candidate_of_every_cell_equally_often(tmp_path, monkeypatch):
    """FairNAS's strict fairness in a real run: every supernet update accumulates passes that
    run each candidate of each cell the same number of times (once per candidate at the
    least-common-multiple count), and one update is one optimizer step."""
    from avsearch.supernet import Cell

    updates: list[list[tuple[Cell, str]]] = []
    cell_forward, weight_step = Cell.forward, Trainer.weight_step

    def recording_forward(self, inputs, weights):
        if self.training and updates and updates[-1] is not None:
            updates[-1].extend((self, name) for name in weights)
        return cell_forward(self, inputs, weights)

    def recording_step(self, net, optimizers, batch, split=None, passes=None):
        updates.append([] if passes else None)
        loss = weight_step(self, net, optimizers, batch, split, passes)
        if passes:
            updates[-1] = (updates[-1], len(passes))
        return loss

    monkeypatch.setattr(Cell, "forward", recording_forward)
    monkeypatch.setattr(Trainer, "weight_step", recording_step)
    _run(tmp_path, strategy="spos", epochs=2,
         strategy_options={"fair": "true", "trials": "4", "halving": "0"})
    fair = [u for u in updates if u is not None]
    assert len(fair) == 2 * get_budget("smoke").search_steps   # one per update
    for runs, passes in fair:
        cells = {id(c): c for c, _ in runs}
        counts = {k: len(c.names) for k, c in cells.items()}
        assert passes == math.lcm(*counts.values()) and len(cells) == 22
        for k, cell in cells.items():
            ran = [name for c, name in runs if id(c) == k]
            # every candidate, each passes / k times: no candidate is left out or favoured
            assert sorted(ran) == sorted(cell.names * (passes // len(cell.names))), ran


def test_weight_step_over_passes_takes_the_mean_of_the_passes_gradients(tmp_path):
    """The one training step with ``passes``: one optimizer step on the mean of each pass's
    gradient, against the gradients of the two paths computed one at a time."""
    from avsearch.objectives import get_objective
    from avsearch.run import prepare_space
    from avsearch.strategies import RunContext, fair_paths
    from avsearch.data import load_dataset

    data = load_dataset("mech-av")
    objective = get_objective("supcon", seed=0)
    space = prepare_space("av_nas", {**TINY, "dropout": "0"}, data, None, objective)
    trainer = Trainer(data, objective, get_budget("smoke"), torch.device("cpu"), tmp_path,
                      progress=False)
    net = RunContext(space, trainer, torch.device("cpu"), 0).network("single-path")
    torch.manual_seed(0)
    paths, batch = fair_paths(space)[:2], np.arange(16)
    grads = []
    for path in paths:                       # each path's gradient on its own
        net.zero_grad(set_to_none=True)
        net.set_path(path)
        trainer.loss(net, batch).backward()
        grads.append({n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                      for n, p in net.named_parameters()})
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    sgd = torch.optim.SGD(net.parameters(), lr=1.0)
    trainer.weight_step(net, [sgd], batch, passes=[lambda p=p: net.set_path(p) for p in paths])
    moved = 0
    for n, p in net.named_parameters():
        expected = before[n] - (grads[0][n] + grads[1][n]) / 2
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-6)
        moved += int(not torch.equal(grads[0][n], grads[1][n]))
    assert moved > 0          # the two paths' gradients differ somewhere: the mean is tested
