"""``--objective autossvh`` and the frame-sampler cell, in the training path (paper 002)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import avsearch
from avsearch import compile_space
from avsearch.arch import Architecture
from avsearch.data import Dataset, Split, load_dataset, register_builtin
from avsearch.inference import encode_split, feature_encoder
from avsearch.losses.autossvh import frame_reconstruction_loss, hash_centres
from avsearch.objectives import AutoSSVH, get_objective
from avsearch.ops.frame_sampler import GradeNet, frames_to_drop
from avsearch.testing.helpers import (Killed, checkpoint_saves, class_mean_dataset,
                                      reference_test_metrics)
from conftest import write_ssvh_folder

SMALL = dict(d=8, d_dec=8, bits=8, heads=2, d_state=4, modalities={"visual": 12})
CPU = torch.device("cpu")


def _unlabelled() -> Dataset:
    data = class_mean_dataset("autossvh-frames", {"visual": 12},
                              {"train": 40, "val": 12, "test": 12, "retrieval": 24}, length=8)
    train = data.splits["train"]
    data.splits["train"] = Split(train.ids, np.zeros_like(train.labels), train.features)
    return data


register_builtin("autossvh-frames", _unlabelled)


def _network(preset="exp3", samplers="random,adversarial", space="vhmt", **options):
    space = avsearch.get_space(space, samplers=samplers, **{**SMALL, "dropout": 0.0, **options})
    return compile_space(space, "fixed", space.presets[preset]).train()


def _step(net, objective, data, batch, seed):
    """One loss and its gradients, with the random draws fixed by ``seed``."""
    torch.manual_seed(seed)
    net.zero_grad()
    loss = objective.loss(feature_encoder(net, data.split("train"), CPU), batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()
                           if p.grad is not None}


def test_the_sampler_ascends_what_the_hashing_network_descends():
    """Through the whole objective, the adversarial sampler's gradient is exactly the negative
    of what the same sampler gets without the reversal layer (descent on the loss), while the
    hashing network's gradient is unchanged: the GRL sits between the two in training."""
    net = _network()
    data = _unlabelled()
    objective = AutoSSVH(seed=0)
    batch = next(objective.batches(data.split("train"), 0, 16))
    loss_adv, adv = _step(net, objective, data, batch, seed=3)
    net.cells["sampler"].ops["adversarial"].sampler.adversarial = False
    loss_plain, plain = _step(net, objective, data, batch, seed=3)

    assert torch.equal(loss_adv, loss_plain)
    grade = [n for n in adv if ".grade." in n]
    assert grade and set(grade) == {n for n in plain if ".grade." in n}
    assert any(adv[n].abs().sum() > 0 for n in grade)
    for name in adv:
        expected = -plain[name] if name in grade else plain[name]
        torch.testing.assert_close(adv[name], expected, rtol=1e-5, atol=1e-7, msg=name)


def test_grade_net_gets_gradients_in_a_real_run(tmp_path, monkeypatch):
    """`avsearch run --objective autossvh` really puts the sampler in the training path (the
    published code never calls its sampler)."""
    from avsearch.run import RunSettings, run

    seen = []
    forward = GradeNet.forward

    def spy(self, v):
        out = forward(self, v)
        if out.requires_grad:
            out.register_hook(lambda g: seen.append(float(g.abs().sum())))
        return out

    monkeypatch.setattr(GradeNet, "forward", spy)
    sets = {k: str(v) for k, v in SMALL.items() if k != "modalities"}
    run(RunSettings(space="vhmt", arch="exp3", data="autossvh-frames", objective="autossvh",
                    budget="smoke", epochs=1, space_options=sets, baselines=False),
        out=tmp_path, progress=False)
    assert len(seen) >= 2 and all(g > 0 for g in seen)
    arch = Architecture.load(tmp_path / "best.arch")
    assert arch.choices["sampler"] == "adversarial"


