"""LAGNH (paper 004): the ``lagnh`` space's ops against direct computations, its objective's
terms against hand-computed cases, and real ``avsearch run --space lagnh --objective lagnh``
runs on an SSVH image folder with tags: artifacts, batch-independent codes from ``avsearch
encode``, resume after a kill, labels never read, and bad input."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from avsearch.arch import Architecture
from avsearch.cli import main
from avsearch.losses.lagnh import (discriminator_loss, generator_loss, multilabel_loss,
                                   quantization_loss, reconstruction_loss)
from avsearch.ops.lagnh import AuxAttention, GCN, lagnh_graph
from avsearch.spaces import get_space
from avsearch.supernet import compile_space
from avsearch.testing.helpers import Killed, checkpoint_saves
from test_images import write_image_folder

SMALL = ["--set", "d=16", "--set", "hiddens=8,16", "--set", "anchors=16", "--bits", "16"]
RUN = ["run", "--space", "lagnh", "--objective", "lagnh", "--budget", "smoke", "--quiet",
       "--no-baselines", *SMALL]


# ---------------------------------------------------------------- loss terms, by hand
def test_quantization_term_by_hand():
    z = torch.tensor([[0.5, -2.0], [0.0, 1.0]])
    # B = [[1, -1], [1, 1]] (sign(0) = +1): squared gaps .25, 1, 1, 0
    assert quantization_loss(z).item() == pytest.approx(2.25 / 4)


def test_reconstruction_term_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # [cos]_+ = [[1, r, 0], [r, 1, 0], [0, 0, 1]], r = 1/√2; YYᵀ = [[1, 1, 0], [1, 2, 1], [0, 1, 1]]
    r = 1 / math.sqrt(2)
    assert reconstruction_loss(z, y).item() == pytest.approx((2 * (1 - r) ** 2 + 3) / 9)
    # k scales the target: 2·YYᵀ − [cos]_+ = [[1, 2 − r, 0], [2 − r, 3, 2], [0, 2, 1]]
    expected = (1 + 2 * (2 - r) ** 2 + 9 + 2 * 4 + 1) / 9
    assert reconstruction_loss(z, y, k=2.0).item() == pytest.approx(expected)


def test_multilabel_term_by_hand():
    logits, y = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    # −log σ(0) = log 2; −log(1 − σ(2)) = log(1 + e²)
    assert multilabel_loss(logits, y).item() == pytest.approx((math.log(2) + math.log1p(math.e ** 2)) / 2)
    # a score above 1 counts as 1
    assert multilabel_loss(logits, torch.tensor([[3.0, 0.0]])).item() == pytest.approx(
        multilabel_loss(logits, y).item())


def test_adversarial_terms_by_hand():
    # D(z) = σ(logit): σ(0) = 1/2, σ(log 3) = 3/4
    fake = torch.tensor([0.0, math.log(3)])
    assert generator_loss(fake).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    assert discriminator_loss(torch.tensor([0.0]), torch.tensor([math.log(3)])).item() == \
        pytest.approx(math.log(2) + math.log(4))


# ---------------------------------------------------------------- ops, against loops
def _graph_by_loop(x, y, m):
    """S over the anchors (the last m rows), each batch row a leaf with its own node."""
    n = len(x)
    b = n - m
    anchors = range(b, n)
    d2 = [[float(((x[i] - x[j]) ** 2).sum()) for j in anchors] for i in anchors]
    scale = float(np.mean(d2))

    def s(i, j):
        return math.exp(-float(((x[i] - x[j]) ** 2).sum()) / scale) + float(y[i] @ y[j])

    def neighbours(i):
        return list(anchors) + ([i] if i < b else [])

    deg = [sum(s(i, j) for j in neighbours(i)) for i in range(n)]
    adj = np.array([[s(i, j) / math.sqrt(deg[i] * deg[j]) for j in anchors] for i in range(n)])
    own = np.array([s(i, i) / deg[i] if i < b else 0.0 for i in range(n)])
    return adj, own


def test_graph_matches_a_loop_and_fuses_mu_as_eq5():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), (rng.random((6, 3)) < 0.5) * 1.0
    adj, own = lagnh_graph(torch.tensor(x), torch.tensor(y), anchors=4)
    want_adj, want_own = _graph_by_loop(x, y, 4)
    np.testing.assert_allclose(adj.numpy(), want_adj, rtol=1e-10)
    np.testing.assert_allclose(own.numpy(), want_own, rtol=1e-10)
    # μ·S^v + S^a normalised (Eq. 5, μ = 10, built directly) = the graph of y/√μ
    mu, b, m = 10.0, 2, 4
    scale = np.mean([((x[i] - x[j]) ** 2).sum() for i in range(b, 6) for j in range(b, 6)])
    sv = np.exp(-((x[:, None] - x[None, b:]) ** 2).sum(-1) / scale)
    s = mu * sv + y @ y[b:].T
    self_s = np.array([mu + y[i] @ y[i] if i < b else 0.0 for i in range(6)])
    deg = s.sum(1) + self_s
    direct = s / np.sqrt(deg[:, None] * deg[None, b:])
    adj_mu, own_mu = lagnh_graph(torch.tensor(x), torch.tensor(y / math.sqrt(mu)), anchors=m)
    np.testing.assert_allclose(adj_mu.numpy(), direct, rtol=1e-10)
    np.testing.assert_allclose(own_mu.numpy(), self_s / deg, rtol=1e-10)


def test_gcn_anchor_rows_are_the_dense_gcn_of_the_anchor_graph():
    torch.manual_seed(0)
    x, y = torch.randn(7, 1, 5, dtype=torch.float64), torch.rand(7, 1, 3, dtype=torch.float64)
    gcn = GCN(5, depth=2, hidden=6, anchors=4).double()
    out = gcn(x, y)[:, 0]
    xa, ya = x[3:, 0].numpy(), y[3:, 0].numpy()
    d2 = ((xa[:, None] - xa[None]) ** 2).sum(-1)
    s = np.exp(-d2 / d2.mean()) + ya @ ya.T
    deg = s.sum(1)
    s_hat = s / np.sqrt(deg[:, None] * deg[None])            # D^-1/2 S D^-1/2 (Kipf & Welling)
    w1, w2 = (layer.weight.detach().numpy().T for layer in gcn.layers)
    dense = s_hat @ np.maximum(s_hat @ xa @ w1, 0) @ w2      # Eqs. 6-7
    np.testing.assert_allclose(out[3:].detach().numpy(), dense, rtol=1e-9, atol=1e-12)


def test_attention_matches_eq2_by_loop():
    torch.manual_seed(1)
    x, y = torch.randn(5, 1, 4, dtype=torch.float64), torch.randn(5, 1, 4, dtype=torch.float64)
    out = AuxAttention(anchors=3)(x, y)[:, 0].numpy()
    xs, ys = x[:, 0].numpy(), y[:, 0].numpy()
    for i in range(5):
        js = [2, 3, 4] + ([i] if i < 2 else [])
        a = [max(0.0, xs[i] @ ys[j] / np.linalg.norm(xs[i]) / np.linalg.norm(ys[j])) for j in js]
        want = sum(w * ys[j] for w, j in zip(a, js)) / sum(a) + xs[i]
        np.testing.assert_allclose(out[i], want, rtol=1e-10)


@pytest.mark.parametrize("mode", ["mixed", "single-path", "fixed"])
def test_an_items_output_does_not_depend_on_its_batch(mode):
    space = get_space("lagnh", d=8, bits=8, modalities="visual:6", aux=3, anchors=5,
                      hiddens="4,1024")
    torch.manual_seed(0)
    net = compile_space(space, mode, space.presets["paper"] if mode == "fixed" else None).eval()
    net.set_anchors([torch.randn(5, 1, 6), torch.rand(5, 1, 3)])
    x, y = torch.randn(7, 1, 6), torch.rand(7, 1, 3)
    with torch.no_grad():
        together = net(x, y)
        alone = torch.cat([net(x[i:i + 1], y[i:i + 1]) for i in range(7)])
        reversed_ = net(x.flip(0), y.flip(0)).flip(0)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(together, reversed_, rtol=0, atol=1e-5)
    # and the anchors matter: another bank, other outputs
    net.set_anchors([torch.randn(5, 1, 6), torch.rand(5, 1, 3)])
    with torch.no_grad():
        assert not torch.allclose(net(x, y), together, atol=1e-3)


def test_space_presets_and_declaration():
    space = get_space("lagnh", modalities="visual:4096", aux=80)
    assert space.count() == 2 * 2 * 3 * 9 * 2
    assert space.presets["paper"] == {"semantics": "Tags", "attention": "AuxAttention",
                                      "fusion": "mu1", "gcn": "GCN_2x1024", "prior": "Prior"}
    assert space.presets["no_aux"]["semantics"] == "NoTags"
    assert space.candidates("fusion") == ("mu0p1", "mu1", "mu10")
    # no_aux: nothing depends on the tags (the semantics cell is absent)
    net = compile_space(space, "fixed", space.presets["no_aux"])
    assert net.absent("semantics") and not net.absent("prior")


# ---------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lagnh")
    write_image_folder(root / "imgs")
    return root


@pytest.fixture(scope="module")
def csp_run(folder):
    out = folder / "csp"
    assert main([*RUN, "--strategy", "csp", "--data", str(folder / "imgs"), "--epochs", "2",
                 "--out", str(out)]) == 0
    return out


def test_csp_run_writes_the_usual_artifacts(csp_run):
    for name in ("best.arch", "best.safetensors", "metrics.json", "history.jsonl", "alpha.png",
                 "checkpoint.pt", "run.json"):
        assert (csp_run / name).exists(), name
    assert (csp_run / "best.svg").exists() or (csp_run / "best.dot").exists()
    arch = Architecture.load(csp_run / "best.arch")
    assert arch.space == "lagnh" and set(arch.choices) == {"semantics", "attention", "fusion",
                                                           "gcn", "prior"}
    history = [json.loads(line) for line in (csp_run / "history.jsonl").open()]
    assert [h["stage"] for h in history if "epoch" in h][:2] == ["search", "search"]
    metrics = json.loads((csp_run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["map@20"] <= 1


def test_encode_gives_an_image_the_same_code_alone_and_in_any_batch(csp_run, folder):
    """``avsearch encode``'s codes against the network run one image at a time and in a
    shuffled batch, its inputs made here from the raw files (features, tags)."""
    import h5py
    import scipy.io

    target = folder / "q.npz"
    assert main(["encode", str(csp_run / "best.arch"), "--split", "test", "-o", str(target)]) == 0
    enc = np.load(target)
    rows = [int(i.split(":")[1]) for i in enc["ids"]]
    with h5py.File(folder / "imgs" / "test_feats.h5") as f:
        x = torch.from_numpy(f["feats"][:][rows])[:, None]
    tags = torch.from_numpy(scipy.io.loadmat(folder / "imgs" / "test_tags.mat")["tags"][rows])
    y = tags.float()[:, None]
    net = Architecture.load(csp_run / "best.arch").network().eval()
    with torch.no_grad():
        alone = torch.cat([net.codes(x[i:i + 1], y[i:i + 1]) for i in range(len(rows))])
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
        shuffled = torch.empty_like(alone)
        shuffled[order] = net.codes(x[order], y[order])
    np.testing.assert_array_equal(enc["codes"], alone.numpy())
    np.testing.assert_array_equal(enc["codes"], shuffled.numpy())


def test_labels_are_never_read_in_training(folder, tmp_path):
    """The same run on a copy whose labels are garbage (every split) trains the same weights
    (selection by the objective's own label-free loss)."""
    garbage = tmp_path / "garbage"
    shutil.copytree(folder / "imgs", garbage)
    rng = np.random.default_rng(5)
    for role in ("train", "test"):
        labels = np.load(garbage / f"{role}_labels.npy")
        np.save(garbage / f"{role}_labels.npy", rng.permutation(labels[:, ::-1]))
    shas = []
    for data, out in ((folder / "imgs", tmp_path / "a"), (garbage, tmp_path / "b")):
        assert main([*RUN, "--strategy", "csp", "--data", str(data), "--out", str(out),
                     "--objective-set", "select=loss"]) == 0
        shas.append(Architecture.load(out / "best.arch").weights_sha256)
    assert shas[0] == shas[1]
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text())["test"] for n in "ab"]
    assert metrics[0] != metrics[1]       # the labels did change what is measured


