"""LAGNH's candidate ops (paper 004, §3.2-3.4, Eqs. 1-7): auxiliary semantics on or off,
cross-modal attention denoising, the fusion factor μ of the augmented semantic graph, and the
GCN over that graph.

The graph relates items, and avsearch encodes an item the same whatever else is in its batch,
so the graph's nodes are a fixed bank of training items (the *anchors*, :mod:`avsearch.supernet`):
a network whose space sets ``OpConfig.anchors = m`` runs them as the last m rows of every
tensor. These ops read those rows as the graph's nodes; every other row (a batch item, in
training or at query time) joins the graph as one more node with edges to the anchors and to
itself only (a leaf), so its output depends on the anchors and itself, never on its batch.
The anchors' own rows form the paper's graph over (a sample of) the training set.

The graph relates items: an item's vector is its mean over steps (an image, (N, 1, w), has
one), and a sequence's steps each pass through the items' graph. The anchor bank holds images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.ops.basic import Identity
from avsearch.ops.names import MU_PATTERN
from avsearch.ops.registry import OpConfig, register_op

__all__ = ["Nothing", "AuxAttention", "NoAttention", "Fusion", "GCN", "lagnh_graph"]


def _items(x: Tensor) -> Tensor:
    """(N, T, w) → (N, w): an item's vector, its mean over steps (an image has one step)."""
    return x.mean(1)


def _split(n: int, anchors: int) -> int:
    """The number of batch rows in front of the anchors' rows."""
    if n < anchors:
        raise ValueError(f"{n} rows but {anchors} anchors: the anchor bank is missing")
    return n - anchors


class Nothing(nn.Module):
    """``NoTags`` (LAGNH-no-aux, Table 5: no auxiliary semantics) and ``NoPrior`` (no
    adversarial regulariser): zeros of the input's shape, an absent op."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


# ``Tags``: the auxiliary semantics y as they are; ``Prior``: Z as it is, which the
# objective's discriminator matches to a Gaussian prior (Eq. 10)
register_op("Tags", kinds="SEM")(lambda width, config: Identity())
register_op("NoTags", kinds="SEM", absent=True)(lambda width, config: Nothing())
register_op("Prior", kinds="ADV")(lambda width, config: Identity())
register_op("NoPrior", kinds="ADV", absent=True)(lambda width, config: Nothing())


class AuxAttention(nn.Module):
    """Cross-modal attention denoising, Eqs. 1-2:
    x_i^att = Σ_j α_ij ȳ_j / Σ_j α_ij + x̄_i,  α_ij = [cos(x̄_i, ȳ_j)]_+,
    j over the anchors (and, for a batch row, the item itself). ``x`` is x̄, ``y`` ȳ (both
    linearly transformed upstream). A row whose α are all 0 gets x̄."""

    def __init__(self, anchors: int):
        super().__init__()
        self.anchors = anchors

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        xb, yb = _items(x), _items(y)
        b = _split(xb.shape[0], self.anchors)
        xn, yn = F.normalize(xb, dim=-1), F.normalize(yb, dim=-1)
        alpha = (xn @ yn[b:].T).clamp_min(0)                     # (N, m), Eq. 1
        own = (xn * yn).sum(-1).clamp_min(0)                      # a batch row's own y
        own = torch.cat([own[:b], own.new_zeros(xb.shape[0] - b)])  # an anchor has itself in α
        num = alpha @ yb[b:] + own[:, None] * yb
        den = alpha.sum(-1) + own
        att = num / den.clamp_min(1e-12)[:, None]                 # Eq. 2 (0 where den = 0)
        return x + att[:, None]


class NoAttention(nn.Module):
    """``NoAttention`` (LAGNH-no-att): x̄ as it is."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x


register_op("AuxAttention", kinds="ATT", arity=2)(
    lambda width, config: AuxAttention(config.anchors))
register_op("NoAttention", kinds="ATT", arity=2)(lambda width, config: NoAttention())


