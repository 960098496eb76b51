"""The self-supervised losses (avsearch.losses): VHMT Eqs. 18-26, AutoSSVH Eqs. 9-17.

Each value is checked against an independent reference: a hand-worked case, a naive loop
written from the paper's equation, or a library implementation of the same quantity.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avsearch.losses import (
    HashCentres, anchor_graph, autossvh_loss, component_vote, debiased_contrastive,
    frame_reconstruction_loss, hash_centres, p2set_loss, reconstruction_loss,
    structure_loss, structure_similarity, view_contrastive, vhmt_loss,
)

faiss = pytest.importorskip("faiss")


# --------------------------------------------------------------------------- references

def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def naive_debiased(student, teacher, tau, rho, symmetric=False):
    """Eqs. 20-22 with Python loops; also reports whether the clamp of Eq. 21 was used."""
    s, t = student.tolist(), teacher.tolist()
    n = len(s)
    codes = s + t
    clamped = []
    losses = []
    for a in range(2 * n if symmetric else n):
        i = a % n
        anchor = codes[a]
        partner = codes[(a + n) % (2 * n)]
        pos = math.exp(_cos(anchor, partner) / tau)
        theta = sum(math.exp(_cos(anchor, s[w]) / tau) + math.exp(_cos(anchor, t[w]) / tau)
                    for w in range(n) if w != i) / (2 * n - 2)                    # Eq. 22
        raw = (theta - rho * pos) / (1 - rho)
        f_bar = max(raw, math.exp(-1 / tau))                                        # Eq. 21
        clamped.append(raw < math.exp(-1 / tau))
        losses.append(-math.log(pos / (pos + (2 * n - 2) * f_bar)))                # Eq. 20
    return sum(losses) / len(losses), clamped


def nt_xent(z1, z2, tau):
    """SimCLR's NT-Xent via cross-entropy over the masked 2N × 2N similarity matrix."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = len(z1)
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, target, reduction="none")


def naive_similarity(x, centroids, levels):
    """Eq. 25 under our reading, by sets: sort every video's centroids by distance."""
    order = [sorted(range(len(centroids)), key=lambda c: float(((xi - centroids[c]) ** 2).sum()))
             for xi in x]
    m1, m2, m3 = levels
    n = len(x)
    s = np.zeros((n, n))
    for i in range(n):
        for m in range(n):
            def share(k):
                return bool(set(order[i][:k]) & set(order[m][:k]))
            if share(m1):
                s[i, m] = 1
            elif not share(m2) and share(m3):
                s[i, m] = -1
    return s


def naive_p2set(codes, centres, targets, tau):
    total, count = 0.0, 0
    for g, anchors in enumerate(centres):
        for i, b in enumerate(codes.tolist()):
            logits = [_cos(b, c) / tau for c in anchors.tolist()]
            total += -(logits[int(targets[i, g])] - math.log(sum(math.exp(v) for v in logits)))
            count += 1
    return total / count


# --------------------------------------------------------------------------- VHMT Eq. 19

def test_reconstruction_loss_by_hand():
    assert reconstruction_loss(torch.zeros(2, 3, 4), torch.ones(2, 3, 4)).item() == 1.0
    recon = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])               # squares 1, 4 | 9, 16
    assert reconstruction_loss(recon, target).item() == pytest.approx(30 / 4)
    assert reconstruction_loss(recon, target, torch.tensor([[True, False]])).item() == 2.5
    assert reconstruction_loss(recon, target, torch.tensor([[0.0, 1.0]])).item() == 12.5
    assert reconstruction_loss(recon, target, torch.tensor([[False, False]])).item() == 0.0
    with pytest.raises(ValueError):
        reconstruction_loss(recon, target[:, :1])


# --------------------------------------------------------------------------- VHMT Eqs. 20-22

@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("rho", [0.0, 0.1, 0.3])
def test_debiased_contrastive_matches_a_loop_over_eqs_20_22(rho, symmetric):
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 4, generator=g, dtype=torch.float64)
    teacher = student + 0.7 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    expected, clamped = naive_debiased(student, teacher, 0.5, rho, symmetric)
    got = debiased_contrastive(student, teacher, tau=0.5, rho=rho, symmetric=symmetric)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert not all(clamped)                                     # the unclamped branch is tested


