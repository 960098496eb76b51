"""Loaders for the video-hashing community's feature formats.

Two layouts load into :class:`~avsearch.data.dataset.Dataset`:

**AV-NAS** (:func:`load_avnas`): a JSON config ::

    {"dataset": "fcvid", "Image": "visual.h5", "Audio": "audio.h5", "num_class": 239,
     "train_list": "train.txt", "val_list": "val.txt", "test_list": "test.txt",
     "retrieval_list": "retrieval.txt"}

Paths are resolved against the config's folder. Each HDF5 file holds one group per video id
with a dataset ``vectors`` of shape (m, d). List files hold lines ``video_id,label[,label...]``
(labels are 0-based class indices; several labels make a multi-label video; blank lines are
ignored). Modalities are ``visual`` (Image) then ``audio`` (Audio). Without ``retrieval_list`` the
retrieval database is the train split; ``val_list`` is required because models are selected on
validation, never on test.

**SSVH folder** (:func:`load_ssvh`), the layout of SSVH, BTH, ConMH, S5VH and AutoSSVH: one
modality (``visual``); each HDF5 file holds a dataset ``feats`` of shape (N, T, D); labels are
MATLAB v5 ``.mat`` files with an N x C 0/1 indicator matrix under ``labels`` (``re_label`` and
``q_label`` in ActivityNet). File names follow the roles those repositories use::

    [<prefix>_]train_feats[_<k>].h5     train videos (labels optional: self-supervised)
    [<prefix>_]train_labels[_<k>].mat
    [<prefix>_]test_feats[_<k>].h5      the "test" set (role depends on the protocol, below)
    [<prefix>_]test_labels[_<k>].mat    or re_label.mat
    [<prefix>_]query<n>_feats[_<k>].h5  optional separate queries (query_feats, query1000_feats)
    [<prefix>_]query<n>_labels[_<k>].mat  or q_label.mat
    [<prefix>_]val_feats[_<k>].h5       optional validation queries (our addition)
    [<prefix>_]val_labels[_<k>].mat

``<prefix>`` is a data-set name (``fcv``, ``ucf``, ``hmdb``, ``yfcc``; at most one per folder),
``_<k>`` numbers shards that are concatenated in numeric order (YFCC's ``yfcc_train_feats_1.h5``
...). Other files (hash centres, anchors, similarity matrices) are ignored. Splits:

- ``train``: the train features; all-False labels when there is no train label file.
- ``test`` (queries): the query file if there is one, else the test file.
- ``retrieval`` (database): the test file when a query file exists (ActivityNet, YFCC);
  otherwise the train file when it is labelled (UCF101/HMDB51: queries = test split, database =
  training split), else the test file itself (FCVID: every test video is a query and is in the
  database). ``"database": "train" | "test"`` in ``avsearch.json`` overrides the choice.
- ``val``: the val files if present; otherwise a fraction (``val_fraction``, default 0.2) of the
  queries is carved out, deterministically: ``numpy.random.default_rng(val_seed).permutation``
  of the query rows (``val_seed`` default 0, independent of the training seed), the first
  ``round(fraction * n)`` rows (sorted) become ``val``, the rest ``test``. Model selection then
  never sees a test query; carved videos stay in the test database where the protocol puts
  queries there (FCVID).
- ``val_database``: what the val queries are ranked against when the database is not the
  training file (it holds test videos: FCVID's test queries, ActivityNet's test database):
  the training videos when they are labelled, else the val videos themselves. Selection
  (epochs, SPOS's fitness, ENAS's reward) thus never reads a test video or its label.

Video ids are ``<file name>:<row>`` (the feature files carry no ids), so a query and its copy in
the database share an id. An optional ``avsearch.json`` in the folder names files explicitly;
when it names any role the folder is not scanned::

    {"name": "activitynet", "feats_key": "feats",
     "train": {"feats": "train_feats.h5"},
     "test":  {"feats": "test_feats.h5", "labels": "re_label.mat", "label_key": "re_label"},
     "query": {"feats": "query_feats.h5", "labels": "q_label.mat"},
     "database": "test", "val_fraction": 0.2, "val_seed": 0}

**Memory.** When the float32 features would exceed ``AVSEARCH_INMEMORY_MAX_MB`` megabytes
(default 2048) the features stay on disk: each split's array-like reads rows from HDF5 on
indexing (files opened lazily, read-only, re-opened after a fork, picklable). Otherwise they
are loaded into numpy arrays.

**Validation.** Every problem found at load time raises :class:`AvsearchInputError` with one
line naming the file (and video, line or row): missing or unreadable files, ids missing from an
HDF5, non-finite features (checked in chunks, so it streams), inconsistent ranks, widths or time
steps, bad labels, malformed list lines, empty splits. Nothing is written.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np
from h5py import h5d, h5s

from avsearch.data.dataset import SPLITS, Dataset, Split
from avsearch.errors import AvsearchInputError

__all__ = ["load_avnas", "load_ssvh", "inmemory_limit_bytes", "H5Rows", "H5GroupRows",
           "INMEMORY_ENV", "DEFAULT_INMEMORY_MAX_MB", "SSVH_CONFIG", "DEFAULT_VAL_FRACTION"]

INMEMORY_ENV = "AVSEARCH_INMEMORY_MAX_MB"
DEFAULT_INMEMORY_MAX_MB = 2048
SSVH_CONFIG = "avsearch.json"
DEFAULT_VAL_FRACTION = 0.2
_CHUNK_BYTES = 64 << 20             # rows read per step when checking or loading big files
_LABEL_KEYS = ("labels", "re_label", "q_label")


# ----------------------------------------------------------------------------- helpers

def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _fail(msg: str) -> AvsearchInputError:
    return AvsearchInputError(" ".join(msg.split()))


def inmemory_limit_bytes() -> int:
    """Feature bytes above which data stream from disk: ``$AVSEARCH_INMEMORY_MAX_MB`` or 2 GB."""
    raw = os.environ.get(INMEMORY_ENV, "").strip()
    if not raw:
        return DEFAULT_INMEMORY_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        raise _fail(f"{INMEMORY_ENV}={raw!r}: expected a number of megabytes") from None
    if not math.isfinite(mb) or mb < 0:
        raise _fail(f"{INMEMORY_ENV}={raw!r}: expected a non-negative number of megabytes")
    return int(mb * (1 << 20))


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise _fail(f"{path}: no such file")
    if path.is_dir():
        raise _fail(f"{path}: is a folder, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except Exception as err:  # h5py raises OSError, ValueError, ... for damaged files
        raise _fail(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                    f"{_one_line(err)}") from None


def _numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "fiu"


def _check_finite(block: np.ndarray, first_row: int, where: Path,
                  name: Callable[[int], str]) -> None:
    """Raise naming the first row of ``block`` holding NaN or inf."""
    if block.dtype.kind != "f":
        return
    bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    if bad.any():
        raise _fail(f"{where}: {name(first_row + int(np.argmax(bad)))} has NaN or infinite "
                    f"features")


def _as_index(index: Any, n: int) -> tuple[np.ndarray, bool]:
    """Row index of any numpy-like form -> (int64 array, whether to drop the first axis)."""
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} rows")
        return np.array([i % n], np.int64), True
    if isinstance(index, slice):
        return np.arange(*index.indices(n), dtype=np.int64), False
    arr = np.asarray(index)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean index of shape {arr.shape} for {n} rows")
        return np.flatnonzero(arr), False
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"index out of range for {n} rows")
    return np.where(arr < 0, arr + n, arr), False


# ----------------------------------------------------------------------------- streaming

class _LazyH5:
    """Base of the streaming array-likes: files opened on first read, per process.

    h5py handles must not cross a fork (DataLoader workers, DDP), and cannot be pickled, so the
    handles are dropped on pickling and re-opened when the process id changes.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    _paths: list[str]

    def __init__(self) -> None:
        self._files: list[h5py.File] | None = None
        self._pid: int | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _handles(self) -> list[h5py.File]:
        if self._files is None or self._pid != os.getpid():
            self._files = [h5py.File(p, "r") for p in self._paths]
            self._pid = os.getpid()
            self._on_open()
        return self._files

    def _on_open(self) -> None:
        """Hook: the files were (re)opened; drop anything tied to old handles."""

    def close(self) -> None:
        """Close the open files (they re-open on the next read)."""
        self._on_open()
        if self._files is not None and self._pid == os.getpid():
            for f in self._files:
                f.close()
        self._files = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = state["_pid"] = None
        return state

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def _read_unique(self, rows: np.ndarray) -> np.ndarray:  # sorted, unique
        raise NotImplementedError

    def __getitem__(self, index: Any) -> np.ndarray:
        idx, squeeze = _as_index(index, len(self))
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = self._read_unique(uniq)[inverse.reshape(-1)]
        return out[0] if squeeze else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, files={self._paths})"