def test_resume_after_kill_ends_with_the_same_weights(folder, tmp_path):
    """Killed inside the search stage, before its third epoch's checkpoint: the resumed run
    continues the discriminator (checkpointed with the stage) and ends where the straight
    one does; a run that lost the discriminator's state would train other weights."""
    args = [*RUN, "--strategy", "csp", "--data", str(folder / "imgs"), "--epochs", "4",
            "--strategy-set", "halving=0"]
    with checkpoint_saves() as saves:
        assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "killed"
    with pytest.raises(Killed), checkpoint_saves(kill_before=3):
        main([*args, "--out", str(out)])
    assert not (out / "best.arch").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=True)["stages"]["search"]
    assert state["epoch"] == 2 and state["objective"]["discriminator"]
    assert main([*args, "--out", str(out), "--resume"]) == 0
    a = Architecture.load(tmp_path / "straight" / "best.arch")
    b = Architecture.load(out / "best.arch")
    assert len(saves) > 3
    assert a.choices == b.choices and a.weights_sha256 == b.weights_sha256


@pytest.mark.parametrize("strategy", ["darts", "spos", "enas", "proxyless", "random"])
def test_every_strategy_searches_the_space(folder, tmp_path, strategy):
    out = tmp_path / strategy
    assert main([*RUN, "--strategy", strategy, "--data", str(folder / "imgs"), "--epochs", "1",
                 "--out", str(out)]) == 0
    arch = Architecture.load(out / "best.arch")
    assert arch.space == "lagnh"
    assert arch.build_space().validate(arch.choices) == arch.choices


