"""Tests of avsearch.baselines: mean pooling, LSH and ITQ (determinism, shapes, orthogonality,
monotone quantisation loss) and ITQ beating LSH on clustered data, scored by avsearch.metrics;
PCAH and Spectral Hashing on hand-computed cases.
"""
from __future__ import annotations

import numpy as np
import pytest

from avsearch.baselines import ITQ, LSH, PCAH, SH, mean_pool, unsupervised_baselines
from avsearch.errors import AvsearchInputError
from avsearch.metrics import retrieval_metrics


def clustered(seed: int, n: int = 1500, n_clusters: int = 15, dim: int = 96, sub: int = 12,
              scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres in a random ``sub``-dim subspace of R^dim, unit isotropic noise in all
    dims, and an offset (so centring matters): PCA finds the subspace, random projections
    mostly see noise."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, sub)))
    centres = (scale * rng.standard_normal((n_clusters, sub))) @ basis.T
    y = rng.integers(0, n_clusters, n)
    x = centres[y] + rng.standard_normal((n, dim)) + 5.0
    return x.astype(np.float32), y


# ------------------------------------------------------------------------------- mean_pool


def test_mean_pool_concatenates_modality_means():
    v = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)   # (N=2, T=3, D=2)
    a = np.ones((2, 5, 1), dtype=np.float32)
    a[1] *= 4                                                      # (N=2, T=5, D=1)
    out = mean_pool([v, a])
    # video 0, visual: frames (0,1), (2,3), (4,5) -> (2, 3); audio 1
    # video 1, visual: (6,7), (8,9), (10,11) -> (8, 9); audio 4
    np.testing.assert_array_equal(out, [[2, 3, 1], [8, 9, 4]])
    assert out.dtype == np.float32


def test_mean_pool_rejects_bad_input():
    with pytest.raises(AvsearchInputError):
        mean_pool([])
    with pytest.raises(AvsearchInputError, match="N, T, D"):
        mean_pool([np.zeros((2, 3))])
    with pytest.raises(AvsearchInputError, match="disagree"):
        mean_pool([np.zeros((2, 3, 4)), np.zeros((3, 3, 4))])


# ------------------------------------------------------------------------------------- LSH


def test_lsh_codes_shape_values_and_seed():
    x, _ = clustered(0, n=200)
    a = LSH().fit(x, 24, seed=7).encode(x[:50])
    b = LSH().fit(x, 24, seed=7).encode(x[:50])
    c = LSH().fit(x, 24, seed=8).encode(x[:50])
    assert a.shape == (50, 24) and a.dtype == np.int8
    assert set(np.unique(a)) <= {-1, 1}
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_lsh_centres_on_training_mean_and_sign_zero_is_plus_one():
    x, _ = clustered(1, n=200)
    lsh = LSH().fit(x, 16, seed=0)
    np.testing.assert_allclose(lsh.mean_, x.mean(axis=0), rtol=1e-6)
    # the mean itself projects to exactly 0 on every direction -> all +1
    assert (lsh.encode(lsh.mean_[None, :]) == 1).all()
    # both signs occur on the training data (centred): each bit is roughly balanced
    balance = lsh.encode(x).mean(axis=0)
    assert np.abs(balance).max() < 0.9


def test_lsh_more_bits_than_features():
    x = np.random.default_rng(0).standard_normal((30, 4))
    assert LSH().fit(x, 10, seed=0).encode(x).shape == (30, 10)


def test_lsh_errors():
    with pytest.raises(AvsearchInputError, match="before fit"):
        LSH().encode(np.zeros((2, 3)))
    lsh = LSH().fit(np.random.default_rng(0).standard_normal((5, 3)), 4)
    with pytest.raises(AvsearchInputError, match="fitted on 3"):
        lsh.encode(np.zeros((2, 4)))
    with pytest.raises(AvsearchInputError, match="positive"):
        LSH().fit(np.zeros((5, 3)), 0)
    with pytest.raises(AvsearchInputError, match="NaN"):
        LSH().fit(np.full((5, 3), np.nan), 4)


