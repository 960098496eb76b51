"""The NNI bridge (extra ``nni``): avsearch spaces as NNI model spaces and NNI's results back.

The NNI tests skip when nni is not installed; the two tests that the core never imports nni
and that a missing nni is reported as bad input run everywhere.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import avsearch
from avsearch.arch import Architecture
from avsearch.errors import ArchError

TINY = dict(d=16, e=2, bits=8, heads=2, d_state=4, modalities={"visual": 12, "audio": 16})


@pytest.fixture(scope="module")
def no_nni():
    """A fresh interpreter: import avsearch (and what a run imports), record whether nni came
    along, then import the bridge as an environment without nni sees it."""
    code = ("import sys, avsearch, avsearch.bridges, avsearch.cli, avsearch.run, avsearch.train\n"
            "from avsearch.strategies import list_strategies; list_strategies()\n"
            "print(sorted(m for m in sys.modules if m == 'nni' or m.startswith(('nni.', 'avsearch.bridges.'))))\n"
            "sys.modules['nni'] = None  # what an environment without nni sees\n"
            "from avsearch.bridges.nni import to_nni\n"
            "try:\n"
            "    to_nni(avsearch.get_space('av_nas'))\n"
            "except avsearch.AvsearchInputError as err:\n"
            "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_avsearch_never_imports_nni(no_nni):
    assert no_nni[0] == "[]"


def test_missing_nni_is_bad_input_naming_the_extra(no_nni):
    assert "pip install 'avsearch[nni]'" in no_nni[1]


# ------------------------------------------------------------------------- with nni
@pytest.fixture(scope="module")
def bridge():
    pytest.importorskip("nni")
    pytest.importorskip("pytorch_lightning")
    import avsearch.bridges.nni as bridge

    return bridge


@pytest.fixture(scope="module")
def space():
    return avsearch.get_space("av_nas", **TINY)


@pytest.fixture(scope="module")
def stats(space):
    g = torch.Generator().manual_seed(1)
    return {m: (torch.randn(space.type_of(m).width, generator=g),
                torch.rand(space.type_of(m).width, generator=g) + 0.5) for m in space.modalities}


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(2)
    return torch.randn(3, 7, 12, generator=g), torch.randn(3, 7, 16, generator=g)


def _randomize(net: torch.nn.Module) -> None:
    """Move every weight (and α) off its initial value: LayerNorm's ones and zeros included."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)


def test_one_layer_choice_per_cell_labelled_with_the_cell(bridge, space, stats):
    model = bridge.to_nni(space, stats)
    mutables = model.simplify()
    assert list(mutables) == space.cells
    for cell, mutable in mutables.items():
        assert list(mutable.values) == list(space.candidates(cell))


@pytest.mark.parametrize("seed", [0, 1])
def test_frozen_nni_model_computes_what_the_fixed_network_computes(bridge, space, stats, inputs, seed):
    choices = space.sample(seed)
    fixed = avsearch.compile_space(space, "fixed", choices)
    fixed.set_input_stats(stats)
    _randomize(fixed)
    frozen = bridge.to_nni(space).freeze(choices)
    assert sorted(bridge.to_avsearch_state(frozen)) == sorted(fixed.state_dict())
    bridge.load_avsearch_state(frozen, fixed.state_dict())  # inputs' statistics included
    fixed.eval(), frozen.eval()
    assert torch.equal(frozen(*inputs), fixed(*inputs))
    # and back: NNI's weights into a fresh avsearch network
    again = avsearch.compile_space(space, "fixed", choices).eval()
    again.inherit(bridge.to_avsearch_state(frozen))
    assert torch.equal(again(*inputs), fixed(*inputs))


def test_model_instantiated_at_a_sample_is_that_architecture(bridge, space, stats, inputs):
    from nni.nas.space import model_context

    choices = space.sample(3)
    with model_context(choices):  # how NNI re-creates a model space at an architecture
        model = bridge.AvsearchModelSpace(space, stats)
    assert model.avsearch_choices == choices
    fixed = avsearch.compile_space(space, "fixed", choices)
    fixed.inherit(bridge.to_avsearch_state(model))
    fixed.eval(), model.eval()
    assert torch.equal(model(*inputs), fixed(*inputs))


