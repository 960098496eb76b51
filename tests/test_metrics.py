"""Tests of avsearch.metrics: hand-computed cases for every normalisation, and a property test
against a naive full-matrix reference (plain numpy/Python, stable sort on (distance, index)).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avsearch import metrics
from avsearch.errors import AvsearchInputError
from avsearch.metrics import hamming_distance, rank, retrieval_metrics

# ----------------------------------------------------------------------- the hand-made case
#
# 4 bits, 6 database items, 3 queries, C = 4 classes (class 3 is in no database item).
#
#   db   code          labels        q0 = ++++ {0}   q1 = ---- {3}   q2 = ++-- {1,2}
#   d0   + + + +       {0}            dist 0, rel     dist 4          dist 2
#   d1   - + + +       {0,1}          dist 1, rel     dist 3          dist 3, rel
#   d2   + - + +       {2}            dist 1          dist 3          dist 3, rel
#   d3   - - + +       {2}            dist 2          dist 2          dist 4, rel
#   d4   - - - +       {0}            dist 3, rel     dist 1          dist 3
#   d5   + + + -       {1}            dist 1          dist 3          dist 1, rel
#
# Rankings by (distance, index):
#   q0: d0 d1 d2 d5 d3 d4   (d1, d2, d5 tie at 1: index order; reversed it would change AP)
#       rel 1  1  0  0  0  1          R_q0 = 3
#   q1: d4 d3 d1 d2 d5 d0   nothing relevant, R_q1 = 0
#   q2: d5 d0 d1 d2 d4 d3   (d1, d2, d4 tie at 3; multi-label query and multi-label d1)
#       rel 1  0  1  1  0  1          R_q2 = 4

P, M = 1, -1
DB = np.array([[P, P, P, P], [M, P, P, P], [P, M, P, P],
               [M, M, P, P], [M, M, M, P], [P, P, P, M]], dtype=np.int8)
DB_LABELS = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                      [0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
Q = np.array([[P, P, P, P], [M, M, M, M], [P, P, M, M]], dtype=np.int8)
Q_LABELS = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 0]], dtype=bool)
KS = (2, 4, 10)  # 10 > 6 database items

# Per query and K: (AP "k", AP "retrieved", AP "min", P@K, R@K), S_K = Σ_{r≤K} rel_r·P(r).
HAND = {
    # q0 rel 1 1 0 0 0 1: P(1)=1, P(2)=2/2=1, P(6)=3/6
    "q0": {
        2: (2 / 2, 2 / 2, 2 / 2, 2 / 2, 2 / 3),          # S=1+1=2, hits 2, min(2,3)=2
        4: (2 / 4, 2 / 2, 2 / 3, 2 / 4, 2 / 3),          # S=2, hits 2, min(4,3)=3
        10: (2.5 / 10, 2.5 / 3, 2.5 / 3, 3 / 10, 3 / 3),  # S=2+1/2, hits 3, min(10,3)=3
    },
    # q1: R_q = 0, everything 0 (and it stays in the means)
    "q1": {k: (0.0, 0.0, 0.0, 0.0, 0.0) for k in KS},
    # q2 rel 1 0 1 1 0 1: P(1)=1, P(3)=2/3, P(4)=3/4, P(6)=4/6
    "q2": {
        2: (1 / 2, 1 / 1, 1 / 2, 1 / 2, 1 / 4),                       # S=1, hits 1
        4: ((29 / 12) / 4, (29 / 12) / 3, (29 / 12) / 4, 3 / 4, 3 / 4),  # S=1+2/3+3/4=29/12
        10: ((37 / 12) / 10, (37 / 12) / 4, (37 / 12) / 4, 4 / 10, 4 / 4),  # S=29/12+4/6
    },
}
NORM_COL = {"k": 0, "retrieved": 1, "min": 2}


def test_hamming_distance_by_hand():
    d = hamming_distance(Q, DB)
    assert d.tolist() == [[0, 1, 1, 2, 3, 1], [4, 3, 3, 2, 1, 3], [2, 3, 3, 4, 3, 1]]


def test_rank_by_hand_ties_by_index():
    idx, dist = rank(Q, DB, k=6, block_size=2)
    assert idx.tolist() == [[0, 1, 2, 5, 3, 4], [4, 3, 1, 2, 5, 0], [5, 0, 1, 2, 4, 3]]
    assert dist.tolist() == [[0, 1, 1, 1, 2, 3], [1, 2, 3, 3, 3, 4], [1, 2, 3, 3, 3, 4]]
    idx3, _ = rank(Q, DB, k=3)
    assert idx3.tolist() == [[0, 1, 2], [4, 3, 1], [5, 0, 1]]
    # k beyond the database is capped at N_db
    assert rank(Q, DB, k=100)[0].shape == (3, 6)


@pytest.mark.parametrize("normalisation", ["k", "retrieved", "min"])
@pytest.mark.parametrize("block_size", [1, 2, 3, 1024])
def test_metrics_by_hand(normalisation, block_size):
    res = retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=KS, normalisation=normalisation,
                            block_size=block_size, per_query=True)
    col = NORM_COL[normalisation]
    assert res["normalisation"] == normalisation
    assert res["ks"] == list(KS)
    for i, name in enumerate(["q0", "q1", "q2"]):
        for j, k in enumerate(KS):
            ap, p, r = HAND[name][k][col], HAND[name][k][3], HAND[name][k][4]
            assert res["per_query"]["ap"][i, j] == pytest.approx(ap, abs=1e-12)
            assert res["per_query"]["precision"][i, j] == pytest.approx(p, abs=1e-12)
            assert res["per_query"]["recall"][i, j] == pytest.approx(r, abs=1e-12)
    assert res["per_query"]["n_relevant"].tolist() == [3, 0, 4]
    assert res["n_queries_without_relevant"] == 1
    for k in KS:  # means over all 3 queries, q1 included as 0
        assert res["map"][k] == pytest.approx(sum(HAND[q][k][col] for q in HAND) / 3)
        assert res["precision"][k] == pytest.approx(sum(HAND[q][k][3] for q in HAND) / 3)
        assert res["recall"][k] == pytest.approx(sum(HAND[q][k][4] for q in HAND) / 3)
    assert res["gmap"] == pytest.approx(math.sqrt(sum(res["map"][k] ** 2 for k in KS)))


def test_mean_map_k_normalisation_numbers():
    # K=2, "k": (1 + 0 + 1/2) / 3 = 1/2;  K=4: (1/2 + 0 + 29/48) / 3 = 53/144
    res = retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=(2, 4))
    assert res["map"][2] == pytest.approx(0.5)
    assert res["map"][4] == pytest.approx(53 / 144)
    assert res["gmap"] == pytest.approx(math.sqrt(0.25 + (53 / 144) ** 2))


def test_pr_curve_by_hand():
    # Pairs per distance d (all / relevant), by query:
    #   q0: d0 1/1, d1 3/1 (d1 rel, d2 d5 not), d2 1/0, d3 1/1
    #   q1: d1 1/0, d2 1/0, d3 3/0, d4 1/0
    #   q2: d1 1/1, d2 1/0, d3 3/2, d4 1/1
    # totals: all 1,5,3,7,2   relevant 1,2,0,3,1   (7 relevant pairs = R 3 + 0 + 4)
    # cumulative within radius r: retrieved 1,6,9,16,18; relevant 1,3,3,6,7
    pr = retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=KS)["pr_curve"]
    assert pr["averaging"] == "micro"
    assert pr["radius"] == [0, 1, 2, 3, 4]
    assert pr["retrieved"] == [1, 6, 9, 16, 18]
    assert pr["relevant_retrieved"] == [1, 3, 3, 6, 7]
    assert pr["relevant_total"] == 7
    assert pr["precision"] == pytest.approx([1, 3 / 6, 3 / 9, 6 / 16, 7 / 18])
    assert pr["recall"] == pytest.approx([1 / 7, 3 / 7, 3 / 7, 6 / 7, 1])


def test_pr_curve_optional():
    assert retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, pr_curve=False)["pr_curve"] is None


# Queries inside the database (FCVID protocol): queries are d0 (id "a") and d2 (id "c").
#   a = ++++ {0}, self excluded: d1 d2 d5 (dist 1) d3 (2) d4 (3); rel 1 0 0 0 1; R = 2
#     K=2: S = 1, hits 1          -> k 1/2, retrieved 1, min 1/min(2,2) = 1/2; P 1/2, R 1/2
#     K=6 (> 5 left): S = 1 + 2/5 -> k 7/30, retrieved 7/10, min 7/10; P 2/6, R 1
#   c = +-++ {2}, self excluded: d0 d3 (dist 1) d1 d4 d5 (2); rel 0 1 0 0 0; R = 1
#     K=2: S = 1/2, hits 1        -> k 1/4, retrieved 1/2, min (1/2)/min(2,1) = 1/2; P 1/2, R 1
#     K=6: S = 1/2                -> k 1/12, retrieved 1/2, min 1/2; P 1/6, R 1
IDS = ["a", "b", "c", "d", "e", "f"]
HAND_SELF = {
    "a": {2: (1 / 2, 1, 1 / 2, 1 / 2, 1 / 2), 6: (7 / 30, 7 / 10, 7 / 10, 2 / 6, 1)},
    "c": {2: (1 / 4, 1 / 2, 1 / 2, 1 / 2, 1), 6: (1 / 12, 1 / 2, 1 / 2, 1 / 6, 1)},
}


@pytest.mark.parametrize("normalisation", ["k", "retrieved", "min"])
def test_exclude_self_by_hand(normalisation):
    qsel = [0, 2]
    res = retrieval_metrics(DB[qsel], DB_LABELS[qsel], DB, DB_LABELS, ks=(2, 6),
                            normalisation=normalisation, per_query=True,
                            exclude_self_ids=(["a", "c"], IDS), block_size=1)
    col = NORM_COL[normalisation]
    assert res["self_excluded"] is True
    for i, name in enumerate(["a", "c"]):
        for j, k in enumerate((2, 6)):
            want = HAND_SELF[name][k]
            assert res["per_query"]["ap"][i, j] == pytest.approx(want[col])
            assert res["per_query"]["precision"][i, j] == pytest.approx(want[3])
            assert res["per_query"]["recall"][i, j] == pytest.approx(want[4])
    assert res["per_query"]["n_relevant"].tolist() == [2, 1]
    # PR pairs (all / relevant) per distance: a: d1 3/1, d2 1/0, d3 1/1; c: d1 2/1, d2 3/0
    # -> cumulative retrieved 0,5,9,10,10; relevant 0,2,2,3,3; precision 0 where none
    pr = res["pr_curve"]
    assert pr["retrieved"] == [0, 5, 9, 10, 10]
    assert pr["relevant_retrieved"] == [0, 2, 2, 3, 3]
    assert pr["precision"] == pytest.approx([0, 2 / 5, 2 / 9, 3 / 10, 3 / 10])
    assert pr["recall"] == pytest.approx([0, 2 / 3, 2 / 3, 1, 1])


def test_rank_exclude_self_marks_short_rankings():
    idx, dist = rank(DB[[0, 2]], DB, k=6, exclude_self_ids=(["a", "c"], IDS))
    assert idx.tolist() == [[1, 2, 5, 3, 4, -1], [0, 3, 1, 4, 5, -1]]
    assert dist.tolist() == [[1, 1, 1, 2, 3, -1], [1, 1, 2, 2, 2, -1]]
    # ids absent from the database exclude nothing
    idx, _ = rank(DB[[0]], DB, k=2, exclude_self_ids=(["zz"], IDS))
    assert idx.tolist() == [[0, 1]]


def test_class_id_labels_equal_one_hot():
    qy = np.array([0, 3, 2])
    dy = np.array([0, 1, 2, 2, 0, 1])
    a = retrieval_metrics(Q, qy, DB, dy, ks=KS, per_query=True)
    b = retrieval_metrics(Q, np.eye(4, dtype=bool)[qy], DB, np.eye(4, dtype=bool)[dy], ks=KS,
                          per_query=True)
    np.testing.assert_array_equal(a["per_query"]["ap"], b["per_query"]["ap"])
    assert a["pr_curve"] == b["pr_curve"]


def test_torch_inputs_threads_and_json():
    res = retrieval_metrics(torch.from_numpy(Q), torch.from_numpy(Q_LABELS),
                            torch.from_numpy(DB), torch.from_numpy(DB_LABELS), ks=KS, threads=1)
    ref = retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=KS)
    assert res == ref
    json.dumps(res)  # JSON-serialisable (int K keys become strings)


def test_threads_restored():
    before = torch.get_num_threads()
    retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [
    dict(normalisation="mean"), dict(ks=()), dict(ks=(0, 5)), dict(block_size=0),
    dict(threads=0),
])
def test_bad_arguments(bad):
    with pytest.raises(AvsearchInputError):
        retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, **bad)


def test_bad_inputs():
    with pytest.raises(AvsearchInputError, match=r"\+1 and -1"):
        retrieval_metrics((Q > 0).astype(np.int8), Q_LABELS, DB, DB_LABELS)
    with pytest.raises(AvsearchInputError, match="bits"):
        retrieval_metrics(Q[:, :3], Q_LABELS, DB, DB_LABELS)
    with pytest.raises(AvsearchInputError, match="labels"):
        retrieval_metrics(Q, Q_LABELS[:2], DB, DB_LABELS)
    with pytest.raises(AvsearchInputError, match="classes"):
        retrieval_metrics(Q, Q_LABELS[:, :3], DB, DB_LABELS)
    with pytest.raises(AvsearchInputError, match="not unique"):
        retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, exclude_self_ids=(["a"] * 3, ["a"] * 6))


# -------------------------------------------------------------------- the naive reference


def naive_metrics(qc, ql, dc, dl, ks, normalisation, self_pos=None):
    """Full-matrix reference: per query, a stable sort on (distance, index) in plain Python."""
    qc, dc = qc.astype(np.int64), dc.astype(np.int64)
    bits = qc.shape[1]
    dist = (bits - qc @ dc.T) // 2
    rel = (ql.astype(np.int64) @ dl.astype(np.int64).T) > 0
    nq, nd = dist.shape
    ap = np.zeros((nq, len(ks)))
    prec = np.zeros((nq, len(ks)))
    rec = np.zeros((nq, len(ks)))
    n_rel = np.zeros(nq, dtype=np.int64)
    pairs_all = np.zeros(bits + 1, dtype=np.int64)
    pairs_rel = np.zeros(bits + 1, dtype=np.int64)
    order_all = []
    for i in range(nq):
        valid = [j for j in range(nd) if self_pos is None or j != self_pos[i]]
        order = sorted(valid, key=lambda j: (dist[i, j], j))
        order_all.append(order)
        r = [bool(rel[i, j]) for j in order]
        rq = sum(r)
        n_rel[i] = rq
        for j in valid:
            pairs_all[dist[i, j]] += 1
            pairs_rel[dist[i, j]] += bool(rel[i, j])
        for c, k in enumerate(ks):
            top = r[:k]
            hits, s = 0, 0.0
            for pos, x in enumerate(top, start=1):
                if x:
                    hits += 1
                    s += hits / pos
            if normalisation == "k":
                ap[i, c] = s / k
            elif normalisation == "retrieved":
                ap[i, c] = s / hits if hits else 0.0
            else:
                ap[i, c] = s / min(k, rq) if rq else 0.0
            prec[i, c] = hits / k
            rec[i, c] = hits / rq if rq else 0.0
    retrieved = np.cumsum(pairs_all)
    rel_retrieved = np.cumsum(pairs_rel)
    pr_p = [rel_retrieved[d] / retrieved[d] if retrieved[d] else 0.0 for d in range(bits + 1)]
    total = pairs_rel.sum()
    pr_r = [rel_retrieved[d] / total if total else 0.0 for d in range(bits + 1)]
    return dict(ap=ap, prec=prec, rec=rec, n_rel=n_rel, order=order_all, dist=dist,
                retrieved=retrieved.tolist(), rel_retrieved=rel_retrieved.tolist(),
                pr_p=pr_p, pr_r=pr_r)


def random_case(seed, nq, nd, bits, n_class, label_kind, tie_heavy):
    rng = np.random.default_rng(seed)
    if tie_heavy:  # few distinct codes: many exact ties
        pool = np.where(rng.random((3, bits)) < 0.5, -1, 1).astype(np.int8)
        qc, dc = pool[rng.integers(0, 3, nq)], pool[rng.integers(0, 3, nd)]
    else:
        qc = np.where(rng.random((nq, bits)) < 0.5, -1, 1).astype(np.int8)
        dc = np.where(rng.random((nd, bits)) < 0.5, -1, 1).astype(np.int8)
    if label_kind == "single":
        ql = np.eye(n_class, dtype=bool)[rng.integers(0, n_class, nq)]
        dl = np.eye(n_class, dtype=bool)[rng.integers(0, n_class, nd)]
    elif label_kind == "two":  # at most one label per query, at most two per item
        ql = np.eye(n_class, dtype=bool)[rng.integers(0, n_class, nq)]
        dl = (np.eye(n_class, dtype=bool)[rng.integers(0, n_class, nd)]
              | np.eye(n_class, dtype=bool)[rng.integers(0, n_class, nd)])
    else:  # multi-hot, ~2 labels an item when there are many classes; some rows empty
        p = min(0.3, 2.0 / n_class)
        ql = rng.random((nq, n_class)) < p
        dl = rng.random((nd, n_class)) < p
    return qc, ql, dc, dl


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), nq=st.integers(1, 23), nd=st.integers(1, 29),
       bits=st.sampled_from([1, 4, 7, 16, 64, 65, 130]),
       n_class=st.sampled_from([1, 2, 3, 5, 6, 70, 130]),
       label_kind=st.sampled_from(["single", "two", "multi"]),
       normalisation=st.sampled_from(["k", "retrieved", "min"]),
       block_size=st.integers(1, 25), tie_heavy=st.booleans(), exclude=st.booleans(),
       ks=st.lists(st.integers(1, 35), min_size=1, max_size=4, unique=True))
def test_matches_naive_reference(seed, nq, nd, bits, n_class, label_kind, normalisation,
                                 block_size, tie_heavy, exclude, ks):
    qc, ql, dc, dl = random_case(seed, nq, nd, bits, n_class, label_kind, tie_heavy)
    self_pos, excl = None, None
    if exclude:  # the first queries are database items (ids "d<j>"), the rest are not
        rng = np.random.default_rng(seed + 1)
        pos = rng.permutation(nd)[:nq]
        inside = min(len(pos), nq)
        qc[:inside], ql[:inside] = dc[pos[:inside]], dl[pos[:inside]]
        self_pos = np.full(nq, -1)
        self_pos[:inside] = pos[:inside]
        excl = ([f"d{p}" if p >= 0 else f"q{i}" for i, p in enumerate(self_pos)],
                [f"d{j}" for j in range(nd)])
    ref = naive_metrics(qc, ql, dc, dl, ks, normalisation, self_pos)
    res = retrieval_metrics(qc, ql, dc, dl, ks=ks, normalisation=normalisation,
                            block_size=block_size, exclude_self_ids=excl, per_query=True,
                            curve_ks=ks)
    # the topK-precision curve is P@K at its Ks (sorted), averaged over the queries
    assert res["topk_precision"]["k"] == sorted(ks)
    np.testing.assert_allclose(res["topk_precision"]["precision"],
                               ref["prec"][:, np.argsort(ks)].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(res["per_query"]["ap"], ref["ap"], atol=1e-12)
    np.testing.assert_allclose(res["per_query"]["precision"], ref["prec"], atol=1e-12)
    np.testing.assert_allclose(res["per_query"]["recall"], ref["rec"], atol=1e-12)
    np.testing.assert_array_equal(res["per_query"]["n_relevant"], ref["n_rel"])
    for c, k in enumerate(ks):
        assert res["map"][k] == pytest.approx(ref["ap"][:, c].mean(), abs=1e-12)
    assert res["pr_curve"]["retrieved"] == ref["retrieved"]
    assert res["pr_curve"]["relevant_retrieved"] == ref["rel_retrieved"]
    np.testing.assert_allclose(res["pr_curve"]["precision"], ref["pr_p"], atol=1e-12)
    np.testing.assert_allclose(res["pr_curve"]["recall"], ref["pr_r"], atol=1e-12)
    # the ranking itself
    k = max(ks)
    idx, dist = rank(qc, dc, k, block_size=block_size, exclude_self_ids=excl)
    for i, order in enumerate(ref["order"]):
        top = order[:k]
        assert idx[i, :len(top)].tolist() == top
        assert dist[i, :len(top)].tolist() == [int(ref["dist"][i, j]) for j in top]
        assert (idx[i, len(top):] == -1).all()


def test_large_block_and_wide_codes():
    """Bits past one byte of histogram slots, several blocks, every rank checked."""
    qc, ql, dc, dl = random_case(3, 17, 40, 300, 3, "multi", tie_heavy=True)
    ref = naive_metrics(qc, ql, dc, dl, (3, 50), "min")
    got = retrieval_metrics(qc, ql, dc, dl, ks=(3, 50), normalisation="min", per_query=True,
                            block_size=5)
    np.testing.assert_allclose(got["per_query"]["ap"], ref["ap"], atol=1e-12)
    assert got["pr_curve"]["retrieved"] == ref["retrieved"]


@pytest.mark.parametrize("n_class", [0, 1, 5, 63, 64, 65, 239])
def test_label_masks(n_class):
    """Two items share a label iff their packed masks share a bit."""
    rng = np.random.default_rng(n_class)
    a, b = rng.random((9, n_class)) < 0.05, rng.random((11, n_class)) < 0.05
    ma, mb = metrics._pack_bits(a), metrics._pack_bits(b)
    assert ma.dtype == np.uint64 and ma.shape == (9, max(1, (n_class + 63) // 64))
    got = (ma[:, None, :] & mb[None, :, :]).any(axis=2)
    np.testing.assert_array_equal(got, (a.astype(int) @ b.T.astype(int)) > 0)


# ------------------------------------------------------------- the image-hashing protocol
def test_topk_precision_curve_by_hand():
    # q0 rel 1 1 0 0 0 1, q1 nothing, q2 rel 1 0 1 1 0 1 (the hand-made case above); K = 10
    # is past the 6 database items and keeps its nominal denominator
    res = retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=(2,), curve_ks=(10, 1, 3, 6))
    curve = res["topk_precision"]
    assert curve["k"] == [1, 3, 6, 10]
    expected = [(1 + 0 + 1) / 3, (2 / 3 + 0 + 2 / 3) / 3, (3 / 6 + 0 + 4 / 6) / 3,
                (3 / 10 + 0 + 4 / 10) / 3]
    assert curve["precision"] == pytest.approx(expected, abs=1e-12)
    assert retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=(2,))["topk_precision"] is None
    with pytest.raises(AvsearchInputError, match="curve_ks"):
        retrieval_metrics(Q, Q_LABELS, DB, DB_LABELS, ks=(2,), curve_ks=(0, 5))


def _dpsh_style_map(qc, ql, dc, dl, topk):
    """MAP@topk as the image-hashing papers' code computes it (DPSH's CalcTopMap, LAGNH's
    MATLAB): per query the top ``topk`` by Hamming distance (ties by index here), AP = mean
    over the relevant retrieved of (their count so far / their rank), 0 when none; mean over
    all queries. A plain loop, apart from avsearch.metrics."""
    total = 0.0
    for i in range(len(qc)):
        dist = 0.5 * (qc.shape[1] - dc.astype(int) @ qc[i].astype(int))
        order = sorted(range(len(dc)), key=lambda j: (dist[j], j))[:topk]
        gnd = [bool((ql[i] & dl[j]).any()) for j in order]
        ranks = [r + 1 for r, g in enumerate(gnd) if g]
        if ranks:
            total += sum((n + 1) / r for n, r in enumerate(ranks)) / len(ranks)
    return total / len(qc)


def test_image_protocol_map_at_1000_matches_the_papers_code():
    rng = np.random.default_rng(5)
    nq, nd, bits = 7, 1400, 12          # more than 1000 items, many ties at 12 bits
    qc = np.where(rng.random((nq, bits)) < 0.5, -1, 1).astype(np.int8)
    dc = np.where(rng.random((nd, bits)) < 0.5, -1, 1).astype(np.int8)
    ql, dl = rng.random((nq, 10)) < 0.15, rng.random((nd, 10)) < 0.15
    protocol = metrics.protocol_for(True)
    assert (protocol.name, protocol.normalisation) == ("image", "retrieved")
    assert 1000 in protocol.ks and max(protocol.curve_ks) == 1000
    res = retrieval_metrics(qc, ql, dc, dl, ks=protocol.ks, normalisation=protocol.normalisation,
                            curve_ks=protocol.curve_ks)
    assert res["map"][1000] == pytest.approx(_dpsh_style_map(qc, ql, dc, dl, 1000), abs=1e-12)
    assert res["map"][100] == pytest.approx(_dpsh_style_map(qc, ql, dc, dl, 100), abs=1e-12)
    rel = (ql.astype(int) @ dl.T.astype(int)) > 0
    dist = (bits - qc.astype(int) @ dc.T.astype(int)) // 2
    order = np.stack([np.lexsort((np.arange(nd), d)) for d in dist])
    for k, p in zip(res["topk_precision"]["k"], res["topk_precision"]["precision"]):
        assert p == pytest.approx(np.take_along_axis(rel, order[:, :k], 1).mean(), abs=1e-12)
    assert metrics.protocol_for(False).normalisation == "k"
    assert metrics.protocol_for(False).curve_ks == ()
