"""The built-in ``fashion4`` image data set: the shipped file, its checksum, its composites,
labels, detections and splits, and its builder (rebuilt bit for bit)."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from avsearch._files import sha256_file
from avsearch.cli import main
from avsearch.data import fashion4, fashion_mnist, load_dataset
from avsearch.data.dataset import SPLITS
from avsearch.errors import AvsearchInputError
from conftest import FASHION_MNIST, needs_debian

HAVE_FASHION_MNIST = FASHION_MNIST.exists()
needs_fashion_mnist = needs_debian(FASHION_MNIST)


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion4")


@pytest.fixture(scope="module")
def sources():
    """Fashion-MNIST's 70,000 images and labels in the builder's order (train, then test)."""
    if not HAVE_FASHION_MNIST:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    (a, la), (b, lb) = (fashion_mnist.load_fashion_mnist(s) for s in ("train", "test"))
    return np.concatenate([a, b]), np.concatenate([la, lb])


def test_shipped_file_is_small_and_matches_its_checksum():
    assert fashion4.DATA_FILE.stat().st_size <= 5 * 2 ** 20
    assert sha256_file(fashion4.DATA_FILE) == fashion4.DATA_SHA256


def test_loads_as_an_image_dataset(data):
    assert (data.name, data.source, data.length, data.num_class) == ("fashion4", "fashion4", 1, 10)
    assert data.images and data.aux_width == 10
    assert data.modalities == {"visual": 128}
    assert {s: len(data.split(s)) for s in SPLITS} == fashion4.SIZES
    for s in SPLITS:
        split = data.split(s)
        (x,) = split.take(np.arange(5))
        assert x.shape == (5, 1, 128) and x.dtype == np.float32
        assert split.labels.dtype == bool and split.aux.dtype == np.float32
        shown = split.labels.sum(axis=1)
        assert shown.min() == 1 and shown.max() == 3           # 1-3 classes per item
        assert set(np.unique(split.aux)) <= {0.0, 1.0}
    # fc7 before its ReLU: every one of the 128 dimensions varies, so PCA-based hashing gets
    # 128 informative directions
    feats = data.split("train").features["visual"]
    assert feats.std(axis=0).min() > 0.01 and (feats < 0).any()
    # about 1.85 labels an item; relevance (sharing one) about a third of random pairs
    labels = data.split("retrieval").labels
    assert 1.7 < labels.sum(axis=1).mean() < 2.0
    relevant = (labels[:3000].astype(int) @ labels[3000:6000].T.astype(int)) > 0
    assert 0.25 < relevant.mean() < 0.45


def test_splits_and_the_cnn_pool_share_no_source_image(data):
    prov = data.info["provenance"]
    pool = set(prov["cnn_pool"].tolist())
    assert len(pool) == 10 * 1000
    seen: dict[str, set[int]] = {}
    for s in SPLITS:
        used = prov[s][prov[s] >= 0]
        assert len(np.unique(used)) == len(used)          # no image twice within a split
        seen[s] = set(used.tolist())
        assert not seen[s] & pool
    for a in SPLITS:
        for b in SPLITS:
            assert a == b or not seen[a] & seen[b], (a, b)
    assert data.info["reused_images"] == 0


def test_labels_are_the_classes_shown(data, sources):
    images, labels = sources
    prov = data.info["provenance"]
    for s in SPLITS:
        source, split = prov[s], data.split(s)
        expected = np.zeros((len(source), 10), dtype=bool)
        for q in range(4):
            shown = source[:, q] >= 0
            expected[np.flatnonzero(shown), labels[source[shown, q]]] = True
        np.testing.assert_array_equal(split.labels, expected)
    assert np.bincount(labels[prov["cnn_pool"]], minlength=10).tolist() == [1000] * 10


def test_detections_are_informative_but_imperfect(data):
    """The tags stand in for a detector's: they agree with the labels far above chance and
    miss or invent classes on a good share of items; the metadata's numbers are recomputed."""
    tags = np.concatenate([data.split(s).aux for s in SPLITS]).astype(bool)
    labels = np.concatenate([data.split(s).labels for s in SPLITS])
    hits = np.count_nonzero(tags & labels)
    precision, recall = hits / np.count_nonzero(tags), hits / np.count_nonzero(labels)
    exact = np.mean((tags == labels).all(axis=1))
    det = data.info["detection"]
    assert (det["precision"], det["recall"], det["exact"]) == pytest.approx(
        (precision, recall, exact), abs=1e-4)
    assert 0.6 < precision < 0.97 and 0.6 < recall < 0.97     # informative
    assert exact < 0.9                                         # and imperfect
    chance = labels.mean()                                     # a random tag's precision
    assert precision > 2 * chance


