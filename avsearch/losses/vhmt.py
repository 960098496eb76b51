"""VHMT's joint loss (paper 001, §3.4, Eqs. 18-26), as functions on tensors.

    L_VHMT = α·L_rec + β·L_ctr + γ·L_sim                                   (18)

* L_rec (Eq. 19): mean squared error between the input frame features and their
  reconstruction, averaged over every element (1/NTD).
* L_ctr (Eqs. 20-22): the debiased InfoNCE of Chuang et al. (NeurIPS 2020) between the
  student's and the teacher's video codes of the same video (the positive pair); the other
  2N − 2 codes of the batch are the negatives, whose mean is corrected for the class prior ρ
  and clamped from below at e^{−1/τ}. τ = 0.5, ρ = 0.1 (§4.3).
* L_sim (Eqs. 23-26): the pooled embeddings' scaled inner products regress a similarity
  matrix S ∈ {−1, 0, 1} built once, before training, from an anchor graph over K-means
  centroids of PCA-reduced, frame-averaged input features.

What the paper leaves open, and what we chose (each repeated where it is implemented):

* Eq. 20 sums over the N *student* anchors only; ``symmetric=True`` also uses the teacher codes
  as anchors (Chuang et al.'s and most implementations' form). Default: as written.
* Eq. 23 keeps only "the nearest centroid" per video, which would make the three levels
  M₁ < M₂ < M₃ of Eq. 25 meaningless. We read the levels (3, 4, 5, §4.3, from MCMSH [19]) as
  the number of nearest centroids kept in P, as in the anchor graphs of MCMSH/BTH and of
  Liu et al. (2011): B⁽ᵏ⁾ᵢₘ = +1 iff videos i and m share one of their Mₖ nearest centroids
  (A⁽ᵏ⁾ᵢₘ > 0), else −1. Then Eq. 25 reads: S = 1 for pairs sharing one of their 3 nearest
  centroids, S = −1 for pairs that share one of their 5 nearest but none of their 4 nearest
  (middle-distance pairs: MCMSH's "dissimilar"), S = 0 otherwise. S depends only on which
  centroids are kept, not on σ or on how Eq. 23 normalises (we normalise over the kept
  centroids, Liu et al.'s form; :func:`anchor_graph` computes P and A for inspection).
* "K-means and PCA hybrid": frame features are averaged over time, projected on their first
  ``pca_dim`` = 256 principal components (the width MCMSH reduces to), and clustered there
  (M = 2000 centroids, §4.3). PCA before K-means, so that the distances of Eq. 23 and the
  clustering live in one space.
* Eq. 26: e are "pooled latent vectors" of the student (width d, the 1/d scale). The function
  takes any (N, d) embeddings; passing the pooled tanh codes instead (width k) gives MCMSH's
  form. The sum runs over all pairs including i = m (S_ii = 1), as written.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avsearch.losses._cluster import as_float32_matrix, kmeans, nearest, pca_reduce

__all__ = [
    "reconstruction_loss", "debiased_contrastive", "StructureSimilarity", "structure_similarity",
    "anchor_graph", "structure_loss", "vhmt_loss",
]


def _float(x: Tensor) -> Tensor:
    """x in at least float32 (losses under bf16/fp16 autocast are computed in float32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def reconstruction_loss(recon: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Eq. 19: (1/NTD) Σᵢ Σⱼ ‖Vᵢⱼ − V̂ᵢⱼ‖², the mean squared error over every element.

    Args:
        recon, target: (N, T, D) reconstructed and input frame features (any equal shapes).
        mask: optional (N, T) bool or 0/1 weights over frames (e.g. the frames a decoder had to
            reconstruct, or the valid frames of padded videos): the squared error is summed
            over the selected frames and divided by (selected frames × D). A mask that selects
            nothing gives 0.
    """
    if recon.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    err = (_float(recon) - _float(target)).pow(2)
    if mask is None:
        return err.mean()
    if mask.shape != recon.shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must be the frame shape "
                         f"{tuple(recon.shape[:-1])}")
    w = mask.to(err.dtype)
    return (err.sum(-1) * w).sum() / (w.sum() * recon.shape[-1]).clamp_min(1.0)


def debiased_contrastive(student: Tensor, teacher: Tensor, tau: float = 0.5, rho: float = 0.1,
                         symmetric: bool = False) -> Tensor:
    """Eqs. 20-22: debiased InfoNCE between student and teacher codes (Chuang et al., 2020).

    For anchor bᵢˢ, with s(·,·) cosine similarity, pos = e^{s(bᵢˢ, bᵢᵀ)/τ}:

        θᵢ  = 1/(2N−2) Σ_{w≠i} [e^{s(bᵢˢ, b_wˢ)/τ} + e^{s(bᵢˢ, b_wᵀ)/τ}]        (22)
        f̄ᵢ  = max((θᵢ − ρ·pos) / (1 − ρ), e^{−1/τ})                          (21)
        Lᵢ  = −log pos / (pos + (2N−2)·f̄ᵢ),   L_ctr = mean over anchors       (20)

    With ρ = 0 the clamp never binds (every term of θ is ≥ e^{−1/τ}) and this is NT-Xent
    (SimCLR) with the same τ. Every e^{s/τ} is divided by e^{1/τ} (the largest possible term),
    which leaves the loss unchanged and keeps it from overflowing for small τ; the log is
    taken as softplus(log((2N−2)·f̄) − log pos), accurate when the loss is near 0.

    Args:
        student, teacher: (N, k) codes of the same N videos, row i of each a positive pair
            (relaxed video codes, e.g. the temporal mean of the tanh frame codes; cosine
            similarity ignores their scale). N ≥ 2.
        tau: temperature τ (§4.3: 0.5).
        rho: class prior ρ ∈ [0, 1) (§4.3: 0.1).
        symmetric: Eq. 20 as written averages over the N student anchors; True averages over
            all 2N codes as anchors (teacher anchors contrast with the same negatives).
    """
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must both be (N, k)")
    n = student.shape[0]
    if n < 2:
        raise ValueError("the contrastive loss needs at least 2 videos in a batch")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    z = F.normalize(torch.cat([_float(student), _float(teacher)]), dim=-1)   # (2N, k)
    cos = z @ z.T
    idx = torch.arange(2 * n, device=z.device)
    partner = (idx + n) % (2 * n)
    negative = torch.ones_like(cos, dtype=torch.bool)
    negative[idx, idx] = False
    negative[idx, partner] = False
    s_pos = cos[idx, partner]                                    # s(bᵢˢ, bᵢᵀ), both halves
    # every e^{s/τ} below is divided by e^{1/τ}: e^{(s−1)/τ} ∈ (0, 1]
    pos = torch.exp((s_pos - 1.0) / tau)
    theta = (torch.exp((cos - 1.0) / tau) * negative).sum(1) / (2 * n - 2)          # Eq. 22
    floor = torch.exp(torch.tensor(-2.0 / tau, dtype=z.dtype, device=z.device))
    f_bar = torch.maximum((theta - rho * pos) / (1.0 - rho), floor)                   # Eq. 21
    # Eq. 20: −log pos/(pos + X) = log(1 + X/pos) = softplus(log X − log pos), X = (2N−2)·f̄
    log_x = torch.log(((2 * n - 2) * f_bar).clamp_min(torch.finfo(z.dtype).tiny))
    losses = F.softplus(log_x - (s_pos - 1.0) / tau)
    return losses.mean() if symmetric else losses[:n].mean()


@dataclasses.dataclass(frozen=True)
class StructureSimilarity:
    """The similarity matrix S of Eq. 25 over a training set, stored sparsely.

    For N videos S is N × N, too large to keep (45k videos: 2·10⁹ entries); it is fully
    determined by each video's M₃ nearest centroids, so that is what is stored and S is built
    per batch.

    Attributes:
        neighbours: (N, M₃) int64, each video's nearest centroids, nearest first.
        levels: (M₁, M₂, M₃), the numbers of nearest centroids of Eq. 25's three levels.
        centroids: (M, p) the K-means centroids (in the PCA space when PCA was applied).
        sq_distances: (N, M₃) squared distances to ``neighbours``.
    """

    neighbours: np.ndarray
    levels: tuple[int, int, int]
    centroids: np.ndarray
    sq_distances: np.ndarray

    def __len__(self) -> int:
        return len(self.neighbours)

    def batch(self, indices: Sequence[int] | np.ndarray | Tensor,
              device: torch.device | str | None = None) -> Tensor:
        """S restricted to the videos ``indices`` (positions in the clustered set): (B, B)
        float32 in {−1, 0, 1} (Eq. 25)."""
        if isinstance(indices, Tensor):
            indices = indices.detach().cpu().numpy()
        nb = torch.as_tensor(self.neighbours[np.asarray(indices, dtype=np.int64)], device=device)
        same = nb[:, None, :, None] == nb[None, :, None, :]                 # (B, B, M₃, M₃)
        m1, m2, m3 = self.levels

        def share(s: int) -> Tensor:        # B⁽ᵏ⁾ = +1: one of the s nearest centroids shared
            return same[:, :, :s, :s].flatten(2).any(-1)

        positive = share(m1)
        negative = share(m3) & ~share(m2)
        return positive.float() - negative.float()

    def dense(self, device: torch.device | str | None = None) -> Tensor:
        """The whole (N, N) S; for small N (memory grows as N²·M₃²)."""
        return self.batch(np.arange(len(self)), device=device)


def structure_similarity(features: Tensor | np.ndarray, clusters: int | np.ndarray = 2000, *,
                         levels: tuple[int, int, int] = (3, 4, 5), pca_dim: int | None = 256,
                         seed: int = 0, niter: int = 20) -> StructureSimilarity:
    """Build Eq. 25's similarity matrix from K-means centroids after PCA (Eqs. 23-25).

    Steps: v̄ᵢ = mean of video i's frame features; PCA to ``pca_dim`` components (faiss
    PCAMatrix; skipped when None or ≥ D); K-means with M = ``clusters`` centroids (faiss,
    ``seed``); each video's M₃ nearest centroids; S from :meth:`StructureSimilarity.batch`.

    Reading of Eqs. 23-25 (see the module docstring): level Mₖ keeps each video's Mₖ nearest
    centroids in P; B⁽ᵏ⁾ᵢₘ = +1 iff A⁽ᵏ⁾ᵢₘ = (P Λ⁻¹ Pᵀ)ᵢₘ > 0, i.e. i and m share a kept
    centroid; S = 1 where B⁽¹⁾ = 1, −1 where B⁽²⁾ = −1 and B⁽³⁾ = 1, else 0.

    Args:
        features: (N, T, D) frame features or (N, D) video features of the training set.
        clusters: M, the number of K-means centroids (§4.3: 2000), or an (M, p) array of
            centroids to use instead, in the space after PCA (pass ``pca_dim=None`` to give
            centroids in the raw feature space).
        levels: (M₁, M₂, M₃), increasing (§4.3: 3, 4, 5).
        pca_dim: principal components kept before clustering (default 256, MCMSH's width).
        seed, niter: K-means seed and iterations.
    """
    if isinstance(features, Tensor):
        features = features.detach().cpu().float().numpy()
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 3:
        features = features.mean(axis=1)                        # v̄ᵢ: average over frames
    x = pca_reduce(as_float32_matrix(features), pca_dim)
    m1, m2, m3 = (int(v) for v in levels)
    if not 1 <= m1 < m2 < m3:
        raise ValueError(f"levels must be increasing positive integers, got {tuple(levels)}")
    if isinstance(clusters, (int, np.integer)):
        if not m3 <= clusters <= len(x):
            raise ValueError(f"need between M3={m3} and N={len(x)} clusters, got {clusters}")
        centroids = kmeans(x, int(clusters), seed=seed, niter=niter)
    else:
        centroids = as_float32_matrix(clusters, "centroids")
    sq_dist, neighbours = nearest(x, centroids, m3)
    return StructureSimilarity(neighbours, (m1, m2, m3), centroids, sq_dist)


def anchor_graph(features: Tensor, centroids: Tensor, s: int,
                 sigma: float | None = None) -> tuple[Tensor, Tensor]:
    """Eqs. 23-24 for one level: the sparse affinity P (N, M) and A = P Λ⁻¹ Pᵀ (N, N).

    P keeps each video's s nearest centroids with weights exp(−‖v̄ᵢ − c‖²/σ) normalised over
    the kept ones (Eq. 23, read with s nearest instead of one, see the module docstring);
    Λ = diag(Pᵀ1), inverted where non-zero. σ defaults to the squared mean distance to the
    s-th nearest centroid (the anchor-graph heuristic, written for Eq. 23's exp(−d²/σ)).
    Dense, for inspection and small N; :func:`structure_similarity` does not need it.
    """
    x = features.double()
    c = centroids.to(x)
    d2 = torch.cdist(x, c).pow(2)
    vals, idx = d2.topk(s, dim=1, largest=False)
    if sigma is None:
        sigma = float(vals[:, -1].sqrt().mean().pow(2).clamp_min(1e-12))
    p = torch.zeros_like(d2).scatter_(1, idx, torch.softmax(-vals / sigma, dim=1))   # Eq. 23
    lam = p.sum(0)
    inv = torch.where(lam > 0, 1.0 / lam.clamp_min(1e-300), torch.zeros_like(lam))
    return p, (p * inv) @ p.T                                                          # Eq. 24


def structure_loss(embeddings: Tensor, similarity: Tensor) -> Tensor:
    """Eq. 26: (1/N) Σᵢ Σₘ ((1/d)·eᵢᵀeₘ − Sᵢₘ)², all pairs including i = m.

    Args:
        embeddings: (N, d) pooled vectors e (the paper: the student's latent E^S averaged over
            time, width d; pooled tanh codes give MCMSH's form).
        similarity: (N, N) S of the same N videos (:meth:`StructureSimilarity.batch`).
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, d), got {tuple(embeddings.shape)}")
    n, d = embeddings.shape
    if similarity.shape != (n, n):
        raise ValueError(f"similarity must be ({n}, {n}), got {tuple(similarity.shape)}")
    e = _float(embeddings)
    gram = e @ e.T / d
    return (gram - similarity.to(gram)).pow(2).sum() / n


def vhmt_loss(*, recon: Tensor | Sequence[Tensor], target: Tensor, student_codes: Tensor,
              teacher_codes: Tensor, embeddings: Tensor | None = None,
              similarity: Tensor | None = None, mask: Tensor | None = None,
              alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.1, tau: float = 0.5,
              rho: float = 0.1, symmetric: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 18: α·L_rec + β·L_ctr + γ·L_sim (§4.3: α = 1, β = 1, γ = 0.1).

    Args:
        recon: (N, T, D) reconstruction of ``target``, or several (e.g. the teacher's and the
            student's decoder outputs): their Eq. 19 terms are added (the paper names one V̂).
        target: (N, T, D) input frame features V.
        student_codes, teacher_codes: (N, k) relaxed video codes bˢ, bᵀ (Eq. 20).
        embeddings: (N, d) pooled student latents e (Eq. 26); needed when γ ≠ 0.
        similarity: (N, N) S for this batch (Eq. 25); needed when γ ≠ 0.
        mask: optional (N, T) frame mask for L_rec (:func:`reconstruction_loss`).
        tau, rho, symmetric: as :func:`debiased_contrastive`.

    Returns:
        (total, parts): parts = {"rec", "ctr", "sim"}, detached, unweighted, for logging
        ("sim" is 0 when γ = 0).
    """
    recons = [recon] if isinstance(recon, Tensor) else list(recon)
    if not recons:
        raise ValueError("vhmt_loss needs at least one reconstruction")
    rec = sum((reconstruction_loss(r, target, mask) for r in recons[1:]),
              reconstruction_loss(recons[0], target, mask))
    ctr = debiased_contrastive(student_codes, teacher_codes, tau, rho, symmetric)
    total = alpha * rec + beta * ctr
    if gamma != 0:
        if embeddings is None or similarity is None:
            raise ValueError("gamma != 0: vhmt_loss needs embeddings and the batch similarity")
        sim = structure_loss(embeddings, similarity)
        total = total + gamma * sim
    else:
        sim = torch.zeros((), dtype=total.dtype, device=total.device)
    return total, {"rec": rec.detach(), "ctr": ctr.detach(), "sim": sim.detach()}
