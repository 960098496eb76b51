"""The AV-NAS training sampler: per anchor one positive and ``negatives`` negatives.

The positive shares a label with the anchor; the negatives share no label with the anchor and
come from distinct classes (paper: 1 positive, 4 negatives from 4 distinct other classes). It
handles multi-label data: a positive is drawn by picking one of the anchor's labels that has
another member, then a member of it; negatives by picking distinct classes that hold at least
one video sharing no label with the anchor, then such a video of each class, uniformly.

Everything is vectorised with numpy; an epoch over 45k videos and 239 classes takes well under
a second. Batches are a pure function of (seed, epoch), independent of the batch size, so a
resumed run reproduces them.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from avsearch.errors import AvsearchInputError

__all__ = ["TripletSampler", "ClassBatchSampler", "shard_bounds"]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an ``n``-row batch that process ``rank`` of ``world`` takes.

    Every process draws the same global batches (the samplers are pure functions of the seed
    and the epoch) and takes its contiguous share of each: shares differ by at most one row,
    the lower ranks take the larger ones, and together they are the batch in order. A pure
    function, so every process knows every other's share without asking (``numpy.array_split``
    cuts the same way)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of {world} processes")
    base, extra = divmod(int(n), world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class TripletSampler:
    """Anchor / positive / negatives index batches over a multi-hot label matrix.

    Args:
        labels: (N, C) bool; row i are the labels of video i (several for multi-label data).
        negatives: negatives per anchor, each from a different class.
        seed: base seed; epoch ``k`` draws from ``numpy.random.default_rng([seed, k])``.

    Attributes:
        eligible: indices of the videos that can be anchors: they have a positive (a label
            with another member) and at least ``negatives`` classes holding a video that shares
            no label with them. Each epoch visits every one of them exactly once.
        skipped: counts of the videos that cannot: ``{"no_positive": ..., "few_negative_classes":
            ...}`` (unlabelled videos count as ``no_positive``).
    """

    #: anchors drawn per vectorised step; fixed because the random stream depends on it.
    CHUNK = 8192
    #: rejection rounds for multi-label negatives before the exact per-pair fallback.
    _ROUNDS = 32

    def __init__(self, labels: np.ndarray, negatives: int = 4, seed: int = 0):
        labels = np.asarray(labels).astype(bool, copy=False)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (videos, classes), got shape {labels.shape}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        n, c = labels.shape
        self.labels, self.negatives, self.seed = labels, int(negatives), int(seed)
        self._n = n

        vid, cls = np.nonzero(labels)                       # sorted by video, then class
        self._single = bool(labels.sum(1).max(initial=0) <= 1)
        # Class -> members (CSR, members sorted), plus a sorted key to find a video in a class.
        order = np.lexsort((vid, cls))
        self._members = vid[order]
        self._size = np.bincount(cls, minlength=c)
        self._ptr = np.concatenate([[0], np.cumsum(self._size)])
        self._key = cls[order].astype(np.int64) * n + self._members
        # Video -> its labels that have another member (the ones a positive can come from).
        ok = self._size[cls] >= 2
        self._pos_cls = cls[ok]
        self._pos_ptr = np.concatenate([[0], np.cumsum(np.bincount(vid[ok], minlength=n))])
        has_pos = np.diff(self._pos_ptr) > 0

        # Negative classes depend only on the anchor's label set: compute them per distinct set.
        self._packed = np.packbits(labels, axis=1)
        sets, self._set_of = np.unique(self._packed, axis=0, return_inverse=True)
        self._set_of = self._set_of.reshape(-1)
        self._allowed = self._negative_classes(labels, np.unpackbits(sets, axis=1, count=c)
                                               .astype(bool))
        enough = self._allowed.sum(1)[self._set_of] >= self.negatives

        self.eligible = np.flatnonzero(has_pos & enough)
        self.skipped = {"no_positive": int((~has_pos).sum()),
                        "few_negative_classes": int((has_pos & ~enough).sum())}
        if not len(self.eligible):
            raise AvsearchInputError(
                f"no training video can be an anchor: each needs another video sharing a label "
                f"and {self.negatives} other classes to draw negatives from ({n} videos, {c} "
                f"classes; {self.skipped['no_positive']} without a positive, "
                f"{self.skipped['few_negative_classes']} with too few negative classes)")

    def _negative_classes(self, labels: np.ndarray, sets: np.ndarray) -> np.ndarray:
        """(sets, C) bool: class c holds a video sharing no label with the set."""
        nonempty = self._size > 0
        if self._single:                  # a video of another class shares nothing with it
            return nonempty[None, :] & ~sets
        import scipy.sparse

        lab = scipy.sparse.csr_matrix(labels, dtype=np.float32)
        out = np.zeros(sets.shape, bool)
        step = max(1, (32 << 20) // max(1, labels.shape[0]))
        for s in range(0, len(sets), step):
            chunk = sets[s:s + step].astype(np.float32)
            clean = np.asarray(lab @ chunk.T) == 0           # (N, sets): shares no label
            out[s:s + step] = np.asarray(lab.T @ clean.astype(np.float32)).T > 0
        return out

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches per epoch."""
        n = len(self.eligible)
        return n // batch_size if drop_last else -(-n // batch_size)

    def epoch(self, batch_size: int, epoch: int = 0, drop_last: bool = False
              ) -> Iterator[np.ndarray]:
        """Yield (b, 2 + negatives) int64 arrays: anchor, positive, negatives per row.

        Anchors are a permutation of :attr:`eligible` drawn from (seed, epoch); the last batch
        is shorter unless ``drop_last``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return self._iterate(batch_size, epoch, drop_last)

    def _iterate(self, batch_size: int, epoch: int, drop_last: bool) -> Iterator[np.ndarray]:
        rows = self.draw(epoch)
        stop = len(rows) - len(rows) % batch_size if drop_last else len(rows)
        for start in range(0, stop, batch_size):
            yield rows[start:start + batch_size]

    def draw(self, epoch: int = 0) -> np.ndarray:
        """All (anchor, positive, negatives...) rows of one epoch, in batch order."""
        rng = np.random.default_rng([self.seed, epoch])
        anchors = rng.permutation(self.eligible)
        parts = [self._draw(anchors[s:s + self.CHUNK], rng)
                 for s in range(0, len(anchors), self.CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, 2 + self.negatives), np.int64)

    def _draw(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, ptr = self._n, self._ptr
        # Positive: one of the anchor's usable labels, then another member of that class.
        start = self._pos_ptr[a]
        cls = self._pos_cls[start + rng.integers(0, self._pos_ptr[a + 1] - start)]
        r = rng.integers(0, self._size[cls] - 1)
        own = np.searchsorted(self._key, cls * n + a) - ptr[cls]    # anchor's slot in class
        pos = self._members[ptr[cls] + r + (r >= own)]

        # Negatives: a uniform random subset of the allowed classes (top-k of iid uniforms).
        scores = rng.random((len(a), self._allowed.shape[1]), dtype=np.float32)
        scores[~self._allowed[self._set_of[a]]] = -1.0
        k = self.negatives
        ncls = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        neg = self._members[ptr[ncls] + rng.integers(0, self._size[ncls])]
        if not self._single:
            neg = self._clean_negatives(a, ncls, neg, rng)
        return np.column_stack([a, pos, neg]).astype(np.int64)

    def _shares(self, a: np.ndarray, v: np.ndarray) -> np.ndarray:
        return (self._packed[v] & self._packed[a][:, None, :]).any(-1)

    def _clean_negatives(self, a: np.ndarray, ncls: np.ndarray, neg: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray:
        """Redraw negatives that share a label with their anchor (multi-label data only)."""
        bad = self._shares(a, neg)
        for _ in range(self._ROUNDS):
            if not bad.any():
                return neg
            i, j = np.nonzero(bad)
            c = ncls[i, j]
            neg[i, j] = self._members[self._ptr[c] + rng.integers(0, self._size[c])]
            bad[i, j] = self._shares(a[i], neg[i, j][:, None])[:, 0]
        for i, j in zip(*np.nonzero(bad)):                  # rare: few clean members
            c = ncls[i, j]
            members = self._members[self._ptr[c]:self._ptr[c + 1]]
            clean = members[~(self._packed[members] & self._packed[a[i]]).any(-1)]
            neg[i, j] = clean[rng.integers(0, len(clean))]
        return neg


class ClassBatchSampler:
    """Batches in which every video meets others of its class: the batches of a supervised
    contrastive loss over all in-batch pairs (Khosla et al., 2020), whatever the number of
    classes.

    Each epoch visits every labelled video once. Every video is given one of its labels at
    random (multi-label data) and the videos of each class, shuffled, are cut into groups of
    ``per_class`` (a last group of one joins the one before); the groups are shuffled and concatenated, so a batch of B videos holds
    about B / ``per_class`` classes with ``per_class`` videos each (a plain shuffle gives
    almost no in-batch positives once the classes outnumber the batch, e.g. FCVID's 239).
    Batches are a pure function of (seed, epoch), so a resumed run reproduces them.
    """

    def __init__(self, labels: np.ndarray, per_class: int = 4, seed: int = 0):
        labels = np.asarray(labels).astype(bool, copy=False)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (videos, classes), got shape {labels.shape}")
        if per_class < 2:
            raise ValueError(f"per_class must be >= 2, got {per_class}")
        self.labels, self.per_class, self.seed = labels, int(per_class), int(seed)
        self.eligible = np.flatnonzero(labels.any(1))
        if not len(self.eligible):
            raise AvsearchInputError("no training video has a label; a supervised objective "
                                     "needs them")

    def draw(self, epoch: int = 0) -> np.ndarray:
        """Every labelled video once, in batch order."""
        rng = np.random.default_rng([self.seed, epoch])
        videos = rng.permutation(self.eligible)
        lab = self.labels[videos]
        # one label per video, uniformly among its labels (top-1 of iid uniforms on its labels)
        cls = np.argmax(np.where(lab, rng.random(lab.shape), -1.0), axis=1)
        order = np.argsort(cls, kind="stable")          # by class, shuffled within each
        videos, cls = videos[order], cls[order]
        rank = np.arange(len(cls)) - np.searchsorted(cls, cls)   # position within its class
        size = np.bincount(cls)[cls]
        # a class's last group of one joins the group before it: a lone video has no positive
        last = (size - 1) // self.per_class - ((size % self.per_class == 1) & (size > 1))
        part = np.minimum(rank // self.per_class, last)
        group = np.unique(np.stack([cls, part], 1), axis=0, return_inverse=True)[1]
        group = np.asarray(group).reshape(-1)
        shuffled = rng.permutation(group.max() + 1)[group]       # groups in random order
        return videos[np.argsort(shuffled, kind="stable")]

    def epoch(self, batch_size: int, epoch: int = 0) -> Iterator[np.ndarray]:
        """Index batches of ``batch_size`` videos (the last one shorter)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = self.draw(epoch)
        return iter([rows[s:s + batch_size] for s in range(0, len(rows), batch_size)])
