"""The default training recipe: supervised contrastive loss, class-grouped batches, the
learning-rate schedule, steps per epoch, and the temporal CNN baseline in a real run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avsearch.data import register_builtin
from avsearch.data.sampler import ClassBatchSampler
from avsearch.losses.supcon import supcon_loss
from avsearch.recipe import RECIPES
from avsearch.run import RunSettings, run
from avsearch.train import BUDGETS
from avsearch.testing.helpers import class_mean_dataset

register_builtin("recipe-av", lambda: class_mean_dataset(
    "recipe-av", {"visual": 6, "audio": 5}, {"train": 40, "val": 12, "test": 12, "retrieval": 40},
    classes=4))
register_builtin("recipe-av6", lambda: class_mean_dataset(   # InfoNCE's 4 negatives need 5+ classes
    "recipe-av6", {"visual": 6, "audio": 5}, {"train": 48, "val": 12, "test": 12, "retrieval": 48},
    classes=6))
TINY = {"d": "8", "e": "2", "heads": "2", "d_state": "4", "bits": "8"}


def _supcon_by_loop(codes: torch.Tensor, labels: np.ndarray, tau: float) -> float:
    """Khosla et al.'s L_out written anchor by anchor, pair by pair."""
    z = torch.nn.functional.normalize(codes, dim=-1).double()
    total, anchors = 0.0, 0
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and (labels[i] & labels[p]).any()]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(len(z)) if a != i)
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def test_supcon_equals_the_anchor_by_anchor_definition_multilabel_too():
    rng = np.random.default_rng(0)
    codes = torch.tanh(torch.randn(9, 6))
    labels = rng.random((9, 4)) < 0.35
    labels[8] = False                      # an anchor without positives is left out
    got = float(supcon_loss(codes, torch.as_tensor(labels), tau=0.2))
    assert got == pytest.approx(_supcon_by_loop(codes, labels, 0.2), rel=1e-5)


def test_supcon_is_lower_when_classes_cluster():
    labels = torch.as_tensor(np.eye(3, dtype=bool)[[0, 0, 1, 1, 2, 2]])
    clustered = torch.eye(3)[[0, 0, 1, 1, 2, 2]] + 0.01 * torch.randn(6, 3)
    assert supcon_loss(clustered, labels) < supcon_loss(torch.randn(6, 3), labels)


def test_class_batches_visit_every_labelled_video_once_and_group_classes():
    y = np.arange(200) % 40                 # 40 classes, 5 videos each: a plain shuffle of
    labels = np.eye(40, dtype=bool)[y]      # batches of 32 would give few in-batch positives
    labels[7] = False                       # unlabelled: never drawn
    sampler = ClassBatchSampler(labels, per_class=4, seed=3)
    batches = list(sampler.epoch(32, epoch=2))
    seen = np.concatenate(batches)
    assert sorted(seen) == sorted(set(range(200)) - {7})
    def share_with_positive(batches):
        return np.mean(np.concatenate([(y[b][:, None] == y[b][None, :]).sum(1) > 1 for b in batches]))

    shuffled = np.random.default_rng(0).permutation(seen)
    assert share_with_positive(batches) > 0.9
    assert share_with_positive([shuffled[i:i + 32] for i in range(0, len(shuffled), 32)]) < 0.7
    assert np.array_equal(np.concatenate(list(sampler.epoch(32, epoch=2))), seen)
    assert not np.array_equal(np.concatenate(list(sampler.epoch(32, epoch=3))), seen)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    r = RECIPES["default"]
    total = 100
    f = [r.factor(i, total) for i in range(total)]
    warm = round(r.warmup * total)
    assert f[:warm] == pytest.approx([(i + 1) / warm for i in range(warm)])
    assert f[warm] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1:]))
    assert f[-1] < 0.01
    assert RECIPES["paper"].factor(50, total) == 1.0


def test_weight_decay_spares_biases_and_norms():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = RECIPES["default"].optimizer(net.parameters())
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(net[0].weight)] == 0.05
    assert decay[id(net[0].bias)] == decay[id(net[1].weight)] == 0.0
    assert isinstance(RECIPES["paper"].optimizer(net.parameters()), torch.optim.Adam)