class H5Rows(_LazyH5):
    """Rows of one or more HDF5 datasets of shape (n_i, T, D), seen as one (N, T, D) array.

    Args:
        parts: (file, dataset name, row count) per shard, concatenated in order.
        rows: optional row subset of the concatenation (a carved split), in the order given.
    """

    def __init__(self, parts: Sequence[tuple[str | Path, str, int]], tail: tuple[int, ...],
                 dtype: Any, rows: np.ndarray | None = None):
        super().__init__()
        self._paths = [str(p) for p, _, _ in parts]
        self._keys = [k for _, k, _ in parts]
        self._offsets = np.concatenate([[0], np.cumsum([n for _, _, n in parts])]).astype(np.int64)
        self._rows = None if rows is None else np.asarray(rows, np.int64)
        n = int(self._offsets[-1]) if self._rows is None else len(self._rows)
        self.shape = (n, *tail)
        self.dtype = np.dtype(dtype)

    def _read_unique(self, rows: np.ndarray) -> np.ndarray:
        glob = rows if self._rows is None else self._rows[rows]
        # h5py wants increasing, repeat-free indices per file: read those, then reorder.
        uniq, inverse = np.unique(glob, return_inverse=True)
        buf = np.empty((len(uniq), *self.shape[1:]), self.dtype)
        if not len(uniq):
            return buf
        part = np.searchsorted(self._offsets, uniq, side="right") - 1
        files = self._handles()
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            local = uniq[sel] - self._offsets[p]
            ds = files[p][self._keys[p]]
            if local[-1] - local[0] + 1 == len(local):      # contiguous: one hyperslab
                buf[sel] = ds[int(local[0]):int(local[-1]) + 1]
            else:
                buf[sel] = ds[local]
        return buf[inverse.reshape(-1)]