# ------------------------------------------------------------------------------------- ITQ


@pytest.mark.parametrize("bits", [1, 8, 32])
def test_itq_rotation_orthogonal_and_loss_non_increasing(bits):
    x, _ = clustered(2)
    itq = ITQ().fit(x, bits, seed=3)
    r = itq.rotation_
    assert r.shape == (bits, bits)
    np.testing.assert_allclose(r @ r.T, np.eye(bits), atol=1e-10)
    np.testing.assert_allclose(itq.pca_.T @ itq.pca_, np.eye(bits), atol=1e-10)
    losses = np.array(itq.loss_history_)
    assert len(losses) == 50 + 1
    # each B-step and R-step minimises ||B - V R||^2 given the other: never goes up
    assert (np.diff(losses) <= 1e-9 * losses[0]).all()
    if bits > 1:
        assert losses[-1] < losses[0]


def test_itq_loss_matches_the_stored_rotation():
    x, _ = clustered(4, n=400)
    itq = ITQ(n_iter=7).fit(x, 16, seed=0)
    v = (x.astype(np.float64) - itq.mean_) @ itq.pca_
    z = v @ itq.rotation_
    b = np.where(z >= 0, 1.0, -1.0)
    assert len(itq.loss_history_) == 8
    assert itq.loss_history_[-1] == pytest.approx(np.sum((b - z) ** 2), rel=1e-6)
    np.testing.assert_array_equal(itq.encode(x), b.astype(np.int8))


def test_itq_deterministic_codes_and_sign_zero():
    x, _ = clustered(5, n=300)
    a = ITQ().fit(x, 16, seed=1)
    b = ITQ().fit(x, 16, seed=1)
    ca = a.encode(x)
    assert ca.dtype == np.int8 and ca.shape == (300, 16)
    assert set(np.unique(ca)) <= {-1, 1}
    np.testing.assert_array_equal(ca, b.encode(x))
    np.testing.assert_array_equal(a.rotation_, b.rotation_)
    assert (a.encode(a.mean_[None, :]) == 1).all()


def test_itq_bits_above_feature_dimension_is_a_clear_error():
    x = np.random.default_rng(0).standard_normal((50, 6))
    with pytest.raises(ValueError, match="bits <= feature dimension"):
        ITQ().fit(x, 8)
    ITQ().fit(x, 6)  # exactly D is fine


