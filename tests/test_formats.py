"""AV-NAS and SSVH loaders: round trips, streaming, and every load-time validation error."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from avsearch.data import load_dataset
from avsearch.data.avnas import load_avnas
from avsearch.data.h5 import INMEMORY_ENV, H5GroupRows, H5Rows
from avsearch.data.ssvh import load_ssvh
from avsearch.errors import AvsearchInputError

T, DV, DA, C = 3, 4, 5, 4


# ----------------------------------------------------------------------------- AV-NAS fixture

def write_avnas(root: Path, *, retrieval: bool = True, t_audio: int = T) -> dict:
    """A tiny AV-NAS data set in root/ (config in root/cfg/, data in root/data/)."""
    rng = np.random.default_rng(1)
    (root / "cfg").mkdir(parents=True)
    data = root / "data"
    data.mkdir()
    splits = {"train": [f"tr{i}" for i in range(6)], "val": ["va0", "va1"],
              "test": ["te0", "te1", "te2"], "retrieval": ["tr0", "tr1", "te9"]}
    ids = sorted({v for s in splits.values() for v in s})
    vis = {v: rng.normal(size=(T, DV)).astype(np.float32) for v in ids}
    aud = {v: rng.normal(size=(t_audio, DA)).astype(np.float32) for v in ids}
    for name, feats in (("visual.h5", vis), ("audio.h5", aud)):
        with h5py.File(data / name, "w") as f:
            for v, x in feats.items():
                f.create_group(v).create_dataset("vectors", data=x)
    labels = {v: [i % C] for i, v in enumerate(ids)}
    labels["tr1"] = [0, 2]                                   # multi-label video
    for split, vids in splits.items():
        if split == "retrieval" and not retrieval:
            continue
        lines = [f"{v}," + ",".join(map(str, labels[v])) for v in vids]
        lines.insert(1, "")                                  # blank lines are ignored
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n\n")
    cfg = {"dataset": "tiny", "Image": "../data/visual.h5", "Audio": "../data/audio.h5",
           "num_class": C, "train_list": "../data/train.txt", "val_list": "../data/val.txt",
           "test_list": "../data/test.txt"}
    if retrieval:
        cfg["retrieval_list"] = "../data/retrieval.txt"
    (root / "cfg" / "avnas.json").write_text(json.dumps(cfg))
    return {"config": root / "cfg" / "avnas.json", "data": data, "splits": splits,
            "visual": vis, "audio": aud, "labels": labels}


@pytest.fixture
def avnas(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")          # relative paths resolve against the config
    monkeypatch.delenv(INMEMORY_ENV, raising=False)
    return write_avnas(tmp_path)


def test_avnas_round_trip(avnas):
    ds = load_dataset(avnas["config"])
    assert ds.name == "tiny" and list(ds.modalities.items()) == [("visual", DV), ("audio", DA)]
    assert ds.length == T and ds.num_class == C and list(ds.splits) == ["train", "val", "test",
                                                                         "retrieval"]
    assert not ds.info["streaming"]
    for name, ids in avnas["splits"].items():
        split = ds.split(name)
        assert split.ids == ids and len(split) == len(ids)
        want = np.zeros((len(ids), C), bool)
        for i, v in enumerate(ids):
            want[i, avnas["labels"][v]] = True
        np.testing.assert_array_equal(split.labels, want)
        assert all(isinstance(f, np.ndarray) for f in split.features.values())
        vis, aud = split.take(np.arange(len(ids))[::-1])
        np.testing.assert_array_equal(vis, np.stack([avnas["visual"][v] for v in ids[::-1]]))
        np.testing.assert_array_equal(aud, np.stack([avnas["audio"][v] for v in ids[::-1]]))
    assert ds.split("train").labels[1].tolist() == [True, False, True, False]   # tr1: 0 and 2


def test_selecting_and_joining_modalities(avnas):
    """``--data CONFIG:visual+audio`` is one modality, the two streams side by side per frame;
    ``:audio,visual`` keeps both in that order; ``:audio`` keeps one."""
    joined = load_dataset(f"{avnas['config']}:visual+audio")
    assert joined.modalities == {"visual_audio": DV + DA}
    rows = np.array([2, 0, 2])
    ids = [joined.split("train").ids[i] for i in rows]
    want = np.stack([np.concatenate([avnas["visual"][v], avnas["audio"][v]], -1) for v in ids])
    (got,) = joined.split("train").take(rows)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(joined.split("test").labels, load_dataset(avnas["config"]).split("test").labels)
    assert list(load_dataset(f"{avnas['config']}:audio,visual").modalities) == ["audio", "visual"]
    assert load_dataset(f"{avnas['config']}:audio").modalities == {"audio": DA}


@pytest.mark.parametrize("spec, needle", [
    (":depth", "no 'depth'"), (":visual+visual", "name one twice"), (":", "cannot select"),
    (":visual+", "cannot select"),
])
def test_selecting_unknown_modalities_names_them(avnas, spec, needle):
    with pytest.raises(AvsearchInputError, match=needle):
        load_dataset(f"{avnas['config']}{spec}")


def test_avnas_without_retrieval_list_uses_train(tmp_path):
    fx = write_avnas(tmp_path, retrieval=False)
    ds = load_avnas(fx["config"])
    assert ds.split("retrieval") is ds.split("train")
    assert ds.info["retrieval"] == "train"


def test_avnas_streaming_matches_memory(avnas, monkeypatch):
    mem = load_avnas(avnas["config"])
    monkeypatch.setenv(INMEMORY_ENV, "0")
    stream = load_avnas(avnas["config"])
    assert stream.info["streaming"] and not mem.info["streaming"]
    idx = np.array([4, 0, 4, 2, 5])
    for name in ("train", "retrieval"):
        feats = stream.split(name).features
        assert all(isinstance(f, H5GroupRows) for f in feats.values())
        n = len(stream.split(name))
        i = idx[idx < n]
        for a, b in zip(stream.split(name).take(i), mem.split(name).take(i)):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b)
    # picklable (DataLoader workers), and indexing like numpy
    f = pickle.loads(pickle.dumps(stream.split("train").features["audio"]))
    np.testing.assert_array_equal(f[1], mem.split("train").features["audio"][1])
    np.testing.assert_array_equal(f[-2:], mem.split("train").features["audio"][-2:])


def test_h5_group_rows_keep_a_bounded_number_of_open_videos(tmp_path):
    """Streaming reads every video of a file; at most max_open dataset handles stay open
    (least recently read closed first), and the rows read are right whatever was evicted."""
    x = np.random.default_rng(0).normal(size=(50, T, DV)).astype(np.float32)
    ids = [f"v{i}" for i in range(50)]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for v, row in zip(ids, x):
            f.create_group(v).create_dataset("vectors", data=row)
    rows = H5GroupRows(tmp_path / "f.h5", ids, (T, DV), max_open=8)
    open_datasets = lambda: h5py.h5f.get_obj_count(rows._handles()[0].id, h5py.h5f.OBJ_DATASET)  # noqa: E731
    for start in range(0, 50, 7):
        idx = np.arange(start, min(start + 7, 50))
        np.testing.assert_array_equal(rows[idx], x[idx])
        assert len(rows._cache) <= 8 and open_datasets() <= 8
    np.testing.assert_array_equal(rows[[49, 0, 3]], x[[49, 0, 3]])   # re-opened after eviction
    assert list(rows._cache)[-3:] == [0, 3, 49]                      # most recent last
    assert open_datasets() == len(rows._cache) == 8
    with pytest.raises(ValueError, match="max_open"):
        H5GroupRows(tmp_path / "f.h5", ids, (T, DV), max_open=0)


# ----------------------------------------------------------------------------- AV-NAS errors

def _message(fn, *args) -> str:
    with pytest.raises(AvsearchInputError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _rewrite_list(fx, split: str, text: str) -> Path:
    path = fx["data"] / f"{split}.txt"
    path.write_text(text)
    return path


def _edit_h5(path: Path, fn) -> None:
    with h5py.File(path, "a") as f:
        fn(f)


def test_avnas_missing_files(avnas):
    assert "nope.json: no such file" in _message(load_avnas, avnas["config"].with_name("nope.json"))
    (avnas["data"] / "audio.h5").unlink()
    assert "audio.h5: no such file" in _message(load_avnas, avnas["config"])


def test_avnas_missing_list_file(avnas):
    (avnas["data"] / "test.txt").unlink()
    assert "test.txt: no such file" in _message(load_avnas, avnas["config"])


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_avnas_damaged_hdf5(avnas, damage):
    path = avnas["data"] / "visual.h5"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x00junk" * 500)
    msg = _message(load_avnas, avnas["config"])
    assert "visual.h5" in msg and "HDF5" in msg


def test_avnas_missing_video(avnas):
    _edit_h5(avnas["data"] / "audio.h5", lambda f: f.__delitem__("te1"))
    msg = _message(load_avnas, avnas["config"])
    assert "audio.h5" in msg and "'te1'" in msg and "test.txt:3" in msg   # line 2 is blank


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_avnas_nonfinite(avnas, monkeypatch, streaming, bad):
    if streaming:
        monkeypatch.setenv(INMEMORY_ENV, "0")

    def poison(f):
        x = f["va1/vectors"][()]
        x[1, 2] = bad
        f["va1/vectors"][...] = x
    _edit_h5(avnas["data"] / "visual.h5", poison)
    msg = _message(load_avnas, avnas["config"])
    assert "visual.h5" in msg and "'va1'" in msg and "NaN or infinite" in msg


def test_avnas_time_steps_differ_between_modalities(tmp_path):
    fx = write_avnas(tmp_path, t_audio=T + 2)
    msg = _message(load_avnas, fx["config"])
    assert "visual.h5 has 3" in msg and "audio.h5 has 5" in msg


def test_avnas_wrong_rank(avnas):
    def flatten(f):
        del f["tr3/vectors"]
        f["tr3"].create_dataset("vectors", data=np.zeros(T * DV, np.float32))
    _edit_h5(avnas["data"] / "visual.h5", flatten)
    msg = _message(load_avnas, avnas["config"])
    assert "visual.h5" in msg and "'tr3'" in msg and "rank 2" in msg


def test_avnas_widths_differ(avnas):
    def widen(f):
        del f["te2/vectors"]
        f["te2"].create_dataset("vectors", data=np.zeros((T, DA + 1), np.float32))
    _edit_h5(avnas["data"] / "audio.h5", widen)
    msg = _message(load_avnas, avnas["config"])
    assert "audio.h5" in msg and "'te2'" in msg
    assert f"width {DA + 1}" in msg and f"width {DA}" in msg


def test_avnas_time_steps_differ_within_modality(avnas):
    def shorten(f):
        del f["te2/vectors"]
        f["te2"].create_dataset("vectors", data=np.zeros((T - 1, DA), np.float32))
    _edit_h5(avnas["data"] / "audio.h5", shorten)
    msg = _message(load_avnas, avnas["config"])
    assert "audio.h5" in msg and "'te2'" in msg and "time steps" in msg


@pytest.mark.parametrize("text, needle", [
    ("va0,1\n\nva1,4\n", "val.txt:3: label 4 outside [0, 4)"),
    ("va0,1\nva1,-1\n", "val.txt:2: label -1 outside"),
    ("va0,1\nva1\n", "val.txt:2: malformed line"),
    ("va0,1\n,2\n", "val.txt:2: malformed line"),
    ("va0,1\nva1,x\n", "val.txt:2: label 'x' is not an integer"),
    ("va0,1\nva0,2\n", "val.txt:2: video 'va0' already listed on line 1"),
    ("\n  \n", "val.txt: no videos (empty split)"),
])
def test_avnas_bad_list(avnas, text, needle):
    _rewrite_list(avnas, "val", text)
    assert needle in _message(load_avnas, avnas["config"])


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.pop("val_list"), "no 'val_list'"),
    (lambda c: c.pop("test_list"), "missing field 'test_list'"),
    (lambda c: c.update(num_class="4"), "'num_class' must be a positive integer"),
    (lambda c: c.update(Image=3), "field 'Image' must be a file path"),
])
def test_avnas_bad_config(avnas, edit, needle):
    cfg = json.loads(avnas["config"].read_text())
    edit(cfg)
    avnas["config"].write_text(json.dumps(cfg))
    msg = _message(load_avnas, avnas["config"])
    assert "avnas.json" in msg and needle in msg


def test_avnas_invalid_json(avnas):
    avnas["config"].write_text('{"num_class": 4,')
    assert "avnas.json: not valid JSON" in _message(load_avnas, avnas["config"])


def test_failed_load_writes_nothing(avnas):
    before = sorted(p for p in avnas["config"].parents[1].rglob("*"))
    _rewrite_list(avnas, "test", "te0,9\n")
    _message(load_dataset, avnas["config"])
    assert sorted(p for p in avnas["config"].parents[1].rglob("*")) == before


# ----------------------------------------------------------------------------- SSVH fixtures

def _feats(path: Path, n: int, seed: int, t: int = T, d: int = DV,
           key: str = "feats") -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, t, d)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=x)
    return x


def _labels(path: Path, n: int, seed: int, key: str = "labels", c: int = C) -> np.ndarray:
    y = np.zeros((n, c), np.uint8)
    y[np.arange(n), np.random.default_rng(seed).integers(0, c, n)] = 1
    scipy.io.savemat(path, {key: y})
    return y.astype(bool)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(INMEMORY_ENV, raising=False)


def write_activitynet(folder: Path) -> dict:
    """ActivityNet as ConMH/S5VH ship it: unlabelled train, query + database with their labels."""
    folder.mkdir(exist_ok=True)
    fx = {"train": _feats(folder / "train_feats.h5", 7, 0),
          "db": _feats(folder / "test_feats.h5", 9, 1),
          "db_y": _labels(folder / "re_label.mat", 9, 1, "re_label"),
          "q": _feats(folder / "query_feats.h5", 10, 2),
          "q_y": _labels(folder / "q_label.mat", 10, 2, "q_label")}
    _feats(folder / "final_train_latent_feats.h5", 3, 5)     # S5VH extras are ignored
    (folder / "hash_center_64.h5").write_bytes(b"")
    return fx


def test_ssvh_activitynet_layout(tmp_path):
    fx = write_activitynet(tmp_path / "activitynet")
    ds = load_dataset(tmp_path / "activitynet")
    assert ds.name == "activitynet" and ds.modalities == {"visual": DV} and ds.length == T
    assert ds.num_class == C and not ds.info["streaming"]
    train, val, test, db = (ds.split(s) for s in ("train", "val", "test", "retrieval"))
    assert train.ids == [f"train_feats.h5:{i}" for i in range(7)]
    assert train.labels.shape == (7, C) and not train.labels.any()          # self-supervised
    np.testing.assert_array_equal(train.take(np.arange(7))[0], fx["train"])
    assert db.ids == [f"test_feats.h5:{i}" for i in range(9)]
    np.testing.assert_array_equal(db.labels, fx["db_y"])
    np.testing.assert_array_equal(db.take([8, 0])[0], fx["db"][[8, 0]])
    # validation carved out of the queries: 20% of 10, disjoint from test, together all of them
    assert len(val) == 2 and len(test) == 8
    rows = [int(i.split(":")[1]) for i in val.ids + test.ids]
    assert sorted(rows) == list(range(10))
    for split in (val, test):
        r = [int(i.split(":")[1]) for i in split.ids]
        assert r == sorted(r)
        np.testing.assert_array_equal(split.labels, fx["q_y"][r])
        np.testing.assert_array_equal(split.take(np.arange(len(r)))[0], fx["q"][r])
    assert ds.info["val"] == {"from": "query queries", "fraction": 0.2, "seed": 0, "count": 2}
    # deterministic, and the seed matters
    assert load_ssvh(tmp_path / "activitynet").split("val").ids == val.ids
    (tmp_path / "activitynet" / "avsearch.json").write_text('{"val_seed": 3, "val_fraction": 0.5}')
    other = load_ssvh(tmp_path / "activitynet")
    assert len(other.split("val")) == 5 and other.split("val").ids != val.ids


def test_ssvh_fcvid_layout(tmp_path):
    """FCVID: no query file, unlabelled train -> every test video is a query and in the database."""
    folder = tmp_path / "fcv"
    folder.mkdir()
    _feats(folder / "fcv_train_feats.h5", 6, 0)
    x = _feats(folder / "fcv_test_feats.h5", 10, 1)
    y = _labels(folder / "fcv_test_labels.mat", 10, 1)
    ds = load_ssvh(folder)
    db, val, test = ds.split("retrieval"), ds.split("val"), ds.split("test")
    assert db.ids == [f"fcv_test_feats.h5:{i}" for i in range(10)]
    assert set(val.ids) | set(test.ids) == set(db.ids) and not set(val.ids) & set(test.ids)
    np.testing.assert_array_equal(db.labels, y)
    np.testing.assert_array_equal(db.take(np.arange(10))[0], x)
    assert ds.info["protocol"]["retrieval"] == "test"


class _MeanCodes(torch.nn.Module):
    """A fixed encoder for metric tests: a random projection of the mean frames."""

    def __init__(self, width: int, bits: int = 8):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(width, bits, generator=torch.Generator().manual_seed(0)))

    def forward(self, *xs):
        return torch.tanh(torch.cat([x.mean(1) for x in xs], -1) @ self.w)


def _val_metrics(ds):
    from avsearch.inference import evaluate
    return evaluate(_MeanCodes(sum(ds.modalities.values())), ds, "val", torch.device("cpu"))


def test_ssvh_validation_never_ranks_against_test_videos(tmp_path):
    """FCVID (unlabelled train, the test file is queries and database): the val queries rank
    against themselves, so their metrics do not move when the test videos' labels do."""
    folder = tmp_path / "fcv"
    folder.mkdir()
    _feats(folder / "fcv_train_feats.h5", 6, 0)
    _feats(folder / "fcv_test_feats.h5", 10, 1)
    y = _labels(folder / "fcv_test_labels.mat", 10, 1)
    ds = load_ssvh(folder)
    val, test = ds.split("val"), ds.split("test")
    assert ds.database("val").ids == val.ids and not set(ds.database("val").ids) & set(test.ids)
    assert ds.database("test") is ds.split("retrieval")                  # test keeps its protocol
    assert ds.info["protocol"]["val_database"] == "val queries themselves"
    before = _val_metrics(ds)
    assert before["n_database"] == len(val)
    test_rows = [int(i.split(":")[1]) for i in test.ids]
    y[test_rows] = np.roll(y[test_rows], 1, axis=1)                      # other test labels
    scipy.io.savemat(folder / "fcv_test_labels.mat", {"labels": y.astype(np.uint8)})
    assert _val_metrics(load_ssvh(folder)) == before
    # ActivityNet: the database is the test file; without training labels val ranks against itself
    an = load_ssvh(write_activitynet(tmp_path / "an") and tmp_path / "an")
    assert an.database("val") is an.split("val")