def test_debiased_contrastive_with_rho_0_is_nt_xent():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    for tau in (0.5, 0.2):
        ref = nt_xent(z1, z2, tau)
        sym = debiased_contrastive(z1, z2, tau=tau, rho=0.0, symmetric=True)
        one_way = debiased_contrastive(z1, z2, tau=tau, rho=0.0)
        assert sym.item() == pytest.approx(ref.mean().item(), rel=1e-5)
        assert one_way.item() == pytest.approx(ref[:6].mean().item(), rel=1e-5)
        assert view_contrastive(z1, z2, tau=tau).item() == pytest.approx(ref.mean().item(),
                                                                         rel=1e-5)


def test_debiased_contrastive_clamp_binds_when_negatives_are_opposite():
    # 2 videos, codes x and −x: each anchor's 2 negatives have cosine −1, its positive +1.
    # θ = e^{−2}; (θ − ρ e^{2})/(1 − ρ) < e^{−2} = e^{−1/τ}, so f̄ = e^{−2} (τ = 0.5, ρ = 0.1):
    # L = −log(e² / (e² + 2 e^{−2})) = log(1 + 2 e^{−4}).
    x = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    student = torch.cat([x, -x])
    loss = debiased_contrastive(student, student.clone(), tau=0.5, rho=0.1)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-4)), rel=1e-6)
    unclamped = -math.log(math.exp(2) / (math.exp(2) + 2 * (math.exp(-2) - 0.1 * math.exp(2))
                                         / 0.9))
    assert abs(loss.item() - unclamped) > 0.1
    assert naive_debiased(student, student, 0.5, 0.1)[1] == [True, True]


def test_debiased_contrastive_prefers_matching_teacher_codes():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(8, 32, generator=g)
    perm = torch.roll(torch.arange(8), 1)                       # a derangement
    same = debiased_contrastive(student, student.clone())
    shuffled = debiased_contrastive(student, student[perm])
    assert same.item() < shuffled.item() - 0.5


def test_debiased_contrastive_gradients_reach_both_codes():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(5, 8, generator=g, requires_grad=True)
    teacher = torch.randn(5, 8, generator=g, requires_grad=True)
    debiased_contrastive(student, teacher).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad.abs().sum() > 0
    assert torch.isfinite(student.grad).all()


def test_debiased_contrastive_small_tau_does_not_overflow():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    loss = debiased_contrastive(z1, z2, tau=0.05, rho=0.0, symmetric=True)
    assert loss.item() == pytest.approx(nt_xent(z1, z2, 0.05).mean().item(), rel=1e-4)


