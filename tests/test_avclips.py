"""The built-in video-text data ``avclips``: the shipped file, what its clips and captions
hold (checked against Fashion-MNIST and WordNet read independently), and the builder's bit-for-
bit rebuild through ``avsearch data build avclips``."""
from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from avsearch._files import sha256_file
from avsearch.cli import main
from avsearch.data import load_dataset
from avsearch.data.avclips import CLASSES, DATA_FILE, DATA_SHA256, LENGTH, load_avclips
from avsearch.data.text import DEFAULT_MAX_TOKENS, tokenize
from avsearch.data.wordnet import parse_synset_line, read_synset
from avsearch.errors import AvsearchInputError
from conftest import FASHION_MNIST, WORDNET, needs_debian

FASHION = FASHION_MNIST.parent
needs_sources = needs_debian(FASHION_MNIST, WORDNET)


@pytest.fixture(scope="module")
def clips():
    return load_dataset("avclips")


def _images(split: str) -> np.ndarray:
    """Fashion-MNIST's images read straight from the IDX file, not through avsearch."""
    name = "train-images-idx3-ubyte.gz" if split == "train" else "t10k-images-idx3-ubyte.gz"
    raw = gzip.open(FASHION / name).read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


def test_shipped_file_shapes_and_labels(clips):
    assert sha256_file(DATA_FILE) == DATA_SHA256
    assert clips.name == "avclips" and clips.num_class == 10 and clips.length == LENGTH
    assert list(clips.modalities) == ["visual", "text"] and clips.modalities["visual"] == 196
    assert clips.text == ["text"] and clips.lengths["text"] <= DEFAULT_MAX_TOKENS
    assert {s: len(clips.split(s)) for s in ("train", "val", "test")} == \
        {"train": 2000, "val": 500, "test": 500}
    assert clips.database("test") is clips.split("retrieval")
    assert clips.split("retrieval").ids == clips.split("train").ids
    for s in ("train", "val", "test"):
        split = clips.split(s)
        objects = clips.info["provenance"][s]["objects"]
        count = (objects >= 0).sum(1)
        assert set(np.unique(count)) == {1, 2, 3}            # several objects per clip
        expect = np.zeros_like(split.labels)
        for i, row in enumerate(objects):
            expect[i, row[row >= 0]] = True
        np.testing.assert_array_equal(split.labels, expect)
        vis, text = split.take(np.arange(4))
        assert vis.shape == (4, LENGTH, 196) and 0 <= vis.min() and vis.max() <= 1
        assert text.dtype == np.int64


def test_relevance_is_multi_label_and_not_trivial(clips):
    q, db = clips.split("test").labels, clips.split("retrieval").labels
    relevant = (q.astype(int) @ db.T.astype(int)) > 0
    assert 0.3 < relevant.mean() < 0.45          # chance: about 0.37 of pairs share a class
    assert (q.sum(1) > 1).mean() > 0.5           # most clips have several labels


@needs_sources
def test_source_images_are_disjoint_and_frames_show_them(clips):
    prov = clips.info["provenance"]
    used = {s: prov[s]["images"][prov[s]["images"] >= 0] for s in ("train", "val", "test")}
    for s, ids in used.items():
        assert len(np.unique(ids)) == len(ids), f"an image appears in two {s} clips"
    assert not set(used["val"]) & set(used["test"])   # both from Fashion-MNIST's test images
    for s in ("train", "test"):
        images = _images(s)
        x = clips.split(s).take(np.arange(30))[0]
        steps = prov[s]["steps"][:30]
        for i in range(30):
            for t in range(LENGTH):
                src, blend = steps[i, t]
                assert src >= 0
                if blend >= 0:
                    continue
                # the step is its source image shifted by at most 2 pixels and scaled in
                # contrast, averaged over 2x2 blocks: one shift matches it up to rounding
                best = max(np.corrcoef(x[i, t], _shifted_pooled(images[src], dy, dx))[0, 1]
                           for dy in range(-2, 3) for dx in range(-2, 3))
                assert best > 0.995, (s, i, t, best)


