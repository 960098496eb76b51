"""The sptch space (paper 003): two towers whose codes depend on their own item alone, padding
masked out, and the semantic hashing network's graph a training-time input only."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace
from avsearch.spaces import get_space
from avsearch.supernet import compile_space

SMALL = {"d": 8, "bits": 8, "heads": 2, "d_state": 4, "depths": "1,2", "gcn_depths": "1",
         "modalities": {"visual": 6, "text": 11}, "dropout": 0.0}


@pytest.fixture(scope="module")
def space():
    return get_space("sptch", **SMALL)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(4, 5, 6, generator=g)
    text = torch.randint(1, 11, (4, 7), generator=g)
    text[1, 4:] = 0
    return video, text


@pytest.mark.parametrize("block", ["Transformer_2", "Mamba_2"])
def test_a_code_depends_on_its_own_item_alone(space, block):
    choices = {**space.sample(0), "visual.encoder": block, "text.encoder": block}
    net = compile_space(space, "fixed", choices).eval()
    video, text = _batch()
    other_video, other_text = _batch(1)
    with torch.no_grad():
        both = net.node_outputs(video, text, names=["visual.codes", "text.codes"])
        # alone, or beside other items, the same code; the caption's never reads the video
        assert torch.allclose(net.tower("visual", video[2:3]), both["visual.codes"][2:3], atol=1e-6)
        assert torch.allclose(net.tower("text", text[1:2]), both["text.codes"][1:2], atol=1e-6)
        swapped = net.node_outputs(other_video, text, names=["text.codes"])["text.codes"]
        assert torch.equal(swapped, both["text.codes"])
        mixed = torch.cat([other_text[:2], text[2:]])
        assert torch.allclose(net.tower("text", mixed)[2:], both["text.codes"][2:], atol=1e-6)


@pytest.mark.parametrize("block", ["Transformer_2", "Mamba_2"])
def test_padding_is_masked_out(space, block):
    """A caption padded to any length has the code of the caption without padding, and a
    video with a dropped (zeroed) frame the code of the video without it (attention)."""
    net = compile_space(space, "fixed", {**space.sample(0), "text.encoder": block,
                                          "visual.encoder": block}).eval()
    ids = torch.tensor([[3, 5, 7, 2]])
    padded = torch.tensor([[3, 5, 7, 2, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(net.tower("text", ids), net.tower("text", padded), atol=1e-6)
        assert not torch.allclose(net.tower("text", ids), net.tower("text", ids[:, :3]), atol=1e-4)


def _block_calls(net):
    """Per tower family, the (items, positions) of every block call, recorded by hooks."""
    calls = []
    for name, module in net.named_modules():
        kind = type(module).__name__
        if kind in ("TransformerBlock", "MambaBlock"):
            module.register_forward_hook(lambda m, args, out, name=name, kind=kind: calls.append(
                ((name.split(".")[1], kind), tuple(args[0].shape[:2]))))
    return calls


def _depth_reference(encoder, x, raw):
    """A SequenceEncoder's output computed by hand: positions, its blocks in turn over the
    whole padded batch (padding masked), LayerNorm, mean over the real positions."""
    from avsearch.ops.sptch import real_positions

    mask = real_positions(raw)
    keep = mask.unsqueeze(-1).float()
    h = encoder.pos(x)
    for block in encoder.blocks:
        h = block(h, mask) if encoder.attention else block(h * keep)
    return (encoder.norm(h) * keep).sum(1) / keep.sum(1)


def test_depths_of_a_mixed_cell_share_one_run_of_their_stack():
    """In the mixed supernet Transformer_1/2/4 (and Mamba's) read one run of their shared
    stack: 4 block calls per family and length group, not 1 + 2 + 4, and each depth's output
    is the one computed by hand from its own blocks."""
    space = get_space("sptch", **{**SMALL, "depths": "1,2,4"})
    net = compile_space(space, "mixed").eval()
    calls = _block_calls(net)
    video, text = _batch()
    with torch.no_grad():
        net.node_outputs(video, text, names=["visual.codes", "text.codes"])
        cells = {m: net.cells[f"{m}__encoder"] for m in ("visual", "text")}
        embedded = net.node_outputs(video, text, names=["visual.embed", "text.embed"])
    from avsearch.ops.sptch import length_groups, real_positions

    per_family = {}
    for key, shape in calls:
        per_family.setdefault(key, []).append(shape)
    assert len(per_family) == 4                    # two towers, two families
    groups = {"visual": len(length_groups(real_positions(video))),
              "text": len(length_groups(real_positions(text)))}
    assert groups == {"visual": 1, "text": 4}      # caption lengths 7, 4, 7, 7: cut 4 and 7
    for (cell, family), shapes in per_family.items():
        assert len(shapes) == 4 * groups[cell.split("__")[0]], (cell, family, shapes)
    with torch.no_grad():
        for tower, raw in (("visual", video), ("text", text)):
            for name, op in cells[tower].ops.items():
                x = embedded[f"{tower}.embed"]
                assert torch.allclose(op(x, raw), _depth_reference(op, x, raw), atol=1e-5), name


def test_a_batch_runs_in_length_groups_without_trailing_padding():
    """Captions of lengths 1..16 padded to 20: the text tower runs four groups cut to their
    longest caption (4, 8, 12, 16 positions), and every code is the one of its caption
    encoded alone without padding; a video (all frames real) runs whole."""
    from avsearch.ops.sptch import length_groups

    space = get_space("sptch", **SMALL)
    net = compile_space(space, "fixed", {**space.sample(0), "text.encoder": "Transformer_2",
                                          "visual.encoder": "Transformer_2"}).eval()
    g = torch.Generator().manual_seed(3)
    text = torch.randint(1, 11, (16, 20), generator=g)
    for i in range(16):
        text[i, i + 1:] = 0
    text = text[torch.randperm(16, generator=g)]
    lengths = (text != 0).sum(1)
    calls = _block_calls(net)
    with torch.no_grad():
        batch = net.tower("text", text)
        assert sorted(shape for _, shape in calls) == [(4, 4), (4, 4), (4, 8), (4, 8),
                                                       (4, 12), (4, 12), (4, 16), (4, 16)]
        alone = torch.cat([net.tower("text", t[None, :n]) for t, n in zip(text, lengths)])
        assert torch.allclose(batch, alone, atol=1e-5)
        video, _ = _batch()
        calls.clear()
        net.tower("visual", video)
    assert [shape for _, shape in calls] == [(4, 5), (4, 5)]
    assert length_groups(torch.ones(3, 5, dtype=torch.bool)) == [(None, 5)]


def test_graph_is_a_training_input_only(space):
    net = compile_space(space, "fixed", space.sample(0)).eval()
    video, text = _batch()
    with torch.no_grad():
        net(video, text)   # the codes need no graph
        with pytest.raises(ValueError, match="given with each training pass"):
            net.node_outputs(video, text)
        given = {"sh.graph": torch.eye(4), "sh.visual": video.mean(1, keepdim=True),
                 "sh.text": torch.rand(4, 1, 11)}
        out = net.node_outputs(video, text, given=given)
    assert out["sh.visual.recon"].shape == (4, 1, 6) and out["sh.text.recon"].shape == (4, 1, 11)


def test_towers_are_checked():
    s = SearchSpace("t", {"d": 4})
    v, t = s.input("v", 4), s.input("t", 4)
    both = s.fixed("t.codes", "MeanPool", [s.choice("mix", "D", ["Add"], [v, t])], 4)
    codes = s.fixed("v.codes", "MeanPool", [v], 4)
    with pytest.raises(SpaceError, match="must depend on input 't' alone"):
        s.output(codes, towers={"v": codes, "t": both})
    s2 = SearchSpace("t2", {"d": 4})
    g = s2.given("g", 4)
    with pytest.raises(SpaceError, match="given node"):
        s2.output(s2.fixed("codes", "MeanPool", [g], 4))


def test_presets(space):
    full = get_space("sptch")
    assert full.count() == 6 * 6 * 3 * 3 * 3
    assert full.presets["paper"]["visual.encoder"] == "Transformer_4"
    two = compile_space(full, "fixed", full.presets["two_tower"])
    assert not any(k.startswith("cells.sh__joint") for k in two.state_dict())   # no graphs
    assert two.absent("sh.visual.gcn") and two.absent("sh.joint.proj")


# ----------------------------------------------------------------------------- the objective, run
RUN = ["run", "--space", "sptch", "--objective", "sptch", "--strategy", "csp", "--budget", "smoke",
       "--quiet", "--bits", "8", "--set", "d=8", "--set", "heads=2", "--set", "d_state=4",
       "--set", "depths=1,2",
       "--set", "gcn_depths=1", "--strategy-set", "halving=0"]
SLICE = {"train": 96, "val": 32, "test": 48}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small video-text folder cut from avclips: HDF5 frames and captions with labels."""
    return write_clips(tmp_path_factory.mktemp("sptch") / "clips")


def write_clips(root):
    """The first :data:`SLICE` items of each avclips split as an SSVH folder at ``root``."""
    import h5py

    from avsearch.data import load_dataset

    clips = load_dataset("avclips")
    root.mkdir()
    for role, n in SLICE.items():
        split = clips.split(role)
        with h5py.File(root / f"{role}_feats.h5", "w") as f:
            f.create_dataset("feats", data=split.features["visual"][:n])
        rows = [{"id": f"{role}-{i}", "text": clips.info["captions"][role][i],
                 "labels": np.flatnonzero(split.labels[i]).tolist()} for i in range(n)]
        (root / f"{role}_captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_graph_is_eqs_1_and_2_of_the_training_features(folder):
    """The objective's graph against NumPy: pooled standardised frames, TF-IDF captions with
    the training split's document frequencies, θ1-mix of cosines, the smallest θ2 share of
    each row set to -1, tanh."""
    from avsearch.data import load_dataset
    from avsearch.objectives import get_objective

    data = load_dataset(str(folder))
    train = data.split("train")
    objective = get_objective("sptch", theta1=0.6, theta2=0.25)
    next(iter(objective.batches(train, 1, 8)))
    got = objective._graphs[id(train)][0].numpy()

    video, ids = train.take(np.arange(len(train)))
    xv = video.mean(1)
    xv = (xv - xv.mean(0)) / xv.std(0, ddof=1)
    counts = np.zeros((len(ids), train.features["text"].width))
    for i, row in enumerate(ids):
        for token in row[row != 0]:
            counts[i, token] += 1
    df = (counts > 0).sum(0)
    xt = counts * (np.log((1 + len(ids)) / (1 + df)) + 1)
    xt /= np.linalg.norm(xt, axis=1, keepdims=True)

    def cos(a):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return a @ a.T

    s = 0.6 * cos(xv) + 0.4 * cos(xt)
    k = int(0.25 * len(s))
    for row in s:
        row[np.argsort(row, kind="stable")[:k]] = -1
    np.testing.assert_allclose(got, np.tanh(s), atol=1e-5)


def test_objective_trains_both_phases_on_their_own_parameters(folder):
    """L_c reaches the semantic hashing network only, L_f the towers only (B detached): the
    gradient of the whole loss on the towers is that of L_f alone (α1 = α2 = 0 and no
    reconstruction cannot change it), and the towers' gradient is nonzero."""
    from avsearch.data import load_dataset
    from avsearch.inference import feature_encoder
    from avsearch.objectives import get_objective
    from avsearch.run import prepare_space

    data = load_dataset(str(folder))
    space = prepare_space("sptch", {"d": 8, "heads": 2, "depths": (1,), "gcn_depths": (1,),
                                    "dropout": 0.0}, data, 8)
    net = compile_space(space, "fixed", space.sample(1))
    train = data.split("train")
    grads = []
    for alpha in (0.2, 0.0):
        objective = get_objective("sptch", alpha1=alpha, alpha2=alpha)
        batch = next(iter(objective.batches(train, 1, 16)))
        net.zero_grad()
        torch.manual_seed(3)
        objective.loss(feature_encoder(net, train, torch.device("cpu")), batch).backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()
                      if p.grad is not None})
    towers = [k for k in grads[0] if k.startswith(("cells.visual__", "cells.text__", "layers.text__",
                                                    "layers.visual__"))]
    assert towers and all(grads[0][k].abs().sum() > 0 for k in towers if "encoder" in k)
    for k in towers:
        torch.testing.assert_close(grads[0][k], grads[1][k])
    sh = [k for k in grads[0] if "sh__" in k]
    assert sh and any(not torch.equal(grads[0][k], grads[1][k]) for k in sh)


