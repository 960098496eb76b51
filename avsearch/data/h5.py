"""Reading feature files: the checks every loader shares and the lazy HDF5 readers.

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
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np
from h5py import h5d, h5s

from avsearch.errors import AvsearchInputError

__all__ = ["INMEMORY_ENV", "DEFAULT_INMEMORY_MAX_MB", "inmemory_limit_bytes", "H5Rows",
           "H5GroupRows", "CHUNK_BYTES", "fail", "one_line", "open_h5", "numeric", "check_finite",
           "read_json"]

INMEMORY_ENV = "AVSEARCH_INMEMORY_MAX_MB"
DEFAULT_INMEMORY_MAX_MB = 2048
CHUNK_BYTES = 64 << 20             # rows read per step when checking or loading big files


# ----------------------------------------------------------------------------- helpers

def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def fail(msg: str) -> AvsearchInputError:
    return AvsearchInputError(" ".join(msg.split()))


def inmemory_limit_bytes() -> int:
    """Feature bytes above which data stream from disk: ``$AVSEARCH_INMEMORY_MAX_MB`` or 2 GB."""
    raw = os.environ.get(INMEMORY_ENV, "").strip()
    if not raw:
        return DEFAULT_INMEMORY_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        raise fail(f"{INMEMORY_ENV}={raw!r}: expected a number of megabytes") from None
    if not math.isfinite(mb) or mb < 0:
        raise fail(f"{INMEMORY_ENV}={raw!r}: expected a non-negative number of megabytes")
    return int(mb * (1 << 20))


def open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise fail(f"{path}: no such file")
    if path.is_dir():
        raise fail(f"{path}: is a folder, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except Exception as err:  # h5py raises OSError, ValueError, ... for damaged files
        raise fail(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                    f"{one_line(err)}") from None


def numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "fiu"


def check_finite(block: np.ndarray, first_row: int, where: Path,
                  name: Callable[[int], str]) -> None:
    """Raise naming the first row of ``block`` holding NaN or inf."""
    if block.dtype.kind != "f":
        return
    bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    if bad.any():
        raise fail(f"{where}: {name(first_row + int(np.argmax(bad)))} has NaN or infinite "
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


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise fail(f"{path}: no such file")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise fail(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"{path}: cannot read: {one_line(err)}") from None
    if not isinstance(cfg, dict):
        raise fail(f"{path}: expected a JSON object")
    return cfg
