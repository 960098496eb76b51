"""Supervised contrastive loss (Khosla et al., NeurIPS 2020, Eq. 2, "L_out") on hash codes.

Every video of a batch is an anchor; its positives are the other videos sharing a label with
it, its contrast set every other video. With cosine similarity s and temperature τ:

    L = mean over anchors i with a positive of
        −1/|P(i)| Σ_{p∈P(i)} log( e^{s(i,p)/τ} / Σ_{a≠i} e^{s(i,a)/τ} )

Against AV-NAS's InfoNCE (1 positive, 4 negatives per anchor) one batch of B videos gives
B·(B−1) pairs instead of 5 per anchor, which is what short budgets need
(``experiments/generality``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["supcon_loss"]


def supcon_loss(codes: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Args: codes (B, bits) continuous codes; labels (B, C) multi-hot (bool or 0/1).

    Returns the mean loss over anchors that have at least one positive (0 if none has).
    """
    z = F.normalize(codes, dim=-1)
    logits = z @ z.T / tau
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    lab = labels.to(z.dtype)
    positive = ((lab @ lab.T) > 0) & ~self_mask
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    count = positive.sum(1)
    has = count > 0
    if not has.any():
        return codes.sum() * 0.0
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(1)[has] / count[has]
    return -per_anchor.mean()