def test_frame_reconstruction_is_eq13_over_the_dropped_frames():
    """With α = β = 0 the loss is L_FR of each view over exactly the frames its sampler
    dropped, summed over the two views: rebuilt here with the loss function on indices."""
    net = _network(preset="exp10", samplers="random")     # no teacher: both views → student
    data = _unlabelled()
    objective = AutoSSVH(seed=0, alpha=0.0, beta=0.0)
    batch = np.arange(10)
    loss, _ = _step(net, objective, data, batch, seed=5)

    torch.manual_seed(5)
    x = net.inputs["visual"](torch.from_numpy(data.split("train").take(batch)[0]))
    m = frames_to_drop(8, 0.75)
    reference = 0.0
    for _ in range(2):
        mask = net.node_outputs(x, names=["sampler"])["sampler"][..., 0]
        indices = mask.nonzero()[:, 1].reshape(len(batch), m)
        assert torch.equal(mask.sum(1), torch.full((len(batch),), float(m)))
        recon = net.node_outputs(x, names=["student.recon"],
                                 given={"visual": x * (1 - mask.unsqueeze(-1))})["student.recon"]
        picked = recon.gather(1, indices.unsqueeze(-1).expand(-1, -1, 12))
        reference = reference + frame_reconstruction_loss(picked, x, indices)
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-5, atol=1e-6)


def _stages(tmp_path, monkeypatch, objective, stages, epochs=3):
    """Run ``stages`` (name, network) one after another through a real Trainer.stage; return
    per stage the epochs in which P2Set clustered, and the codes each clustering voted on."""
    import avsearch.losses.autossvh as losses
    from avsearch.train import Budget, Trainer

    data = _unlabelled()
    tmp_path.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(data, objective, Budget("t", epochs, epochs, 16), CPU, tmp_path,
                      progress=False)
    train = data.split("train")
    calls, real = [], losses.hash_centres

    def spy(codes, *args, **kw):
        calls.append((objective._epoch[id(train)], np.array(codes)))
        return real(codes, *args, **kw)

    monkeypatch.setattr(losses, "hash_centres", spy)
    seen = {}
    for name, net in stages:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        calls.clear()
        trainer.stage(name, net, {"w": opt}, epochs, phase=name,
                      score=lambda: {trainer.select: 0.0})
        seen[name] = list(calls)
    return seen


def test_p2set_warms_up_for_warmup_epochs_of_a_real_stage(tmp_path, monkeypatch):
    """The trainer counts epochs from 1: a warm-up of W epochs clusters first in epoch W + 1,
    then once per epoch; the finetune of the searched network does not warm up again, a
    network trained from scratch (a preset: no search before it) does."""
    for warmup in (1, 2):
        seen = _stages(tmp_path / str(warmup), monkeypatch, AutoSSVH(seed=0, warmup_epochs=warmup),
                       [("search", _network("exp10", samplers="random")),
                        ("finetune", _network("exp10", samplers="random"))])
        assert [e for e, _ in seen["search"]] == list(range(warmup + 1, 4)), warmup
        assert [e for e, _ in seen["finetune"]] == [1, 2, 3], warmup
    preset = _stages(tmp_path / "preset", monkeypatch, AutoSSVH(seed=0, warmup_epochs=1),
                     [("finetune", _network("exp10", samplers="random"))])
    assert [e for e, _ in preset["finetune"]] == [2, 3]


def test_p2set_centres_come_from_the_network_of_the_stage(tmp_path, monkeypatch):
    """Two stages of the same epoch numbers (random-search candidates): the second clusters
    its own network's codes, not the centres the first computed from another network."""
    objective = AutoSSVH(seed=0, warmup_epochs=0)
    nets = [_network("exp10", samplers="random") for _ in range(2)]
    torch.manual_seed(5)
    for p in nets[1].parameters():           # a different network from the first
        p.data.add_(torch.randn_like(p) * 0.5)
    train = _unlabelled().split("train")
    initial = [encode_split(net, train, CPU, relaxed=True) for net in nets]
    seen = _stages(tmp_path, monkeypatch, objective,
                   [("search/candidate-0", nets[0]), ("search/candidate-1", nets[1])], epochs=1)
    for (name, calls), codes in zip(seen.items(), initial):
        assert [e for e, _ in calls] == [1], name
        np.testing.assert_allclose(calls[0][1], codes, atol=1e-6)   # before the first step


