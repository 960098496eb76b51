"""AutoSSVH's losses (paper 002, §3.4-3.5, Eqs. 9-17), as functions on tensors.

    L_AutoSSVH = L_FR + α·L_VC + β·L_P2Set                                 (17)

* L_FR (Eq. 13): reconstruction of the sampled (dropped, hard) frames of each view.
* L_VC (Eqs. 14-15): NT-Xent between the two views' video codes, τ₁.
* L_P2Set (Eq. 16): each view's code against its cluster's hash centre, contrasted with all
  centres of that clustering, at several K-means granularities (paper: 250, 400, 600
  clusters), τ₂. Centres are voted bit by bit among the cluster's codes (Eqs. 10-12), which
  minimises the summed Hamming distance to the cluster (the point-to-set metric, Eq. 9,
  appendix Eqs. 25-29). Active only after the warm-up (§4.2: 100 epochs on FCVID and
  ActivityNet, 50 on UCF101 and HMDB51); before it β is 0 and no clustering is needed.
  Epochs count from 1: a warm-up of W epochs turns P2Set on in epoch W + 1.

What the paper leaves open, and what we chose (repeated where implemented):

* Eq. 13 divides the per-frame squared L2 norms by N·M (a sum over the D features); the
  authors' code takes the mean over features too (``F.mse_loss``), and the published α, β
  (0.2, 0.01) were tuned against that. ``reduction="element"`` (default) is the code's mean
  over every element; ``"frame"`` is Eq. 13 as written (D times larger). With two views the
  two views' L_FR are added (the authors' code; Eq. 17 names one L_FR).
* Eq. 14's denominator "Σ_{k=1}^{2N}" would count the anchor itself and the positive twice,
  and Eq. 15 has a stray minus sign; we use standard NT-Xent (SimCLR): the positive plus the
  2N − 2 other codes, averaged over all 2N anchors. ``rho > 0`` gives the debiased form
  (Chuang et al.) that the authors' code actually uses for VC (ρ = 0.1 there).
* Eq. 16 sums over the granularities k and the 2N codes; we average over both (the authors'
  code does), so β keeps its scale across batch sizes. The softmax runs over all centres of
  granularity k (N_k^a anchors), the video's own centre included. The authors' code departs
  further (continuous normalised K-means centroids with per-cluster temperatures and sampled
  negatives, no voting); we follow the paper: voted ±1 centres, one τ₂.
* What is clustered: "the encoded embeddings" of the training set (§3.4); we take the
  video-level relaxed codes (the temporal mean of the tanh frame codes, what the authors
  cluster) and vote on their signs (sign(0) = +1). Both can be given separately.
* Ties in the vote go to +1 (Eq. 12's ≥). Clusters left empty by the final assignment are
  dropped (an empty vote would be the all-(+1) code, a meaningless anchor).
* τ₁, τ₂ are not given in the paper: defaults 0.5 (the authors' VC temperature) and 0.2 (the
  mean of their per-cluster P2Set temperatures).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avsearch.codes import binarize
from avsearch.losses._cluster import as_float32_matrix, kmeans, nearest
from avsearch.losses.vhmt import _float, debiased_contrastive

__all__ = [
    "frame_reconstruction_loss", "view_contrastive", "component_vote", "HashCentres",
    "hash_centres", "p2set_loss", "autossvh_loss",
]

_REDUCTIONS = ("element", "frame")


def frame_reconstruction_loss(recon: Tensor, frames: Tensor, indices: Tensor | None = None,
                              reduction: str = "element") -> Tensor:
    """Eq. 13: squared error between the sampled frames and their reconstruction.

    Args:
        recon: (N, M, D) reconstructed frames.
        frames: the targets: (N, M, D) already gathered, or the full (N, T, D) input when
            ``indices`` is given.
        indices: optional (N, M) positions in ``frames`` of the frames ``recon`` reconstructs
            (the sampler's selection, e.g. ``FrameSample.indices``), row by row in the order
            of ``recon``'s M axis.
        reduction: ``"element"``: mean over N·M·D (the authors' code, default); ``"frame"``:
            (1/NM) Σ ‖v − v̂‖², Eq. 13 as written.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if indices is not None:
        if indices.shape != recon.shape[:2]:
            raise ValueError(f"indices {tuple(indices.shape)} must be (N, M) = "
                             f"{tuple(recon.shape[:2])}")
        frames = frames.gather(1, indices.long().unsqueeze(-1).expand(-1, -1, frames.shape[-1]))
    if recon.shape != frames.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and target "
                         f"{tuple(frames.shape)} differ in shape")
    err = (_float(recon) - _float(frames)).pow(2)
    return err.mean() if reduction == "element" else err.sum(-1).mean()


def view_contrastive(z1: Tensor, z2: Tensor, tau: float = 0.5, rho: float = 0.0) -> Tensor:
    """Eqs. 14-15: NT-Xent between two views' video codes (row i of z1 and of z2: one video).

    Every one of the 2N codes is an anchor; its positive is the other view of its video, its
    negatives the 2N − 2 codes of the other videos; cosine similarity over τ₁. ``rho > 0``
    debiases the negatives as :func:`~avsearch.losses.vhmt.debiased_contrastive` (the
    authors' code); ρ = 0 is the paper's Eq. 14.
    """
    return debiased_contrastive(z1, z2, tau=tau, rho=rho, symmetric=True)


def component_vote(codes: Tensor, labels: Tensor | np.ndarray, n_clusters: int) -> Tensor:
    """Eqs. 10-12: each cluster's hash centre, bit j = +1 iff N₊₁ʲ ≥ N₋₁ʲ among its members.

    Args:
        codes: (N, K) codes; their signs vote (sign(0) = +1).
        labels: (N,) cluster of every code, in [0, n_clusters).
    Returns:
        (n_clusters, K) float32 ±1 centres (an empty cluster gets all +1, the tie rule).
    """
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels,
                             dtype=torch.long, device=codes.device)
    if labels.shape != codes.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must have one entry per code "
                         f"({codes.shape[0]})")
    if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < n_clusters):
        raise ValueError(f"labels must lie in [0, {n_clusters})")
    votes = binarize(codes.detach(), torch.float32)
    tally = torch.zeros(n_clusters, codes.shape[1], device=codes.device)
    tally.index_add_(0, labels, votes)                    # N₊₁ʲ − N₋₁ʲ per cluster and bit
    return binarize(tally, torch.float32)