def _shifted_pooled(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    padded = np.pad(image.astype(float), 2)
    shifted = padded[2 - dy:30 - dy, 2 - dx:30 - dx]
    return shifted.reshape(14, 2, 14, 2).mean(axis=(1, 3)).ravel()


@needs_sources
def test_captions_name_every_object_in_changing_words(clips):
    """Each caption speaks of each object by a word or the definition of its WordNet synset
    (read here by a separate path), and no word is common to all captions of a class."""
    from avsearch.data.avclips_builder import SYNSETS
    synsets = [read_synset(o) for o in SYNSETS]
    stop = {"a", "an", "the", "of", "and", "then", "in", "is", "it", "that", "to", "by", "we",
            "see", "clip", "video", "this", "with", "after", "what", "looks", "like"}
    captions = clips.info["captions"]["train"]
    objects = clips.info["provenance"]["train"]["objects"]
    distinct = {c for pair in captions for c in pair}
    # repeats are short one-object captions ("a T-shirt appears"): 3,694 of 4,000 distinct
    assert len(distinct) > 0.9 * 2 * len(captions)
    for c in range(10):
        keys = {w.lower() for w in synsets[c].words} | {"pants", "trousers", "top", "ankle boot"}
        definition = re.sub(r"\([^)]*\)", "", synsets[c].definition).split(",")[0].strip()
        keys.add(definition.lower()[:25])
        mine = [pair for pair, row in zip(captions, objects) if c in row]
        for pair in mine:
            for text in pair:
                assert any(k in text.lower() for k in keys), (CLASSES[c], text)
        common = set.intersection(*(set(tokenize(t)) for pair in mine for t in pair)) - stop
        assert not common, (CLASSES[c], common)    # no fixed template word for the class


def test_text_tokens_are_the_captions_with_the_training_vocabulary(clips):
    voc = clips.vocabulary("text")
    train_words = {w for pair in clips.info["captions"]["train"] for c in pair
                   for w in tokenize(c)}
    assert set(voc.tokens[2:]) == train_words
    for s in ("train", "test"):
        ids = clips.split(s).take([7])[1][0]
        words = tokenize(" ".join(clips.info["captions"][s][7]))[:DEFAULT_MAX_TOKENS]
        expect = " ".join(w if w in train_words else "<unk>" for w in words)
        assert voc.decode(ids) == expect


def test_a_damaged_file_is_refused(tmp_path):
    bad = tmp_path / "avclips.npz"
    bad.write_bytes(DATA_FILE.read_bytes()[:1000])
    with pytest.raises(AvsearchInputError, match="checksum mismatch"):
        load_avclips(bad)
    with pytest.raises(AvsearchInputError, match="not a readable avclips file"):
        load_avclips(bad, expected_sha256=None)
    with pytest.raises(AvsearchInputError, match="not a readable .npz that 'avsearch data build'"):
        load_dataset(bad)
    with pytest.raises(AvsearchInputError, match="avclips data file not found"):
        load_avclips(tmp_path / "none.npz")


def test_wordnet_line_parser_on_a_hand_made_line(tmp_path):
    line = ("03472535 06 n 03 gym_shoe 0 sneaker 0 tennis_shoe 0 002 @ 04199027 n 0000 "
            "~ 03967270 n 0000 | a canvas shoe with a pliable rubber sole; \"he wore sneakers\"  \n")
    s = parse_synset_line(line)
    assert s.offset == 3472535 and s.words == ("gym shoe", "sneaker", "tennis shoe")
    assert s.hypernyms == (4199027,) and s.definition == "a canvas shoe with a pliable rubber sole"
    (tmp_path / "data.noun").write_text("  1 license\n" + line.replace("03472535", "00000012", 1))
    assert read_synset(12, tmp_path).words == s.words     # the offset is the byte position
    with pytest.raises(AvsearchInputError, match="no noun synset at offset 00000005"):
        read_synset(5, tmp_path)
    with pytest.raises(AvsearchInputError, match="wordnet-base"):
        read_synset(12, tmp_path / "missing")


@needs_sources
def test_small_builds_are_identical_and_seeded(tmp_path):
    from avsearch.data.avclips_builder import build_avclips
    sizes = {"train": 40, "val": 10, "test": 10}
    a = build_avclips(tmp_path / "a", 0, sizes=sizes)
    b = build_avclips(tmp_path / "b", 0, sizes=sizes)
    c = build_avclips(tmp_path / "c", 1, sizes=sizes)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    small = load_dataset(a)
    assert small.name == "avclips" and len(small.split("train")) == 40
    assert small.info["sha256"] == sha256_file(a)


@needs_sources
def test_the_command_rebuilds_the_shipped_file_bit_for_bit(tmp_path, capsys):
    assert main(["data", "build", "avclips", "--out", str(tmp_path)]) == 0
    assert sha256_file(tmp_path / "avclips.npz") == DATA_SHA256
    assert "identical to the shipped file" in capsys.readouterr().out


def test_avclips_has_no_variants(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "build", "avclips", "--out", str(out), "--variant", "v30"]) == 2
    assert "avclips has no variants" in capsys.readouterr().err and not out.exists()