def test_a_real_run_takes_the_budgets_steps_with_the_schedule_and_reports_the_cnn(tmp_path):
    """40 training videos are a third of one 128-video batch: each epoch still takes the
    budget's 2 steps (several passes), the learning rate follows the recipe's peak rate (here
    2e-3 from ``--recipe-set``, for the preset and the CNN alike, recorded in run.json) with
    warm-up + cosine across the stage, and metrics.json has the temporal CNN beside the other
    baselines."""
    seen_lr = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **kw):
        seen_lr.append(self.param_groups[0]["lr"])
        return original(self, *a, **kw)

    torch.optim.AdamW.step = spy
    try:
        summary = run(RunSettings(space="av_nas", arch="mamba", data="recipe-av", budget="smoke",
                                  epochs=3, space_options=dict(TINY),
                                  recipe_options={"lr": "2e-3"}), out=tmp_path, progress=False)
    finally:
        torch.optim.AdamW.step = original
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").open()]
    finetune = [h for h in history if h["stage"] == "finetune"]
    assert [h["anchors"] for h in finetune] == [BUDGETS["smoke"].finetune_steps * 128] * 3
    steps = 3 * BUDGETS["smoke"].finetune_steps
    expected = [2e-3 * RECIPES["default"].factor(i, steps) for i in range(steps)]
    assert seen_lr[:steps] == pytest.approx(expected)        # the finetune stage runs first
    assert seen_lr[steps:2 * steps] == pytest.approx(expected)   # then a baseline's (MLP)
    assert json.loads((tmp_path / "run.json").read_text())["recipe_options"] == {"lr": "2e-3"}
    assert set(summary["baselines"]) == {"LSH", "ITQ", "MLP", "CNN"}
    assert 0 <= summary["baselines"]["CNN"]["test"]["map@5"] <= 1
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["baselines"]["CNN"]["test"]["map@100"] == summary["baselines"]["CNN"]["test"]["map@100"]


def _spy_gradient_norms(monkeypatch) -> list[float]:
    """The global norm of the gradient every Adam/AdamW step of the weights applies."""
    seen: list[float] = []
    for cls in (torch.optim.Adam, torch.optim.AdamW):
        original = cls.step

        def spy(self, *a, _original=original, **kw):
            if hasattr(self, "max_grad_norm"):        # the recipe's weight optimiser
                grads = [p.grad.double().flatten() for g in self.param_groups
                         for p in g["params"] if p.grad is not None]
                seen.append(float(torch.cat(grads).norm()))
            return _original(self, *a, **kw)

        monkeypatch.setattr(cls, "step", spy)
    return seen


@pytest.mark.parametrize("recipe", ["default", "paper"])
def test_a_real_run_clips_the_weights_gradient_under_the_default_recipe(tmp_path, monkeypatch,
                                                                        recipe):
    """The default recipe clips the weights' gradient to global norm 1 before every step; the
    paper recipe does not. history.jsonl gives each epoch's median and max norm before
    clipping: under the paper recipe they are the norms the steps applied, under the default
    the steps applied min(norm, 1)."""
    assert RECIPES["default"].clip == 1.0 and RECIPES["paper"].clip == 0.0
    seen = _spy_gradient_norms(monkeypatch)
    run(RunSettings(space="av_nas", arch="transformer", data="recipe-av6", budget="smoke",
                    epochs=2, recipe=recipe, baselines=False, space_options=dict(TINY)),
        out=tmp_path, progress=False)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").open()]
    steps = BUDGETS["smoke"].finetune_steps
    assert len(seen) == 2 * steps
    for epoch, line in enumerate(history):
        applied = seen[epoch * steps:(epoch + 1) * steps]
        before = line["grad_norm"]
        if recipe == "paper":
            assert before["max"] == pytest.approx(max(applied), rel=1e-4)
            assert before["median"] == pytest.approx(float(np.median(applied)), rel=1e-4)
        else:
            assert max(applied) <= 1 + 1e-5
            assert max(applied) == pytest.approx(min(before["max"], 1.0), rel=1e-4)
    if recipe == "default":
        assert max(h["grad_norm"]["max"] for h in history) > 1     # clipping was not idle
    else:
        assert max(seen) > 1                                       # and would have clipped
