"""The self-supervised hashing losses, as pure functions on tensors (no networks).

:mod:`~avsearch.losses.vhmt` is VHMT's joint loss (paper 001, Eqs. 18-26): reconstruction,
debiased student-teacher contrast and local structure preservation from an anchor graph over
K-means centroids. :mod:`~avsearch.losses.autossvh` is AutoSSVH's (paper 002, Eqs. 9-17):
frame reconstruction, view contrast and point-to-set contrast against hash centres voted
inside K-means clusters. :mod:`~avsearch.losses.sptch` is SPTCH's (paper 003, Eqs. 1-2 and
6-16): the collaboration graph, the semantic hashing loss and the encoders' cross-modal
contrastive loss. Objectives wire networks to these; the functions only see tensors.
"""
from __future__ import annotations

from avsearch.losses.autossvh import (
    HashCentres, autossvh_loss, component_vote, frame_reconstruction_loss, hash_centres,
    p2set_loss, view_contrastive,
)
from avsearch.losses.sptch import (
    collaboration_graph, encoder_loss, multimodal_contrastive, semantic_hashing_loss,
)
from avsearch.losses.vhmt import (
    StructureSimilarity, anchor_graph, debiased_contrastive, reconstruction_loss,
    structure_loss, structure_similarity, vhmt_loss,
)

__all__ = [
    "reconstruction_loss", "debiased_contrastive", "structure_similarity", "StructureSimilarity",
    "anchor_graph", "structure_loss", "vhmt_loss",
    "frame_reconstruction_loss", "view_contrastive", "component_vote", "hash_centres",
    "HashCentres", "p2set_loss", "autossvh_loss",
    "collaboration_graph", "multimodal_contrastive", "semantic_hashing_loss", "encoder_loss",
]