def test_labels_are_never_read_in_training(folder, tmp_path):
    """A copy whose captions carry garbage labels trains the same weights (selection by the
    objective's own loss); the test metrics then differ."""
    from avsearch.arch import Architecture
    from avsearch.cli import main

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for path in folder.iterdir():
        text = path.read_bytes()
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.decode().splitlines()]
            for i, r in enumerate(rows):
                r["labels"] = [(i * 7) % 10]
            text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        (garbage / path.name).write_bytes(text)
    shas = []
    for data, out in ((folder, tmp_path / "a"), (garbage, tmp_path / "b")):
        assert main([*RUN, "--data", str(data), "--out", str(out),
                     "--objective-set", "select=loss"]) == 0
        shas.append(Architecture.load(out / "best.arch").weights_sha256)
    assert shas[0] == shas[1]
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text())["test"] for n in "ab"]
    assert metrics[0] != metrics[1]


def test_run_writes_artifacts_and_resumes_after_kill(folder, tmp_path):
    from avsearch.arch import Architecture
    from avsearch.cli import main
    from avsearch.testing.helpers import Killed, checkpoint_saves

    args = [*RUN, "--data", str(folder), "--epochs", "3"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    for name in ("best.arch", "best.safetensors", "metrics.json", "history.jsonl", "run.json"):
        assert (tmp_path / "straight" / name).exists(), name
    out = tmp_path / "killed"
    with pytest.raises(Killed), checkpoint_saves(kill_before=3):
        main([*args, "--out", str(out)])
    assert not (out / "best.arch").exists()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    a, b = (Architecture.load(p / "best.arch") for p in (tmp_path / "straight", out))
    assert a.space == "sptch" and a.choices == b.choices
    assert a.weights_sha256 == b.weights_sha256


def test_quick_budget_runs_the_spaces_cheaper_halving_and_resumes_inside_it(folder, tmp_path):
    """At the quick budget an sptch csp run's halving stage takes the space's own budget:
    4 candidates, then 2, each round 24 steps (the budget's 48 elsewhere), as history.jsonl
    and best.arch record; a run killed inside the halving stage resumes to the same weights."""
    from avsearch.arch import Architecture
    from avsearch.cli import main
    from avsearch.testing.helpers import Killed, checkpoint_saves

    args = [*(a for a in RUN if a not in ("--budget", "smoke", "--strategy-set", "halving=0")),
            "--budget", "quick", "--epochs", "1", "--data", str(folder), "--no-baselines"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "straight" / "history.jsonl").open()]
    rounds = [r["stage"].split("/")[1] for r in rows if r["stage"].startswith("halving/")]
    assert rounds == ["0"] * 4 + ["1"] * 2
    batch = rows[0]["anchors"] // 32                              # the search's 32 steps
    assert {r["anchors"] for r in rows if r["stage"].startswith("halving/")} == {24 * batch}
    assert {r["anchors"] for r in rows if r["stage"] == "finetune"} == {48 * batch}
    arch = Architecture.load(tmp_path / "straight" / "best.arch")
    assert arch.provenance["budget"]["halving"] == 4
    assert arch.provenance["budget"]["halving_steps"] == 24
    out = tmp_path / "killed"
    with pytest.raises(Killed), checkpoint_saves(kill_before=4):   # inside halving round 0
        main([*args, "--out", str(out)])
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert Architecture.load(out / "best.arch").weights_sha256 == arch.weights_sha256