def test_p2set_centres_are_voted_by_the_current_network():
    net = _network(preset="exp3", samplers="random")
    data = _unlabelled()
    train = data.split("train")
    objective = AutoSSVH(seed=0, warmup_epochs=1)
    batch = np.arange(16)
    objective.batches(train, 1, 16)
    _step(net, objective, data, batch, seed=1)
    assert objective._centres == {}                        # warm-up: no clustering at all

    objective.batches(train, 2, 16)
    with_p2set, _ = _step(net, objective, data, batch, seed=1)
    epoch, centres = objective._centres[id(train)]
    assert epoch == 2
    with torch.no_grad():
        codes = net.eval()(torch.from_numpy(train.take(np.arange(len(train)))[0])).numpy()
    net.train()
    reference = hash_centres(codes, (8,), seed=2)          # 40 videos: granularities capped at N/5
    assert torch.equal(centres.assignments, reference.assignments)
    assert all(torch.equal(a, b) for a, b in zip(centres.centres, reference.centres))

    objective.beta = 0.0
    without, _ = _step(net, objective, data, batch, seed=1)
    assert with_p2set > without                             # + β · (a cross-entropy > 0)
    objective.beta = 0.2
    objective.batches(train, 3, 16)
    _step(net, objective, data, batch, seed=1)
    assert objective._centres[id(train)][0] == 3            # recomputed every epoch


def test_second_view_goes_through_the_teacher_when_there_is_one():
    """The teacher is trained by AutoSSVH's losses (so its cells matter to a search), and a
    student-only architecture trains the student alone."""
    data = _unlabelled()
    objective = AutoSSVH(seed=0)
    batch = np.arange(12)
    _, grads = _step(_network("exp3"), objective, data, batch, seed=0)
    assert any(n.startswith("cells.teacher__encoder") and g.abs().sum() > 0 for n, g in grads.items())
    net = _network("exp10")
    _, grads = _step(net, objective, data, batch, seed=0)
    assert not any(n.startswith("cells.teacher") for n in grads)
    assert any(n.startswith("cells.student__encoder") for n in grads)


def test_mixed_sampler_cells_alpha_ascends_the_loss(monkeypatch):
    """In a mixed supernet the sampler cell's α gets exactly the negative of the gradient it
    would get as an ordinary cell (it plays the sampler's side of the min-max), and every
    other α the same gradient as before."""
    from avsearch.ops.frame_sampler import DropMask

    space = avsearch.get_space("tam", samplers="random,adversarial,gumbel",
                               **{**SMALL, "dropout": 0.0})
    net = compile_space(space, "mixed").train()
    data = _unlabelled()

    def alpha_grads():
        net.zero_grad()
        torch.manual_seed(4)
        loss = AutoSSVH(seed=0).loss(feature_encoder(net, data.split("train"), CPU), np.arange(8))
        loss.backward()
        return {c: a.grad.clone() for c, a in net.alpha.items() if a.grad is not None}

    reversed_ = alpha_grads()
    monkeypatch.setattr(DropMask, "adversarial_weight", False)
    plain = alpha_grads()
    assert plain["sampler"].abs().sum() > 0
    torch.testing.assert_close(reversed_["sampler"], -plain["sampler"])
    others = set(plain) - {"sampler"}
    assert others and all(torch.equal(reversed_[c], plain[c]) for c in others)


def test_the_objective_adds_the_sampler_cell_unless_the_user_sets_it():
    from avsearch.run import prepare_space

    data = _unlabelled()
    space = prepare_space("vhmt", {}, data, None, get_objective("autossvh"))
    assert space.candidates("sampler") == ("random", "adversarial")
    assert space.count() == 2 * prepare_space("vhmt", {}, data, None).count()
    assert "sampler" not in prepare_space("vhmt", {"samplers": "none"}, data, None,
                                          get_objective("autossvh")).cells
    assert "sampler" not in prepare_space("vhmt", {}, data, None, get_objective("vhmt")).cells
    pinned = prepare_space("tam", {"samplers": "random"}, data, None, get_objective("autossvh"))
    assert pinned.candidates("sampler") == ("random",)