@dataclasses.dataclass(frozen=True)
class HashCentres:
    """Hash centres of a training set at several K-means granularities (P2Set's sets).

    Attributes:
        granularities: the requested cluster counts, one per clustering.
        centres: per clustering, (n_g, K) float32 ±1 voted centres (n_g ≤ the requested
            count: empty clusters are dropped).
        assignments: (N, G) int64, the centre of every video in every clustering.
    """

    granularities: tuple[int, ...]
    centres: tuple[Tensor, ...]
    assignments: Tensor

    def targets(self, indices: Sequence[int] | np.ndarray | Tensor) -> Tensor:
        """(B, G): the centre index of the videos ``indices`` in each clustering."""
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, Tensor) else indices,
                              dtype=torch.long, device=self.assignments.device)
        return self.assignments[idx]

    def sets(self, indices: Sequence[int] | np.ndarray | Tensor) -> Tensor:
        """(B, G, K): each video's own centre in each clustering."""
        t = self.targets(indices)
        return torch.stack([c[t[:, g]] for g, c in enumerate(self.centres)], dim=1)

    def to(self, device: torch.device | str) -> "HashCentres":
        return HashCentres(self.granularities, tuple(c.to(device) for c in self.centres),
                           self.assignments.to(device))


def hash_centres(features: Tensor | np.ndarray, granularities: Sequence[int] = (250, 400, 600),
                 bits: int | None = None, seed: int = 0, *,
                 codes: Tensor | np.ndarray | None = None, niter: int = 20) -> HashCentres:
    """K-means at several cluster counts (faiss) and component voting (Eqs. 10-12).

    Args:
        features: (N, D) what is clustered: the training set's video-level embeddings
            (§3.4), by default also the codes that vote.
        granularities: cluster counts, one K-means each (§4.2: 250, 400, 600).
        bits: K, checked against the voting codes' width when given.
        seed: clustering g uses seed + g (its own random initialisation).
        codes: (N, K) codes that vote, when they differ from ``features`` (signs are taken).
        niter: K-means iterations.
    """
    x = as_float32_matrix(features)
    votes = torch.as_tensor(as_float32_matrix(x if codes is None else codes, "codes"))
    if len(votes) != len(x):
        raise ValueError(f"{len(votes)} codes for {len(x)} feature rows")
    if bits is not None and votes.shape[1] != bits:
        raise ValueError(f"codes have {votes.shape[1]} bits, expected {bits}")
    if not granularities:
        raise ValueError("give at least one granularity")
    centres, assignments = [], []
    for g, k in enumerate(granularities):
        centroids = kmeans(x, int(k), seed=seed + g, niter=niter)
        _, nearest_idx = nearest(x, centroids, 1)
        used, labels = np.unique(nearest_idx[:, 0], return_inverse=True)   # drop empty clusters
        centres.append(component_vote(votes, labels, len(used)))
        assignments.append(torch.as_tensor(labels.astype(np.int64)))
    return HashCentres(tuple(int(k) for k in granularities), tuple(centres),
                       torch.stack(assignments, dim=1))


