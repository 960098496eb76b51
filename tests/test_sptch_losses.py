"""SPTCH's loss terms (paper 003, Eqs. 1-2, 6-16) against hand-computed cases and plain
Python loops that share no code with :mod:`avsearch.losses.sptch`."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avsearch.losses.sptch import (collaboration_graph, cosine_matrix, cross_nce, drop_positions,
                                   encoder_loss, masked_mean, multimodal_contrastive,
                                   quantization_loss, reconstruction_loss, semantic_hashing_loss,
                                   similarity_loss, tfidf, token_counts)

R = 1 / math.sqrt(2)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) *
                                                         sum(y * y for y in b))


def _sq(a, b):
    """Mean squared difference of two nested lists, by loops."""
    flat = [(x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(flat) / len(flat)


def _nce(anchors, others, tau):
    total = 0.0
    for i, a in enumerate(anchors):
        den = sum(math.exp(_cos(a, o) / tau) for o in others)
        total += -math.log(math.exp(_cos(a, others[i]) / tau) / den)
    return total / len(anchors)


VIDEO = [[1, 0], [0, 1], [1, 1], [-1, 0]]
TEXT = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_collaboration_graph_by_hand():
    # θ1 = 0.5: S = (cos_v + cos_t) / 2, worked out by hand:
    s = [[1.0, 0.5, R / 2, -0.5],
         [0.5, 1.0, R / 2, 0.0],
         [R / 2, R / 2, 1.0, -R / 2],
         [-0.5, 0.0, -R / 2, 1.0]]
    # θ2 = 0.25 of 4 columns: the one smallest entry of each row becomes −1
    smallest = [3, 3, 3, 0]
    expect = [[-1.0 if j == smallest[i] else s[i][j] for j in range(4)] for i in range(4)]
    got = collaboration_graph(_t(VIDEO), _t(TEXT), theta1=0.5, theta2=0.25)
    torch.testing.assert_close(got, _t([[math.tanh(v) for v in row] for row in expect]))
    # θ2 = 0.5: the two smallest; θ2 = 0 keeps every entry
    got = collaboration_graph(_t(VIDEO), _t(TEXT), theta1=0.5, theta2=0.5)
    assert got[1].tolist() == pytest.approx([math.tanh(0.5), math.tanh(1.0), -math.tanh(1),
                                             -math.tanh(1)])
    plain = collaboration_graph(_t(VIDEO), _t(TEXT), theta1=0.5, theta2=0.0)
    torch.testing.assert_close(plain, _t([[math.tanh(v) for v in row] for row in s]))
    # θ1 = 1: the videos alone
    torch.testing.assert_close(collaboration_graph(_t(VIDEO), _t(TEXT), 1.0, 0.0),
                               torch.tanh(cosine_matrix(_t(VIDEO))))
    with pytest.raises(ValueError, match="4 videos but 3 texts"):
        collaboration_graph(_t(VIDEO), _t(TEXT[:3]))


def test_cross_nce_by_hand_and_by_loop():
    eye = _t([[1, 0], [0, 1]])
    # each anchor: −log(e^1 / (e^1 + e^0)) = log(1 + e^−1)
    assert cross_nce(eye, eye, tau=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    g = torch.Generator().manual_seed(0)
    a, o = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g,
                                                                             dtype=torch.float64)
    assert cross_nce(a, o, 0.2).item() == pytest.approx(_nce(a.tolist(), o.tolist(), 0.2))


def test_multimodal_contrastive_is_eqs_11_to_13():
    g = torch.Generator().manual_seed(1)
    zv, zt, zv2, zt2 = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(4))
    v, t, v2, t2 = (z.tolist() for z in (zv, zt, zv2, zt2))
    tau = 0.2
    l_ve = _nce(v, t, tau) + _nce(v2, t2, tau)          # Eq. 11
    l_te = _nce(t, v, tau) + _nce(t2, v2, tau)          # Eq. 11 for the captions
    l_va, l_ta = _nce(v, v2, tau), _nce(t, t2, tau)     # Eq. 12
    assert multimodal_contrastive(zv, zt, zv2, zt2, tau).item() == \
        pytest.approx(l_ve + l_te + l_va + l_ta)


def test_reconstruction_similarity_and_quantization_by_hand():
    assert reconstruction_loss(_t([[1, 2]]), _t([[0, 0]]), _t([[3]]), _t([[1]])).item() == \
        pytest.approx((1 + 4) / 2 + 4)                   # Eq. 6, mean squared error per term
    b, h = _t([[1, -1]]), _t([[0.5, -0.5]])
    assert quantization_loss(b, h).item() == pytest.approx(0.25)           # Eq. 8
    assert quantization_loss(b, h, _t([[1, 1]])).item() == pytest.approx(0.25 + 2.0)  # Eq. 14
    s = _t([[1, 0], [0, 1]])
    a = _t([[1, 0], [1, 1]])
    # cos(a, a) = [[1, R], [R, 1]]: ‖S − cos‖² / 4 = 2 R² / 4
    assert similarity_loss(s, [(a, a)]).item() == pytest.approx(2 * R * R / 4)
    codes = torch.tensor([[1.0, -1.0]], requires_grad=True)
    relaxed = torch.tensor([[0.2, 0.1]], requires_grad=True)
    quantization_loss(codes, relaxed).backward()
    assert codes.grad is None and relaxed.grad is not None     # B is a target, not trained


def test_phase_losses_are_eqs_9_and_16():
    g = torch.Generator().manual_seed(2)
    n = 5
    x = [torch.randn(n, 7, generator=g, dtype=torch.float64) for _ in range(4)]
    hv, ht, h = (torch.randn(n, 4, generator=g, dtype=torch.float64) for _ in range(3))
    graph = collaboration_graph(torch.randn(n, 3, generator=g, dtype=torch.float64),
                                torch.randn(n, 5, generator=g, dtype=torch.float64))
    S = graph.tolist()

    def sc(a, b):
        return _sq(S, [[_cos(p, q) for q in b] for p in a])

    codes = [[1.0 if v >= 0 else -1.0 for v in row] for row in h.tolist()]
    l_rc = _sq(x[0].tolist(), x[1].tolist()) + _sq(x[2].tolist(), x[3].tolist())
    l_sc = sc(hv.tolist(), hv.tolist()) + sc(ht.tolist(), ht.tolist()) + sc(h.tolist(), h.tolist())
    l_bc = _sq(codes, h.tolist())
    got = semantic_hashing_loss(graph, tuple(x), hv, ht, h, alpha1=0.3, alpha2=0.7)
    assert got.item() == pytest.approx(l_rc + 0.3 * l_sc + 0.7 * l_bc)

    zv, zt, zv2, zt2 = (torch.randn(n, 4, generator=g, dtype=torch.float64) for _ in range(4))
    v, t = zv.tolist(), zt.tolist()
    b = _t(codes)
    l_mf = multimodal_contrastive(zv, zt, zv2, zt2, 0.2).item()
    l_bf = _sq(codes, v) + _sq(codes, t)
    l_sf = sc(v, t) + sc(v, v) + sc(t, t)
    got = encoder_loss(graph, b, zv, zt, zv2, zt2, tau=0.2, beta1=0.5, beta2=2.0)
    assert got.item() == pytest.approx(l_mf + 0.5 * l_bf + 2.0 * l_sf)
    ablated = encoder_loss(graph, b, zv, zt, zv2, zt2, tau=0.2, beta1=0.5, beta2=2.0, contrast=0.0)
    assert ablated.item() == pytest.approx(0.5 * l_bf + 2.0 * l_sf)   # Table 1: no L_mf


# ----------------------------------------------------------------------------- inputs

def test_masked_mean_and_token_counts_by_hand():
    x = _t([[[1, 2], [3, 4], [9, 9]], [[5, 6], [0, 0], [0, 0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(masked_mean(x, mask), _t([[2, 3], [5, 6]]))
    ids = torch.tensor([[2, 3, 2, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(token_counts(ids, 5).numpy(),
                                  [[0, 0, 2, 1, 0], [0, 1, 0, 0, 0]])


def test_tfidf_by_hand_and_against_scikit_learn():
    counts = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # idf = ln(3 / (1 + df)) + 1: df = (1, 2, 1) -> (ln 1.5 + 1, 1, ln 1.5 + 1)
    a = math.log(1.5) + 1
    row0 = [2 * a, 1.0, 0.0]
    row1 = [0.0, 1.0, a]
    expect = [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in (row0, row1)]
    torch.testing.assert_close(tfidf(counts), torch.tensor(expect))
    sklearn = pytest.importorskip("sklearn.feature_extraction.text")
    g = torch.Generator().manual_seed(3)
    many = torch.randint(0, 3, (20, 9), generator=g).float()
    ref = sklearn.TfidfTransformer().fit_transform(many.numpy()).toarray()
    np.testing.assert_allclose(tfidf(many).numpy(), ref, rtol=1e-5, atol=1e-6)
    # the training split's frequencies weigh other rows
    df, n = (many > 0).sum(0).float(), len(many)
    one = tfidf(many[:1], df, n)
    np.testing.assert_allclose(one.numpy(), ref[:1], rtol=1e-5, atol=1e-6)


def test_drop_positions_drops_real_tokens_only_and_keeps_one():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 0, 0, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    g = torch.Generator().manual_seed(0)
    out = drop_positions(ids, 0.5, g)
    kept = (out != 0).sum(1).tolist()
    assert kept == [2, 1, 1]                       # floor(0.5 n) dropped, never the last one
    assert ((out == ids) | (out == 0)).all()       # a position keeps its token or is padding
    assert (out[:, 4:] == 0).all()
    feats = torch.ones(2, 4, 3)
    feats[1, 2:] = 0
    f = drop_positions(feats, 0.75, torch.Generator().manual_seed(1))
    assert (f != 0).any(-1).sum(1).tolist() == [1, 1]
    same = drop_positions(ids, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(same, out)                   # seeded
