"""The SSVH feature folder: HDF5 feature matrices and MATLAB label files, by role.

**SSVH folder** (:func:`load_ssvh`), the layout of SSVH, BTH, ConMH, S5VH and AutoSSVH: one
modality (``visual``); each HDF5 file holds a dataset ``feats`` of shape (N, T, D); labels are
MATLAB v5 ``.mat`` files with an N x C 0/1 indicator matrix under ``labels`` (``re_label`` and
``q_label`` in ActivityNet), or NumPy ``.npy`` files holding that matrix. File names follow the
roles those repositories use::

    [<prefix>_]train_feats[_<k>].h5     train videos (labels optional: self-supervised)
    [<prefix>_]train_labels[_<k>].mat
    [<prefix>_]test_feats[_<k>].h5      the "test" set (role depends on the protocol, below)
    [<prefix>_]test_labels[_<k>].mat    or re_label.mat
    [<prefix>_]query<n>_feats[_<k>].h5  optional separate queries (query_feats, query1000_feats)
    [<prefix>_]query<n>_labels[_<k>].mat  or q_label.mat
    [<prefix>_]val_feats[_<k>].h5       optional validation queries (our addition)
    [<prefix>_]val_labels[_<k>].mat
    [<prefix>_]<role>_tags[_<k>].mat|.npy   optional auxiliary semantics (below)
    [<prefix>_]<role>_captions.jsonl        optional captions: a video-text folder (below)
    [<prefix>_]<role>_text_feats[_<k>].h5   optional precomputed text features (below)

**Image folders** are the same layout with ``feats`` of shape (N, D): one feature vector per
image, no time axis (VGG16 fc7 in the image-hashing papers). Every role's features have the
same rank. The data set's ``length`` is 1 and :meth:`Split.take` gives each image as a
sequence of length 1, so nothing downstream tells images from one-step videos.

**Auxiliary semantics** (LAGNH's detected objects, :attr:`Split.aux`): ``<role>_tags`` files,
an N x A matrix of finite non-negative numbers (a multi-hot vector of tags, or detection
scores) under ``tags`` in a ``.mat`` (or its only variable) or as a ``.npy``. They are
optional, but all or nothing: when one role has them, every role does, with one width A. The
labels of a role (0/1) and its tags may each be ``.mat`` or ``.npy``.

**Video-text folders** (cross-modal hashing, SPTCH): beside each role's video features a
``<role>_captions.jsonl``, line i describing row i (:func:`avsearch.data.text.read_captions`)::

    {"id": "video7", "text": "a coat, then a sandal" | ["caption 1", "caption 2"], "labels": [4, 5]}

The data set then has two modalities, ``visual`` (the videos, T steps) and ``text`` (the
captions, L tokens, L free of T). Ids come from the captions. ``labels`` (class indices, on
every line of a file or on none) stand in for a label file (a role may not have both);
``num_class`` in ``avsearch.json`` fixes the class count, else it is the largest index + 1.
The captions are tokenized (:func:`~avsearch.data.text.tokenize`) with a vocabulary built
from the training captions alone; ``"text": {"max_tokens": 64, "min_count": 1}`` in
``avsearch.json`` sets the cut and the rarest word kept. With ``<role>_text_feats.h5`` for
every role (dataset ``feats_key``, (N, L, D), all-zero rows as padding; BERT or CLIP
token features) the text modality is those features instead, and the captions files are
optional (ids and labels then come from the usual files). Captions and text features are
all or nothing over the roles, like tags.

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

Files are read and checked by :mod:`avsearch.data.h5`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from avsearch.data.dataset import Dataset, Split
from avsearch.data.text import (DEFAULT_MAX_TOKENS, Captions, Text, Vocabulary, padding_mask,
                                read_captions)
from avsearch.data.h5 import (CHUNK_BYTES, H5Rows, check_finite, fail, inmemory_limit_bytes,
                              numeric, one_line, open_h5, read_json)

__all__ = ["load_ssvh", "SSVH_CONFIG", "DEFAULT_VAL_FRACTION"]

SSVH_CONFIG = "avsearch.json"
TEXT_DEFAULTS = {"max_tokens": DEFAULT_MAX_TOKENS, "min_count": 1}
DEFAULT_VAL_FRACTION = 0.2
_LABEL_KEYS = ("labels", "re_label", "q_label")
_TAG_KEYS = ("tags",)


# ----------------------------------------------------------------------------- SSVH

_SSVH_NAME = re.compile(r"^(?:(?P<prefix>.+?)_)?(?P<role>train|test|val|query\d*)_"
                        r"(?P<kind>text_feats|feats|labels|tags|captions)(?:_(?P<shard>\d+))?"
                        r"\.(?P<ext>h5|hdf5|mat|npy|jsonl)$", re.IGNORECASE)
_EXTENSIONS = {"feats": ("h5", "hdf5"), "text_feats": ("h5", "hdf5"), "captions": ("jsonl",),
               "labels": ("mat", "npy"), "tags": ("mat", "npy")}
_SSVH_ALIASES = {"re_label.mat": ("test", "labels"), "q_label.mat": ("query", "labels")}
_SSVH_ROLES = ("train", "test", "query", "val")
_EXPECTED_LABELS = {"train": "'train_labels.mat'", "val": "'val_labels.mat'",
                    "test": "'test_labels.mat' or 're_label.mat'",
                    "query": "'query_labels.mat' or 'q_label.mat'"}
_SSVH_KEYS = {"name", "feats_key", "database", "val_fraction", "val_seed", "num_class", "text",
              *_SSVH_ROLES}
_ROLE_FIELDS = ("feats", "labels", "label_key", "tags", "tag_key", "captions", "text_feats")


@dataclass
class _Role:
    """One group of feature files (and their label files) in an SSVH folder."""

    name: str
    feats: list[Path]
    labels: list[Path] = field(default_factory=list)
    label_key: str | None = None
    tags: list[Path] = field(default_factory=list)
    tag_key: str | None = None
    counts: list[int] = field(default_factory=list)
    tail: tuple[int, ...] = ()              # (T, D) for videos, (D,) for images
    dtype: np.dtype = np.dtype(np.float32)
    matrix: np.ndarray | None = None        # (N, C) bool, None when unlabelled
    aux: np.ndarray | None = None           # (N, A) float32 auxiliary semantics, or None
    array: np.ndarray | None = None         # in-memory features
    captions: list[Path] = field(default_factory=list)    # JSON lines (one file)
    text_feats: list[Path] = field(default_factory=list)  # HDF5 (N, L, D) shards
    caption: Captions | None = None         # the captions read

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
            if not m or m["ext"].lower() not in _EXTENSIONS[m["kind"].lower()]:
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
            raise fail(f"{folder}: {p.name} and {other.name} both claim the {role} {kind} "
                        f"(same shard, or sharded mixed with unsharded); name the files in "
                        f"{SSVH_CONFIG}")
        bucket[shard] = p
    if len(prefixes) > 1:
        raise fail(f"{folder}: files of several data sets ({', '.join(sorted(prefixes))}); keep "
                    f"one per folder or name the files in {SSVH_CONFIG}")
    roles: dict[str, _Role] = {}
    for (role, kind), stems in found.items():
        if len(stems) > 1:
            names = ", ".join(sorted(next(iter(s.values())).name for s in stems.values()))
            raise fail(f"{folder}: several candidate {role} {kind} files ({names}); name the "
                        f"ones to use in {SSVH_CONFIG}")
    for role in _SSVH_ROLES:
        feats = found.get((role, "feats"))
        labels = found.get((role, "labels"))
        tags = found.get((role, "tags"))
        captions = found.get((role, "captions"))
        text_feats = found.get((role, "text_feats"))
        if feats is None:
            for kind, files in (("labels", labels), ("tags", tags), ("captions", captions),
                                ("text_feats", text_feats)):
                if files:
                    path = next(iter(next(iter(files.values())).values()))
                    raise fail(f"{path}: {kind} without {role} features in {folder}")
            continue
        shards = next(iter(feats.values()))
        lab = next(iter(labels.values())) if labels else {}
        tag = next(iter(tags.values())) if tags else {}
        cap = next(iter(captions.values())) if captions else {}
        txt = next(iter(text_feats.values())) if text_feats else {}
        roles[role] = _Role(role, [shards[k] for k in sorted(shards)],
                            [lab[k] for k in sorted(lab)], tags=[tag[k] for k in sorted(tag)],
                            captions=[cap[k] for k in sorted(cap)],
                            text_feats=[txt[k] for k in sorted(txt)])
    return roles


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise fail(f"{where}: expected a file name or a list of file names, got {value!r}")


def _configured_roles(cfg: dict[str, Any], folder: Path, where: Path) -> dict[str, _Role]:
    roles: dict[str, _Role] = {}
    for role in _SSVH_ROLES:
        if role not in cfg:
            continue
        spec = cfg[role]
        if not isinstance(spec, dict) or "feats" not in spec:
            raise fail(f"{where}: {role!r} must be an object with 'feats' (and optional "
                        f"{', '.join(repr(k) for k in _ROLE_FIELDS[1:])})")
        extra = set(spec) - set(_ROLE_FIELDS)
        if extra:
            raise fail(f"{where}: unknown field(s) {', '.join(sorted(extra))} in {role!r}")
        feats = [folder / p for p in _str_list(spec["feats"], f"{where}: {role}.feats")]
        labels = [] if spec.get("labels") is None else \
            [folder / p for p in _str_list(spec["labels"], f"{where}: {role}.labels")]
        tags = [] if spec.get("tags") is None else \
            [folder / p for p in _str_list(spec["tags"], f"{where}: {role}.tags")]
        captions, text_feats = ([] if spec.get(k) is None else
                                [folder / p for p in _str_list(spec[k], f"{where}: {role}.{k}")]
                                for k in ("captions", "text_feats"))
        if len(captions) > 1:
            raise fail(f"{where}: {role}.captions must name one JSON-lines file")
        key, tag_key = spec.get("label_key"), spec.get("tag_key")
        for name, value in (("label_key", key), ("tag_key", tag_key)):
            if value is not None and not (isinstance(value, str) and value):
                raise fail(f"{where}: {role}.{name} must be a string")
        roles[role] = _Role(role, feats, labels, key, tags, tag_key, captions=captions,
                            text_feats=text_feats)
    return roles


_RANKS = {2: "(images, width)", 3: "(videos, time steps, width)"}


def _inspect_feats(role: _Role, key: str) -> None:
    """Open each feature file of ``role``; check rank, dtype, and equal (T, D) or (D,) across
    shards."""
    first: tuple[Path, tuple[int, ...]] | None = None
    for path in role.feats:
        with open_h5(path) as f:
            ds = f.get(key)
            if not isinstance(ds, h5py.Dataset):
                have = ", ".join(list(f)[:8]) or "nothing"
                raise fail(f"{path}: no dataset {key!r} (has: {have})")
            if ds.ndim not in _RANKS:
                raise fail(f"{path}: {key!r} has shape {ds.shape}, expected rank 3 "
                            f"{_RANKS[3]} or rank 2 {_RANKS[2]}")
            if not numeric(ds.dtype):
                raise fail(f"{path}: {key!r} has non-numeric dtype {ds.dtype}")
            n, tail = ds.shape[0], tuple(int(x) for x in ds.shape[1:])
            if n == 0:
                raise fail(f"{path}: no items (empty split)")
            if first is None:
                first, role.dtype = (path, tail), ds.dtype
            else:
                _same_tail(first, (path, tail), key)
            role.counts.append(n)
    assert first is not None
    role.tail = first[1]


def _same_tail(a: tuple[Path, tuple[int, ...]], b: tuple[Path, tuple[int, ...]],
               key: str) -> None:
    """Two feature files agree in rank, time steps and width."""
    (pa, ta), (pb, tb) = a, b
    if len(ta) != len(tb):
        raise fail(f"{pb}: {key!r} has rank {len(tb) + 1} {_RANKS[len(tb) + 1]} but {pa} has "
                    f"rank {len(ta) + 1} {_RANKS[len(ta) + 1]}; images and videos do not mix")
    if len(ta) == 2 and ta[0] != tb[0]:
        raise fail(f"{pb} has {tb[0]} time steps per video but {pa} has {ta[0]}")
    if ta[-1] != tb[-1]:
        raise fail(f"{pb} has feature width {tb[-1]} but {pa} has width {ta[-1]}")


def _read_matrix(path: Path, key: str | None, known_keys: tuple[str, ...], key_field: str,
                 what: str) -> tuple[np.ndarray, str]:
    """A 2-D numeric matrix from a MATLAB v5 ``.mat`` (variable ``key``, else the first of
    ``known_keys`` present, else the only variable) or a NumPy ``.npy``; with the name it is
    called by in messages."""
    if not path.exists():
        raise fail(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            value = np.load(path, allow_pickle=False)
        except Exception as err:  # ValueError (pickled objects, bad header), EOFError, OSError
            raise fail(f"{path}: not a readable NumPy .npy file without pickles (truncated or "
                        f"corrupt?): {one_line(err)}") from None
        key = "the array"
    else:
        import scipy.io
        import scipy.sparse

        try:
            mat = scipy.io.loadmat(str(path))
        except NotImplementedError:
            raise fail(f"{path}: MATLAB v7.3 files are not supported; save it as v5 "
                        f"(save(..., '-v7'))") from None
        except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, zlib.error
            raise fail(f"{path}: not a readable MATLAB .mat file (truncated or corrupt?): "
                        f"{one_line(err)}") from None
        names = [k for k in mat if not k.startswith("__")]
        if key is None:
            known = [k for k in known_keys if k in mat]
            key = known[0] if known else (names[0] if len(names) == 1 else None)
            if key is None:
                raise fail(f"{path}: no {what} matrix named {', '.join(known_keys)} (has: "
                            f"{', '.join(names) or 'nothing'}); set '{key_field}' in "
                            f"{SSVH_CONFIG}")
        elif key not in mat:
            raise fail(f"{path}: no variable {key!r} (has: {', '.join(names) or 'nothing'})")
        value = mat[key]
        if scipy.sparse.issparse(value):
            value = value.toarray()
        value = np.asarray(value)
        key = repr(key)
    if value.ndim != 2 or value.shape[1] == 0 or not (value.dtype == bool or numeric(value.dtype)):
        raise fail(f"{path}: {key} has shape {value.shape} and dtype {value.dtype}, expected "
                    f"an items x {'classes 0/1' if what == 'label' else 'tags'} matrix")
    return value, key


def _load_labels(path: Path, key: str | None) -> np.ndarray:
    """An N x C 0/1 indicator matrix (``.mat`` v5 or ``.npy``), as bool."""
    value, name = _read_matrix(path, key, _LABEL_KEYS, "label_key", "label")
    bad = ~((value == 0) | (value == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise fail(f"{path}: {name} must hold only 0 and 1; row {r}, column {c} is "
                    f"{value[r, c].item()!r}")
    return value.astype(bool)


def _load_tags(path: Path, key: str | None) -> np.ndarray:
    """An N x A matrix of auxiliary semantics (``.mat`` v5 or ``.npy``): finite, >= 0."""
    value, name = _read_matrix(path, key, _TAG_KEYS, "tag_key", "tag")
    value = value.astype(np.float64)
    bad = ~np.isfinite(value) | (value < 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise fail(f"{path}: {name} must hold finite non-negative numbers (a multi-hot vector "
                    f"or detection scores); row {r}, column {c} is {value[r, c].item()!r}")
    return value.astype(np.float32)


def _stack(role: _Role, files: list[Path], mats: list[np.ndarray], what: str) -> np.ndarray:
    """Concatenate a role's per-shard ``what`` ("label" or "tag") matrices, checking their
    widths and row counts against the features."""
    width = "classes" if what == "label" else "tags"
    for p, m in zip(files[1:], mats[1:]):
        if m.shape[1] != mats[0].shape[1]:
            raise fail(f"{p} has {m.shape[1]} {width} but {files[0]} has {mats[0].shape[1]}")
    if len(mats) == len(role.feats):
        for lp, m, fp, n in zip(files, mats, role.feats, role.counts):
            if len(m) != n:
                raise fail(f"{lp}: {len(m)} {what} rows but {fp} has {n} items")
    matrix = np.concatenate(mats) if len(mats) > 1 else mats[0]
    if len(matrix) != role.n:
        raise fail(f"{', '.join(map(str, files))}: {len(matrix)} {what} rows but "
                    f"{', '.join(map(str, role.feats))} hold {role.n} items")
    return matrix


def _inspect_labels(role: _Role) -> None:
    if role.labels:
        role.matrix = _stack(role, role.labels,
                             [_load_labels(p, role.label_key) for p in role.labels], "label")
    if role.tags:
        role.aux = _stack(role, role.tags, [_load_tags(p, role.tag_key) for p in role.tags],
                          "tag")


def _read_role(role: _Role, key: str, into_memory: bool,
               check: Callable[[np.ndarray, int, Path], None] | None = None) -> None:
    """Read every row once in chunks: check finiteness (and ``check(block, first row,
    file)``); keep the rows when ``into_memory``."""
    step = max(1, CHUNK_BYTES // max(1, int(np.prod(role.tail)) * role.dtype.itemsize))
    arr = np.empty((role.n, *role.tail), np.float32) if into_memory else None
    offset = 0
    for path, n in zip(role.feats, role.counts):
        with open_h5(path) as f:
            ds = f[key]
            for start in range(0, n, step):
                stop = min(n, start + step)
                try:
                    block = ds[start:stop]
                except Exception as err:
                    raise fail(f"{path}: cannot read rows {start}..{stop - 1} (truncated or "
                                f"corrupt file?): {one_line(err)}") from None
                check_finite(block, start, path, lambda i: f"item {path.name}:{i} (row {i})")
                if check is not None:
                    check(block, start, path)
                if arr is not None:
                    arr[offset + start:offset + stop] = block
        offset += n
    role.array = arr


def _role_features(role: _Role, key: str, rows: np.ndarray | None) -> Any:
    if role.array is not None:
        return role.array if rows is None else role.array[rows]
    return H5Rows([(p, key, n) for p, n in zip(role.feats, role.counts)], role.tail,
                  role.dtype, rows)


def _no_empty_text(block: np.ndarray, start: int, path: Path) -> None:
    empty = ~padding_mask(block).any(1)
    if empty.any():
        raise fail(f"{path}: item {start + int(np.argmax(empty))} has no text (every row is "
                    f"zero, the padding)")


def _text_options(cfg: dict[str, Any], where: Path) -> dict[str, int]:
    text = cfg.get("text", {})
    if not isinstance(text, dict) or set(text) - set(TEXT_DEFAULTS):
        raise fail(f"{where}: 'text' must be an object with {' and '.join(TEXT_DEFAULTS)}")
    out = {**TEXT_DEFAULTS, **text}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise fail(f"{where}: text.{k} must be a positive integer, got {v!r}")
    return out


def _inspect_text(roles: list[_Role], cfg: dict[str, Any], cfg_path: Path,
                  key: str) -> dict[str, Any]:
    """Read the captions (ids, labels, texts) and inspect precomputed text features; all or
    nothing over the roles. Returns per role its text: a :class:`Text` of token ids, or a
    :class:`_Role` of text-feature files to read with the videos (empty: no text)."""
    for kind, ext in (("captions", "jsonl"), ("text_feats", "h5")):
        having = [r for r in roles if getattr(r, kind)]
        for role in roles if having else ():
            if not getattr(role, kind):
                raise fail(f"{role.feats[0]}: no {kind.replace('_', ' ')} for the {role.name} "
                            f"items but {getattr(having[0], kind)[0].name} has them (expected "
                            f"'{role.name}_{kind}.{ext}', or '{kind}' in {SSVH_CONFIG})")
    for role in roles:
        if not role.captions:
            continue
        parts = [read_captions(p) for p in role.captions]
        cap = parts[0]
        for more in parts[1:]:
            cap = Captions(cap.path, cap.ids + more.ids, cap.texts + more.texts,
                           None if cap.labels is None or more.labels is None
                           else cap.labels + more.labels)
        if len(cap) != role.n:
            raise fail(f"{cap.path}: {len(cap)} captions but {', '.join(map(str, role.feats))} "
                        f"hold {role.n} items (line i describes row i)")
        if len(set(cap.ids)) != len(cap.ids):
            raise fail(f"{', '.join(map(str, role.captions))}: an id appears twice")
        if cap.labels is not None and role.labels:
            raise fail(f"{cap.path}: labels in the captions and in {role.labels[0].name}; keep "
                        f"one of them")
        role.caption = cap
    from_captions = [r for r in roles if r.caption is not None and r.caption.labels is not None]
    if from_captions:
        files = [r for r in roles if r.matrix is not None]
        largest = max((max(row, default=-1) for r in from_captions for row in r.caption.labels))
        num_class = cfg.get("num_class", files[0].matrix.shape[1] if files else largest + 1)
        if isinstance(num_class, bool) or not isinstance(num_class, int) or num_class < 1:
            raise fail(f"{cfg_path}: 'num_class' must be a positive integer, got {num_class!r}")
        for r in from_captions:
            bad = [(i, c) for i, row in enumerate(r.caption.labels) for c in row if c >= num_class]
            if bad:
                raise fail(f"{r.caption.path}: item {r.caption.ids[bad[0][0]]!r} has label "
                            f"{bad[0][1]}, outside the {num_class} classes"
                            + (f" of {files[0].labels[0].name}" if files and
                               "num_class" not in cfg else ""))
            r.matrix = r.caption.matrix(num_class)
    options = _text_options(cfg, cfg_path)
    if roles[0].text_feats:
        text: dict[str, Any] = {}
        for role in roles:
            trole = _Role(f"{role.name} text", list(role.text_feats))
            _inspect_feats(trole, key)
            if len(trole.tail) != 2:
                raise fail(f"{trole.feats[0]}: {key!r} has shape ({trole.n}, {trole.tail[0]}), "
                            f"expected (items, tokens, width) text features")
            if trole.n != role.n:
                raise fail(f"{trole.feats[0]}: {trole.n} texts but {role.feats[0]} holds "
                            f"{role.n} items")
            if text:
                first = next(iter(text.values()))
                _same_tail((first.feats[0], first.tail), (trole.feats[0], trole.tail), key)
            text[role.name] = trole
        return text
    if not roles[0].captions:
        return {}
    train = next(r for r in roles if r.name == "train")
    vocabulary = Vocabulary.build(train.caption.texts, min_count=options["min_count"])
    encoded = {r.name: vocabulary.encode(r.caption.texts, options["max_tokens"]) for r in roles}
    width = max(e.shape[1] for e in encoded.values())     # one L for every split
    return {name: Text(np.pad(e, ((0, 0), (0, width - e.shape[1]))), vocabulary)
            for name, e in encoded.items()}


def _text_info(text_roles: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any] | None:
    if not text_roles:
        return None
    first = text_roles["train"]
    if isinstance(first, _Role):
        return {"source": "features", "tokens": first.tail[0], "width": first.tail[1]}
    return {"source": "captions", "tokens": first.shape[1], "vocabulary": first.width,
            **_text_options(cfg, Path(SSVH_CONFIG))}


def load_ssvh(folder: str | Path) -> Dataset:
    """Load a self-supervised video-hashing folder; see the module docstring for its layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(f"{folder}: no such folder")
    cfg_path = folder / SSVH_CONFIG
    cfg = read_json(cfg_path) if cfg_path.exists() else {}
    unknown = set(cfg) - _SSVH_KEYS
    if unknown:
        raise fail(f"{cfg_path}: unknown field(s) {', '.join(sorted(unknown))} (known: "
                    f"{', '.join(sorted(_SSVH_KEYS))})")
    key = cfg.get("feats_key", "feats")
    if not isinstance(key, str) or not key:
        raise fail(f"{cfg_path}: 'feats_key' must be a dataset name")
    fraction = cfg.get("val_fraction", DEFAULT_VAL_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction < 1:
        raise fail(f"{cfg_path}: 'val_fraction' must be a number in (0, 1), got {fraction!r}")
    val_seed = cfg.get("val_seed", 0)
    if isinstance(val_seed, bool) or not isinstance(val_seed, int) or val_seed < 0:
        raise fail(f"{cfg_path}: 'val_seed' must be a non-negative integer, got {val_seed!r}")
    database = cfg.get("database")
    if database not in (None, "train", "test"):
        raise fail(f"{cfg_path}: 'database' must be \"train\" or \"test\", got {database!r}")

    configured = any(r in cfg for r in _SSVH_ROLES)
    roles = _configured_roles(cfg, folder, cfg_path) if configured else _scan_ssvh(folder)
    where = cfg_path if configured else folder
    for need in ("train", "test"):
        if need not in roles:
            raise fail(f"{where}: no {need} features (expected a file named like "
                        f"'{need}_feats.h5' or '<name>_{need}_feats.h5', or name it in "
                        f"{SSVH_CONFIG})")

    # Metadata first (cheap), so a bad label file fails before gigabytes are read.
    for role in roles.values():
        _inspect_feats(role, key)
    ordered = list(roles.values())
    for role in ordered[1:]:
        _same_tail((ordered[0].feats[0], ordered[0].tail), (role.feats[0], role.tail), key)
    for role in ordered:
        _inspect_labels(role)
    text_roles = _inspect_text(ordered, cfg, cfg_path, key)
    labelled = [r for r in ordered if r.matrix is not None]
    for role in labelled[1:]:
        if role.matrix.shape[1] != labelled[0].matrix.shape[1]:
            raise fail(f"{role.labels[0]} has {role.matrix.shape[1]} classes but "
                        f"{labelled[0].labels[0]} has {labelled[0].matrix.shape[1]}")
    tagged = [r for r in ordered if r.aux is not None]
    if tagged:                                # auxiliary semantics: all roles or none
        for role in ordered:
            if role.aux is None:
                raise fail(f"{role.feats[0]}: no auxiliary tags for the {role.name} items but "
                            f"{tagged[0].tags[0].name} has them (expected "
                            f"'{role.name}_tags.mat' or '{role.name}_tags.npy', or 'tags' in "
                            f"{SSVH_CONFIG})")
            if role.aux.shape[1] != tagged[0].aux.shape[1]:
                raise fail(f"{role.tags[0]} has {role.aux.shape[1]} tags but "
                            f"{tagged[0].tags[0]} has {tagged[0].aux.shape[1]}")

    queries = roles.get("query", roles["test"])
    if database is None:
        database = "test" if "query" in roles or roles["train"].matrix is None else "train"
    db = roles[database]
    for role, why in ((queries, "queries"), (db, "the retrieval database"),
                      (roles.get("val"), "validation queries")):
        if role is not None and role.matrix is None:
            raise fail(f"{role.feats[0]}: no labels for {why} (expected "
                        f"{_EXPECTED_LABELS[role.name]}, or a label file named in {SSVH_CONFIG})")
    num_class = labelled[0].matrix.shape[1]

    carve: np.ndarray | None = None
    val_info: dict[str, Any]
    if "val" in roles:
        val_info = {"from": "val files"}
    else:
        n = queries.n
        if n < 2:
            raise fail(f"{queries.feats[0]}: {n} query video(s), too few to carve a validation "
                        f"split; add val_feats.h5 and val_labels.mat")
        k = min(max(round(fraction * n), 1), n - 1)
        carve = np.random.default_rng(val_seed).permutation(n)
        val_info = {"from": f"{queries.name} queries", "fraction": fraction, "seed": val_seed,
                    "count": int(k)}
    tail = roles["train"].tail
    per_video = int(np.prod(tail)) * 4
    total = sum(r.n for r in ordered) * per_video + (queries.n * per_video if carve is not None
                                                     else 0)
    total += sum(r.n * int(np.prod(r.tail)) * 4 for r in text_roles.values()
                 if isinstance(r, _Role))
    streaming = total > inmemory_limit_bytes()
    for role in ordered:                     # the full data pass: finiteness (+ loading)
        _read_role(role, key, into_memory=not streaming)
    for name, trole in text_roles.items():
        if isinstance(trole, _Role):         # precomputed features: no caption may be empty
            _read_role(trole, key, not streaming, _no_empty_text)

    def split_of(role: _Role, rows: np.ndarray | None = None) -> Split:
        ids = role.caption.ids if role.caption is not None else role.ids()
        labels = role.matrix if role.matrix is not None else np.zeros((role.n, num_class), bool)
        aux = role.aux
        if rows is not None:
            ids, labels = [ids[i] for i in rows], labels[rows]
            aux = None if aux is None else aux[rows]
        features = {"visual": _role_features(role, key, rows)}
        text = text_roles.get(role.name)
        if isinstance(text, _Role):
            features["text"] = Text(_role_features(text, key, rows))
        elif text is not None:
            features["text"] = text if rows is None else Text(text.values[rows], text.vocabulary)
        return Split(ids=ids, labels=labels, features=features, aux=aux)

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
    modalities = {"visual": tail[-1]}
    if text_roles:
        first = text_roles["train"]
        modalities["text"] = first.tail[-1] if isinstance(first, _Role) else first.width
    info = {"format": "ssvh", "items": "images" if len(tail) == 1 else "videos",
            "text": _text_info(text_roles, cfg),
            "aux_width": int(tagged[0].aux.shape[1]) if tagged else 0,
            "folder": str(folder), "streaming": streaming,
            "feature_bytes": total, "feats_key": key, "protocol": protocol, "val": val_info,
            "files": {r.name: {"feats": [str(p) for p in r.feats],
                               "labels": [str(p) for p in r.labels],
                               "tags": [str(p) for p in r.tags]} for r in ordered}}
    return Dataset(name=name, source=str(folder), modalities=modalities,
                   length=tail[0] if len(tail) == 2 else 1,
                   num_class=num_class, splits=splits, info=info)