def test_darts_supernet_is_the_mixed_network_with_alpha(bridge, space, stats, inputs):
    from nni.nas.strategy import DARTS

    mixed = avsearch.compile_space(space, "mixed")
    mixed.set_input_stats(stats)
    _randomize(mixed)  # α included
    supernet = DARTS().mutate_model(bridge.to_nni(space))
    assert sorted(bridge.to_avsearch_state(supernet)) == sorted(mixed.state_dict())
    bridge.load_avsearch_state(supernet, mixed.state_dict())
    mixed.eval(), supernet.eval()
    torch.testing.assert_close(supernet(*inputs), mixed(*inputs), rtol=1e-5, atol=1e-6)


def test_from_nni_round_trips_choices(bridge, space):
    model = bridge.to_nni(space)
    mutables = model.simplify()
    for seed in range(3):
        sample = {label: m.random(random_state=np.random.RandomState(seed)) for label, m in mutables.items()}
        assert bridge.from_nni(space, sample) == sample
        assert bridge.from_nni(space, model.freeze(sample)) == sample
    choices = space.sample(5)
    assert bridge.from_nni(space, {**choices, "__arch__": True}) == choices
    probs = {c: {op: (0.9 if op == choices[c] else 0.1 / len(space.candidates(c)))
                 for op in space.candidates(c)} for c in space.cells}
    assert bridge.from_nni(space, probs) == choices          # export_probs(): argmax
    with pytest.raises(ArchError, match="not a candidate"):
        bridge.from_nni(space, {**choices, "T": "FFN"})
    with pytest.raises(ArchError, match="unknown cell"):
        bridge.from_nni(space, {**choices, "visual.M9": "FFN"})
    with pytest.raises(ArchError, match="frozen"):
        bridge.from_nni(space, model)


def test_nni_darts_searches_the_bridged_space(bridge, tmp_path, inputs):
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS

    from avsearch.data import load_dataset
    from avsearch.objectives import get_objective

    data = load_dataset("avdigits")
    space = avsearch.get_space("av_nas", **{**TINY, "modalities": dict(data.modalities)})
    train = data.split("train")
    order = np.random.default_rng(0).permutation(len(train))
    streams = [train.subset(order[:1500]), train.subset(order[1500:])]  # W's data, α's data
    objective = get_objective("infonce")

    def batches(epoch):
        return list(zip(*(list(objective.batches(s, epoch, 4))[:2] for s in streams)))

    model_space = bridge.to_nni(space, train.moments())
    evaluator = bridge.lightning_evaluator(streams, batches, objective, epochs=1)
    initial = {k: v.clone() for k, v in bridge.to_avsearch_state(model_space).items()}
    strategy = DARTS()
    strategy(RawFormatModelSpace.from_model(model_space, evaluator), SequentialExecutionEngine())

    state = bridge.to_avsearch_state(strategy.supernet)
    alphas = [k for k in state if k.startswith("alpha.")]
    assert len(alphas) == len(space.cells)
    assert any(not torch.equal(state[k], initial[k]) for k in initial)  # W trained

    exported = strategy.oneshot_module.export()
    choices = bridge.from_nni(space, exported)
    probabilities = strategy.oneshot_module.export_probs()
    assert bridge.from_nni(space, probabilities) == choices
    arch = Architecture.from_space(space, choices, probabilities=probabilities,
                                   provenance={"strategy": "nni-darts"})
    arch.save(tmp_path / "nni.arch")
    assert Architecture.load(tmp_path / "nni.arch").choices == choices

    # NNI's pick, with NNI's weights, is the avsearch network that inherits the supernet's W*
    best = next(strategy.list_models()).executable_model()
    derived = avsearch.compile_space(space, "fixed", choices)
    derived.inherit({k: v for k, v in state.items() if not k.startswith("alpha.")})
    x = (torch.randn(2, 25, 64), torch.randn(2, 25, 40))
    best.eval(), derived.eval()
    assert torch.equal(best(*x), derived(*x))


def test_spaces_with_follower_cells_are_refused_clearly():
    import avsearch
    from avsearch.bridges.nni import to_nni
    from avsearch.errors import AvsearchInputError

    with pytest.raises(AvsearchInputError, match="follow"):
        to_nni(avsearch.get_space("tam", d=8, d_dec=8, bits=8, heads=2, d_state=4))
