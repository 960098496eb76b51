"""``derive=perturb``: DARTS-PT's perturbation-based architecture selection (issue 10, item 4),
by hand on a tiny supernet and in a real ``avsearch run``."""
from __future__ import annotations

import json

import pytest
import torch

from avsearch.data import register_builtin
from avsearch.strategies import RunContext, SearchOutcome, perturb_choices
from avsearch.supernet import Network, compile_space, key
from avsearch.testing.helpers import class_mean_dataset

register_builtin("perturb-av", lambda: class_mean_dataset(
    "perturb-av", {"visual": 6, "audio": 5}, {"train": 48, "val": 12, "test": 12, "retrieval": 48},
    classes=4))


class ScoringTrainer:
    """Just what perturb_choices asks of a trainer: the score is 1, less 0.5 when cell ``T``
    runs without ``SelfSSM`` (so removing SelfSSM there hurts most) and less 0.1 when
    ``visual.U1`` runs without ``LayerNorm``; every gate set is kept."""

    select = "map@100"

    def __init__(self):
        self.gates: list[dict] = []

    def validate(self, net, limit=None):
        gates = self.gates[-1]
        return {"map@100": 1.0 - 0.5 * ("SelfSSM" not in gates["T"])
                - 0.1 * ("LayerNorm" not in gates["visual.U1"])}

    def remember(self, name, compute, *, phase, log=None):
        return compute()


def test_perturb_picks_the_op_whose_removal_hurts_most_not_the_argmax(tiny_av, monkeypatch):
    net = compile_space(tiny_av, "mixed")
    with torch.no_grad():   # α says SelfAttention at T, Skip at visual.U1
        net.alpha[key("T")].copy_(torch.tensor([2.0, 0.0]))
        net.alpha[key("visual.U1")].copy_(torch.tensor([1.0, 0.5, 0.0]))
    probs = net.probabilities()
    trainer = ScoringTrainer()
    original = Network.set_gates

    def spy(self, gates):
        if gates is not None:
            trainer.gates.append({c: dict(g) for c, g in gates.items()})
        return original(self, gates)

    monkeypatch.setattr(Network, "set_gates", spy)
    outcome = SearchOutcome(net.derive(), probs, supernet=net,
                            candidates=[{**net.derive(), "F": "GatedAttention"}])
    perturb_choices(RunContext(tiny_av, trainer, torch.device("cpu"), seed=0), outcome)

    record = outcome.diagnostics["perturb"]
    assert outcome.choices["T"] == "SelfSSM" and record["cells"]["T"]["argmax"] == "SelfAttention"
    assert outcome.choices["visual.U1"] == "LayerNorm"
    # every other cell scores alike whatever is removed: the tie goes to the higher α
    assert all(outcome.choices[c] == max(probs[c], key=probs[c].get)
               for c in tiny_av.cells if c not in ("T", "visual.U1"))
    assert record["changed_cells"] == 2
    assert record["cells"]["T"]["scores"] == {"SelfAttention": 1.0, "SelfSSM": 0.5}
    assert {c: r["choice"] for c, r in record["cells"].items()} == outcome.choices
    assert sorted(record["order"]) == sorted(tiny_av.cells) and record["order"] != tiny_av.cells
    # removing Skip from visual.U1 leaves SiLU and LayerNorm with softmax(α) renormalised
    p = probs["visual.U1"]
    removed = next(g["visual.U1"] for g in trainer.gates if set(g["visual.U1"]) == {"SiLU", "LayerNorm"})
    assert removed == pytest.approx({o: p[o] / (p["SiLU"] + p["LayerNorm"]) for o in ("SiLU", "LayerNorm")})
    # the last cell is scored with every earlier one fixed to its choice, alone
    last = record["order"][-1]
    assert all(trainer.gates[-1][c] == {outcome.choices[c]: None} for c in tiny_av.cells if c != last)
    # the runner-up keeps its difference from the argmax, on top of the new choice
    assert outcome.candidates == [{**outcome.choices, "F": "GatedAttention"}]


def _cli(tmp_path, *strategy_sets, strategy="csp"):
    from avsearch.cli import main

    args = ["run", "--space", "av_nas", "--data", "perturb-av", "--budget", "smoke", "--epochs", "1",
            "--strategy", strategy, "--no-baselines", "--quiet", "--device", "cpu",
            "--out", str(tmp_path / "run")]
    for kv in ("d=8", "e=2", "heads=2", "d_state=4", "bits=8"):
        args += ["--set", kv]
    for kv in strategy_sets:
        args += ["--strategy-set", kv]
    return main(args)


def test_csp_run_derives_by_perturbation(tmp_path, one_thread):
    assert _cli(tmp_path, "derive=perturb", "perturb_tune=1") == 0
    out = tmp_path / "run"
    record = json.loads((out / "metrics.json").read_text())["search"]["perturb"]
    arch = json.loads((out / "best.arch").read_text())
    assert arch["choices"] == {c: r["choice"] for c, r in record["cells"].items()}
    assert record["changed_cells"] == sum(r["choice"] != r["argmax"] for r in record["cells"].values())
    assert all(r["scores"] and r["choice"] in r["scores"] for r in record["cells"].values())
    stages = [json.loads(line)["stage"] for line in (out / "history.jsonl").open()]
    cells = record["order"]
    # one decision, then one tuning stage, per cell, in the recorded order
    assert [s for s in stages if s.startswith("search/perturb/")] == \
        [s for c in cells for s in (f"search/perturb/{c}", f"search/perturb/{c}/tune")]


@pytest.mark.parametrize("strategy", ["spos", "random"])
def test_perturb_is_refused_without_a_mixed_supernet(tmp_path, capsys, strategy):
    assert _cli(tmp_path, "derive=perturb", strategy=strategy) == 2
    assert "option derive='perturb' must be argmax" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_perturb_removes_from_the_mixture_the_supernet_computes(tiny_av, monkeypatch):
    """After an annealed search (τ ≠ 1) the supernet mixes with softmax(α/τ): a removal
    renormalises those weights, not softmax(α)'s."""
    net = compile_space(tiny_av, "mixed")
    with torch.no_grad():
        net.alpha[key("visual.U1")].copy_(torch.tensor([1.0, 0.5, 0.0]))
    net.set_policy("softmax", 0.25)
    trainer, original = ScoringTrainer(), Network.set_gates

    def spy(self, gates):
        if gates is not None:
            trainer.gates.append({c: dict(g) for c, g in gates.items()})
        return original(self, gates)

    monkeypatch.setattr(Network, "set_gates", spy)
    outcome = SearchOutcome(net.derive(), net.probabilities(), supernet=net, candidates=[])
    perturb_choices(RunContext(tiny_av, trainer, torch.device("cpu"), seed=0), outcome)
    sharp = torch.tensor([1.0, 0.5, 0.0]).div(0.25).softmax(0).tolist()   # Skip, SiLU, LayerNorm
    removed = next(g["visual.U1"] for g in trainer.gates if set(g["visual.U1"]) == {"SiLU", "LayerNorm"})
    assert removed == pytest.approx({"SiLU": sharp[1] / (sharp[1] + sharp[2]),
                                     "LayerNorm": sharp[2] / (sharp[1] + sharp[2])})
