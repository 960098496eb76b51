"""The :class:`Dataset` every loader produces (:mod:`avsearch.data.load` picks the loader)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from avsearch.data.text import Text, is_text, is_tokens, padding_mask
from avsearch.errors import AvsearchInputError

__all__ = ["SPLITS", "Split", "Dataset", "as_sequences", "MOMENTS_CHUNK_BYTES"]

# the most feature bytes :meth:`Split.moments` reads at once (FCVID's 25 x 4096 float32 videos:
# 163 a chunk; small videos stay at the 2048 a chunk they always had)
MOMENTS_CHUNK_BYTES = 64 << 20

# train: fit weights; val: select models (search and finetune); test: report once;
# retrieval: the database queries are ranked against. A loader may add "val_database": the
# database of the val queries when the retrieval split holds test videos (see ``database``).
SPLITS = ("train", "val", "test", "retrieval")


def as_sequences(x: np.ndarray) -> np.ndarray:
    """(n, T, D) as it is; (n, D), one vector per item (images), as (n, 1, D)."""
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"features of shape {x.shape}: expected (items, width) or "
                         f"(items, time steps, width)")
    return x


@dataclass
class Split:
    """One split: item ids, multi-hot labels, per-modality features and optional auxiliary
    semantics.

    An item is a video (a sequence of T feature vectors per modality) or an image (one
    feature vector per modality, no time axis). Everything downstream sees sequences: an
    image is a sequence of length 1, and :meth:`take` is the one place that makes it one.

    Attributes:
        ids: one id per item.
        labels: (N, num_class) bool; an item may carry several labels; relevance between two
            items = sharing any label.
        features: modality -> array-like of shape (N, T, D_modality) for videos or (N,
            D_modality) for images (numpy or h5py); every such modality of a split has the
            same rank. A text modality is a :class:`~avsearch.data.text.Text`: token ids
            (N, L) or precomputed features (N, L, D), padded, L free of the videos' T.
        aux: optional (N, A) float32 auxiliary semantics of each item (LAGNH's detected-object
            vector: a multi-hot or non-negative score per tag), or None. Unlike ``labels`` a
            self-supervised objective may read it, and a query has it too.
    """

    ids: list[str]
    labels: np.ndarray
    features: dict[str, Any]
    aux: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray | list[int]) -> list[np.ndarray]:
        """float32 features of the items ``index``, one (n, T, D) array per modality; an
        image's (D,) vector comes back as a sequence of length 1, (1, D); a text modality's
        token ids as int64 (n, L), its precomputed features as float32 (n, L, D).

        h5py needs increasing indices without repeats, so read the sorted unique rows once and
        put them back in the requested order.
        """
        index = np.asarray(index, dtype=np.int64)
        uniq, inverse = np.unique(index, return_inverse=True)
        return [np.asarray(f[uniq], dtype=np.int64)[inverse] if is_tokens(f)
                else np.asarray(f[uniq], dtype=np.float32)[inverse] if is_text(f)
                else as_sequences(np.asarray(f[uniq], dtype=np.float32)[inverse])
                for f in self.features.values()]

    def subset(self, rows: np.ndarray | list[int]) -> "Split":
        """The videos ``rows`` (sorted) as a split of their own, without copying features:
        a held-out part of the training data (DARTS's α data) streams from the same arrays."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        return Split([self.ids[i] for i in rows], self.labels[rows],
                     {m: Text(_Rows(f.values, rows), f.vocabulary) if is_text(f)
                      else _Rows(f, rows) for m, f in self.features.items()},
                     None if self.aux is None else self.aux[rows])

    def moments(self, chunk: int = 2048, shard: tuple[int, int] = (0, 1),
                reduce: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per modality the mean and standard deviation of every feature over all videos and
        time steps, read in chunks (``chunk`` videos, fewer when that would pass
        :data:`MOMENTS_CHUNK_BYTES`) so a streamed split is never loaded whole. Precomputed
        text features count their real positions only (not the padding); token ids have
        no moments (no entry).

        ``shard=(k, n)`` reads only the k-th of n contiguous parts of the videos and
        ``reduce`` sums the parts' sums (float64 arrays) over the processes that read the
        others: each process of a distributed run reads only its part."""
        names = list(self.features)
        total: list[np.ndarray | float] = [0.0] * len(names)
        squares: list[np.ndarray | float] = [0.0] * len(names)
        count = [0] * len(names)
        rows = np.array_split(np.arange(len(self)), shard[1])[shard[0]]
        if len(self):
            row_bytes = sum(x.nbytes for x in self.take([0]))
            chunk = max(1, min(chunk, MOMENTS_CHUNK_BYTES // max(1, row_bytes)))
        for start in range(0, len(rows), chunk):
            xs = self.take(rows[start:start + chunk])
            for i, (m, x) in enumerate(zip(names, xs)):
                if is_tokens(self.features[m]):
                    continue
                f = (x[padding_mask(x)] if is_text(self.features[m])
                     else x.reshape(-1, x.shape[-1])).astype(np.float64)
                total[i] = total[i] + f.sum(0)
                squares[i] = squares[i] + (f * f).sum(0)
                count[i] += len(f)
        if reduce is not None:
            kept = [i for i, m in enumerate(names) if not is_tokens(self.features[m])]
            widths = {i: self.take([0])[i].shape[-1] for i in kept} if len(self) else {}
            parts = [np.broadcast_to(np.asarray(v, np.float64), (widths.get(i, 1),)).copy()
                     for i in kept for v in (total[i], squares[i])]
            summed = reduce(parts + [np.asarray([count[i] for i in kept], np.float64)])
            for j, i in enumerate(kept):
                total[i], squares[i] = summed[2 * j], summed[2 * j + 1]
                count[i] = int(summed[-1][j])
        out = {}
        for i, m in enumerate(names):
            if is_tokens(self.features[m]):
                continue
            mean = total[i] / count[i]
            std = np.sqrt(np.maximum(squares[i] / count[i] - mean * mean, 0.0))
            out[m] = (mean.astype(np.float32), std.astype(np.float32))
        return out


class _Concat:
    """Several modalities' frame features side by side, read lazily: ``f[i]`` is the
    concatenation of every part's ``part[i]`` along the feature axis."""

    def __init__(self, parts: list[Any]):
        self.parts = parts
        self.shape = (*parts[0].shape[:-1], sum(int(p.shape[-1]) for p in parts))

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(p[index], dtype=np.float32) for p in self.parts], -1)


