"""LAGNH's loss terms (paper 004, Eqs. 8-12) and its discriminator (Table 1).

Every term is a mean over its entries, as the authors' code computes them (``MSELoss``,
``MultiLabelSoftMarginLoss``, ``BCEWithLogitsLoss``), where the paper writes Frobenius norms
and sums: the weights λ1 = 100, λ2 = 1, λ3 = 1 are the paper's for those means.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Discriminator", "quantization_loss", "reconstruction_loss", "multilabel_loss",
           "generator_loss", "discriminator_loss"]


class Discriminator(nn.Module):
    """Table 1's discriminator: FC r→64, ReLU, FC 64→32, ReLU, FC 32→1 (a logit)."""

    def __init__(self, bits: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(bits, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                 nn.Linear(32, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)[:, 0]


def quantization_loss(z: Tensor) -> Tensor:
    """Eq. 8, ‖B − Z‖² with B = sgn(Z) (sign(0) = +1, as the codes), a mean over entries."""
    b = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    return (b - z).pow(2).mean()


def reconstruction_loss(z: Tensor, y: Tensor, k: float = 1.0) -> Tensor:
    """Eq. 9, ‖k·S^a − [cos(Z, Z)]_+‖² over the batch's pairs, S^a = Y Yᵀ (Eq. 4), a mean."""
    zn = F.normalize(z, dim=-1)
    cos = (zn @ zn.T).clamp_min(0)
    return (k * (y @ y.T) - cos).pow(2).mean()


def multilabel_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Eq. 11 as the binary cross-entropy it is (the paper's sum lacks its minus sign) of a
    linear classifier on Z against the tags, clipped to [0, 1] (scores above 1 count as 1),
    a mean over items and tags."""
    return F.binary_cross_entropy_with_logits(logits, y.clamp(0, 1))


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Eq. 10's generator side, non-saturating (the code's): −E log D(Z)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Eq. 10's discriminator side: −E log D(Z') − E log(1 − D(Z)), Z' from the Gaussian prior."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