def test_data_without_tags_exits_2_before_writing(folder, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folder / "imgs", bare)
    for path in bare.glob("*_tags.mat"):
        path.unlink()
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", *RUN, "--data", str(bare),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "reads auxiliary semantics" in done.stderr and str(bare) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not out.exists()


def test_draw_shows_the_space(tmp_path):
    target = tmp_path / "space.dot"
    assert main(["draw", "--space", "lagnh", "-o", str(target)]) == 0
    dot = target.read_text()
    for name in ("AuxAttention", "NoTags", "GCN_2x1024", "mu0p1", "NoPrior"):
        assert name in dot, name


@pytest.mark.parametrize("preset", ["paper", "no_aux"])
def test_objective_is_eq12_of_its_terms(preset):
    """The objective's loss (eval mode: no L_GAN) against Eq. 12's sum recomputed in numpy
    from the network's nodes; without auxiliary semantics only L_quan is left."""
    from avsearch.data import Split
    from avsearch.inference import feature_encoder
    from avsearch.objectives import get_objective

    space = get_space("lagnh", d=8, bits=6, modalities="visual:5", aux=3, anchors=4,
                      hiddens="4,1024")
    net = compile_space(space, "fixed", space.presets[preset]).eval()
    rng = np.random.default_rng(0)
    n = 9
    split = Split([str(i) for i in range(n)], np.zeros((n, 2), bool),
                  {"visual": rng.normal(size=(n, 5)).astype(np.float32)},
                  (rng.random((n, 3)) < 0.5).astype(np.float32))
    net.set_anchors([torch.randn(4, 1, 5), torch.rand(4, 1, 3)])
    objective = get_objective("lagnh", lambda1="10", lambda2="2", lambda3="0.5", k="1.5")
    batch = np.array([0, 3, 5, 8])
    loss = objective.loss(feature_encoder(net, split, torch.device("cpu")), batch).item()
    x = torch.from_numpy(split.features["visual"][batch])[:, None]
    y = torch.from_numpy(split.aux[batch])[:, None]
    with torch.no_grad():
        out = net.node_outputs(x, y, names=["codes", "aux.logits"])
    z, logits, t = out["codes"].double().numpy(), out["aux.logits"][:, 0].double().numpy(), \
        split.aux[batch].astype(np.float64)
    quan = ((np.where(z >= 0, 1, -1) - z) ** 2).mean()
    want = 2 * quan
    if preset == "paper":
        zn = z / np.linalg.norm(z, axis=1, keepdims=True)
        recon = ((1.5 * t @ t.T - np.maximum(zn @ zn.T, 0)) ** 2).mean()
        p = 1 / (1 + np.exp(-logits))
        cl = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
        want += 10 * recon + 0.5 * cl
    assert loss == pytest.approx(want, rel=1e-5)