def test_ssvh_validation_ranks_against_labelled_training_videos(tmp_path):
    """With training labels and the test file as database ("database": "test"), val queries
    search the training videos; with the training file as database nothing changes."""
    folder = tmp_path / "ucf"
    folder.mkdir()
    _feats(folder / "train_feats.h5", 8, 0)
    _labels(folder / "train_labels.mat", 8, 0)
    _feats(folder / "test_feats.h5", 5, 1)
    _labels(folder / "test_labels.mat", 5, 1)
    ds = load_ssvh(folder)
    assert ds.database("val") is ds.split("retrieval") is ds.split("train")
    (folder / "avsearch.json").write_text('{"database": "test"}')
    ds = load_ssvh(folder)
    assert ds.split("retrieval").ids[0].startswith("test_feats.h5")
    assert ds.database("val") is ds.split("train")
    assert ds.info["protocol"]["val_database"] == "train"


def test_avnas_validation_database_drops_test_videos(avnas):
    """An AV-NAS retrieval list that holds test videos: val ranks against the rest of it."""
    data = avnas["data"]
    (data / "retrieval.txt").write_text("tr0,0\nte1,1\ntr1,0,2\nte2,2\n")
    ds = load_avnas(avnas["config"])
    assert ds.split("retrieval").ids == ["tr0", "te1", "tr1", "te2"]
    db = ds.database("val")
    assert db.ids == ["tr0", "tr1"]
    np.testing.assert_array_equal(db.take([0, 1])[0], np.stack([avnas["visual"]["tr0"],
                                                                 avnas["visual"]["tr1"]]))
    assert _val_metrics(ds)["n_database"] == 2
    assert load_avnas(write_avnas(data.parent / "clean")["config"]).database("val").ids == \
        avnas["splits"]["retrieval"]