class H5GroupRows(_LazyH5):
    """AV-NAS streaming: row i is ``file[ids[i]][member]``, one (T, D) dataset per video.

    Rows are read as float32 through h5py's low-level API with opened dataset ids cached:
    per video that is several times cheaper than ``f[id][member][()]``. The cache keeps the
    ``max_open`` most recently read videos (least recently used closed first), so streaming a
    file of 10^5 videos holds a bounded number of HDF5 handles, not one per video ever read
    (``benchmarks/bench_h5_stream.py`` measures the memory).
    """

    def __init__(self, path: str | Path, ids: Sequence[str], tail: tuple[int, ...],
                 member: str = "vectors", max_open: int = 4096):
        super().__init__()
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self._paths = [str(path)]
        self._ids = list(ids)
        self._member = member
        self._max_open = max_open
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self.shape = (len(self._ids), *tail)
        self.dtype = np.dtype(np.float32)

    def _on_open(self) -> None:
        self._cache = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache"] = OrderedDict()
        return state

    def _read_unique(self, rows: np.ndarray) -> np.ndarray:
        fid = self._handles()[0].id
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        cache = self._cache
        for j, i in enumerate(rows.tolist()):
            dsid = cache.get(i)
            if dsid is None:
                dsid = cache[i] = h5d.open(fid, f"{self._ids[i]}/{self._member}".encode())
                if len(cache) > self._max_open:
                    cache.popitem(last=False)   # the handle closes when its id is freed
            else:
                cache.move_to_end(i)
            dsid.read(h5s.ALL, h5s.ALL, out[j])
        return out


# ----------------------------------------------------------------------------- AV-NAS

_AVNAS_LISTS = (("train", "train_list"), ("val", "val_list"), ("test", "test_list"),
                ("retrieval", "retrieval_list"))
_AVNAS_MODALITIES = (("visual", "Image"), ("audio", "Audio"))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise _fail(f"{path}: no such file")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _fail(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(f"{path}: cannot read: {_one_line(err)}") from None
    if not isinstance(cfg, dict):
        raise _fail(f"{path}: expected a JSON object")
    return cfg


def _path_field(cfg: dict[str, Any], key: str, base: Path, where: Path) -> Path:
    value = cfg.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}: field {key!r} must be a file path")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()   # messages name the real file


def _read_list(path: Path, num_class: int) -> tuple[list[str], np.ndarray, list[int]]:
    """An AV-NAS list file -> ids, (N, num_class) bool labels, line number of each id."""
    if not path.exists():
        raise _fail(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(f"{path}: cannot read: {_one_line(err)}") from None
    ids: list[str] = []
    lines: list[int] = []
    rows: list[int] = []
    cols: list[int] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0]:
            raise _fail(f"{path}:{lineno}: malformed line {line[:80]!r}, expected "
                        f"'video_id,label[,label...]'")
        vid = parts[0]
        if vid in seen:
            raise _fail(f"{path}:{lineno}: video {vid!r} already listed on line {seen[vid]}")
        for tok in parts[1:]:
            try:
                lab = int(tok)
            except ValueError:
                raise _fail(f"{path}:{lineno}: label {tok!r} is not an integer") from None
            if not 0 <= lab < num_class:
                raise _fail(f"{path}:{lineno}: label {lab} outside [0, {num_class}) "
                            f"(num_class = {num_class})")
            rows.append(len(ids))
            cols.append(lab)
        seen[vid] = lineno
        ids.append(vid)
        lines.append(lineno)
    if not ids:
        raise _fail(f"{path}: no videos (empty split)")
    labels = np.zeros((len(ids), num_class), bool)
    labels[rows, cols] = True
    return ids, labels, lines