def test_eval_mode_sees_every_frame():
    """The sampler is training-only: codes in eval mode equal those of the same weights
    without a sampler cell."""
    with_sampler = _network().eval()
    without = _network(samplers="none").eval()
    without.load_state_dict({k: v for k, v in with_sampler.state_dict().items()
                             if not k.startswith("cells.sampler")})
    x = torch.randn(3, 8, 12)
    torch.testing.assert_close(with_sampler(x), without(x))
    assert not with_sampler.node_outputs(x, names=["sampler"])["sampler"].any()


def test_autossvh_refuses_spaces_it_cannot_train(tmp_path):
    from avsearch.cli import main

    out = tmp_path / "run"
    assert main(["run", "--space", "av_nas", "--objective", "autossvh", "--data",
                 "autossvh-frames", "--budget", "smoke", "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_tam_spos_autossvh_on_an_ssvh_folder_end_to_end(tmp_path):
    """`avsearch run --space tam --strategy spos --objective autossvh --data <SSVH folder>`:
    searches the TAM variant and the sampler, finetunes, evaluates (GmAP), exports, draws."""
    from avsearch.cli import main
    from avsearch.export import export_arch, load_program

    data = tmp_path / "ssvh"
    write_ssvh_folder(data)
    out = tmp_path / "run"
    sets = [x for kv in ("d=8", "d_dec=8", "bits=8", "heads=2", "d_state=4") for x in ("--set", kv)]
    assert main(["run", "--space", "tam", "--strategy", "spos", "--objective", "autossvh",
                 "--data", str(data), "--budget", "smoke", "--out", str(out), "--quiet",
                 *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = reference_test_metrics(out / "best.arch", load_dataset(data))
    assert metrics["test"]["gmap"] == pytest.approx(expected["gmap"], abs=1e-9)
    arch = Architecture.load(out / "best.arch")
    assert arch.choices["sampler"] in ("random", "adversarial")
    program = load_program(export_arch(arch, tmp_path / "best.pt2"))
    x = torch.randn(3, 6, 12)
    torch.testing.assert_close(program(x), arch.network().eval()(x))
    assert "sampler" in (out / "best.svg").read_text()


def test_without_a_sampler_cell_views_drop_random_frames(monkeypatch):
    """A space without the cell (``samplers=none``) still gets two views, each dropping the
    space's share of frames at random."""
    net = _network(samplers="none", drop_ratio=0.5)
    data = _unlabelled()
    seen = []
    evaluate = type(net).node_outputs

    def spy(self, *features, names=None, given=None):
        if given:
            seen.append((given["visual"] == 0).all(-1).sum(1))
        return evaluate(self, *features, names=names, given=given)

    monkeypatch.setattr(type(net), "node_outputs", spy)
    loss, grads = _step(net, AutoSSVH(seed=0), data, np.arange(6), seed=0)
    assert torch.isfinite(loss) and len(seen) == 2
    assert all(torch.equal(s, torch.full((6,), 4)) for s in seen)     # round(0.5 · 8) frames


def test_a_killed_autossvh_run_resumes_to_the_same_weights(tmp_path):
    """Sampler draws and the per-epoch hash centres (P2Set from epoch 2 on) restart exactly."""
    from avsearch.run import RunSettings, run

    sets = {k: str(v) for k, v in SMALL.items() if k != "modalities"}
    settings = RunSettings(space="vhmt", strategy="random", data="autossvh-frames",
                           objective="autossvh", budget="smoke", epochs=2, space_options=sets,
                           baselines=False)
    with checkpoint_saves() as saves:
        run(settings, out=tmp_path / "whole", progress=False)
    with pytest.raises(Killed), checkpoint_saves(kill_before=len(saves) // 2 + 1):
        run(settings, out=tmp_path / "killed", progress=False)
    run(settings, out=tmp_path / "killed", resume=True, progress=False)
    whole, killed = (Architecture.load(tmp_path / d / "best.arch") for d in ("whole", "killed"))
    assert (killed.choices, killed.weights_sha256) == (whole.choices, whole.weights_sha256)


def test_objective_options_from_the_command_line_reach_the_objective():
    objective = get_objective("autossvh", seed=3, beta="0.01", warmup_epochs="100",
                              granularities="250, 500,1000")
    assert (objective.seed, objective.beta, objective.warmup_epochs, objective.granularities) == \
        (3, 0.01, 100, (250, 500, 1000))