# ----------------------------------------------------------------------------- cross-modal eval
@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    from avsearch.cli import main

    out = tmp_path_factory.mktemp("sptch-run") / "run"
    assert main([*RUN, "--data", str(folder), "--epochs", "1", "--out", str(out)]) == 0
    return out


def _tower_codes(arch_path, split, modality):
    """A tower's ±1 codes of every item, from the network itself, one item at a time."""
    from avsearch.arch import Architecture

    net = Architecture.load(arch_path).network().eval()
    i = net.space.modalities.index(modality)
    with torch.no_grad():
        rows = [net.tower(modality, torch.from_numpy(split.take([n])[i])) for n in range(len(split))]
    return np.where(torch.cat(rows).numpy() >= 0, 1, -1).astype(np.int8)


def test_eval_reports_both_directions_against_a_reference(folder, trained, capsys):
    """video→text and text→video mAP@K (normalised by K) and mAP over the whole database,
    against the reference ranking of avsearch.testing (ties by database index), from codes
    computed here item by item; the run's metrics.json holds the same test numbers."""
    from avsearch.cli import main
    from avsearch.data import load_dataset
    from avsearch.testing.helpers import REFERENCE_KS, reference_map

    assert main(["eval", str(trained / "best.arch"), "--data", str(folder), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    data = load_dataset(str(folder))
    test, db = data.split("test"), data.database("test")
    codes = {(s, m): _tower_codes(trained / "best.arch", part, m)
             for s, part in (("q", test), ("db", db)) for m in ("visual", "text")}
    assert set(got["directions"]) == {"visual->text", "text->visual"}
    for q, d in (("visual", "text"), ("text", "visual")):
        numbers = got["directions"][f"{q}->{d}"]
        args = (codes["q", q], test.labels, codes["db", d], db.labels)
        for k in REFERENCE_KS:
            assert numbers[f"map@{k}"] == pytest.approx(reference_map(*args, k), abs=1e-9), (q, k)
        whole = reference_map(*args, len(db), normalisation="retrieved")
        assert numbers["map@all"] == pytest.approx(whole, abs=1e-9)
        assert len(numbers["pr_curve"]["precision"]) == 9    # radius 0..8 bits
    mean = (got["directions"]["visual->text"]["map@100"] + got["directions"]["text->visual"]["map@100"]) / 2
    assert got["map@100"] == pytest.approx(mean)
    summary = json.loads((trained / "metrics.json").read_text())
    assert set(summary["baselines"]) == {"CCA-LSH", "CCA-ITQ"}
    assert set(summary["baselines"]["CCA-ITQ"]["test"]["directions"]) == set(got["directions"])
    recorded = summary["test"]["directions"]
    for direction, numbers in recorded.items():
        assert numbers["map@all"] == pytest.approx(got["directions"][direction]["map@all"])


def test_encode_writes_each_towers_codes(folder, trained, tmp_path):
    from avsearch.cli import main
    from avsearch.data import load_dataset

    test = load_dataset(str(folder)).split("test")
    assert main(["encode", str(trained / "best.arch"), "--data", str(folder), "-o",
                 str(tmp_path / "all.npz")]) == 0
    both = np.load(tmp_path / "all.npz")
    for m in ("visual", "text"):
        np.testing.assert_array_equal(both[f"codes_{m}"], _tower_codes(trained / "best.arch", test, m))
    assert main(["encode", str(trained / "best.arch"), "--data", str(folder), "--modality", "text",
                 "-o", str(tmp_path / "text.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "text.npz")["codes"], both["codes_text"])
    assert main(["encode", str(trained / "best.arch"), "--data", str(folder), "--modality", "audio",
                 "-o", str(tmp_path / "no.npz")]) == 2
    assert not (tmp_path / "no.npz").exists()


def test_export_writes_one_program_per_tower(folder, trained, tmp_path):
    """The text program takes token ids alone (no video) and gives the text tower's codes, at
    a caption length other than the one it was traced at."""
    from avsearch.cli import main
    from avsearch.data import load_dataset
    from avsearch.export import load_program

    assert main(["export", str(trained / "best.arch"), "-o", str(tmp_path / "m.pt2")]) == 0
    test = load_dataset(str(folder)).split("test")
    video, ids = test.take(np.arange(len(test)))
    text = load_program(tmp_path / "m.text.pt2")
    visual = load_program(tmp_path / "m.visual.pt2")
    last = int((ids != 0).sum(1).max())                       # cut the common padding
    with torch.no_grad():
        t = np.where(text(torch.from_numpy(ids[:, :last])).numpy() >= 0, 1, -1)
        v = np.where(visual(torch.from_numpy(video)).numpy() >= 0, 1, -1)
    np.testing.assert_array_equal(t, _tower_codes(trained / "best.arch", test, "text"))
    np.testing.assert_array_equal(v, _tower_codes(trained / "best.arch", test, "visual"))


# ----------------------------------------------------------------------------- baselines
def test_cca_against_scikit_learn_and_its_properties():
    """Canonical correlations against scikit-learn's CCA (NIPALS) on two noisy views of a
    shared 3-d signal; the projections are white within a modality and correlated only pairwise
    across; CCA-ITQ gives an item's two views nearly the same code."""
    from avsearch.baselines import CCAHash

    CCA = pytest.importorskip("sklearn.cross_decomposition").CCA   # not a dependency

    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 3)) * [3.0, 2.0, 1.0]
    xv = z @ rng.normal(size=(3, 7)) + 0.5 * rng.normal(size=(600, 7))
    xt = z @ rng.normal(size=(3, 5)) + 0.5 * rng.normal(size=(600, 5))
    model = CCAHash("itq", reg=0.0).fit(xv, xt, 3, seed=0)
    a, b = CCA(n_components=3, max_iter=5000, tol=1e-10).fit(xv, xt).transform(xv, xt)
    sk = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(model.correlations_, sk, atol=1e-3)
    pv = (xv - xv.mean(0)) @ model.directions_[0]
    pt = (xt - xt.mean(0)) @ model.directions_[1]
    np.testing.assert_allclose(pv.T @ pv / 599, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(pv.T @ pt / 599, np.diag(model.correlations_), atol=1e-8)
    cv, ct = model.encode(xv, 0), model.encode(xt, 1)
    assert (cv == ct).mean() > 0.8 > (cv == ct[::-1]).mean()


def test_a_run_on_several_processes_is_refused_before_writing(folder, tmp_path, monkeypatch):
    from avsearch.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main([*RUN, "--data", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