def test_ssvh_ucf_layout(tmp_path):
    """UCF101/HMDB51: labelled train is the database; test videos are the queries."""
    folder = tmp_path / "ucf"
    folder.mkdir()
    _feats(folder / "ucf_train_feats.h5", 8, 0)
    ytr = _labels(folder / "ucf_train_labels.mat", 8, 0)
    _feats(folder / "ucf_test_feats.h5", 5, 1)
    _labels(folder / "ucf_test_labels.mat", 5, 1)
    ds = load_ssvh(folder)
    assert ds.split("retrieval") is ds.split("train")
    np.testing.assert_array_equal(ds.split("train").labels, ytr)
    assert len(ds.split("val")) + len(ds.split("test")) == 5
    assert all(i.startswith("ucf_test_feats.h5:") for i in ds.split("test").ids)


def test_ssvh_sharded_yfcc_layout(tmp_path, monkeypatch):
    folder = tmp_path / "yfcc"
    folder.mkdir()
    parts = [_feats(folder / f"yfcc_train_feats_{k}.h5", n, k)
             for k, n in ((2, 3), (1, 4), (10, 2))]
    dbs = [_feats(folder / f"yfcc_test_feats_{k}.h5", 4, 10 + k) for k in (1, 2)]
    ys = [_labels(folder / f"yfcc_test_labels_{k}.mat", 4, k) for k in (1, 2)]
    _feats(folder / "query1000_feats.h5", 6, 20)
    _labels(folder / "query1000_labels.mat", 6, 20)
    for streaming in ("", "0"):
        monkeypatch.setenv(INMEMORY_ENV, streaming)
        ds = load_ssvh(folder)
        train = ds.split("train")
        want = np.concatenate([parts[1], parts[0], parts[2]])         # shards 1, 2, 10
        np.testing.assert_array_equal(train.take(np.arange(9))[0], want)
        assert train.ids[4] == "yfcc_train_feats_2.h5:0"
        db = ds.split("retrieval")
        np.testing.assert_array_equal(db.take([7, 1, 4])[0], np.concatenate(dbs)[[7, 1, 4]])
        np.testing.assert_array_equal(db.labels, np.concatenate(ys))
        assert ds.split("test").ids[0].startswith("query1000_feats.h5:")