class _AvnasFile:
    """One AV-NAS modality file while loading: checks and reads videos one at a time.

    Uses h5py's low-level API (open + read is about 3x cheaper per video than
    ``f[id]["vectors"][()]``, which matters at 10^5 videos) and falls back to the high-level
    API only to explain a failure.
    """

    def __init__(self, f: h5py.File, path: Path, origin: dict[str, str]):
        self.f, self.path, self.origin = f, path, origin
        self.first: tuple[str, int, int] | None = None

    def _open(self, vid: str) -> Any:
        try:
            return h5d.open(self.f.id, f"{vid}/vectors".encode())
        except Exception:
            pass
        try:
            obj = self.f.get(vid)
            ds = obj.get("vectors") if isinstance(obj, h5py.Group) else None
        except Exception as err:
            raise _fail(f"{self.path}: cannot read video {vid!r} (corrupt file?): "
                        f"{_one_line(err)}") from None
        if obj is None:
            raise _fail(f"{self.path}: video {vid!r} ({self.origin[vid]}) not found")
        if not isinstance(ds, h5py.Dataset):
            raise _fail(f"{self.path}: video {vid!r} has no dataset 'vectors'")
        raise _fail(f"{self.path}: cannot open video {vid!r} (corrupt file?)")

    def _shape(self, vid: str, dsid: Any) -> tuple[int, int]:
        shape = dsid.shape
        if len(shape) != 2:
            raise _fail(f"{self.path}: video {vid!r}: 'vectors' has shape {shape}, expected "
                        f"rank 2 (time steps, width)")
        if self.first is not None:
            first, m0, d0 = self.first
            if shape[1] != d0:
                raise _fail(f"{self.path}: video {vid!r} has width {shape[1]} but video "
                            f"{first!r} has width {d0}")
            if shape[0] != m0:
                raise _fail(f"{self.path}: video {vid!r} has {shape[0]} time steps but video "
                            f"{first!r} has {m0}")
        return shape

    def peek(self, vid: str) -> tuple[int, int]:
        """(time steps, width) of ``vid``, which every other video must match."""
        dsid = self._open(vid)
        m, d = self._shape(vid, dsid)
        if not _numeric(dsid.dtype):
            raise _fail(f"{self.path}: video {vid!r}: 'vectors' has non-numeric dtype "
                        f"{dsid.dtype}")
        self.first = (vid, m, d)
        return m, d

    def read(self, vid: str, out: np.ndarray) -> None:
        """Check ``vid`` and read it as float32 into ``out`` (T, D); reject NaN/inf."""
        dsid = self._open(vid)
        self._shape(vid, dsid)
        try:
            dsid.read(h5s.ALL, h5s.ALL, out)
        except Exception as err:
            raise _fail(f"{self.path}: cannot read video {vid!r} (truncated or corrupt file, or "
                        f"non-numeric data?): {_one_line(err)}") from None
        _check_finite(out[None], 0, self.path, lambda _: f"video {vid!r}")


