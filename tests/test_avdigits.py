"""The built-in ``avdigits`` data set: the shipped file, its checksum, splits and builder."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from avsearch._files import sha256_file
from avsearch.cli import main
from avsearch.data import avdigits, avdigits_builder, load_dataset
from avsearch.errors import AvsearchInputError

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")
TINY = replace(avdigits.DEFAULT, name="tiny", sizes=(50, 25, 25), voices=(2, 1, 1), prosodies=1)


@pytest.fixture(scope="module")
def data():
    return load_dataset("avdigits")


def _pooled(split, modality: int | None = None) -> np.ndarray:
    feats = split.take(np.arange(len(split)))
    feats = feats if modality is None else [feats[modality]]
    return np.concatenate([f.mean(axis=1) for f in feats], axis=1)


def test_shipped_file_is_small_and_matches_its_checksum():
    assert avdigits.DATA_FILE.stat().st_size <= 20 * 2 ** 20
    assert sha256_file(avdigits.DATA_FILE) == avdigits.DATA_SHA256


def test_loads_as_a_dataset(data):
    assert (data.name, data.source, data.length) == ("avdigits", "avdigits", 25)
    assert list(data.modalities.items()) == [("visual", 64), ("audio", 40)]
    assert data.num_class == 25 and len(data.info["classes"]) == 25
    assert set(data.splits) == {"train", "val", "test", "retrieval"}
    assert {s: len(data.split(s)) for s in ("train", "val", "test")} == avdigits.SIZES
    for name, split in data.splits.items():
        n = len(split)
        assert split.labels.shape == (n, 25) and split.labels.dtype == bool
        assert (split.labels.sum(axis=1) == 1).all()           # one-hot
        assert list(split.features) == ["visual", "audio"]
        for f, d in zip(split.features.values(), (64, 40)):
            assert f.shape == (n, 25, d) and f.dtype == np.float32
            assert f.min() >= 0.0 and f.max() <= 1.0
        assert len(set(split.ids)) == n
    retrieval, train = data.split("retrieval"), data.split("train")
    assert retrieval.ids == train.ids and retrieval.features["audio"] is train.features["audio"]
    all_ids = [i for s in ("train", "val", "test") for i in data.split(s).ids]
    assert len(set(all_ids)) == len(all_ids)


def test_every_class_in_every_split_balanced(data):
    for name in ("train", "val", "test"):
        counts = data.split(name).labels.sum(axis=0)
        assert (counts == avdigits.SIZES[name] // 25).all(), name


def test_splits_are_disjoint_in_source_images_and_voices(data):
    prov, voices = data.info["provenance"], data.info["voices"]
    images = {s: set(np.unique(prov[s]["image"])) - {-1} for s in ("train", "val", "test")}
    used = {s: {voices[v] for v in np.unique(prov[s]["voice"])} for s in ("train", "val", "test")}
    variants = {s: {v.split("+")[1] for v in used[s]} for s in used}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not images[a] & images[b], (a, b)
        assert not used[a] & used[b], (a, b)
        assert not variants[a] & variants[b], (a, b)
    # every split draws on many images and several voices
    assert min(len(v) for v in images.values()) > 300
    assert min(len(v) for v in used.values()) >= 16
    assert all(set(used[s]) <= set(data.info["split_voices"][s]) for s in used)


def test_provenance_matches_the_class(data):
    """The loud word is the class's spoken digit; every video shows one image in a window."""
    utterances = data.info["utterances"]
    for name in ("train", "val", "test"):
        split, prov = data.split(name), data.info["provenance"][name]
        label = split.labels.argmax(axis=1)
        spoken = np.array([utterances[u][1] for u in prov["utterance"][:, 0]])
        assert (spoken == 5 + label % 5).all()
        voice_of = np.array([utterances[u][0] for u in prov["utterance"][:, 0]])
        assert (voice_of == prov["voice"]).all()


def test_neither_modality_alone_reaches_the_fused_result(data):
    """Nearest class mean on mean-pooled, standardised features, val split."""
    train, val = data.split("train"), data.split("val")
    ytr, yva = train.labels.argmax(axis=1), val.labels.argmax(axis=1)

    def ncm(modality):
        xtr, xva = _pooled(train, modality), _pooled(val, modality)
        mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
        xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
        means = np.stack([xtr[ytr == c].mean(axis=0) for c in range(25)])
        dist = ((xva[:, None, :] - means[None]) ** 2).sum(axis=-1)
        return float((dist.argmin(axis=1) == yva).mean())

    visual, audio, fused = ncm(0), ncm(1), ncm(None)
    # one modality identifies one digit of the pair at best: <= 1/5 of the classes
    assert visual <= 0.22 and audio <= 0.22
    assert audio > 1.5 / 25                      # audio carries information too
    assert fused >= max(visual, audio) + 0.08, (visual, audio, fused)


def test_corrupt_copy_is_refused_naming_the_file(tmp_path):
    copy = tmp_path / "avdigits.npz"
    blob = bytearray(avdigits.DATA_FILE.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    copy.write_bytes(bytes(blob))
    with pytest.raises(AvsearchInputError, match="checksum mismatch") as err:
        avdigits.load_avdigits(copy)
    assert str(copy) in str(err.value)
    # without the checksum, a broken zip is still a one-line input error naming the file
    copy.write_bytes(avdigits.DATA_FILE.read_bytes()[:100_000])
    with pytest.raises(AvsearchInputError) as err:
        avdigits.load_avdigits(copy, expected_sha256=None)
    assert str(copy) in str(err.value)
    with pytest.raises(AvsearchInputError, match="not found"):
        avdigits.load_avdigits(tmp_path / "missing.npz")


def test_build_without_espeak_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(avdigits_builder.shutil, "which", lambda name: None)
    with pytest.raises(AvsearchInputError, match="apt-get install espeak-ng"):
        avdigits_builder.build_avdigits(tmp_path, 0)
    assert not list(tmp_path.iterdir())
    assert main(["data", "build", "avdigits", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())


@needs_espeak
def test_tiny_build_is_reproducible(tmp_path):
    pytest.importorskip("sklearn")
    a = avdigits_builder.build_avdigits(tmp_path / "a", seed=3, shape=TINY)
    b = avdigits_builder.build_avdigits(tmp_path / "b", seed=3, workers=1, shape=TINY)
    assert a.read_bytes() == b.read_bytes()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["avdigits-tiny.npz"]  # no temp
    other = avdigits_builder.build_avdigits(tmp_path / "c", seed=4, shape=TINY)
    assert other.read_bytes() != a.read_bytes()
    data = avdigits.load_avdigits(a, expected_sha256=None)
    assert data.info["seed"] == 3 and len(data.split("val")) == 25
    assert data.info["espeak_ng"] == avdigits_builder.espeak_version()


@pytest.mark.slow
@needs_espeak
def test_full_rebuild_equals_the_shipped_file(tmp_path):
    pytest.importorskip("sklearn")
    version = avdigits_builder.espeak_version()
    if version != avdigits.ESPEAK_VERSION:
        pytest.skip(f"espeak-ng {version}, the shipped file was built with "
                    f"{avdigits.ESPEAK_VERSION}")
    assert main(["data", "build", "avdigits", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "avdigits.npz").read_bytes() == avdigits.DATA_FILE.read_bytes()