class Fusion(nn.Module):
    """The fusion factor μ of S = μ·S^v + S^a (Eq. 5), as y / √μ: the GCN normalises the
    graph (D^{-1/2} S D^{-1/2}), which a common factor does not change, so
    S^v + (y/√μ)(y/√μ)ᵀ = (μ·S^v + S^a)/μ gives the same normalised graph as Eq. 5."""

    def __init__(self, mu: float):
        super().__init__()
        self.mu = mu

    def forward(self, y: Tensor) -> Tensor:
        return y / self.mu ** 0.5


def _fusion(width: int, config: OpConfig, mu: str) -> Fusion:
    value = float(mu.replace("p", "."))
    if value <= 0:
        raise ValueError(f"fusion factor mu must be > 0, got {value}")
    return Fusion(value)


register_op("mu<μ>", kinds="MU", pattern=MU_PATTERN)(_fusion)


def lagnh_graph(x: Tensor, y: Tensor, anchors: int, bandwidth: float = 1.0) -> tuple[Tensor, Tensor]:
    """The normalised augmented semantic graph of N = b + m rows over the m anchors.

    S_ij = exp(−‖x_i − x_j‖² / 2σ²) + y_iᵀ y_j (Eqs. 3-4; μ is in y, see :class:`Fusion`),
    j over the anchors, plus the item's own node for a batch row; 2σ² is ``bandwidth`` times
    the mean squared distance between anchors (detached). Normalised as D^{-1/2} S D^{-1/2} with D the row
    sums (an anchor's over the anchors only: a batch row never changes the anchors' graph).

    Returns (weights to the anchors (N, m), weight of the own node (N,); 0 for anchors).
    """
    n = x.shape[0]
    b = _split(n, anchors)
    xa, ya = x[b:], y[b:]
    d2 = ((x * x).sum(-1, keepdim=True) + (xa * xa).sum(-1)[None] - 2 * x @ xa.T).clamp_min(0)
    scale = bandwidth * d2[b:].detach().mean().clamp_min(1e-6) if anchors > 1 else d2.new_tensor(1.0)
    k = torch.exp(-d2 / scale) + y @ ya.T                           # (N, m)
    own = 1 + (y * y).sum(-1)
    own = torch.cat([own[:b], own.new_zeros(n - b)])
    deg = k.sum(-1) + own
    adj = k / torch.sqrt(deg[:, None] * deg[None, b:])
    return adj, own / deg


class GCN(nn.Module):
    """``GCN_<depth>x<hidden>``: Eqs. 6-7 with ``depth`` graph convolutions,
    H ← σ(S̃ H W) (ReLU between layers, none after the last; no bias, as the authors' code).
    Widths: d' → hidden → … → hidden → d'; the space's fixed linear layer after this cell
    maps d' to the code length, so the last convolution and it are Table 1's GC layer 2
    (propagation is linear: S̃ (H W) V = (S̃ H W) V). ``x`` is X^att, ``y`` the fused
    semantics (context: any width)."""

    def __init__(self, width: int, depth: int, hidden: int, anchors: int, bandwidth: float = 1.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"GCN depth must be >= 1, got {depth}")
        sizes = [width] + [hidden] * (depth - 1) + [width]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes, sizes[1:]))
        self.anchors, self.bandwidth = anchors, bandwidth

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        adj, own = lagnh_graph(_items(x), _items(y), self.anchors, self.bandwidth)
        b = x.shape[0] - self.anchors
        h = x
        for i, layer in enumerate(self.layers):
            hw = layer(h)                                  # every step through the items' graph
            h = torch.einsum("nm,mtw->ntw", adj, hw[b:]) + own[:, None, None] * hw
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h


register_op("GCN_<depth>x<hidden>", kinds="GCN", arity=2, context=True)(
    lambda width, config, depth, hidden: GCN(width, depth, hidden, config.anchors, config.bandwidth))