def load_avnas(config_path: str | Path) -> Dataset:
    """Load an AV-NAS JSON config (two HDF5 files + list files); see the module docstring."""
    cfg_path = Path(config_path)
    cfg = _read_json(cfg_path)
    base = cfg_path.parent
    num_class = cfg.get("num_class")
    if isinstance(num_class, bool) or not isinstance(num_class, int) or num_class < 1:
        raise _fail(f"{cfg_path}: field 'num_class' must be a positive integer, got {num_class!r}")
    if "val_list" not in cfg:
        raise _fail(f"{cfg_path}: no 'val_list'; a validation split is required because models "
                    f"are selected on it, never on test")

    lists: dict[str, tuple[list[str], np.ndarray, list[int]]] = {}
    list_paths: dict[str, Path] = {}
    for split, key in _AVNAS_LISTS:
        if key not in cfg and split == "retrieval":
            continue
        if key not in cfg:
            raise _fail(f"{cfg_path}: missing field {key!r}")
        list_paths[split] = _path_field(cfg, key, base, cfg_path)
        lists[split] = _read_list(list_paths[split], num_class)
    mod_paths = {m: _path_field(cfg, key, base, cfg_path) for m, key in _AVNAS_MODALITIES}

    origin: dict[str, str] = {}          # id -> "list:line" of its first mention, for messages
    for split, (ids, _, lines) in lists.items():
        for vid, ln in zip(ids, lines):
            origin.setdefault(vid, f"listed in {list_paths[split]}:{ln}")
    all_ids = list(origin)

    # Splits with identical id lists share one feature array (retrieval = train is common).
    groups: dict[tuple[str, ...], list[str]] = {}
    for split, (ids, _, _) in lists.items():
        groups.setdefault(tuple(ids), []).append(split)

    features: dict[str, dict[str, Any]] = {s: {} for s in lists}
    with ExitStack() as stack:
        files = {m: _AvnasFile(stack.enter_context(_open_h5(p)), p, origin)
                 for m, p in mod_paths.items()}
        layout = {m: f.peek(all_ids[0]) for m, f in files.items()}
        (tv, _), (ta, _) = layout["visual"], layout["audio"]
        if tv != ta:
            raise _fail(f"{mod_paths['visual']} has {tv} time steps per video but "
                        f"{mod_paths['audio']} has {ta}")
        total = sum(len(key) * t * d * 4 for key in groups for t, d in layout.values())
        streaming = total > inmemory_limit_bytes()
        for m, f in files.items():           # one pass per file: check (and load) every video
            t, d = layout[m]
            if streaming:
                scratch = np.empty((t, d), np.float32)
                for vid in all_ids:
                    f.read(vid, scratch)
            for key, sharing in groups.items():
                if streaming:
                    arr: Any = H5GroupRows(mod_paths[m], key, (t, d))
                else:
                    arr = np.empty((len(key), t, d), np.float32)
                    for i, vid in enumerate(key):
                        f.read(vid, arr[i])
                for split in sharing:
                    features[split][m] = arr

    splits = {s: Split(ids=list(ids), labels=labels, features=features[s])
              for s, (ids, labels, _) in lists.items()}
    if "retrieval" not in splits:
        splits["retrieval"] = splits["train"]
    splits = {s: splits[s] for s in SPLITS}
    test_ids = set(splits["test"].ids)
    if any(v in test_ids for v in splits["retrieval"].ids):
        # validation must not rank against test videos: its database drops them
        rows = [i for i, v in enumerate(splits["retrieval"].ids) if v not in test_ids]
        splits["val_database"] = splits["retrieval"].subset(rows) if rows else splits["val"]
    name = cfg.get("dataset") if isinstance(cfg.get("dataset"), str) and cfg.get("dataset") \
        else cfg_path.stem
    info = {"format": "avnas", "config": str(cfg_path), "streaming": streaming,
            "feature_bytes": total, "files": {m: str(p) for m, p in mod_paths.items()},
            "lists": {s: str(p) for s, p in list_paths.items()},
            "retrieval": "retrieval_list" if "retrieval_list" in cfg else "train",
            "val_database": ("retrieval without the test videos" if "val_database" in splits
                             else "retrieval")}
    return Dataset(name=name, source=str(config_path),
                   modalities={m: layout[m][1] for m, _ in _AVNAS_MODALITIES},
                   length=tv, num_class=num_class, splits=splits, info=info)


# ----------------------------------------------------------------------------- SSVH

_SSVH_NAME = re.compile(r"^(?:(?P<prefix>.+?)_)?(?P<role>train|test|val|query\d*)_"
                        r"(?P<kind>feats|labels)(?:_(?P<shard>\d+))?\.(?P<ext>h5|hdf5|mat)$",
                        re.IGNORECASE)
_SSVH_ALIASES = {"re_label.mat": ("test", "labels"), "q_label.mat": ("query", "labels")}
_SSVH_ROLES = ("train", "test", "query", "val")
_EXPECTED_LABELS = {"train": "'train_labels.mat'", "val": "'val_labels.mat'",
                    "test": "'test_labels.mat' or 're_label.mat'",
                    "query": "'query_labels.mat' or 'q_label.mat'"}
_SSVH_KEYS = {"name", "feats_key", "database", "val_fraction", "val_seed", *_SSVH_ROLES}


@dataclass
class _Role:
    """One group of feature files (and their label files) in an SSVH folder."""

    name: str
    feats: list[Path]
    labels: list[Path] = field(default_factory=list)
    label_key: str | None = None
    counts: list[int] = field(default_factory=list)
    tail: tuple[int, int] = (0, 0)
    dtype: np.dtype = np.dtype(np.float32)
    matrix: np.ndarray | None = None        # (N, C) bool, None when unlabelled
    array: np.ndarray | None = None         # in-memory features

    @property
    def n(self) -> int:
        return sum(self.counts)

    def ids(self) -> list[str]:
        return [f"{p.name}:{i}" for p, c in zip(self.feats, self.counts) for i in range(c)]


