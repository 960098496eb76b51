"""Graph convolutions over a batch's similarity graph: SPTCH's modality-specific and
multi-modal GCNs (paper 003, Eqs. 3-5).

A layer is ``H_l = σ(D̃^{-1/2} S D̃^{-1/2} H_{l−1} W_l)``. SPTCH's graph S holds negative
entries (Eq. 2 sets the weakest similarities to −1 before ``tanh``), so the paper's degree
``D̃_ii = Σ_j S_ij`` can be zero or negative and its inverse square root undefined; here
``D̃_ii = Σ_j |S_ij|``, which equals the paper's on a non-negative graph and keeps the signs
of S. σ is ReLU between layers and the identity after the last (the output feeds a linear
aggregation, Sec. 3.2.3). The multi-modal GCN runs on ``S^c = [[S, I], [I, S]]`` over the
videos' and the captions' rows stacked (Eq. 5), so each item's two modalities exchange
features. The graph is an input, not a parameter: a batch's rows of the training graph.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["normalised_graph", "multimodal_graph", "GCN", "MultiModalGCN"]


def normalised_graph(graph: torch.Tensor) -> torch.Tensor:
    """``D̃^{-1/2} S D̃^{-1/2}`` with ``D̃_ii = Σ_j |S_ij|`` (a row of zeros stays zero)."""
    degree = graph.abs().sum(1)
    scale = torch.where(degree > 0, degree.clamp_min(1e-12).rsqrt(), torch.zeros_like(degree))
    return scale[:, None] * graph * scale[None, :]


def multimodal_graph(graph: torch.Tensor) -> torch.Tensor:
    """Eq. 5's ``S^c = [[S, I], [I, S]]`` (2N, 2N)."""
    eye = torch.eye(len(graph), dtype=graph.dtype, device=graph.device)
    return torch.cat([torch.cat([graph, eye], 1), torch.cat([eye, graph], 1)], 0)


class GCN(nn.Module):
    """``depth`` graph convolutions of width ``width`` (Eq. 3); depth 0 is the identity."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))

    def forward(self, h: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        """``h`` (N, width) node features; ``graph`` (N, N) the batch's similarity graph."""
        a = normalised_graph(graph)
        for i, layer in enumerate(self.layers):
            h = a @ layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


class MultiModalGCN(nn.Module):
    """Eqs. 4-5: one :class:`GCN` over the stacked videos and captions with ``S^c``."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.gcn = GCN(width, depth)

    def forward(self, video: torch.Tensor, text: torch.Tensor,
                graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.gcn(torch.cat([video, text], 0), multimodal_graph(graph))
        return out[:len(video)], out[len(video):]
