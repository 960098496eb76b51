"""TripletSampler: the paper's 1 positive + k negatives from k distinct other classes."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avsearch.data.sampler import TripletSampler
from avsearch.errors import AvsearchInputError


def eligible_by_brute_force(labels: np.ndarray, k: int) -> np.ndarray:
    """Videos with a positive and >= k classes holding a video that shares no label with them."""
    shares = (labels.astype(int) @ labels.T.astype(int)) > 0
    out = []
    for a in range(len(labels)):
        has_pos = any(shares[a, v] for v in range(len(labels)) if v != a)
        clean = ~shares[a]
        neg_classes = labels[clean].any(0) & ~labels[a]
        if has_pos and neg_classes.sum() >= k:
            out.append(a)
    return np.array(out, dtype=np.int64)


def distinct_classes(labels: np.ndarray, negs: np.ndarray) -> bool:
    """The negatives can be assigned to pairwise different classes they carry."""
    choices = [np.flatnonzero(labels[v]) for v in negs]
    return any(len(set(pick)) == len(pick) for pick in itertools.product(*choices))


def check_rows(labels: np.ndarray, rows: np.ndarray, k: int) -> None:
    assert rows.shape[1] == 2 + k and rows.dtype == np.int64
    for a, p, *negs in rows:
        assert p != a and (labels[a] & labels[p]).any()
        for v in negs:
            assert not (labels[a] & labels[v]).any()
        assert distinct_classes(labels, np.array(negs))


@st.composite
def label_matrices(draw):
    n = draw(st.integers(2, 30))
    c = draw(st.integers(1, 7))
    multi = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, c), bool)
    labels[np.arange(n), rng.integers(0, c, n)] = True
    if multi:
        labels |= rng.random((n, c)) < 0.2
    labels[rng.random(n) < 0.1] = False                  # a few unlabelled videos
    return labels


@settings(max_examples=100, deadline=None)
@given(labels=label_matrices(), k=st.integers(1, 4), seed=st.integers(0, 1000),
       epoch=st.integers(0, 50), batch=st.integers(1, 9))
def test_properties(labels, k, seed, epoch, batch):
    want = eligible_by_brute_force(labels, k)
    if not len(want):
        with pytest.raises(AvsearchInputError):
            TripletSampler(labels, negatives=k, seed=seed)
        return
    s = TripletSampler(labels, negatives=k, seed=seed)
    np.testing.assert_array_equal(s.eligible, want)
    assert s.skipped["no_positive"] + s.skipped["few_negative_classes"] == len(labels) - len(want)
    batches = list(s.epoch(batch, epoch=epoch))
    assert len(batches) == s.num_batches(batch)
    assert all(len(b) == batch for b in batches[:-1]) and 0 < len(batches[-1]) <= batch
    rows = np.concatenate(batches)
    assert sorted(rows[:, 0].tolist()) == want.tolist()     # every anchor exactly once
    check_rows(labels, rows, k)


def test_multilabel_negatives_avoid_every_anchor_label():
    """Class 1's members mostly also carry class 0; class-0 anchors must skip those."""
    labels = np.zeros((40, 5), bool)
    labels[:10, 0] = True
    labels[10:30, 1] = True
    labels[10:29, 0] = True              # only video 29 of class 1 shares nothing with class 0
    labels[30:34, 2] = labels[34:37, 3] = labels[37:, 4] = True
    s = TripletSampler(labels, negatives=4, seed=1)
    rows = np.concatenate(list(s.epoch(7, epoch=3)))
    check_rows(labels, rows, 4)
    anchors0 = rows[np.isin(rows[:, 0], np.arange(10))]
    assert (anchors0[:, 2:] == 29).any(axis=1).all()         # the one clean video of class 1


def test_single_label_uniformity_and_distinct_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 600)
    labels = np.eye(12, dtype=bool)[y]
    s = TripletSampler(labels, negatives=4, seed=0)
    rows = s.draw(0)
    assert (y[rows[:, 1]] == y[rows[:, 0]]).all()
    neg_y = y[rows[:, 2:]]
    assert (np.sort(neg_y, 1)[:, 1:] != np.sort(neg_y, 1)[:, :-1]).all()   # distinct classes
    assert (neg_y != y[rows[:, :1]]).all()
    # negative classes spread evenly over the 11 others (uniform subset choice)
    counts = np.bincount(((neg_y - y[rows[:, :1]]) % 12).ravel(), minlength=12)[1:]
    assert counts.min() > 0.8 * counts.mean()


def test_determinism_by_seed_and_epoch():
    labels = np.eye(10, dtype=bool)[np.random.default_rng(0).integers(0, 10, 300)]
    a = TripletSampler(labels, seed=5)
    b = TripletSampler(labels, seed=5)
    for e in (0, 7):
        np.testing.assert_array_equal(np.concatenate(list(a.epoch(32, epoch=e))),
                                      np.concatenate(list(b.epoch(32, epoch=e))))
    e0 = a.draw(0)
    assert not np.array_equal(e0, a.draw(1))
    assert not np.array_equal(e0, TripletSampler(labels, seed=6).draw(0))
    # the batch size only slices the epoch: a resumed run with another batch size sees the same
    np.testing.assert_array_equal(np.concatenate(list(a.epoch(7, epoch=0))), e0)
    dropped = list(a.epoch(64, epoch=0, drop_last=True))
    assert len(dropped) == a.num_batches(64, drop_last=True) == 300 // 64
    np.testing.assert_array_equal(np.concatenate(dropped), e0[:len(dropped) * 64])


def test_chunk_boundaries(monkeypatch):
    """Epochs longer than one vectorised chunk stay valid across chunk borders."""
    monkeypatch.setattr(TripletSampler, "CHUNK", 16)
    labels = np.eye(6, dtype=bool)[np.random.default_rng(2).integers(0, 6, 100)]
    labels[::7, (np.arange(100)[::7] + 1) % 6] = True
    s = TripletSampler(labels, negatives=3)
    rows = s.draw(2)
    assert sorted(rows[:, 0]) == list(s.eligible)
    check_rows(labels, rows, 3)


def test_skips_and_errors():
    labels = np.zeros((6, 6), bool)
    labels[[0, 1], 0] = True            # class 0: two videos -> positives exist
    labels[2, 1] = labels[3, 2] = labels[4, 3] = True   # singletons: no positive
    s = TripletSampler(labels, negatives=3)             # video 5 unlabelled
    assert s.eligible.tolist() == [0, 1]
    assert s.skipped == {"no_positive": 4, "few_negative_classes": 0}
    t = TripletSampler(labels, negatives=2)
    assert t.eligible.tolist() == [0, 1]
    with pytest.raises(AvsearchInputError, match="no training video can be an anchor"):
        TripletSampler(labels, negatives=4)
    with pytest.raises(ValueError):
        next(s.epoch(0))