def test_ssvh_val_files_and_explicit_config(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    _feats(folder / "a.h5", 5, 0, key="x")
    _feats(folder / "b.h5", 6, 1, key="x")
    yb = _labels(folder / "b.mat", 6, 1, key="lab")
    _feats(folder / "c.h5", 3, 2, key="x")
    yc = _labels(folder / "c.mat", 3, 2, key="lab")
    _feats(folder / "train_feats.h5", 2, 3)      # ignored: the config names the files
    (folder / "avsearch.json").write_text(json.dumps({
        "name": "mine", "feats_key": "x", "train": {"feats": "a.h5"},
        "test": {"feats": ["b.h5"], "labels": "b.mat", "label_key": "lab"},
        "val": {"feats": "c.h5", "labels": "c.mat", "label_key": "lab"}}))
    ds = load_ssvh(folder)
    assert ds.name == "mine" and len(ds.split("train")) == 5
    assert len(ds.split("test")) == 6 and ds.split("retrieval").ids == ds.split("test").ids
    np.testing.assert_array_equal(ds.split("val").labels, yc)
    np.testing.assert_array_equal(ds.split("test").labels, yb)
    assert ds.info["val"] == {"from": "val files"}


def test_ssvh_streaming_matches_memory(tmp_path, monkeypatch):
    write_activitynet(tmp_path / "act")
    mem = load_ssvh(tmp_path / "act")
    monkeypatch.setenv(INMEMORY_ENV, "0")
    stream = load_ssvh(tmp_path / "act")
    assert stream.info["streaming"]
    for name in ("train", "val", "test", "retrieval"):
        f = stream.split(name).features["visual"]
        assert isinstance(f, H5Rows) and f.shape == mem.split(name).features["visual"].shape
        n = len(mem.split(name))
        idx = np.array([n - 1, 0, n - 1, n // 2])
        np.testing.assert_array_equal(stream.split(name).take(idx)[0], mem.split(name).take(idx)[0])
        np.testing.assert_array_equal(np.asarray(f), mem.split(name).features["visual"])
    g = pickle.loads(pickle.dumps(stream.split("test").features["visual"]))
    np.testing.assert_array_equal(g[[3, 1]], mem.split("test").features["visual"][[3, 1]])


def test_inmemory_threshold_env(tmp_path, monkeypatch):
    write_activitynet(tmp_path / "act")
    monkeypatch.setenv(INMEMORY_ENV, "1")                  # 1 MB is plenty for these bytes
    assert not load_ssvh(tmp_path / "act").info["streaming"]
    monkeypatch.setenv(INMEMORY_ENV, "lots")
    assert f"{INMEMORY_ENV}='lots'" in _message(load_ssvh, tmp_path / "act")


# ----------------------------------------------------------------------------- SSVH errors

def test_ssvh_missing_folder_and_files(tmp_path):
    assert "no such folder" in _message(load_ssvh, tmp_path / "nothing")
    folder = tmp_path / "act"
    write_activitynet(folder)
    (folder / "train_feats.h5").unlink()
    assert "no train features" in _message(load_ssvh, folder)


def test_ssvh_missing_labels(tmp_path):
    folder = tmp_path / "act"
    write_activitynet(folder)
    (folder / "q_label.mat").unlink()
    msg = _message(load_ssvh, folder)
    assert "query_feats.h5" in msg and "no labels" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_ssvh_damaged_mat(tmp_path, damage):
    folder = tmp_path / "act"
    write_activitynet(folder)
    path = folder / "re_label.mat"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"garbage" * 40)
    msg = _message(load_ssvh, folder)
    assert "re_label.mat" in msg and ".mat" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_ssvh_damaged_hdf5(tmp_path, damage):
    folder = tmp_path / "act"
    write_activitynet(folder)
    path = folder / "query_feats.h5"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"garbage" * 400)
    msg = _message(load_ssvh, folder)
    assert "query_feats.h5" in msg and "HDF5" in msg


@pytest.mark.parametrize("streaming", ["", "0"])
def test_ssvh_nonfinite(tmp_path, monkeypatch, streaming):
    monkeypatch.setenv(INMEMORY_ENV, streaming)
    folder = tmp_path / "act"
    write_activitynet(folder)
    with h5py.File(folder / "test_feats.h5", "a") as f:
        f["feats"][6, 1, 0] = np.nan
    msg = _message(load_ssvh, folder)
    assert "test_feats.h5" in msg and "row 6" in msg and "NaN" in msg


def test_ssvh_time_steps_differ(tmp_path):
    folder = tmp_path / "act"
    write_activitynet(folder)
    _feats(folder / "query_feats.h5", 10, 2, t=T + 1)
    msg = _message(load_ssvh, folder)
    assert "query_feats.h5 has 4 time steps" in msg and "train_feats.h5 has 3" in msg


def test_ssvh_wrong_rank_and_key(tmp_path):
    folder = tmp_path / "act"
    write_activitynet(folder)
    with h5py.File(folder / "test_feats.h5", "w") as f:
        f.create_dataset("feats", data=np.zeros((9, T * DV), np.float32))
    msg = _message(load_ssvh, folder)
    assert "test_feats.h5" in msg and "rank 3" in msg
    with h5py.File(folder / "test_feats.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((9, T, DV), np.float32))
    msg = _message(load_ssvh, folder)
    assert "test_feats.h5: no dataset 'feats' (has: features)" in msg


@pytest.mark.parametrize("bad, needle", [
    (lambda: scipy.io.savemat("re_label.mat", {"re_label": np.eye(8, C)}), "8 label rows but"),
    (lambda: scipy.io.savemat("re_label.mat", {"re_label": 2 * np.eye(9, C)}), "only 0 and 1"),
    (lambda: scipy.io.savemat("re_label.mat", {"re_label": np.eye(9, C + 1)}), "classes but"),
    (lambda: scipy.io.savemat("re_label.mat", {"a": np.eye(9, C), "b": 1}), "no label matrix"),
])
def test_ssvh_bad_labels(tmp_path, monkeypatch, bad, needle):
    folder = tmp_path / "act"
    write_activitynet(folder)
    monkeypatch.chdir(folder)
    bad()
    msg = _message(load_ssvh, folder)
    assert "re_label.mat" in msg and needle in msg


def test_ssvh_ambiguous_and_bad_config(tmp_path):
    folder = tmp_path / "act"
    write_activitynet(folder)
    _feats(folder / "fcv_train_feats.h5", 2, 9)
    assert "several candidate train feats" in _message(load_ssvh, folder)
    (folder / "fcv_train_feats.h5").unlink()
    (folder / "avsearch.json").write_text('{"val_fracton": 0.1}')
    assert "unknown field(s) val_fracton" in _message(load_ssvh, folder)
    (folder / "avsearch.json").write_text('{"val_fraction": 1.5}')
    assert "'val_fraction' must be a number in (0, 1)" in _message(load_ssvh, folder)


# ----------------------------------------------------------------------------- image folders

A = 6          # width of the auxiliary semantics (tags)


def _image_feats(path: Path, n: int, seed: int, d: int = DV) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=x)
    return x


def _tags(n: int, seed: int, a: int = A) -> np.ndarray:
    return (np.random.default_rng(seed + 100).random((n, a)) < 0.4).astype(np.float32)


def write_images(folder: Path) -> dict:
    """A MS-COCO-like image folder (LAGNH's protocol): labelled train images (the database),
    test queries; features (N, D); labels and tags mixing .npy and MATLAB v5 files."""
    folder.mkdir()
    fx = {"train": _image_feats(folder / "coco_train_feats.h5", 12, 0),
          "test": _image_feats(folder / "coco_test_feats.h5", 10, 1)}
    fx["train_y"] = _labels(folder / "coco_train_labels.mat", 12, 0)
    y = np.zeros((10, C), np.uint8)
    y[np.arange(10), np.arange(10) % C] = 1
    y[3, 1] = 1                                                   # multi-label image
    np.save(folder / "coco_test_labels.npy", y)
    fx["test_y"] = y.astype(bool)
    fx["train_t"], fx["test_t"] = _tags(12, 0), _tags(10, 1)
    np.save(folder / "coco_train_tags.npy", fx["train_t"])
    scipy.io.savemat(folder / "coco_test_tags.mat", {"tags": fx["test_t"].astype(np.uint8)})
    return fx


def test_image_folder_round_trip(tmp_path):
    """(N, D) features load as images: length 1, each taken as a sequence of length 1; the
    auxiliary tags follow every split, the carved val/test included, and subsets and
    modality views."""
    fx = write_images(tmp_path / "coco")
    ds = load_dataset(tmp_path / "coco")
    assert ds.images and ds.length == 1 and ds.modalities == {"visual": DV}
    assert ds.num_class == C and ds.aux_width == A
    assert ds.info["items"] == "images" and ds.info["aux_width"] == A
    train, val, test, db = (ds.split(s) for s in ("train", "val", "test", "retrieval"))
    assert db is train and ds.info["protocol"]["retrieval"] == "train"   # UCF-style: train is db
    assert train.ids == [f"coco_train_feats.h5:{i}" for i in range(12)]
    got = train.take([11, 0, 0, 5])
    assert len(got) == 1 and got[0].shape == (4, 1, DV) and got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0][:, 0], fx["train"][[11, 0, 0, 5]])
    np.testing.assert_array_equal(train.labels, fx["train_y"])
    np.testing.assert_array_equal(train.aux, fx["train_t"])
    assert train.aux.dtype == np.float32
    assert len(val) == 2 and len(test) == 8
    for split in (val, test):
        rows = [int(i.split(":")[1]) for i in split.ids]
        np.testing.assert_array_equal(split.take(np.arange(len(rows)))[0][:, 0], fx["test"][rows])
        np.testing.assert_array_equal(split.labels, fx["test_y"][rows])
        np.testing.assert_array_equal(split.aux, fx["test_t"][rows])
    sub = train.subset([7, 2])
    np.testing.assert_array_equal(sub.aux, fx["train_t"][[2, 7]])
    np.testing.assert_array_equal(sub.take([1])[0][0, 0], fx["train"][7])
    np.testing.assert_array_equal(ds.select("visual").split("test").aux, test.aux)
    mean, std = train.moments()["visual"]
    np.testing.assert_allclose(mean, fx["train"].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, fx["train"].std(0), rtol=1e-4, atol=1e-6)