def p2set_loss(codes: Tensor, centres: Sequence[Tensor], targets: Tensor,
               tau: float = 0.2) -> Tensor:
    """Eq. 16: −log softmax over each clustering's centres of cos(bᵢ, b^c)/τ₂ at bᵢ's centre.

    Averaged over the codes and the clusterings (Eq. 16 sums; see the module docstring).

    Args:
        codes: (B, K) relaxed codes (both views stacked: B = 2N).
        centres: per clustering g, (n_g, K) centres (:attr:`HashCentres.centres`).
        targets: (B, G) the centre index of every code in every clustering
            (:meth:`HashCentres.targets`, repeated for the second view).
        tau: τ₂.
    """
    if targets.dim() != 2 or targets.shape != (codes.shape[0], len(centres)):
        raise ValueError(f"targets must be (B, G) = ({codes.shape[0]}, {len(centres)}), "
                         f"got {tuple(targets.shape)}")
    z = F.normalize(_float(codes), dim=-1)
    terms = []
    for g, anchors in enumerate(centres):
        logits = z @ F.normalize(anchors.to(z), dim=-1).T / tau
        terms.append(F.cross_entropy(logits, targets[:, g].to(z.device)))
    return torch.stack(terms).mean()


def autossvh_loss(*, recons: Sequence[Tensor], frames: Tensor,
                  indices: Sequence[Tensor | None], z1: Tensor, z2: Tensor,
                  centres: HashCentres | None = None,
                  video_indices: Sequence[int] | np.ndarray | Tensor | None = None,
                  epoch: int = 1, warmup_epochs: int = 100, alpha: float = 0.2,
                  beta: float = 0.01, tau1: float = 0.5, tau2: float = 0.2, rho: float = 0.0,
                  reduction: str = "element") -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 17: L_FR + α·L_VC + β·L_P2Set, with β = 0 while ``epoch <= warmup_epochs``.

    Args:
        recons: per view, (N, M, D) reconstructions of that view's sampled frames.
        frames: (N, T, D) input frames; each view's targets are gathered from it.
        indices: per view, (N, M) positions of the frames it reconstructs (the sampled
            frames), or None to compare with ``frames`` itself (then (N, M, D)).
        z1, z2: (N, K) the two views' relaxed video codes.
        centres: hash centres of the training set (:func:`hash_centres`), needed from the end
            of the warm-up on; recomputed by the caller as often as it likes (paper: every
            epoch, with the current encoder).
        video_indices: (N,) positions of the batch's videos in the clustered set.
        epoch, warmup_epochs: the epoch in progress, counted from 1, and how many first
            epochs go without P2Set (§4.2, FCVID/ActivityNet: 100; UCF101/HMDB51: 50).
        alpha, beta: §4.2 (FCVID/ActivityNet: 0.2, 0.01; UCF101/HMDB51: 1, 0.2).
        tau1, tau2, rho: temperatures of VC and P2Set, VC's debiasing prior.
        reduction: of L_FR (:func:`frame_reconstruction_loss`).

    Returns:
        (total, parts): parts = {"fr", "vc", "p2set"} detached and unweighted ("p2set" is 0
        before the warm-up ends), and "p2set_weight", the β in effect.
    """
    if len(recons) != len(indices) or not recons:
        raise ValueError("give one (possibly None) indices entry per reconstruction")
    fr = sum((frame_reconstruction_loss(r, frames, i, reduction)
              for r, i in zip(recons[1:], indices[1:])),
             frame_reconstruction_loss(recons[0], frames, indices[0], reduction))
    vc = view_contrastive(z1, z2, tau=tau1, rho=rho)
    total = fr + alpha * vc
    weight = beta if epoch > warmup_epochs else 0.0
    if weight != 0:
        if centres is None or video_indices is None:
            raise ValueError("after the warm-up P2Set needs the hash centres and the batch's "
                             "video_indices")
        targets = centres.targets(video_indices).to(z1.device)
        p2 = p2set_loss(torch.cat([z1, z2]), centres.centres, targets.repeat(2, 1), tau2)
        total = total + weight * p2
    else:
        p2 = torch.zeros((), dtype=total.dtype, device=total.device)
    return total, {"fr": fr.detach(), "vc": vc.detach(), "p2set": p2.detach(),
                   "p2set_weight": torch.tensor(float(weight))}
