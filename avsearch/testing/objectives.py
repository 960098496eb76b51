"""The objective conformance suite: what every training objective must do, as pytest tests.

Subclass it in a test module (a class named ``Test...``), name your objective and, when it
needs them, the space and data it trains::

    from avsearch.testing import ObjectiveTests

    class TestMine(ObjectiveTests):
        objective_name = "mine"                    # registered in avsearch.objectives.OBJECTIVES

It checks that every option is described and its default valid (also read back from its
command-line string), that the objective accepts its space, that an epoch's batches are
index arrays into the training split, the same for the same seed and epoch, that a batch's
loss is a finite scalar whose gradient reaches the network's weights, the same again for the
same batch, and that the trainer can select models by the objective's criterion.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from avsearch.data import Dataset, load_dataset
from avsearch.graph import SearchSpace
from avsearch.inference import feature_encoder
from avsearch.objectives import Objective, get_objective
from avsearch.run import prepare_space
from avsearch.supernet import compile_space
from avsearch.testing.helpers import DATA_AV
from avsearch.testing.strategies import TINY_AV_NAS
from avsearch.train import Budget, Trainer

__all__ = ["ObjectiveTests"]


class ObjectiveTests:
    """The conformance tests of an objective (module docstring)."""

    objective_name: str = ""
    objective_options: dict[str, Any] = {}
    space_name = "av_nas"
    space_options: dict[str, Any] = TINY_AV_NAS
    data_name = DATA_AV
    batch_size = 16

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Dataset:
        return load_dataset(cls.data_name)

    @classmethod
    def objective(cls, seed: int = 0) -> Objective:
        return get_objective(cls.objective_name, seed=seed, **cls.objective_options)

    @pytest.fixture(scope="class")
    @classmethod
    def space(cls, data) -> SearchSpace:
        return prepare_space(cls.space_name, dict(cls.space_options), data, None, cls.objective())

    def network(self, space: SearchSpace) -> torch.nn.Module:
        torch.manual_seed(0)
        return compile_space(space, "mixed").train()

    def first_batch(self, objective: Objective, data: Dataset) -> np.ndarray:
        return next(iter(objective.batches(data.split("train"), 1, self.batch_size)))

    def test_options_are_described_and_their_defaults_valid(self):
        objective = self.objective()
        for name, option in objective.options().items():
            assert option.help, f"option {name} has no help"
            default = option.default
            text = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
            assert option.read(text) == default, name
            assert option.check is None or option.check.test(default), name
        assert objective.name == self.objective_name and objective.summary

    def test_it_accepts_its_space(self, space):
        self.objective().check_space(space)

    def test_batches_are_deterministic_index_arrays(self, data):
        train = data.split("train")
        first = [np.asarray(b) for b in self.objective(seed=3).batches(train, 1, self.batch_size)]
        again = [np.asarray(b) for b in self.objective(seed=3).batches(train, 1, self.batch_size)]
        assert first and all(np.array_equal(a, b) for a, b in zip(first, again))
        assert len(first) == len(again)
        for batch in first:
            assert np.issubdtype(batch.dtype, np.integer)
            assert batch.min() >= 0 and batch.max() < len(train)

    def test_loss_is_finite_and_trains_the_network(self, space, data):
        objective, net = self.objective(), self.network(space)
        batch = self.first_batch(objective, data)
        encode = feature_encoder(net, data.split("train"), torch.device("cpu"))
        torch.manual_seed(1)
        loss = objective.loss(encode, batch)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in net.weight_parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
        torch.manual_seed(1)
        assert objective.loss(encode, batch).item() == pytest.approx(loss.item(), rel=1e-5)

    def test_models_are_selected_by_its_criterion(self, space, data, tmp_path):
        objective = self.objective()
        trainer = Trainer(data, objective, Budget("t", 1, 1, self.batch_size), torch.device("cpu"),
                          tmp_path, progress=False)
        assert trainer.select == objective.criterion(data)
        score = trainer.validate(self.network(space).eval())
        assert np.isfinite(float(score[trainer.select]))
