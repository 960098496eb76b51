"""Training objectives: what a batch is and how its loss is computed.

An objective owns both halves because they go together: the supervised InfoNCE of AV-NAS
(Eqs. 36-37) needs anchor/positive/negative batches, a self-supervised loss needs views of
unlabelled videos. The training loop only asks for ``batches`` and a ``loss``.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from avsearch.data import Split
from avsearch.data.sampler import TripletSampler
from avsearch.errors import AvsearchInputError

__all__ = ["Objective", "InfoNCE", "VHMT", "info_nce", "unlabelled_batches", "get_objective", "OBJECTIVES"]


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             tau: float = 0.1) -> torch.Tensor:
    """Eq. 36 averaged over anchors: −log e^{s(a,p)/τ} / (e^{s(a,p)/τ} + Σ_i e^{s(a,n_i)/τ}).

    Args:
        anchor, positive: (B, bits); negatives: (B, n, bits). s is cosine similarity.
    """
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    n = F.normalize(negatives, dim=-1)
    logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bnd->bn", a, n)], 1) / tau
    return F.cross_entropy(logits, logits.new_zeros(len(a), dtype=torch.long))


class Objective(Protocol):
    """What the training loop needs from an objective."""

    name: str
    supervised: bool     # uses labels (a self-supervised objective never reads them)

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        """Index arrays into ``split`` (training data), deterministic in (seed, epoch)."""

    def loss(self, encode: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> torch.Tensor:
        """The loss of one batch; ``encode(indices)`` returns the network's tanh codes."""


class InfoNCE:
    """Supervised InfoNCE (Eq. 37): 1 positive from the anchor's class, 4 negatives from 4
    distinct other classes (the paper's sampler), τ = 0.1, cosine similarity on tanh codes."""

    name = "infonce"
    supervised = True

    def __init__(self, seed: int = 0, negatives: int = 4, tau: float = 0.1):
        self.seed, self.negatives, self.tau = seed, negatives, tau
        self._samplers: dict[int, TripletSampler] = {}  # per split (DARTS trains on two)

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        if id(split) not in self._samplers:
            if not split.labels.any():
                raise AvsearchInputError("the training data has no labels; the supervised InfoNCE "
                                         "objective needs them")
            self._samplers[id(split)] = TripletSampler(split.labels, negatives=self.negatives,
                                                       seed=self.seed)
        return self._samplers[id(split)].epoch(batch_size, epoch=epoch)

    def loss(self, encode: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> torch.Tensor:
        # Encode each distinct video once: negatives of one anchor are often others' anchors.
        uniq, inverse = np.unique(batch, return_inverse=True)
        f = encode(uniq)
        f = f[torch.as_tensor(inverse.reshape(batch.shape), device=f.device)]
        return info_nce(f[:, 0], f[:, 1], f[:, 2:], self.tau)


def unlabelled_batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Every video once per epoch in a random order fixed by (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return iter([order[i:i + batch_size] for i in range(0, n, batch_size)])


class VHMT:
    """VHMT's self-supervised objective, Eq. 18: reconstruction (Eq. 19) of the input frames by
    the student's and the teacher's decoders, debiased contrastive between student and teacher
    codes (Eqs. 20-22, τ = 0.5, ρ = 0.1), and local structure preservation (Eqs. 23-26) with a
    similarity built once per training split from K-means after PCA (faiss).

    Labels are not used. It reads the nodes ``student.recon``, ``teacher.recon``,
    ``teacher.codes`` and ``student.latent`` (the ``vhmt`` and ``tam`` spaces have them).
    K-means uses M = N/20 centroids, at most the paper's 2000 (its FCVID training set has about
    20 videos per centroid), so small data sets get a comparable clustering.
    """

    name = "vhmt"
    supervised = False
    nodes = ("student.recon", "teacher.recon", "teacher.codes", "student.latent")

    def __init__(self, seed: int = 0, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.1,
                 tau: float = 0.5, rho: float = 0.1):
        self.seed, self.alpha, self.beta, self.gamma, self.tau, self.rho = seed, alpha, beta, gamma, tau, rho
        self._similarity: dict[int, object] = {}   # per training split

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        if self.gamma and id(split) not in self._similarity:
            self._similarity[id(split)] = self._structure(split)
        return unlabelled_batches(len(split), batch_size, self.seed, epoch)

    def _structure(self, split: Split):
        from avsearch.losses.vhmt import structure_similarity

        if len(split.features) != 1:
            raise AvsearchInputError(f"the vhmt objective takes one modality, the data has "
                                     f"{len(split.features)} ({', '.join(split.features)})")
        means = np.concatenate([split.take(np.arange(i, min(i + 2048, len(split))))[0].mean(1)
                                for i in range(0, len(split), 2048)])
        return structure_similarity(means, clusters=int(np.clip(len(split) // 20, 6, 2000)),
                                    seed=self.seed)

    def loss(self, encode, batch: np.ndarray) -> torch.Tensor:
        from avsearch.losses.vhmt import vhmt_loss

        modality = encode.net.space.modalities[0]
        out = encode.nodes(batch, (*self.nodes, modality))
        similarity = None
        if self.gamma:
            similarity = self._similarity[id(encode.split)].batch(batch, device=out["codes"].device)
        total, _ = vhmt_loss(recon=[out["student.recon"], out["teacher.recon"]], target=out[modality],
                             student_codes=out["codes"], teacher_codes=out["teacher.codes"],
                             embeddings=out["student.latent"].mean(1), similarity=similarity,
                             alpha=self.alpha, beta=self.beta, gamma=self.gamma, tau=self.tau,
                             rho=self.rho)
        return total


OBJECTIVES: dict[str, Callable[..., Objective]] = {"infonce": InfoNCE, "vhmt": VHMT}


def get_objective(name: str, seed: int = 0) -> Objective:
    if name not in OBJECTIVES:
        raise AvsearchInputError(f"unknown objective {name!r} (available: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name](seed=seed)
