"""The text modality: tokenizing, the vocabulary, padding masks, and video-text folders
(captions as JSON lines, or precomputed text features) with every load-time error."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from avsearch.data import load_dataset
from avsearch.data.h5 import INMEMORY_ENV
from avsearch.data.text import PAD, UNK, Text, Vocabulary, padding_mask, read_captions, tokenize
from avsearch.errors import AvsearchInputError

T, D = 5, 3


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(INMEMORY_ENV, raising=False)


def _message(fn, *args) -> str:
    """The one-line message of the input error that ``fn(*args)`` raises."""
    with pytest.raises(AvsearchInputError, match=r"^[^\n]*$") as info:
        fn(*args)
    return str(info.value)


# ----------------------------------------------------------------------------- tokens

def test_tokenize_hand_cases():
    assert tokenize("A T-shirt, then the MEN'S  coat!") == ["a", "t-shirt", "then", "the",
                                                           "men's", "coat"]
    assert tokenize("ＦＵＬＬ width_and-- 3 bags") == ["full", "width", "and", "3", "bags"]
    assert tokenize(" -- ... ") == []


def test_vocabulary_orders_by_count_then_alphabet_and_pads():
    texts = ["the coat the bag", "a bag", "the sandal"]
    v = Vocabulary.build(texts)
    # counts: the 3, bag 2, a 1, coat 1, sandal 1 (ties alphabetical)
    assert v.tokens == ("<pad>", "<unk>", "the", "bag", "a", "coat", "sandal")
    assert Vocabulary.build(texts, min_count=2).tokens == ("<pad>", "<unk>", "the", "bag")
    assert Vocabulary.build(texts, max_size=4).tokens == ("<pad>", "<unk>", "the", "bag")
    ids = v.encode(["the bag", "a red coat the end", "sandal"], max_tokens=4)
    np.testing.assert_array_equal(ids, [[2, 3, PAD, PAD], [4, UNK, 5, 2], [6, PAD, PAD, PAD]])
    assert ids.dtype == np.int32
    assert v.decode(ids[0]) == "the bag" and v.decode(ids[1]) == "a <unk> coat the"
    assert Vocabulary.from_json(json.loads(json.dumps(v.to_json()))) == v


def test_padding_mask_for_ids_and_features_in_numpy_and_torch():
    ids = np.array([[5, 2, 0], [1, 0, 0]])
    expect = np.array([[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(padding_mask(ids), expect)
    np.testing.assert_array_equal(padding_mask(torch.from_numpy(ids)).numpy(), expect)
    feats = np.zeros((2, 3, 4), np.float32)
    feats[0, :2] = 1.0
    feats[1, 0, 3] = -0.5                      # one non-zero number makes a row real
    np.testing.assert_array_equal(padding_mask(feats), expect)
    np.testing.assert_array_equal(padding_mask(torch.from_numpy(feats)).numpy(), expect)


# ----------------------------------------------------------------------------- folders

def _h5(path: Path, x: np.ndarray) -> np.ndarray:
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=x)
    return x


def _captions(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


WORDS = ["coat", "bag", "sandal", "shirt"]


def write_video_text(folder: Path, sizes=(("train", 8), ("val", 3), ("test", 5)),
                     labels: bool = True) -> dict:
    """A video-text folder: per role HDF5 videos (n, T, D) and captions naming the labels."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for role, n in sizes:
        x = _h5(folder / f"{role}_feats.h5", rng.normal(size=(n, T, D)).astype(np.float32))
        rows = []
        for i in range(n):
            ys = sorted({i % 4, (i + 1) % 4}) if i % 2 else [i % 4]
            text = [f"a {WORDS[ys[0]]}"] + ([f"then a {WORDS[ys[1]]} again"] if i % 2 else [])
            row = {"id": f"{role}-{i}", "text": text if len(text) > 1 else text[0]}
            if labels:
                row["labels"] = ys
            rows.append(row)
        _captions(folder / f"{role}_captions.jsonl", rows)
        out[role] = (x, rows)
    return out