def test_image_folder_without_tags_and_video_folders_have_no_aux(tmp_path):
    fx = write_images(tmp_path / "coco")
    for p in (tmp_path / "coco").glob("*_tags.*"):
        p.unlink()
    ds = load_ssvh(tmp_path / "coco")
    assert ds.aux_width == 0 and all(s.aux is None for s in ds.splits.values())
    np.testing.assert_array_equal(ds.split("train").take([3])[0][0, 0], fx["train"][3])
    act = load_ssvh(write_activitynet(tmp_path / "act") and tmp_path / "act")
    assert not act.images and act.length == T and act.aux_width == 0
    assert act.split("train").take([0])[0].shape == (1, T, DV)


def test_image_folder_streaming_matches_memory(tmp_path, monkeypatch):
    fx = write_images(tmp_path / "coco")
    memory = load_ssvh(tmp_path / "coco")
    monkeypatch.setenv(INMEMORY_ENV, "0")
    streamed = load_ssvh(tmp_path / "coco")
    assert streamed.info["streaming"] and not memory.info["streaming"]
    for name in ("train", "val", "test"):
        a, b = memory.split(name), streamed.split(name)
        rows = np.array([len(a) - 1, 0, 1])
        np.testing.assert_array_equal(a.take(rows)[0], b.take(rows)[0])
        np.testing.assert_array_equal(a.aux, b.aux)
    np.testing.assert_array_equal(streamed.split("train").take([4])[0][0, 0], fx["train"][4])