def _scan_ssvh(folder: Path) -> dict[str, _Role]:
    """Find role files by the community's names (see the module docstring)."""
    found: dict[tuple[str, str], dict[str, dict[int, Path]]] = {}
    prefixes: set[str] = set()
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        alias = _SSVH_ALIASES.get(p.name.lower())
        if alias:
            role, kind, stem, shard = alias[0], alias[1], p.name, 0
        else:
            m = _SSVH_NAME.match(p.name)
            if not m or (m["kind"].lower() == "labels") != (m["ext"].lower() == "mat"):
                continue
            role, kind = m["role"].lower(), m["kind"].lower()
            if m["prefix"]:
                prefixes.add(m["prefix"].lower())
            stem = p.name[:m.start("shard") - 1] if m["shard"] else p.name.rsplit(".", 1)[0]
            shard = int(m["shard"]) if m["shard"] else 0
            role = "query" if role.startswith("query") else role
        bucket = found.setdefault((role, kind), {}).setdefault(stem, {})
        if shard in bucket or (bucket and (shard == 0) != (0 in bucket)):
            other = bucket.get(shard) or next(iter(bucket.values()))
            raise _fail(f"{folder}: {p.name} and {other.name} both claim the {role} {kind} "
                        f"(same shard, or sharded mixed with unsharded); name the files in "
                        f"{SSVH_CONFIG}")
        bucket[shard] = p
    if len(prefixes) > 1:
        raise _fail(f"{folder}: files of several data sets ({', '.join(sorted(prefixes))}); keep "
                    f"one per folder or name the files in {SSVH_CONFIG}")
    roles: dict[str, _Role] = {}
    for (role, kind), stems in found.items():
        if len(stems) > 1:
            names = ", ".join(sorted(next(iter(s.values())).name for s in stems.values()))
            raise _fail(f"{folder}: several candidate {role} {kind} files ({names}); name the "
                        f"ones to use in {SSVH_CONFIG}")
    for role in _SSVH_ROLES:
        feats = found.get((role, "feats"))
        labels = found.get((role, "labels"))
        if feats is None:
            if labels:
                path = next(iter(next(iter(labels.values())).values()))
                raise _fail(f"{path}: labels without {role} features in {folder}")
            continue
        shards = next(iter(feats.values()))
        lab = next(iter(labels.values())) if labels else {}
        roles[role] = _Role(role, [shards[k] for k in sorted(shards)],
                            [lab[k] for k in sorted(lab)])
    return roles


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise _fail(f"{where}: expected a file name or a list of file names, got {value!r}")


def _configured_roles(cfg: dict[str, Any], folder: Path, where: Path) -> dict[str, _Role]:
    roles: dict[str, _Role] = {}
    for role in _SSVH_ROLES:
        if role not in cfg:
            continue
        spec = cfg[role]
        if not isinstance(spec, dict) or "feats" not in spec:
            raise _fail(f"{where}: {role!r} must be an object with 'feats' (and optional "
                        f"'labels', 'label_key')")
        extra = set(spec) - {"feats", "labels", "label_key"}
        if extra:
            raise _fail(f"{where}: unknown field(s) {', '.join(sorted(extra))} in {role!r}")
        feats = [folder / p for p in _str_list(spec["feats"], f"{where}: {role}.feats")]
        labels = [] if spec.get("labels") is None else \
            [folder / p for p in _str_list(spec["labels"], f"{where}: {role}.labels")]
        key = spec.get("label_key")
        if key is not None and not (isinstance(key, str) and key):
            raise _fail(f"{where}: {role}.label_key must be a string")
        roles[role] = _Role(role, feats, labels, key)
    return roles


def _inspect_feats(role: _Role, key: str) -> None:
    """Open each feature file of ``role``; check rank, dtype, and equal (T, D) across shards."""
    first: tuple[Path, int, int] | None = None
    for path in role.feats:
        with _open_h5(path) as f:
            ds = f.get(key)
            if not isinstance(ds, h5py.Dataset):
                have = ", ".join(list(f)[:8]) or "nothing"
                raise _fail(f"{path}: no dataset {key!r} (has: {have})")
            if ds.ndim != 3:
                raise _fail(f"{path}: {key!r} has shape {ds.shape}, expected rank 3 "
                            f"(videos, time steps, width)")
            if not _numeric(ds.dtype):
                raise _fail(f"{path}: {key!r} has non-numeric dtype {ds.dtype}")
            n, t, d = ds.shape
            if n == 0:
                raise _fail(f"{path}: no videos (empty split)")
            if first is None:
                first, role.dtype = (path, t, d), ds.dtype
            else:
                _same_tail(first, (path, t, d))
            role.counts.append(n)
    assert first is not None
    role.tail = (first[1], first[2])


def _same_tail(a: tuple[Path, int, int], b: tuple[Path, int, int]) -> None:
    if a[1] != b[1]:
        raise _fail(f"{b[0]} has {b[1]} time steps per video but {a[0]} has {a[1]}")
    if a[2] != b[2]:
        raise _fail(f"{b[0]} has feature width {b[2]} but {a[0]} has width {a[2]}")


