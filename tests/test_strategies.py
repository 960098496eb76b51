"""The strategy contract: every registered strategy passes these tests by registering.

Modelled on Optuna's shared sampler test cases: the same seed gives the same architecture
and weights; the result is a valid, complete architecture of the space with the run's
artifacts; the budget is respected; a run killed after any checkpoint resumes to the same
result; a one-modality space and a space declared here (by a "user") work.

Runs use a tiny synthetic data set registered in-process, at the smoke budget, so one run
takes seconds.
"""
from __future__ import annotations

import json

import pytest

from avsearch import Option, SearchSpace, register_space
from avsearch.arch import Architecture
from avsearch.data import Dataset, load_dataset, register_builtin
from avsearch.run import RunSettings, run
from avsearch.strategies import list_strategies
from avsearch.recipe import RECIPES
from avsearch.train import BUDGETS
from conftest import Killed, checkpoint_saves, class_mean_dataset, reference_test_metrics

STRATEGIES = sorted(list_strategies())
TINY = {"d": "8", "e": "2", "heads": "2", "d_state": "4", "bits": "8"}


def _tiny_data(modalities: dict[str, int], name: str) -> Dataset:
    return class_mean_dataset(name, modalities, {"train": 96, "val": 24, "test": 24, "retrieval": 72})


register_builtin("contract-av", lambda: _tiny_data({"visual": 12, "audio": 10}, "contract-av"))
register_builtin("contract-v", lambda: _tiny_data({"visual": 8}, "contract-v"))


@register_space("contract_user", "a space declared by a user in a test file",
                options={"d": Option(8, int, "width"), "bits": Option(8, int, "code length")})
def contract_user(d: int, bits: int) -> SearchSpace:
    space = SearchSpace("contract_user", {"d": d, "bits": bits})
    x = space.input("visual", width="d")
    h = space.choice("mix", kind="M", candidates=["Skip", "Conv_k", "SelfSSM"], inputs=[x])
    h = space.choice("norm", kind="U", candidates=["Skip", "LayerNorm"], inputs=[h])
    h = space.choice("head", kind="T", candidates=["SelfAttention", "SelfSSM"], inputs=[h])
    space.output(space.fixed("hash", "Hash", [h], width="bits"))
    return space


def _settings(strategy: str, **kw) -> RunSettings:
    base = dict(space="av_nas", strategy=strategy, data="contract-av", budget="smoke", epochs=2,
                space_options=dict(TINY), baselines=False)
    base.update(kw)
    return RunSettings(**base)


def _result(out) -> tuple[dict, str]:
    arch = json.loads((out / "best.arch").read_text())
    return arch["choices"], arch["weights_sha256"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run per strategy, and how many checkpoints it wrote."""
    runs = {}

    def get(strategy: str):
        if strategy not in runs:
            out = tmp_path_factory.mktemp(f"ref-{strategy}")
            with checkpoint_saves() as saves:
                run(_settings(strategy), out=out, progress=False)
            runs[strategy] = (out, len(saves))
        return runs[strategy]

    return get


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_architecture_and_weights(strategy, reference, tmp_path):
    out, _ = reference(strategy)
    run(_settings(strategy), out=tmp_path, progress=False)
    assert _result(tmp_path) == _result(out)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_result_is_a_complete_architecture_of_the_space(strategy, reference):
    out, _ = reference(strategy)
    arch = Architecture.load(out / "best.arch")          # validates space, choices, id
    space = arch.build_space()
    assert set(arch.choices) == set(space.cells)
    assert arch.provenance["strategy"] == strategy
    net = arch.network()                                  # weights load and match their hash
    assert sum(p.numel() for p in net.parameters()) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == strategy
    # the recorded test numbers are those of the saved weights, recomputed independently
    expected = reference_test_metrics(out / "best.arch", load_dataset("contract-av"))
    assert metrics["test"]["map@100"] == pytest.approx(expected["map@100"], abs=1e-9)
    assert metrics["test"]["gmap"] == pytest.approx(expected["gmap"], abs=1e-9)
    assert metrics["time"]["search_s"] > 0 and metrics["time"]["finetune_s"] > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_budget_is_respected(strategy, reference):
    out, _ = reference(strategy)
    budget = BUDGETS["smoke"]
    epochs = 2
    history = [json.loads(line) for line in (out / "history.jsonl").open()]
    trained = [h for h in history if "epoch" in h]
    search = [h for h in trained if h["stage"].split("/")[0] == "search"]
    finetune = [h for h in trained if h["stage"] == "finetune"]
    assert [h["epoch"] for h in finetune] == list(range(1, epochs + 1))
    assert all(h["epoch"] <= epochs for h in search)
    batch = RECIPES[_settings(strategy).recipe].batch_size or budget.batch_size
    assert 0 < sum(h["anchors"] for h in search) <= epochs * budget.search_steps * batch
    assert all(h["anchors"] == budget.finetune_steps * batch for h in finetune)
    trials = [h for h in history if h["stage"].startswith("search/evolution/")]
    assert len(trials) <= budget.search_trials


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_run_resumes_to_the_same_result(strategy, reference, tmp_path):
    out, saves = reference(strategy)
    with pytest.raises(Killed), checkpoint_saves(kill_before=max(1, saves // 2) + 1):
        run(_settings(strategy), out=tmp_path, progress=False)
    assert not (tmp_path / "best.arch").exists()
    run(_settings(strategy), out=tmp_path, resume=True, progress=False)
    assert _result(tmp_path) == _result(out)
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == len((out / "history.jsonl").read_text().splitlines())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_modality_space(strategy, tmp_path):
    run(_settings(strategy, data="contract-v", epochs=1), out=tmp_path, progress=False)
    arch = Architecture.load(tmp_path / "best.arch")
    assert arch.space_config["modalities"] == {"visual": 8}
    assert "S" in arch.choices      # one modality: the self-fusion cell replaces I and F


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_user_declared_space(strategy, tmp_path):
    run(_settings(strategy, space="contract_user", data="contract-v", epochs=1, space_options={}),
        out=tmp_path, progress=False)
    arch = Architecture.load(tmp_path / "best.arch")
    assert arch.space == "contract_user" and set(arch.choices) == {"mix", "norm", "head"}