class _Rows:
    """Rows of a feature array (numpy or h5py), read lazily: ``f[rows[i]]`` for ``f[i]``."""

    def __init__(self, features: Any, rows: np.ndarray):
        self.features, self.rows = features, rows
        self.shape = (len(rows), *features.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.features[self.rows[index]]  # increasing in, increasing out (h5py needs it)


@dataclass
class Dataset:
    """A data set: modalities (ordered, with widths), sequence length, classes, splits."""

    name: str
    source: str                      # what --data named: a built-in name or a path
    modalities: dict[str, int]       # modality -> feature width, in network input order
    length: int                      # time steps T per video; 1 for images (no time axis)
    num_class: int
    splits: dict[str, Split]
    info: dict[str, Any] = field(default_factory=dict)  # loader-specific facts (checksums, ...)

    def select(self, spec: str) -> "Dataset":
        """Some of the modalities: ``"visual"`` keeps one, ``"visual,audio"`` several (in that
        order), ``"visual+audio"`` joins them frame by frame into one modality ``visual_audio``
        (width the sum): a one-modality view, for spaces such as ``vhmt``, that loses no signal.
        """
        groups = [g.strip() for g in spec.split(",")]
        parts = [[m.strip() for m in g.split("+")] for g in groups]
        names = [m for group in parts for m in group]
        unknown = [m for m in names if m not in self.modalities]
        if not spec.strip() or "" in names or unknown:
            raise AvsearchInputError(
                f"data set {self.name!r}: cannot select modalities {spec!r}"
                + (f" (no {', '.join(map(repr, unknown))})" if unknown else "")
                + f"; it has {', '.join(self.modalities)} (e.g. {self.name}:"
                f"{next(iter(self.modalities))} or {self.name}:{'+'.join(self.modalities)})")
        if len(set(names)) != len(names):
            raise AvsearchInputError(f"data set {self.name!r}: modalities {spec!r} name one twice")
        train = self.split("train").features
        for group in parts:
            text = [m for m in group if is_text(train[m])]
            if len(group) > 1 and text:
                raise AvsearchInputError(
                    f"data set {self.name!r}: cannot join {'+'.join(group)!r} frame by frame: "
                    f"{text[0]!r} is text, of its own length; select it beside the others "
                    f"({','.join(group)})")

        def pick(split: Split) -> Split:
            feats = {"_".join(g): (split.features[g[0]] if len(g) == 1
                                   else _Concat([split.features[m] for m in g])) for g in parts}
            return Split(split.ids, split.labels, feats, split.aux)

        modalities = {"_".join(g): sum(self.modalities[m] for m in g) for g in parts}
        return Dataset(name=f"{self.name}:{spec}", source=f"{self.source}:{spec}",
                       modalities=modalities, length=self.length, num_class=self.num_class,
                       splits={k: pick(v) for k, v in self.splits.items()}, info=self.info)

    @property
    def images(self) -> bool:
        """Whether the items are images: one feature vector each, no time axis (a text
        modality beside them has its own length)."""
        feats = [f for f in self.split("train").features.values() if not is_text(f)]
        return bool(feats) and all(len(f.shape) == 2 for f in feats)

    def _features(self) -> dict[str, Any]:
        """The training split's features (any split's when it has none; none without
        splits): what the modalities are made of."""
        split = self.splits.get("train") or next(iter(self.splits.values()), None)
        return {} if split is None else split.features

    @property
    def text(self) -> list[str]:
        """The text modalities (token ids or precomputed features), in input order."""
        return [m for m, f in self._features().items() if is_text(f)]

    @property
    def lengths(self) -> dict[str, int]:
        """Per modality its steps: the videos' ``length`` (1 for images), a text modality's
        padded length L (a split may pad to its own L; this is the training split's)."""
        feats = self._features()
        return {m: int(feats[m].shape[1]) if m in feats and is_text(feats[m]) else self.length
                for m in self.modalities}

    def vocabulary(self, modality: str):
        """The :class:`~avsearch.data.text.Vocabulary` of a token modality (None for
        features)."""
        f = self.split("train").features[modality]
        return f.vocabulary if is_text(f) else None

    @property
    def aux_width(self) -> int:
        """Width of the auxiliary semantics (:attr:`Split.aux`); 0 when there are none."""
        aux = self.split("train").aux
        return 0 if aux is None else int(aux.shape[1])

    def database(self, queries: str) -> Split:
        """The database the queries of split ``queries`` are ranked against: ``retrieval``,
        except for ``val`` where the loader gave a ``val_database`` because the retrieval
        split holds test videos (validation must not rank against test data)."""
        if queries == "val" and "val_database" in self.splits:
            return self.splits["val_database"]
        return self.split("retrieval")

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise AvsearchInputError(f"data set {self.name!r} has no split {name!r} "
                                     f"(it has {', '.join(self.splits)})")
        return self.splits[name]