def test_itq_encode_before_fit():
    with pytest.raises(AvsearchInputError, match="before fit"):
        ITQ().encode(np.zeros((2, 3)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_itq_beats_lsh_on_clustered_data(seed):
    """PCA keeps the cluster subspace, random projections mostly see the noise. Measured at 32
    bits over seeds 0-7: mAP@100 ITQ 0.69-0.77, LSH 0.25-0.32 (~80 relevant items per query,
    so 0.8 is the ceiling under the "k" normalisation); assert a gap of 0.2."""
    x, y = clustered(seed)
    train, query = slice(0, 1200), slice(1200, None)
    scores = {}
    for model in (LSH(), ITQ()):
        model.fit(x[train], 32, seed=seed)
        res = retrieval_metrics(model.encode(x[query]), y[query], model.encode(x[train]),
                                y[train], ks=(20, 100))
        scores[type(model).__name__] = res["map"][100]
    assert scores["ITQ"] > scores["LSH"] + 0.2, scores


def test_pipeline_on_builtin_data():
    """Split.take -> mean_pool -> fit/encode -> retrieval_metrics on the built-in data set."""
    from avsearch.data import load_dataset

    ds = load_dataset("avdigits")
    train, test = ds.split("train"), ds.split("test")
    xtr = mean_pool(train.take(np.arange(len(train))))
    xte = mean_pool(test.take(np.arange(50)))
    assert xtr.shape == (len(train), sum(ds.modalities.values()))
    itq = ITQ().fit(xtr, 16, seed=0)
    res = retrieval_metrics(itq.encode(xte), test.labels[:50], itq.encode(xtr), train.labels,
                            ks=(5, 100))
    # the same ranking against shuffled database labels is chance: features, codes and labels
    # must line up for ITQ to beat it (here 0.081 against 0.021)
    shuffled = train.labels[np.random.default_rng(0).permutation(len(train))]
    chance = retrieval_metrics(itq.encode(xte), test.labels[:50], itq.encode(xtr), shuffled,
                               ks=(5,))
    assert res["map"][5] > 2.5 * chance["map"][5] and res["normalisation"] == "k"


# ------------------------------------------------------------------------------ PCAH and SH
def test_pcah_by_hand():
    # centred already; covariance ∝ [[10, 2], [2, 4]]: eigenvalues 7 ± √13, top eigenvector
    # ∝ (2, √13 − 3) = (0.957, 0.290), second (−0.290, 0.957) (largest entry positive)
    x = np.array([[-2, -1], [-1, 1], [1, -1], [2, 1]], dtype=np.float64)
    top = np.array([2.0, np.sqrt(13) - 3]) / np.linalg.norm([2.0, np.sqrt(13) - 3])
    model = PCAH().fit(x, 2)
    np.testing.assert_allclose(model.projection_, np.stack([top, [-top[1], top[0]]], axis=1), atol=1e-12)
    # projections on the top direction −2.20, −0.67, 0.67, 2.20; on the second −0.38, 1.25,
    # −1.25, 0.38
    assert model.encode(x).tolist() == [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    # the mean is taken off: shifting train and queries alike changes nothing
    assert PCAH().fit(x + 7, 2).encode(x + 7).tolist() == model.encode(x).tolist()
    # the sign convention does not depend on the eigensolver's: negate the data, same model
    np.testing.assert_allclose(PCAH().fit(-x, 2).projection_, model.projection_, atol=1e-12)


def test_pcah_refuses_more_bits_than_features():
    with pytest.raises(AvsearchInputError, match="PCAH needs bits <= feature dimension"):
        PCAH().fit(np.zeros((10, 3)), 4)
    with pytest.raises(AvsearchInputError, match="PCAH.encode before fit"):
        PCAH().encode(np.zeros((1, 3)))


def test_spectral_hashing_by_hand():
    # x in {−2, −0.5, 0.5, 2} (range 4), y in {−0.75, 0.75} (range 1.5): the principal
    # directions are the axes (variance 2.125 > 0.5625). Eigenvalues ∝ (k / range)²:
    # (x, k=1) 1/16, (x, k=2) 1/4, (y, k=1) 1/2.25, (x, k=3) 9/16 ... so 3 bits take the
    # first three; bit = sign(cos(kπ (v − low) / range)).
    xs, ys = [-2.0, -0.5, 0.5, 2.0], [-0.75, 0.75]
    pts = np.array([[a, b] for a in xs for b in ys])
    model = SH().fit(pts, 3)
    assert model.modes_.tolist() == [[0, 1], [0, 2], [1, 1]]
    np.testing.assert_allclose(model.low_, [-2, -0.75])
    np.testing.assert_allclose(model.range_, [4, 1.5])
    # cos(π(x+2)/4): +, + (0.38), − (−0.38), −; cos(π(x+2)/2): +, − (−0.71), −, +;
    # cos(π(y+0.75)/1.5): + at −0.75, − at 0.75
    bit1 = {-2.0: 1, -0.5: 1, 0.5: -1, 2.0: -1}
    bit2 = {-2.0: 1, -0.5: -1, 0.5: -1, 2.0: 1}
    bit3 = {-0.75: 1, 0.75: -1}
    expected = [[bit1[a], bit2[a], bit3[b]] for a in xs for b in ys]
    assert model.encode(pts).tolist() == expected


def test_spectral_hashing_gives_more_bits_than_features_and_clusters_well():
    x, y = clustered(0, n=600, dim=8, sub=4, n_clusters=6)
    model = SH().fit(x, 24)                     # 24 bits from 8 features: several per direction
    codes = model.encode(x)
    assert codes.shape == (600, 24) and set(np.unique(codes)) == {-1, 1}
    assert len({tuple(m) for m in model.modes_.tolist()}) == 24      # 24 distinct modes
    eig = [(k / model.range_[i]) ** 2 for i, k in model.modes_]
    assert eig == sorted(eig)                   # smallest eigenvalues, in order
    assert model.encode(x).tolist() == SH().fit(x, 24, seed=9).encode(x).tolist()  # no randomness
    res = retrieval_metrics(codes[:100], y[:100], codes[100:], y[100:], ks=(50,))
    chance = np.mean([np.mean(y[100:] == c) for c in y[:100]])
    assert res["precision"][50] > chance + 0.15


def test_image_data_gets_the_four_unsupervised_baselines():
    assert set(unsupervised_baselines(True)) == {"LSH", "ITQ", "PCAH", "SH"}
    assert set(unsupervised_baselines(False)) == {"LSH", "ITQ"}


# ------------------------------------------------- the self-supervised runs' CNN baseline


def test_the_student_cnn_encodes_with_two_temporal_convolutions():
    """Its student encoder is conv(3) → ReLU → conv(3) → ReLU over time, computed here with
    ``F.conv1d`` on the encoder's own input, and it has no teacher."""
    import torch
    import torch.nn.functional as F

    from avsearch.baselines import student_cnn

    net = student_cnn({"visual": 12}, bits=8).eval()
    assert net.choices["student.encoder"] == "TCN_2" and net.absent("teacher.codes")
    x = torch.randn(3, 6, 12)
    with torch.no_grad():
        out = net.node_outputs(x, names=["student.embed", "student.encoder"])
        h = out["student.embed"].transpose(1, 2)
        for layer in net.cells["student__encoder"].ops["TCN_2"].blocks:
            h = F.relu(F.conv1d(h, layer.conv.weight, layer.conv.bias, padding=1))
    torch.testing.assert_close(out["student.encoder"], h.transpose(1, 2))


def test_a_self_supervised_run_trains_the_cnn_baseline_with_its_objective(tmp_path, monkeypatch):
    """In a real `avsearch run --objective vhmt`, the CNN baseline is trained by the VHMT loss
    (the objective sees the student CNN), evaluated, and reported; the MLP, which no
    self-supervised loss can train, is not."""
    import json

    from avsearch.cli import main
    from avsearch.objectives import VHMT
    from conftest import write_ssvh_folder

    trained = []
    loss = VHMT.loss

    def spy(self, encode, batch):
        trained.append(encode.net.choices)
        return loss(self, encode, batch)

    monkeypatch.setattr(VHMT, "loss", spy)
    data = tmp_path / "ssvh"
    write_ssvh_folder(data)
    out = tmp_path / "run"
    sets = [x for kv in ("d=8", "d_dec=8", "heads=2", "d_state=4") for x in ("--set", kv)]
    assert main(["run", "--space", "vhmt", "--objective", "vhmt", "--arch", "exp10", "--bits",
                 "8", "--data", str(data), "--budget", "smoke", "--out", str(out), "--quiet",
                 *sets]) == 0
    assert any(c["student.encoder"] == "TCN_2" for c in trained)
    assert any(c["student.encoder"] == "Mamba_6" for c in trained)      # the run's own network
    baselines = json.loads((out / "metrics.json").read_text())["baselines"]
    assert set(baselines) == {"LSH", "ITQ", "CNN"}
    assert 0 < baselines["CNN"]["test"]["map@100"] <= 1