def test_debiased_contrastive_rejects_bad_input():
    with pytest.raises(ValueError):
        debiased_contrastive(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError):
        debiased_contrastive(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        debiased_contrastive(torch.randn(3, 4), torch.randn(3, 4), rho=1.0)


# --------------------------------------------------------------------------- VHMT Eqs. 23-26

# 1-D hand case: centroids 0, 10, ..., 100; videos at 1, 31, 61.
#   video 1:  nearest 0, 10, 20 | 30 | 40        video 31: 30, 40, 20 | 50 | 10
#   video 61: 60, 70, 50 | 80 | 40
# (1, 31) share 20 among their 3 nearest -> +1; (31, 61) share 50 among their 4 nearest but
# nothing among 3 -> 0; (1, 61) share only 40, their 5th nearest -> -1.
HAND_X = np.array([[1.0], [31.0], [61.0]], dtype=np.float32)
HAND_C = np.arange(0, 101, 10, dtype=np.float32)[:, None]
HAND_S = np.array([[1, 1, -1], [1, 1, 0], [-1, 0, 1]], dtype=np.float32)


def test_structure_similarity_by_hand():
    sim = structure_similarity(HAND_X, HAND_C, pca_dim=None)
    np.testing.assert_array_equal(sim.dense().numpy(), HAND_S)
    np.testing.assert_array_equal(sim.neighbours[0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(sim.batch([2, 0]).numpy(), [[1, -1], [-1, 1]])
    frames = np.repeat(HAND_X[:, None, :], 4, axis=1)            # (N, T, D): mean over T
    np.testing.assert_array_equal(
        structure_similarity(frames, HAND_C, pca_dim=None).dense().numpy(), HAND_S)


def test_structure_similarity_matches_sets_and_the_anchor_graph():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    centroids = rng.normal(size=(9, 5)).astype(np.float32)
    sim = structure_similarity(x, centroids, pca_dim=None)
    s = sim.dense().numpy()
    np.testing.assert_array_equal(s, naive_similarity(x, centroids, (3, 4, 5)))
    assert (s == 1).any() and (s == -1).any() and (s == 0).any()
    idx = [7, 3, 21, 3]
    np.testing.assert_array_equal(sim.batch(torch.tensor(idx)).numpy(), s[np.ix_(idx, idx)])
    # Eq. 24: B(k) = +1 exactly where A(k) = P Λ⁻¹ Pᵀ > 0
    b = {}
    for level in (3, 4, 5):
        p, a = anchor_graph(torch.from_numpy(x), torch.from_numpy(centroids), level)
        assert torch.allclose(p.sum(1), torch.ones(30, dtype=p.dtype))
        assert ((p > 0).sum(1) == level).all()
        assert torch.allclose(a, a.T)
        b[level] = (a > 0).numpy()
    expected = b[3].astype(float) - (~b[4] & b[5]).astype(float)
    np.testing.assert_array_equal(s, expected)


def test_structure_similarity_with_kmeans_and_pca_is_deterministic():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(80, 3, 16)).astype(np.float32)
    a = structure_similarity(feats, 10, pca_dim=4, seed=3)
    b = structure_similarity(torch.from_numpy(feats), 10, pca_dim=4, seed=3)
    assert a.centroids.shape == (10, 4) and a.neighbours.shape == (80, 5)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    s = a.dense()
    assert torch.equal(s, s.T) and torch.equal(s.diagonal(), torch.ones(80))
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    with pytest.raises(ValueError):
        structure_similarity(feats, 4)                          # fewer clusters than M3
    with pytest.raises(ValueError):
        structure_similarity(feats, 10, levels=(3, 3, 5))


def test_structure_loss_by_hand():
    e = torch.tensor([[1.0, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1]])   # e eᵀ / 4 = I
    # (I − S)² has four entries of 1 (S's off-diagonal non-zeros): 4 / N = 4 / 3
    assert structure_loss(e, torch.from_numpy(HAND_S)).item() == pytest.approx(4 / 3)
    g = torch.Generator().manual_seed(6)
    e = torch.randn(4, 6, generator=g, requires_grad=True)
    s = torch.tensor([[1.0, 0, -1, 1], [0, 1, 0, 0], [-1, 0, 1, -1], [1, 0, -1, 1]])
    ev = e.tolist()
    expected = sum((sum(a * b for a, b in zip(ev[i], ev[m])) / 6 - s[i, m].item()) ** 2
                   for i in range(4) for m in range(4)) / 4
    loss = structure_loss(e, s)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert e.grad.abs().sum() > 0


def test_vhmt_loss_is_the_weighted_sum_and_trains_every_input():
    g = torch.Generator().manual_seed(7)
    target = torch.randn(4, 5, 6, generator=g)
    recon_t = torch.randn(4, 5, 6, generator=g, requires_grad=True)
    recon_s = torch.randn(4, 5, 6, generator=g, requires_grad=True)
    bs = torch.randn(4, 8, generator=g, requires_grad=True)
    bt = torch.randn(4, 8, generator=g, requires_grad=True)
    e = torch.randn(4, 3, generator=g, requires_grad=True)
    s = torch.from_numpy(naive_similarity(np.arange(4.0)[:, None] * 7, HAND_C, (3, 4, 5))).float()
    total, parts = vhmt_loss(recon=[recon_t, recon_s], target=target, student_codes=bs,
                             teacher_codes=bt, embeddings=e, similarity=s,
                             alpha=1.0, beta=2.0, gamma=0.1)
    assert set(parts) == {"rec", "ctr", "sim"}
    rec = (F.mse_loss(recon_t, target) + F.mse_loss(recon_s, target)).item()
    assert parts["rec"].item() == pytest.approx(rec, rel=1e-6)
    assert parts["ctr"].item() == pytest.approx(naive_debiased(bs.detach().double(),
                                                               bt.detach().double(), 0.5, 0.1)[0],
                                                rel=1e-5)
    assert parts["sim"].item() == pytest.approx(structure_loss(e, s).item())
    assert total.item() == pytest.approx(rec + 2 * parts["ctr"].item()
                                         + 0.1 * parts["sim"].item(), rel=1e-6)
    assert not any(p.requires_grad for p in parts.values())
    total.backward()
    for t in (recon_t, recon_s, bs, bt, e):
        assert t.grad is not None and t.grad.abs().sum() > 0
    total0, parts0 = vhmt_loss(recon=recon_t, target=target, student_codes=bs,
                               teacher_codes=bt, gamma=0.0)
    assert parts0["sim"].item() == 0.0
    assert total0.item() == pytest.approx(parts0["rec"].item() + parts0["ctr"].item(), rel=1e-6)
    with pytest.raises(ValueError):
        vhmt_loss(recon=recon_t, target=target, student_codes=bs, teacher_codes=bt)


# --------------------------------------------------------------------------- AutoSSVH

def test_frame_reconstruction_loss_gathers_the_sampled_frames():
    g = torch.Generator().manual_seed(8)
    frames = torch.randn(2, 6, 3, generator=g)
    idx = torch.tensor([[0, 2, 5], [1, 3, 4]])
    recon = torch.randn(2, 3, 3, generator=g, requires_grad=True)
    gathered = torch.stack([frames[i, idx[i]] for i in range(2)])
    by_index = frame_reconstruction_loss(recon, frames, idx)
    assert by_index.item() == pytest.approx(((recon - gathered) ** 2).mean().item())
    assert frame_reconstruction_loss(recon, gathered).item() == pytest.approx(by_index.item())
    per_frame = frame_reconstruction_loss(recon, frames, idx, reduction="frame")   # Eq. 13
    expected = sum(((recon[i, m] - gathered[i, m]) ** 2).sum().item()
                   for i in range(2) for m in range(3)) / (2 * 3)
    assert per_frame.item() == pytest.approx(expected, rel=1e-6)
    by_index.backward()
    assert recon.grad.abs().sum() > 0


def test_component_vote_by_hand():
    codes = torch.tensor([[0.3, 0.9, -0.2, -0.5],      # cluster 0
                          [0.1, -0.4, -0.9, 0.2],      # cluster 0
                          [0.8, 0.0, 0.7, -0.1],       # cluster 0 (0.0 votes +1)
                          [-0.6, 0.5, -0.3, 0.4],      # cluster 1
                          [0.2, -0.7, -0.8, 0.6]])     # cluster 1
    labels = np.array([0, 0, 0, 1, 1])
    # cluster 0 tallies (+1 minus −1): 3, 1, −1, −1; cluster 1: 0, 0, −2, 2 (ties -> +1)
    expected = torch.tensor([[1.0, 1, -1, -1], [1, 1, -1, 1], [1, 1, 1, 1]])
    assert torch.equal(component_vote(codes, labels, 3), expected)       # cluster 2 is empty


def test_voted_centre_minimises_the_point_to_set_distance():
    rng = np.random.default_rng(9)
    for _ in range(5):
        members = np.where(rng.random((7, 5)) < 0.5, -1.0, 1.0)
        centre = component_vote(torch.from_numpy(members), np.zeros(7, dtype=int), 1)[0].numpy()

        def set_distance(b):                                             # Eq. 9 (× |set|)
            return int((members != np.asarray(b)).sum())
        best = min(set_distance(b) for b in itertools.product((-1.0, 1.0), repeat=5))
        assert set_distance(centre) == best


def _blobs(seed=10):
    """Three well-separated groups of 16-bit relaxed codes, 12 videos each."""
    rng = np.random.default_rng(seed)
    protos = np.where(rng.random((3, 16)) < 0.5, -1.0, 1.0)
    labels = np.repeat(np.arange(3), 12)
    codes = 0.8 * protos[labels] + 0.15 * rng.normal(size=(36, 16))
    return codes.astype(np.float32), labels, protos


def test_hash_centres_recover_separated_clusters_and_are_deterministic():
    codes, labels, protos = _blobs()
    hc = hash_centres(codes, granularities=(3, 5), bits=16, seed=0)
    again = hash_centres(torch.from_numpy(codes), granularities=(3, 5), bits=16, seed=0)
    assert isinstance(hc, HashCentres) and hc.assignments.shape == (36, 2)
    assert torch.equal(hc.assignments, again.assignments)
    assert all(torch.equal(a, b) for a, b in zip(hc.centres, again.centres))
    # granularity 3: one cluster per group, its centre the group's prototype
    a = hc.assignments[:, 0].numpy()
    for grp in range(3):
        assert len(set(a[labels == grp])) == 1
        np.testing.assert_array_equal(hc.centres[0][a[labels == grp][0]].numpy(), protos[grp])
    # every centre is the vote of its members (naive loop)
    for g, centres in enumerate(hc.centres):
        for c in range(len(centres)):
            members = codes[hc.assignments[:, g].numpy() == c]
            assert len(members) > 0
            tally = [sum(1 if v >= 0 else -1 for v in members[:, j]) for j in range(16)]
            assert centres[c].tolist() == [1.0 if t >= 0 else -1.0 for t in tally]
    sets = hc.sets([0, 35])
    assert sets.shape == (2, 2, 16)
    assert torch.equal(sets[1, 0], hc.centres[0][hc.assignments[35, 0]])
    with pytest.raises(ValueError):
        hash_centres(codes, granularities=(3,), bits=32)
    with pytest.raises(ValueError):
        hash_centres(codes, granularities=(100,))


def test_hash_centres_vote_on_separate_codes():
    codes, labels, protos = _blobs(11)
    feats = np.eye(3, dtype=np.float32)[labels] * 10          # cluster on these, vote on codes
    hc = hash_centres(feats, granularities=(3,), codes=torch.from_numpy(codes), seed=1)
    assert hc.centres[0].shape == (3, 16)
    for grp in range(3):
        c = hc.assignments[labels == grp, 0]
        assert (c == c[0]).all()
        np.testing.assert_array_equal(hc.centres[0][c[0]].numpy(), protos[grp])


def test_p2set_loss_matches_a_loop_over_eq_16():
    g = torch.Generator().manual_seed(12)
    codes = torch.randn(5, 4, generator=g, dtype=torch.float64)
    centres = [torch.tensor([[1.0, 1, -1, -1], [-1, 1, 1, -1], [1, -1, 1, 1]]),
               torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, 1]])]
    targets = torch.tensor([[0, 1], [2, 0], [1, 1], [0, 0], [2, 1]])
    got = p2set_loss(codes, centres, targets, tau=0.3)
    assert got.item() == pytest.approx(naive_p2set(codes, centres, targets, 0.3), rel=1e-6)