def test_features_carry_the_labels(data):
    """Nearest neighbours in fc7 space share a label far more often than random pairs do."""
    q, db = data.split("test"), data.split("retrieval")
    xq = q.features["visual"][:300]
    xd = db.features["visual"]
    d2 = (xq ** 2).sum(1)[:, None] - 2 * xq @ xd.T + (xd ** 2).sum(1)[None]
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :10]
    shares = (q.labels[:300, None, :] & db.labels[nearest]).any(axis=2).mean()
    random_pairs = ((q.labels[:300].astype(int) @ db.labels.T.astype(int)) > 0).mean()
    assert shares > random_pairs + 0.3, (shares, random_pairs)


def test_corrupt_copy_is_refused_naming_the_file(tmp_path, capsys):
    shipped, copy = fashion4.DATA_FILE.read_bytes(), tmp_path / "fashion4.npz"
    copy.write_bytes(shipped[:-1] + bytes([shipped[-1] ^ 1]))      # one bit of the last byte
    with pytest.raises(AvsearchInputError, match=re.escape(f"{copy}: checksum mismatch")):
        fashion4.load_fashion4(copy)
    copy.write_bytes(shipped[:100_000])                             # a truncated zip
    assert main(["run", "--data", str(copy), "--budget", "smoke", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    err_text = capsys.readouterr().err
    assert str(copy) in err_text and "Traceback" not in err_text
    assert not (tmp_path / "run").exists()


def test_build_without_fashion_mnist_names_the_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_ROOT", tmp_path / "absent")
    monkeypatch.setattr(fashion4, "rebuild_differs", lambda: None)   # no warning on any machine
    assert main(["data", "build", "fashion4", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "dataset-fashion-mnist" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    # on a machine unlike the builder's, a warning says the floats may differ, then the error
    monkeypatch.setattr(fashion4, "rebuild_differs", lambda: "built elsewhere")
    assert main(["data", "build", "fashion4", "--out", str(tmp_path / "out")]) == 2
    first, second = capsys.readouterr().err.splitlines()
    assert first == "warning: built elsewhere, so floats may round differently"
    assert "dataset-fashion-mnist" in second
    assert main(["data", "build", "fashion4", "--variant", "v30", "--out", str(tmp_path)]) == 2
    assert "--variant" in capsys.readouterr().err


TINY = dict(name="tiny", sizes=(60, 20, 20, 100), pool=40, epochs=1)


@needs_fashion_mnist
def test_tiny_build_is_reproducible_and_loads(tmp_path):
    from avsearch.data import fashion4_builder

    shape = replace(fashion4_builder.DEFAULT, **TINY)
    threads = torch.get_num_threads()
    a = fashion4_builder.build_fashion4(tmp_path / "a", seed=3, shape=shape)
    b = fashion4_builder.build_fashion4(tmp_path / "b", seed=3, shape=shape)
    assert a.read_bytes() == b.read_bytes()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["fashion4-tiny.npz"]  # no temp
    assert torch.get_num_threads() == threads                  # the builder restores torch
    assert not torch.are_deterministic_algorithms_enabled()
    other = fashion4_builder.build_fashion4(tmp_path / "c", seed=4, shape=shape)
    assert other.read_bytes() != a.read_bytes()
    data = load_dataset(a)                                     # --data PATH.npz finds fashion4
    assert data.name == "fashion4-tiny" and data.info["seed"] == 3 and data.images
    assert {s: len(data.split(s)) for s in SPLITS} == dict(zip(SPLITS, TINY["sizes"]))
    with np.load(a) as z:
        meta = json.loads(str(z["meta"]))
    assert meta["torch"] == torch.__version__ and meta["cnn"]["epochs"] == 1
    with pytest.raises(ValueError, match="name of its own"):
        fashion4_builder.build_fashion4(tmp_path, shape=replace(shape, name="fashion4"))


def _same_maker() -> str | None:
    """Why a rebuild here cannot be expected to match the shipped file, or None."""
    if not HAVE_FASHION_MNIST:
        return "Debian's dataset-fashion-mnist is not installed"
    return fashion4.rebuild_differs()


@pytest.mark.slow
def test_full_rebuild_equals_the_shipped_file(tmp_path, capsys):
    reason = _same_maker()
    if reason:
        pytest.skip(reason)
    assert main(["data", "build", "fashion4", "--out", str(tmp_path)]) == 0
    assert sha256_file(tmp_path / "fashion4.npz") == fashion4.DATA_SHA256
    assert "identical to the shipped file" in capsys.readouterr().out