def test_video_text_folder_round_trip(tmp_path):
    fx = write_video_text(tmp_path / "vt")
    (tmp_path / "vt" / "val_captions.jsonl").write_text(
        (tmp_path / "vt" / "val_captions.jsonl").read_text().replace('"a bag"', '"a zebra"'))
    ds = load_dataset(tmp_path / "vt")
    assert list(ds.modalities) == ["visual", "text"] and ds.text == ["text"]
    assert ds.length == T and not ds.images
    voc = ds.vocabulary("text")
    # from the training captions only: "zebra" (a val word) is not in it
    assert "zebra" not in voc.tokens and set(voc.tokens) >= {"a", "coat", "then", "again"}
    assert ds.modalities["text"] == len(voc)
    longest = max(len(tokenize(" ".join(r["text"] if isinstance(r["text"], list) else
                                        [r["text"]]))) for _, rows in fx.values() for r in rows)
    assert ds.lengths == {"visual": T, "text": longest}     # text's own length, 5 != T
    test = ds.split("test")
    x, rows = fx["test"]
    assert test.ids == [r["id"] for r in rows]
    expect = np.zeros((len(rows), 4), bool)
    for i, r in enumerate(rows):
        expect[i, r["labels"]] = True
    np.testing.assert_array_equal(test.labels, expect)
    vis, ids = test.take([3, 0, 3])
    np.testing.assert_allclose(vis, x[[3, 0, 3]])
    assert ids.dtype == np.int64 and ids.shape == (3, longest)
    assert voc.decode(ids[0]) == "a coat then a shirt again"   # row 3: labels 0 and 3
    assert voc.decode(ids[1]) == "a coat"
    val_ids = ds.split("val").take([1])[1][0]
    assert voc.decode(val_ids) == "a <unk> then a sandal again"
    assert ds.info["text"]["source"] == "captions" and ds.info["text"]["vocabulary"] == len(voc)
    # a held-out part of training keeps the text rows with their videos
    sub = ds.split("train").subset([5, 1])
    assert sub.ids == ["train-1", "train-5"]
    np.testing.assert_array_equal(sub.take([1])[1], ds.split("train").take([5])[1])
    assert list(ds.split("train").moments()) == ["visual"]   # token ids have no moments


def test_carved_validation_keeps_each_caption_with_its_video(tmp_path):
    fx = write_video_text(tmp_path / "vt", sizes=(("train", 6), ("test", 10)))
    ds = load_dataset(tmp_path / "vt")
    x, rows = fx["test"]
    by_id = {r["id"]: (x[i], r) for i, r in enumerate(rows)}
    voc = ds.vocabulary("text")
    seen = []
    for name in ("val", "test"):
        split = ds.split(name)
        vis, ids = split.take(np.arange(len(split)))
        for j, item in enumerate(split.ids):
            frames, row = by_id[item]
            np.testing.assert_allclose(vis[j], frames)
            text = row["text"] if isinstance(row["text"], list) else [row["text"]]
            assert voc.decode(ids[j]) == " ".join(text)
            seen.append(item)
    assert sorted(seen) == sorted(by_id)             # carved val + rest = the test file


def test_text_cannot_be_joined_with_frames_but_can_be_selected(tmp_path):
    write_video_text(tmp_path / "vt")
    ds = load_dataset(tmp_path / "vt")
    assert "'text' is text" in _message(ds.select, "visual+text")
    assert list(ds.select("text").modalities) == ["text"] and ds.select("text").text == ["text"]
    assert load_dataset(f"{tmp_path / 'vt'}:visual").text == []


def test_labels_from_a_mat_file_and_num_class(tmp_path):
    write_video_text(tmp_path / "vt", labels=False)
    for role, n in (("train", 8), ("val", 3), ("test", 5)):
        y = np.zeros((n, 6), np.uint8)
        y[:, 5] = 1
        scipy.io.savemat(tmp_path / "vt" / f"{role}_labels.mat", {"labels": y})
    ds = load_dataset(tmp_path / "vt")
    assert ds.num_class == 6 and ds.split("test").labels[:, 5].all()
    write_video_text(tmp_path / "vt2")
    (tmp_path / "vt2" / "avsearch.json").write_text(json.dumps({"num_class": 9}))
    assert load_dataset(tmp_path / "vt2").num_class == 9


def test_precomputed_text_features(tmp_path):
    write_video_text(tmp_path / "vt")
    rng = np.random.default_rng(3)
    feats = {}
    for role, n in (("train", 8), ("val", 3), ("test", 5)):
        f = rng.normal(size=(n, 4, 7)).astype(np.float32)
        for i in range(n):
            f[i, 1 + i % 3:] = 0.0                # captions of 1-3 real tokens, zero-padded
        feats[role] = _h5(tmp_path / "vt" / f"{role}_text_feats.h5", f)
    ds = load_dataset(tmp_path / "vt")
    assert ds.modalities == {"visual": D, "text": 7} and ds.vocabulary("text") is None
    assert ds.lengths == {"visual": T, "text": 4}
    vis, text = ds.split("test").take([4, 1])
    assert text.dtype == np.float32
    np.testing.assert_array_equal(text, feats["test"][[4, 1]])
    # moments over the real tokens only: the padding's zeros do not count
    real = np.concatenate([f[i, :1 + i % 3] for f in (feats["train"],) for i in range(8)])
    mean, std = ds.split("train").moments()["text"]
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, real.std(0), rtol=1e-5, atol=1e-6)
    assert ds.info["text"] == {"source": "features", "tokens": 4, "width": 7}
    # streaming reads the same rows
    import os
    os.environ[INMEMORY_ENV] = "0"
    try:
        stream = load_dataset(tmp_path / "vt")
    finally:
        del os.environ[INMEMORY_ENV]
    assert stream.info["streaming"]
    np.testing.assert_array_equal(stream.split("test").take([4, 1])[1], text)
    np.testing.assert_array_equal(stream.split("train").subset([2, 6]).take([0, 1])[1],
                                  feats["train"][[2, 6]])