def test_p2set_loss_is_minimised_at_the_own_centre():
    # Among binary codes, the loss only depends on the margins b·(c_own − c_j), each at most
    # 2·d_H(c_own, c_j), reached exactly by codes agreeing with c_own wherever c_own and some
    # c_j differ: the own centre is a minimiser, and every minimiser agrees with it there.
    rng = np.random.default_rng(16)
    centres = [torch.from_numpy(np.where(rng.random((4, 6)) < 0.5, -1.0, 1.0))]
    codes = list(itertools.product((-1.0, 1.0), repeat=6))
    for own in range(4):
        c = centres[0]
        if any(torch.equal(c[own], c[j]) for j in range(4) if j != own):
            continue
        target = torch.full((len(codes), 1), own)
        losses = torch.stack([p2set_loss(torch.tensor([b]), centres, target[:1], tau=0.5)
                              for b in codes])
        assert losses.min().item() == pytest.approx(losses[codes.index(tuple(c[own].tolist()))]
                                                    .item(), abs=1e-12)
        decisive = (c != c[own]).any(0)                          # bits where some centre differs
        for k in torch.nonzero(losses <= losses.min() + 1e-9).flatten().tolist():
            assert torch.equal(torch.tensor(codes[k])[decisive], c[own][decisive])
        others = [torch.tensor([c[j].tolist()]) for j in range(4) if j != own]
        assert all(p2set_loss(o, centres, target[:1]).item() > losses.min().item() + 1e-3
                   for o in others)


