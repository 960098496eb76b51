"""The AV-NAS feature format: a JSON config, HDF5 files of per-video groups, list files.

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

Files are read and checked by :mod:`avsearch.data.h5`.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5s

from avsearch.data.dataset import SPLITS, Dataset, Split
from avsearch.data.h5 import (H5GroupRows, check_finite, fail, inmemory_limit_bytes,
                              numeric, one_line, open_h5, read_json)

__all__ = ["load_avnas"]


# ----------------------------------------------------------------------------- AV-NAS

_AVNAS_LISTS = (("train", "train_list"), ("val", "val_list"), ("test", "test_list"),
                ("retrieval", "retrieval_list"))
_AVNAS_MODALITIES = (("visual", "Image"), ("audio", "Audio"))


def _path_field(cfg: dict[str, Any], key: str, base: Path, where: Path) -> Path:
    value = cfg.get(key)
    if not isinstance(value, str) or not value:
        raise fail(f"{where}: field {key!r} must be a file path")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()   # messages name the real file


def _read_list(path: Path, num_class: int) -> tuple[list[str], np.ndarray, list[int]]:
    """An AV-NAS list file -> ids, (N, num_class) bool labels, line number of each id."""
    if not path.exists():
        raise fail(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"{path}: cannot read: {one_line(err)}") from None
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
            raise fail(f"{path}:{lineno}: malformed line {line[:80]!r}, expected "
                        f"'video_id,label[,label...]'")
        vid = parts[0]
        if vid in seen:
            raise fail(f"{path}:{lineno}: video {vid!r} already listed on line {seen[vid]}")
        for tok in parts[1:]:
            try:
                lab = int(tok)
            except ValueError:
                raise fail(f"{path}:{lineno}: label {tok!r} is not an integer") from None
            if not 0 <= lab < num_class:
                raise fail(f"{path}:{lineno}: label {lab} outside [0, {num_class}) "
                            f"(num_class = {num_class})")
            rows.append(len(ids))
            cols.append(lab)
        seen[vid] = lineno
        ids.append(vid)
        lines.append(lineno)
    if not ids:
        raise fail(f"{path}: no videos (empty split)")
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
            raise fail(f"{self.path}: cannot read video {vid!r} (corrupt file?): "
                        f"{one_line(err)}") from None
        if obj is None:
            raise fail(f"{self.path}: video {vid!r} ({self.origin[vid]}) not found")
        if not isinstance(ds, h5py.Dataset):
            raise fail(f"{self.path}: video {vid!r} has no dataset 'vectors'")
        raise fail(f"{self.path}: cannot open video {vid!r} (corrupt file?)")

    def _shape(self, vid: str, dsid: Any) -> tuple[int, int]:
        shape = dsid.shape
        if len(shape) != 2:
            raise fail(f"{self.path}: video {vid!r}: 'vectors' has shape {shape}, expected "
                        f"rank 2 (time steps, width)")
        if self.first is not None:
            first, m0, d0 = self.first
            if shape[1] != d0:
                raise fail(f"{self.path}: video {vid!r} has width {shape[1]} but video "
                            f"{first!r} has width {d0}")
            if shape[0] != m0:
                raise fail(f"{self.path}: video {vid!r} has {shape[0]} time steps but video "
                            f"{first!r} has {m0}")
        return shape

    def peek(self, vid: str) -> tuple[int, int]:
        """(time steps, width) of ``vid``, which every other video must match."""
        dsid = self._open(vid)
        m, d = self._shape(vid, dsid)
        if not numeric(dsid.dtype):
            raise fail(f"{self.path}: video {vid!r}: 'vectors' has non-numeric dtype "
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
            raise fail(f"{self.path}: cannot read video {vid!r} (truncated or corrupt file, or "
                        f"non-numeric data?): {one_line(err)}") from None
        check_finite(out[None], 0, self.path, lambda _: f"video {vid!r}")


def load_avnas(config_path: str | Path) -> Dataset:
    """Load an AV-NAS JSON config (two HDF5 files + list files); see the module docstring."""
    cfg_path = Path(config_path)
    cfg = read_json(cfg_path)
    base = cfg_path.parent
    num_class = cfg.get("num_class")
    if isinstance(num_class, bool) or not isinstance(num_class, int) or num_class < 1:
        raise fail(f"{cfg_path}: field 'num_class' must be a positive integer, got {num_class!r}")
    if "val_list" not in cfg:
        raise fail(f"{cfg_path}: no 'val_list'; a validation split is required because models "
                    f"are selected on it, never on test")

    lists: dict[str, tuple[list[str], np.ndarray, list[int]]] = {}
    list_paths: dict[str, Path] = {}
    for split, key in _AVNAS_LISTS:
        if key not in cfg and split == "retrieval":
            continue
        if key not in cfg:
            raise fail(f"{cfg_path}: missing field {key!r}")
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
        files = {m: _AvnasFile(stack.enter_context(open_h5(p)), p, origin)
                 for m, p in mod_paths.items()}
        layout = {m: f.peek(all_ids[0]) for m, f in files.items()}
        (tv, _), (ta, _) = layout["visual"], layout["audio"]
        if tv != ta:
            raise fail(f"{mod_paths['visual']} has {tv} time steps per video but "
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
