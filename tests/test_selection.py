"""Model selection: self-supervised objectives select without labels on unlabelled data
(``neg_loss``: the objective's loss on the validation videos), and a run records which
criterion it used."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import avsearch
from avsearch import compile_space
from avsearch.arch import Architecture
from avsearch.data import Dataset, Split, register_builtin
from avsearch.errors import AvsearchInputError
from avsearch.inference import feature_encoder
from avsearch.objectives import get_objective
from avsearch.train import Budget, Trainer
from avsearch.testing.helpers import class_mean_dataset

CPU = torch.device("cpu")
SETS = {"d": "8", "d_dec": "8", "bits": "8", "heads": "2", "d_state": "4"}


def _frames(unlabelled: bool = True, scrambled: bool = False) -> Dataset:
    data = class_mean_dataset("select-frames", {"visual": 12},
                              {"train": 48, "val": 16, "test": 16, "retrieval": 32}, length=9)
    for name, split in list(data.splits.items()):
        labels = split.labels
        if name == "train" and unlabelled:
            labels = np.zeros_like(labels)
        elif name in ("val", "retrieval") and scrambled:   # other labels, same videos
            labels = np.roll(labels, 1, axis=1) if name == "val" else ~labels
        data.splits[name] = Split(split.ids, labels, split.features)
    return data


register_builtin("select-unlabelled", _frames)
register_builtin("select-scrambled", lambda: _frames(scrambled=True))


@pytest.mark.parametrize("name", ["vhmt", "autossvh"])
def test_auto_selects_without_labels_when_the_training_data_has_none(name, tmp_path):
    unlabelled, labelled = _frames(), _frames(unlabelled=False)
    assert get_objective(name).criterion(unlabelled) == "neg_loss"
    assert get_objective(name).criterion(labelled) == "map@100"
    assert get_objective(name, select="loss").criterion(labelled) == "neg_loss"
    assert get_objective(name, select="map").criterion(unlabelled) == "map@100"
    budget = Budget("t", 1, 1, 16)
    assert Trainer(unlabelled, get_objective(name), budget, CPU, tmp_path).select == "neg_loss"
    assert Trainer(labelled, get_objective("infonce"), budget, CPU, tmp_path).select == "map@100"
    with pytest.raises(AvsearchInputError, match="select='labels'"):
        get_objective(name, select="labels")


def test_label_free_score_is_minus_the_validation_loss_and_reads_no_labels(tmp_path):
    space = avsearch.get_space("vhmt", **{k: int(v) for k, v in SETS.items()}, dropout=0.0,
                               modalities={"visual": 12})
    net = compile_space(space, "fixed", space.presets["exp3"]).train()
    data = _frames()
    objective = get_objective("vhmt", seed=0)
    trainer = Trainer(data, objective, Budget("t", 1, 1, 16), CPU, tmp_path)
    rng = torch.get_rng_state()
    score = trainer.validate(net)
    assert torch.equal(rng, torch.get_rng_state()) and net.training   # training state untouched
    # a teacher-student network draws nothing at random: minus its eval-mode loss over the
    # 16 validation videos (one batch)
    val = data.split("val")
    with torch.no_grad():
        reference = objective.loss(feature_encoder(net.eval(), val, CPU), np.arange(len(val)))
    net.train()
    assert set(score) == {"neg_loss"}
    assert score["neg_loss"] == pytest.approx(-float(reference), rel=1e-6)
    scrambled = _frames(scrambled=True)
    assert Trainer(scrambled, get_objective("vhmt", seed=0), Budget("t", 1, 1, 16), CPU,
                   tmp_path / "s").validate(net) == score
    for p in net.parameters():
        p.data.add_(0.1)
    assert trainer.validate(net) != score                            # it measures the network


def test_autossvh_score_sees_fixed_views_without_p2set(tmp_path):
    """AutoSSVH's score draws its views from its own seeded generator (the same views every
    epoch) and leaves P2Set out (its centres change every epoch)."""
    space = avsearch.get_space("vhmt", **{k: int(v) for k, v in SETS.items()}, dropout=0.0,
                               samplers="random", modalities={"visual": 12})
    net = compile_space(space, "fixed", space.presets["exp3"]).train()
    data = _frames()
    objective = get_objective("autossvh", seed=0, warmup_epochs=0)
    trainer = Trainer(data, objective, Budget("t", 1, 1, 16), CPU, tmp_path)
    objective.begin_stage("finetune", "finetune")
    objective.batches(data.split("train"), 1, 16)        # P2Set is on in training
    torch.manual_seed(1)
    first = trainer.validate(net)
    torch.manual_seed(2)
    assert trainer.validate(net) == first
    assert objective._centres == {}                      # nothing clustered for the score
    # the views do not come from the sampler cell: a network that differs only in its
    # sampler scores the same (otherwise the easier sampler would win the selection)
    both = avsearch.get_space("vhmt", **{k: int(v) for k, v in SETS.items()}, dropout=0.0,
                              samplers="random,adversarial", modalities={"visual": 12})
    nets = [compile_space(both, "fixed", {**both.presets["exp3"], "sampler": s})
            for s in ("random", "adversarial")]
    shared = {k: v for k, v in net.state_dict().items()}
    for n in nets:
        n.load_state_dict(shared, strict=False)
    assert trainer.validate(nets[0]) == trainer.validate(nets[1]) == first


def test_a_self_supervised_run_selects_without_labels_and_says_so(tmp_path):
    """On unlabelled training data every selection (epochs, SPOS's fitness) is label-free:
    scrambling the validation and retrieval labels changes nothing the run selects."""
    from avsearch.run import RunSettings, run

    results = {}
    for data in ("select-unlabelled", "select-scrambled"):
        out = tmp_path / data
        run(RunSettings(space="vhmt", strategy="spos", data=data, objective="vhmt",
                        budget="smoke", epochs=2, space_options=SETS, baselines=False),
            out=out, progress=False)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["selection"]["criterion"] == "neg_loss"
        assert "no labels" in metrics["selection"]["what"]
        history = [json.loads(line) for line in (out / "history.jsonl").open()]
        epochs = [r for r in history if "epoch" in r]
        assert epochs and all(set(r["val"]) == {"neg_loss"} for r in epochs)
        results[data] = Architecture.load(out / "best.arch")
    a, b = results.values()
    assert (a.choices, a.weights_sha256) == (b.choices, b.weights_sha256)
