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

__all__ = ["Objective", "InfoNCE", "info_nce", "get_objective", "OBJECTIVES"]


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

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        """Index arrays into ``split`` (training data), deterministic in (seed, epoch)."""

    def loss(self, encode: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> torch.Tensor:
        """The loss of one batch; ``encode(indices)`` returns the network's tanh codes."""


class InfoNCE:
    """Supervised InfoNCE (Eq. 37): 1 positive from the anchor's class, 4 negatives from 4
    distinct other classes (the paper's sampler), τ = 0.1, cosine similarity on tanh codes."""

    name = "infonce"

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


OBJECTIVES: dict[str, Callable[..., Objective]] = {"infonce": InfoNCE}


def get_objective(name: str, seed: int = 0) -> Objective:
    if name not in OBJECTIVES:
        raise AvsearchInputError(f"unknown objective {name!r} (available: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name](seed=seed)