def test_p2set_loss_gradients_pull_codes_to_their_centre():
    rng = np.random.default_rng(17)
    centres = [torch.from_numpy(np.where(rng.random((5, 16)) < 0.5, -1.0, 1.0)).float(),
               torch.from_numpy(np.where(rng.random((3, 16)) < 0.5, -1.0, 1.0)).float()]
    g = torch.Generator().manual_seed(13)
    codes = torch.randn(6, 16, generator=g, requires_grad=True)
    # a consistent pair of targets: the coarse centre nearest to the fine one
    fine = torch.tensor([0, 1, 2, 3, 4, 2])
    coarse = (centres[0][fine] @ centres[1].T).argmax(1)
    targets = torch.stack([fine, coarse], dim=1)
    opt = torch.optim.SGD([codes], lr=2.0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = p2set_loss(codes, centres, targets, tau=0.5)
        first = loss.item() if first is None else first
        loss.backward()
        assert codes.grad.abs().sum() > 0
        opt.step()
    assert p2set_loss(codes, centres, targets, tau=0.5).item() < first - 0.5
    nearest_fine = (F.normalize(codes.detach(), dim=1) @ centres[0].T).argmax(1)
    assert torch.equal(nearest_fine, fine)


def test_autossvh_loss_warm_up_and_weights():
    codes, _, _ = _blobs(14)
    hc = hash_centres(codes, granularities=(3, 4), seed=0)
    g = torch.Generator().manual_seed(15)
    frames = torch.randn(4, 6, 5, generator=g)
    idx = [torch.tensor([[0, 1], [2, 3], [4, 5], [0, 5]]), torch.tensor([[1, 2], [3, 4]] * 2)]
    recons = [torch.randn(4, 2, 5, generator=g, requires_grad=True) for _ in range(2)]
    z1 = torch.randn(4, 16, generator=g, requires_grad=True)
    z2 = torch.randn(4, 16, generator=g, requires_grad=True)
    videos = np.array([0, 13, 25, 30])
    kw = dict(recons=recons, frames=frames, indices=idx, z1=z1, z2=z2, alpha=0.2, beta=0.5)

    before, p0 = autossvh_loss(**kw, epoch=10, warmup_epochs=10)  # epochs 1-10 warm up: no centres
    fr = sum(frame_reconstruction_loss(r, frames, i) for r, i in zip(recons, idx)).item()
    vc = nt_xent(z1.detach(), z2.detach(), 0.5).mean().item()
    assert p0["fr"].item() == pytest.approx(fr, rel=1e-6)
    assert p0["vc"].item() == pytest.approx(vc, rel=1e-5)
    assert p0["p2set"].item() == 0.0 and p0["p2set_weight"].item() == 0.0
    assert before.item() == pytest.approx(fr + 0.2 * vc, rel=1e-5)

    after, p1 = autossvh_loss(**kw, epoch=11, warmup_epochs=10, centres=hc,
                              video_indices=videos)
    targets = hc.targets(videos).repeat(2, 1)
    p2 = naive_p2set(torch.cat([z1, z2]).detach().double(), hc.centres, targets, 0.2)
    assert p1["p2set"].item() == pytest.approx(p2, rel=1e-5)
    assert p1["p2set_weight"].item() == 0.5
    assert after.item() == pytest.approx(fr + 0.2 * vc + 0.5 * p2, rel=1e-5)
    after.backward()
    for t in (*recons, z1, z2):
        assert t.grad is not None and t.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        autossvh_loss(**kw, epoch=11, warmup_epochs=10)
