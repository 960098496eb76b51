"""The strategy conformance suite: what every search strategy must do, as pytest tests.

Modelled on Optuna's shared sampler test cases. Subclass it in a test module (a class named
``Test...``) and name your strategy; pytest then runs every test below against it::

    from avsearch.testing import StrategyTests

    class TestMine(StrategyTests):
        strategy_name = "mine"          # registered with @register_strategy

Each test runs whole ``avsearch run``\\ s at the smoke budget on a tiny synthetic data set
(seconds each): the same seed gives the same architecture and weights; the result is a
complete architecture of the space with the run's artifacts and honest test numbers; the
budget is respected; a run killed after any checkpoint resumes to the same result; a
one-modality space and a space declared outside avsearch work. To run the suite over several
strategies, override the ``strategy`` fixture with ``params``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from avsearch.arch import Architecture
from avsearch.data import load_dataset
from avsearch.graph import SearchSpace
from avsearch.options import Option
from avsearch.recipe import RECIPES
from avsearch.run import RunSettings, run
from avsearch.spaces import register_space
from avsearch.testing.helpers import (DATA_AV, DATA_V, Killed, checkpoint_saves,
                                      reference_test_metrics)
from avsearch.train import BUDGETS

__all__ = ["StrategyTests", "TINY_AV_NAS", "USER_SPACE"]

TINY_AV_NAS = {"d": "8", "e": "2", "heads": "2", "d_state": "4", "bits": "8"}
USER_SPACE = "avsearch_testing_user"


@register_space(USER_SPACE, "a space declared outside avsearch (the strategy suite's)",
                options={"d": Option(8, int, "width"), "bits": Option(8, int, "code length")})
def _user_space(d: int, bits: int) -> SearchSpace:
    space = SearchSpace(USER_SPACE, {"d": d, "bits": bits})
    x = space.input("visual", width="d")
    h = space.choice("mix", kind="M", candidates=["Skip", "Conv_k", "SelfSSM"], inputs=[x])
    h = space.choice("norm", kind="U", candidates=["Skip", "LayerNorm"], inputs=[h])
    h = space.choice("head", kind="T", candidates=["SelfAttention", "SelfSSM"], inputs=[h])
    space.output(space.fixed("hash", "Hash", [h], width="bits"))
    return space


def _result(out: Path) -> tuple[dict, str]:
    arch = json.loads((out / "best.arch").read_text())
    return arch["choices"], arch["weights_sha256"]


class StrategyTests:
    """The conformance tests of a strategy (module docstring)."""

    strategy_name: str = ""
    strategy_options: dict[str, str] = {}   # its --strategy-set, as strings
    epochs = 2                              # per stage, at the smoke budget

    @pytest.fixture(scope="class")
    @classmethod
    def strategy(cls) -> str:
        """The strategy under test (override with ``params`` to run several)."""
        return cls.strategy_name

    @classmethod
    def settings(cls, strategy: str, **changes) -> RunSettings:
        base = dict(space="av_nas", strategy=strategy, strategy_options=dict(cls.strategy_options),
                    data=DATA_AV, budget="smoke", epochs=cls.epochs,
                    space_options=dict(TINY_AV_NAS), baselines=False)
        return RunSettings(**{**base, **changes})

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, strategy, tmp_path_factory) -> tuple[Path, int]:
        """One uninterrupted run, and how many checkpoints it wrote."""
        out = tmp_path_factory.mktemp(f"reference-{strategy}")
        with checkpoint_saves() as saves:
            run(cls.settings(strategy), out=out, progress=False)
        return out, len(saves)

    def test_same_seed_same_architecture_and_weights(self, strategy, reference, tmp_path):
        out, _ = reference
        run(self.settings(strategy), out=tmp_path, progress=False)
        assert _result(tmp_path) == _result(out)

    def test_result_is_a_complete_architecture_of_the_space(self, strategy, reference):
        out, _ = reference
        arch = Architecture.load(out / "best.arch")          # validates space, choices, id
        space = arch.build_space()
        assert set(arch.choices) == set(space.cells)
        assert arch.provenance["strategy"] == strategy
        net = arch.network()                                  # weights load and match their hash
        assert sum(p.numel() for p in net.parameters()) > 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["strategy"] == strategy
        # the recorded test numbers are those of the saved weights, recomputed independently
        expected = reference_test_metrics(out / "best.arch", load_dataset(DATA_AV))
        assert metrics["test"]["map@100"] == pytest.approx(expected["map@100"], abs=1e-9)
        assert metrics["test"]["gmap"] == pytest.approx(expected["gmap"], abs=1e-9)
        assert metrics["time"]["search_s"] > 0 and metrics["time"]["finetune_s"] > 0

    def test_budget_is_respected(self, strategy, reference):
        out, _ = reference
        budget = BUDGETS["smoke"]
        history = [json.loads(line) for line in (out / "history.jsonl").open()]
        trained = [h for h in history if "epoch" in h]
        search = [h for h in trained if h["stage"].split("/")[0] == "search"]
        finetune = [h for h in trained if h["stage"] == "finetune"]
        assert [h["epoch"] for h in finetune] == list(range(1, self.epochs + 1))
        assert all(h["epoch"] <= self.epochs for h in search)
        batch = RECIPES[self.settings(strategy).recipe].batch_size or budget.batch_size
        assert 0 < sum(h["anchors"] for h in search) <= self.epochs * budget.search_steps * batch
        assert all(h["anchors"] == budget.finetune_steps * batch for h in finetune)
        trials = [h for h in history if h["stage"].startswith("search/evolution/")]
        assert len(trials) <= budget.search_trials

    def test_killed_run_resumes_to_the_same_result(self, strategy, reference, tmp_path):
        out, saves = reference
        with pytest.raises(Killed), checkpoint_saves(kill_before=max(1, saves // 2) + 1):
            run(self.settings(strategy), out=tmp_path, progress=False)
        assert not (tmp_path / "best.arch").exists()
        run(self.settings(strategy), out=tmp_path, resume=True, progress=False)
        assert _result(tmp_path) == _result(out)
        lines = (tmp_path / "history.jsonl").read_text().splitlines()
        assert len(lines) == len((out / "history.jsonl").read_text().splitlines())

    def test_one_modality_space(self, strategy, tmp_path):
        run(self.settings(strategy, data=DATA_V, epochs=1), out=tmp_path, progress=False)
        arch = Architecture.load(tmp_path / "best.arch")
        assert arch.space_config["modalities"] == {"visual": 8}
        assert "S" in arch.choices      # one modality: the self-fusion cell replaces I and F

    def test_user_declared_space(self, strategy, tmp_path):
        run(self.settings(strategy, space=USER_SPACE, data=DATA_V, epochs=1, space_options={}),
            out=tmp_path, progress=False)
        arch = Architecture.load(tmp_path / "best.arch")
        assert arch.space == USER_SPACE and set(arch.choices) == {"mix", "norm", "head"}