# ----------------------------------------------------------------------------- bad input

def _edit_line(path: Path, line: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit, needle", [
    (lambda d: _edit_line(d / "val_captions.jsonl", 2, "{not json"),
     "val_captions.jsonl: line 2: not valid JSON"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 2, '["a list"]'),
     "val_captions.jsonl: line 2: expected a JSON object"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 2, '{"id": "val-0", "text": "x", '
                                                       '"labels": [1]}'),
     "val_captions.jsonl: line 2: id 'val-0' again (first on line 1)"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 3, '{"id": "v", "text": "  ...  ", '
                                                       '"labels": [1]}'),
     "val_captions.jsonl: line 3: item 'v' has no words in its text"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 3, '{"id": "v", "text": []}'),
     "val_captions.jsonl: line 3: 'text' must be a string or a non-empty list of strings"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 3, '{"id": "v", "text": "a coat"}'),
     "val_captions.jsonl: line 3: 'labels' must be on every line or on none"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 1, '{"id": "v", "text": "a", "labels": [-1]}'),
     "val_captions.jsonl: line 1: 'labels' must be a list of class indices >= 0"),
    (lambda d: _edit_line(d / "val_captions.jsonl", 1, '{"id": "v", "txt": "a", "labels": [0]}'),
     "val_captions.jsonl: line 1: unknown field(s) txt"),
    (lambda d: (d / "val_captions.jsonl").write_text(
        "\n".join((d / "val_captions.jsonl").read_text().splitlines()[:2]) + "\n"),
     "val_captions.jsonl: 2 captions but"),
    (lambda d: (d / "test_captions.jsonl").unlink(),
     "no captions for the test items but train_captions.jsonl has them"),
    (lambda d: (d / "val_captions.jsonl").write_bytes(b"\xff\xfe{"),
     "val_captions.jsonl: cannot read as UTF-8 text"),
    (lambda d: scipy.io.savemat(d / "val_labels.mat", {"labels": np.eye(3, 4, dtype=np.uint8)}),
     "val_captions.jsonl: labels in the captions and in val_labels.mat"),
    (lambda d: (d / "avsearch.json").write_text('{"num_class": 2}'),
     "has label 2, outside the 2 classes"),
    (lambda d: (d / "avsearch.json").write_text('{"text": {"max_tokens": 0}}'),
     "text.max_tokens must be a positive integer"),
])
def test_bad_captions_are_named(tmp_path, edit, needle):
    write_video_text(tmp_path / "vt")
    edit(tmp_path / "vt")
    assert needle in _message(load_dataset, tmp_path / "vt")


@pytest.mark.parametrize("shape, zero_item, needle", [
    ((8, 4, 7), 6, "train_text_feats.h5: item 6 has no text (every row is zero"),
    ((8, 7), None, "expected (items, tokens, width) text features"),
    ((7, 4, 7), None, "train_text_feats.h5: 7 texts but"),
])
def test_bad_text_features_are_named(tmp_path, shape, zero_item, needle):
    write_video_text(tmp_path / "vt")
    rng = np.random.default_rng(0)
    for role, n in (("val", 3), ("test", 5)):
        _h5(tmp_path / "vt" / f"{role}_text_feats.h5",
            rng.normal(size=(n, 4, 7)).astype(np.float32))
    x = rng.normal(size=shape).astype(np.float32)
    if zero_item is not None:
        x[zero_item] = 0.0
    _h5(tmp_path / "vt" / "train_text_feats.h5", x)
    assert needle in _message(load_dataset, tmp_path / "vt")


def test_a_space_without_text_inputs_refuses_text_and_says_what_to_keep(tmp_path):
    write_video_text(tmp_path / "vt")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", "run", "--space", "av_nas",
                           "--data", str(tmp_path / "vt"), "--budget", "smoke", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "has text in text" in lines[0] and f"{tmp_path / 'vt'}:visual" in lines[0]
    assert not out.exists()


def test_bad_captions_exit_2_from_the_command_line_and_write_nothing(tmp_path):
    write_video_text(tmp_path / "vt")
    _edit_line(tmp_path / "vt" / "test_captions.jsonl", 4, "{oops")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", "run", "--data",
                           str(tmp_path / "vt"), "--budget", "smoke", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "test_captions.jsonl: line 4: not valid JSON" in lines[0]
    assert not out.exists()


def test_read_captions_joins_several_texts_and_keeps_label_sets(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "text": [" first one ", "", "second"], "labels": [3, 1, 3]}\n\n'
                 '{"id": "b", "text": "only", "labels": []}\n')
    c = read_captions(p)
    assert c.ids == ["a", "b"] and c.texts == ["first one second", "only"]
    assert c.labels == [[1, 3], []]
    np.testing.assert_array_equal(c.matrix(4), [[False, True, False, True], [False] * 4])
    assert isinstance(Text(np.zeros((2, 3), np.int32), Vocabulary.build(["x"])).width, int)