def test_image_folder_explicit_config_names_tags(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    x = _image_feats(folder / "a.h5", 8, 0)
    _labels(folder / "a.mat", 8, 0)
    t = _tags(8, 0)
    scipy.io.savemat(folder / "det.mat", {"objects": t})
    _image_feats(folder / "b.h5", 5, 1)
    _labels(folder / "b.mat", 5, 1)
    scipy.io.savemat(folder / "det_b.mat", {"objects": _tags(5, 1)})
    (folder / "avsearch.json").write_text(json.dumps({
        "train": {"feats": "a.h5", "labels": "a.mat", "tags": "det.mat", "tag_key": "objects"},
        "test": {"feats": "b.h5", "labels": "b.mat", "tags": "det_b.mat"}}))
    ds = load_ssvh(folder)
    np.testing.assert_array_equal(ds.split("train").aux, t)
    np.testing.assert_array_equal(ds.split("train").take([2])[0][0, 0], x[2])


def _npy_pickled(path: Path) -> None:
    np.save(path, np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)


def _npy_truncated(path: Path) -> None:
    np.save(path, np.zeros((10, C), np.uint8))
    path.write_bytes(path.read_bytes()[:90])


@pytest.mark.parametrize("damage, culprit, needle", [
    (lambda f: (f / "coco_test_tags.mat").unlink(), "coco_test_feats.h5",
     "no auxiliary tags for the test items but coco_train_tags.npy has them"),
    (lambda f: np.save(f / "coco_train_tags.npy", _tags(11, 0)), "coco_train_tags.npy",
     "11 tag rows but"),
    (lambda f: np.save(f / "coco_train_tags.npy", _tags(12, 0, A + 1)), "coco_test_tags.mat",
     "has 6 tags but"),
    (lambda f: np.save(f / "coco_train_tags.npy", -_tags(12, 0) - 1), "coco_train_tags.npy",
     "finite non-negative numbers (a multi-hot vector or detection scores); row 0, column 0 is -1.0"),
    (lambda f: scipy.io.savemat(f / "coco_test_tags.mat", {"tags": np.full((10, A), np.nan)}),
     "coco_test_tags.mat", "finite non-negative"),
    (lambda f: scipy.io.savemat(f / "coco_test_tags.mat", {"x": _tags(10, 1), "y": 1}),
     "coco_test_tags.mat", "no tag matrix named tags (has: x, y); set 'tag_key'"),
    (lambda f: _npy_pickled(f / "coco_test_labels.npy"), "coco_test_labels.npy",
     "not a readable NumPy .npy file without pickles"),
    (lambda f: _npy_truncated(f / "coco_test_labels.npy"), "coco_test_labels.npy",
     "not a readable NumPy .npy file"),
    (lambda f: np.save(f / "coco_test_labels.npy", np.ones(10)), "coco_test_labels.npy",
     "the array has shape (10,)"),
    (lambda f: np.save(f / "coco_test_labels.npy", 2 * np.eye(10, C)), "coco_test_labels.npy",
     "must hold only 0 and 1; row 0, column 0 is 2.0"),
    (lambda f: np.save(f / "coco_train_tags.mat.npy", 1), None, None),   # unrelated: ignored
    (lambda f: _feats(f / "coco_test_feats.h5", 10, 1), "coco_test_feats.h5",
     "has rank 3 (videos, time steps, width) but"),
    (lambda f: _image_feats(f / "coco_test_feats.h5", 10, 1, d=DV + 1), "coco_test_feats.h5",
     "has feature width 5 but"),
    (lambda f: (f / "coco_test_labels.npy").rename(f / "coco_test_labels.mat"),
     "coco_test_labels.mat", "not a readable MATLAB .mat file"),
    (lambda f: _labels(f / "coco_test_labels.mat", 10, 1), "coco_test_labels.mat",
     "coco_test_labels.npy and coco_test_labels.mat both claim the test labels"),
])
def test_image_folder_bad_input(tmp_path, damage, culprit, needle):
    write_images(tmp_path / "coco")
    damage(tmp_path / "coco")
    if culprit is None:
        assert load_ssvh(tmp_path / "coco").aux_width == A
        return
    msg = _message(load_ssvh, tmp_path / "coco")
    assert culprit in msg and needle in msg, msg


def test_image_features_of_rank_four_are_refused(tmp_path):
    write_images(tmp_path / "coco")
    with h5py.File(tmp_path / "coco" / "coco_train_feats.h5", "w") as f:
        f.create_dataset("feats", data=np.zeros((12, 2, 3, DV), np.float32))
    msg = _message(load_ssvh, tmp_path / "coco")
    assert "coco_train_feats.h5" in msg and "expected rank 3" in msg and "or rank 2" in msg


def test_bad_image_folder_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    from avsearch.cli import main

    write_images(tmp_path / "coco")
    np.save(tmp_path / "coco" / "coco_train_tags.npy", _tags(11, 0))
    out = tmp_path / "run"
    assert main(["run", "--arch", "mamba", "--data", str(tmp_path / "coco"), "--budget", "smoke",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "coco_train_tags.npy: 11 tag rows but" in err
    assert not out.exists()


def test_moments_read_in_bounded_chunks_and_in_parts_equal_numpy(tmp_path, monkeypatch):
    """A streamed split's mean and std: read a few videos at a time (a chunk capped in bytes,
    as FCVID's 25 x 4096 videos need), or as two processes' parts whose sums are summed,
    equal NumPy's over the whole array (float64 sums: to float32 rounding)."""
    import avsearch.data.dataset as dataset

    fx = write_activitynet(tmp_path / "anet")
    monkeypatch.setenv(INMEMORY_ENV, "0")
    train = load_dataset(tmp_path / "anet").split("train")
    assert isinstance(train.features["visual"], H5Rows)
    x = fx["train"].reshape(-1, fx["train"].shape[-1]).astype(np.float64)
    want = (x.mean(0), x.std(0))
    reads = []
    take = train.take
    monkeypatch.setattr(train, "take", lambda rows: reads.append(len(rows)) or take(rows))
    monkeypatch.setattr(dataset, "MOMENTS_CHUNK_BYTES", 3 * fx["train"][0].nbytes)
    got = train.moments()["visual"]
    assert max(reads) == 3                       # 3 videos' bytes a chunk
    parts = {}
    for k in (0, 1):                             # what each process would send
        train.moments(shard=(k, 2), reduce=lambda a, k=k: parts.setdefault(k, a))
    summed = [p + q for p, q in zip(parts[0], parts[1])]
    assert parts[0][-1][0] + parts[1][-1][0] == x.shape[0]    # every position counted once
    both = train.moments(shard=(1, 2), reduce=lambda a: summed)["visual"]
    for m in (got, both):
        np.testing.assert_allclose(m[0], want[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(m[1], want[1], rtol=1e-6, atol=1e-6)