def test_exported_program_agrees_with_the_network(csp_run, folder):
    from avsearch.export import load_program

    target = folder / "best.pt2"
    assert main(["export", str(csp_run / "best.arch"), "-o", str(target)]) == 0
    program = load_program(target)
    net = Architecture.load(csp_run / "best.arch").network().eval()
    for n in (1, 6):
        x, y = torch.randn(n, 1, 12), torch.rand(n, 1, 5)
        with torch.no_grad():
            torch.testing.assert_close(program(x, y), net(x, y))


def test_objective_options_are_checked_before_writing(folder, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", *RUN, "--data",
                           str(folder / "imgs"), "--out", str(out), "--objective-set",
                           "lambda1=-1"], capture_output=True, text=True)
    assert done.returncode == 2 and "objective 'lagnh': option lambda1=-1.0" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_the_discriminator_steps_inside_the_one_weight_step(tmp_path):
    """``Trainer.weight_step`` steps the network and then the objective's discriminator
    (Eq. 10's max over D); a network without the prior trains none."""
    from avsearch.data import load_dataset
    from avsearch.objectives import get_objective
    from avsearch.run import prepare_space
    from avsearch.testing.helpers import DATA_IMG
    from avsearch.train import Budget, Trainer

    data = load_dataset(DATA_IMG)
    objective = get_objective("lagnh")
    space = prepare_space("lagnh", {"d": 8, "hiddens": "4,1024"}, data, 8, objective)
    trainer = Trainer(data, objective, Budget("t", 1, 1, 16), torch.device("cpu"), tmp_path,
                      progress=False)
    batch = np.arange(16)
    for preset, has_prior in (("paper", True), ({**space.presets["paper"], "prior": "NoPrior"}, False)):
        objective.begin_stage(str(has_prior), "finetune")
        net = compile_space(space, "fixed", space.presets[preset] if isinstance(preset, str) else preset)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        trainer.weight_step(net, [opt], batch)
        state = objective.state_dict()
        if not has_prior:
            assert state is None
            continue
        before = {k: v.clone() for k, v in state["discriminator"].items()}
        trainer.weight_step(net, [opt], batch)
        after = objective.state_dict()["discriminator"]
        assert any(not torch.equal(before[k], after[k]) for k in before)
        assert objective.state_dict()["optimizer"]["state"]      # Adam has stepped


def test_a_run_on_several_processes_refuses_the_discriminator(folder, tmp_path):
    """The discriminator steps outside the gradient all-reduce of a torchrun run, so the
    processes would drift apart: such a run is refused before it joins or writes anything."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", *RUN, "--data",
                           str(folder / "imgs"), "--out", str(out)], capture_output=True,
                          text=True, env={**os.environ, "WORLD_SIZE": "2", "RANK": "0"})
    assert done.returncode == 2 and "trains parameters of its own" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_run_with_baselines_reports_the_unsupervised_ones(folder, tmp_path):
    """LAGNH's loss reads nodes no baseline network has: a run with baselines reports the
    untrained ones (LSH, SH) and trains none, instead of failing after its search."""
    out = tmp_path / "out"
    run = [a for a in RUN if a != "--no-baselines"]
    assert main([*run, "--strategy", "random", "--data", str(folder / "imgs"),
                 "--out", str(out)]) == 0
    baselines = json.loads((out / "metrics.json").read_text())["baselines"]
    assert {"LSH", "SH"} <= set(baselines) and not {"CNN", "MLP"} & set(baselines)