def _load_mat(path: Path, key: str | None) -> np.ndarray:
    """An N x C 0/1 indicator matrix from a MATLAB v5 file, as bool."""
    import scipy.io
    import scipy.sparse

    if not path.exists():
        raise _fail(f"{path}: no such file")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise _fail(f"{path}: MATLAB v7.3 files are not supported; save it as v5 "
                    f"(save(..., '-v7'))") from None
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, zlib.error ...
        raise _fail(f"{path}: not a readable MATLAB .mat file (truncated or corrupt?): "
                    f"{_one_line(err)}") from None
    names = [k for k in mat if not k.startswith("__")]
    if key is None:
        known = [k for k in _LABEL_KEYS if k in mat]
        key = known[0] if known else (names[0] if len(names) == 1 else None)
        if key is None:
            raise _fail(f"{path}: no label matrix named {', '.join(_LABEL_KEYS)} (has: "
                        f"{', '.join(names) or 'nothing'}); set 'label_key' in {SSVH_CONFIG}")
    elif key not in mat:
        raise _fail(f"{path}: no variable {key!r} (has: {', '.join(names) or 'nothing'})")
    value = mat[key]
    if scipy.sparse.issparse(value):
        value = value.toarray()
    value = np.asarray(value)
    if value.ndim != 2 or value.shape[1] == 0 or not (value.dtype == bool or _numeric(value.dtype)):
        raise _fail(f"{path}: {key!r} has shape {value.shape} and dtype {value.dtype}, expected "
                    f"a videos x classes 0/1 matrix")
    bad = ~((value == 0) | (value == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise _fail(f"{path}: {key!r} must hold only 0 and 1; row {r}, column {c} is "
                    f"{value[r, c].item()!r}")
    return value.astype(bool)


def _inspect_labels(role: _Role) -> None:
    if not role.labels:
        return
    mats = [_load_mat(p, role.label_key) for p in role.labels]
    for p, m in zip(role.labels[1:], mats[1:]):
        if m.shape[1] != mats[0].shape[1]:
            raise _fail(f"{p} has {m.shape[1]} classes but {role.labels[0]} has {mats[0].shape[1]}")
    if len(mats) == len(role.feats):
        for lp, m, fp, n in zip(role.labels, mats, role.feats, role.counts):
            if len(m) != n:
                raise _fail(f"{lp}: {len(m)} label rows but {fp} has {n} videos")
    role.matrix = np.concatenate(mats) if len(mats) > 1 else mats[0]
    if len(role.matrix) != role.n:
        raise _fail(f"{', '.join(map(str, role.labels))}: {len(role.matrix)} label rows but "
                    f"{', '.join(map(str, role.feats))} hold {role.n} videos")


def _read_role(role: _Role, key: str, into_memory: bool) -> None:
    """Read every row once in chunks: check finiteness; keep the rows when ``into_memory``."""
    t, d = role.tail
    step = max(1, _CHUNK_BYTES // max(1, t * d * role.dtype.itemsize))
    arr = np.empty((role.n, t, d), np.float32) if into_memory else None
    offset = 0
    for path, n in zip(role.feats, role.counts):
        with _open_h5(path) as f:
            ds = f[key]
            for start in range(0, n, step):
                stop = min(n, start + step)
                try:
                    block = ds[start:stop]
                except Exception as err:
                    raise _fail(f"{path}: cannot read rows {start}..{stop - 1} (truncated or "
                                f"corrupt file?): {_one_line(err)}") from None
                _check_finite(block, start, path, lambda i: f"video {path.name}:{i} (row {i})")
                if arr is not None:
                    arr[offset + start:offset + stop] = block
        offset += n
    role.array = arr


def _role_features(role: _Role, key: str, rows: np.ndarray | None) -> Any:
    if role.array is not None:
        return role.array if rows is None else role.array[rows]
    return H5Rows([(p, key, n) for p, n in zip(role.feats, role.counts)], role.tail,
                  role.dtype, rows)


def load_ssvh(folder: str | Path) -> Dataset:
    """Load a self-supervised video-hashing folder; see the module docstring for its layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _fail(f"{folder}: no such folder")
    cfg_path = folder / SSVH_CONFIG
    cfg = _read_json(cfg_path) if cfg_path.exists() else {}
    unknown = set(cfg) - _SSVH_KEYS
    if unknown:
        raise _fail(f"{cfg_path}: unknown field(s) {', '.join(sorted(unknown))} (known: "
                    f"{', '.join(sorted(_SSVH_KEYS))})")
    key = cfg.get("feats_key", "feats")
    if not isinstance(key, str) or not key:
        raise _fail(f"{cfg_path}: 'feats_key' must be a dataset name")
    fraction = cfg.get("val_fraction", DEFAULT_VAL_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction < 1:
        raise _fail(f"{cfg_path}: 'val_fraction' must be a number in (0, 1), got {fraction!r}")
    val_seed = cfg.get("val_seed", 0)
    if isinstance(val_seed, bool) or not isinstance(val_seed, int) or val_seed < 0:
        raise _fail(f"{cfg_path}: 'val_seed' must be a non-negative integer, got {val_seed!r}")
    database = cfg.get("database")
    if database not in (None, "train", "test"):
        raise _fail(f"{cfg_path}: 'database' must be \"train\" or \"test\", got {database!r}")

    configured = any(r in cfg for r in _SSVH_ROLES)
    roles = _configured_roles(cfg, folder, cfg_path) if configured else _scan_ssvh(folder)
    where = cfg_path if configured else folder
    for need in ("train", "test"):
        if need not in roles:
            raise _fail(f"{where}: no {need} features (expected a file named like "
                        f"'{need}_feats.h5' or '<name>_{need}_feats.h5', or name it in "
                        f"{SSVH_CONFIG})")

    # Metadata first (cheap), so a bad label file fails before gigabytes are read.
    for role in roles.values():
        _inspect_feats(role, key)
    ordered = list(roles.values())
    for role in ordered[1:]:
        _same_tail((ordered[0].feats[0], *ordered[0].tail), (role.feats[0], *role.tail))
    for role in ordered:
        _inspect_labels(role)
    labelled = [r for r in ordered if r.matrix is not None]
    for role in labelled[1:]:
        if role.matrix.shape[1] != labelled[0].matrix.shape[1]:
            raise _fail(f"{role.labels[0]} has {role.matrix.shape[1]} classes but "
                        f"{labelled[0].labels[0]} has {labelled[0].matrix.shape[1]}")

    queries = roles.get("query", roles["test"])
    if database is None:
        database = "test" if "query" in roles or roles["train"].matrix is None else "train"
    db = roles[database]
    for role, why in ((queries, "queries"), (db, "the retrieval database"),
                      (roles.get("val"), "validation queries")):
        if role is not None and role.matrix is None:
            raise _fail(f"{role.feats[0]}: no labels for {why} (expected "
                        f"{_EXPECTED_LABELS[role.name]}, or a label file named in {SSVH_CONFIG})")
    num_class = labelled[0].matrix.shape[1]

    carve: np.ndarray | None = None
    val_info: dict[str, Any]
    if "val" in roles:
        val_info = {"from": "val files"}
    else:
        n = queries.n
        if n < 2:
            raise _fail(f"{queries.feats[0]}: {n} query video(s), too few to carve a validation "
                        f"split; add val_feats.h5 and val_labels.mat")
        k = min(max(round(fraction * n), 1), n - 1)
        carve = np.random.default_rng(val_seed).permutation(n)
        val_info = {"from": f"{queries.name} queries", "fraction": fraction, "seed": val_seed,
                    "count": int(k)}
    t, d = roles["train"].tail
    per_video = t * d * 4
    total = sum(r.n for r in ordered) * per_video + (queries.n * per_video if carve is not None
                                                     else 0)
    streaming = total > inmemory_limit_bytes()
    for role in ordered:                     # the full data pass: finiteness (+ loading)
        _read_role(role, key, into_memory=not streaming)

    def split_of(role: _Role, rows: np.ndarray | None = None) -> Split:
        ids = role.ids()
        labels = role.matrix if role.matrix is not None else np.zeros((role.n, num_class), bool)
        if rows is not None:
            ids, labels = [ids[i] for i in rows], labels[rows]
        return Split(ids=ids, labels=labels, features={"visual": _role_features(role, key, rows)})

    splits = {"train": split_of(roles["train"])}
    if carve is None:
        splits["val"], splits["test"] = split_of(roles["val"]), split_of(queries)
    else:
        k = val_info["count"]
        splits["val"] = split_of(queries, np.sort(carve[:k]))
        splits["test"] = split_of(queries, np.sort(carve[k:]))
    splits["retrieval"] = splits["train"] if db is roles["train"] else split_of(db)
    # Validation never ranks against test videos: when the database is the test (or query)
    # file, val queries search the labelled training videos, or without training labels
    # the val videos themselves (every val video is a query and in the database, FCVID's
    # protocol in small).
    if db is not roles["train"]:
        splits["val_database"] = splits["train"] if roles["train"].matrix is not None \
            else splits["val"]

    name = cfg.get("name") if isinstance(cfg.get("name"), str) and cfg.get("name") \
        else folder.resolve().name
    protocol = {"train": roles["train"].name + (" (labelled)" if roles["train"].matrix is not None
                                                else " (unlabelled)"),
                "val": "val files" if carve is None else f"carved from {queries.name} queries",
                "test": f"{queries.name} queries" + ("" if carve is None else " minus val"),
                "retrieval": db.name,
                "val_database": ("val queries themselves" if splits.get("val_database") is splits["val"]
                                 else roles["train"].name)}
    info = {"format": "ssvh", "folder": str(folder), "streaming": streaming,
            "feature_bytes": total, "feats_key": key, "protocol": protocol, "val": val_info,
            "files": {r.name: {"feats": [str(p) for p in r.feats],
                               "labels": [str(p) for p in r.labels]} for r in ordered}}
    return Dataset(name=name, source=str(folder), modalities={"visual": d}, length=t,
                   num_class=num_class, splits=splits, info=info)
