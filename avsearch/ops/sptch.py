"""SPTCH's candidate ops (paper 003, §3.1.2 and §3.2, Eqs. 3-5): the two towers' sequence
encoders, the modality-specific and multi-modal GCNs of the semantic hashing network, and the
aggregation of V and V_g.

* ``Transformer_<n>`` / ``Mamba_<n>`` (kind SE, the towers): learned positions, ``n``
  bidirectional pre-norm Transformer blocks (:class:`~avsearch.ops.attention.TransformerBlock`)
  or causal Mamba blocks (:class:`~avsearch.ops.ssm.MambaBlock`), a LayerNorm, then the mean
  over the item's real positions (B, d). The cell's second input is the tower's input, read
  as context: its padding (:func:`avsearch.data.text.padding_mask`: token id 0, an all-zero
  row) is masked out of attention and the mean, and zeroed before each Mamba block. A dropped
  frame or token (SPTCH's augmentations) is set to zero, so it is padding too. Depths share
  their blocks (depth n is the first n blocks of one stack), as VHMT's stacks do, and, in a
  cell that holds several depths of one family (a mixed supernet), their computation: the
  candidates of a family read one run of the stack (:class:`StackRun`), depth n its output
  after block n, so ``Transformer_1``, ``_2`` and ``_4`` cost four blocks, not seven. They
  then share one dropout draw per block, as the blocks do. A batch runs in up to four groups
  of similar length (:func:`length_groups`), each cut after its longest item's last real
  position: the trailing padding a batch of captions carries (a mean of 38 real tokens in
  64 on avclips) is never run. Both are exact: padding is masked out of attention and the
  mean, and a Mamba block is causal, so what follows an item's last position cannot reach it.
* ``GCN_<n>`` / ``NoGCN`` (kind SG): Eq. 3 over the batch's rows of the collaboration graph
  (a given node, (B, B)); ``NoGCN`` is absent (V_g = 0).
* ``MMGCN_<n>`` / ``NoMMGCN`` (kind MM): Eqs. 4-5 over [[S, I], [I, S]], three inputs (V^v,
  V^t, the graph); an item's output V^j is the mean of its video's and its caption's rows.
* ``ConcatFC`` / ``Sum`` / ``GraphOnly`` (kind AGG): H = FC([V; V_g]) (the paper's "fully
  connected layer to aggregate V and V_g"), V + V_g, or V_g alone.

The semantic hashing network works on one vector per item, as (B, 1, d) sequences.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from avsearch.data.text import padding_mask
from avsearch.ops.attention import LearnedPositionalEmbedding, TransformerBlock
from avsearch.ops.gcn import GCN, MultiModalGCN
from avsearch.ops.registry import OpConfig, register_op
from avsearch.ops.ssm import MambaBlock
from avsearch.ops.vhmt import _prefix

__all__ = ["real_positions", "LENGTH_GROUPS", "length_groups", "StackRun", "SequenceEncoder", "GraphConv", "MultiModalGraphConv", "NoGraph",
           "ConcatFC"]


def real_positions(raw: Tensor) -> Tensor:
    """(B, L) bool: the real positions of a tower's input (token ids or (B, L, D) rows); an
    item with none (an empty caption) counts all its positions, so it still has a mean."""
    real = padding_mask(raw)
    return real | ~real.any(1, keepdim=True)


LENGTH_GROUPS = 4   # a batch of sequences runs in up to this many groups of similar length


def length_groups(mask: Tensor, groups: int = LENGTH_GROUPS) -> list[tuple[Tensor | None, int]]:
    """The batch's items as groups of similar length, each with the length it is cut to (its
    longest item's last real position + 1): the items sorted by that length (stable) and
    split into ``groups`` parts; trailing padding beyond a group's length is never run. One
    group of every item at full length ``(None, L)`` where the groups would save less than a
    tenth of the positions (a video's frames), and inside ``torch.compile``/``export``."""
    batch, length = mask.shape
    if torch.compiler.is_compiling() or batch < 2 and bool(mask[:, -1].all()):
        return [(None, length)]
    last = length - mask.flip(1).to(torch.int64).argmax(1)        # every row has a real position
    order = torch.argsort(last, stable=True)
    parts = [p for p in order.tensor_split(min(groups, batch)) if len(p)]
    cut = [int(last[p].max()) for p in parts]
    if sum(len(p) * c for p, c in zip(parts, cut)) > 0.9 * batch * length:
        return [(None, length)]
    return list(zip(parts, cut))


class StackRun:
    """One run of a block stack over a batch: per length group (:func:`length_groups`) the
    hidden states after each block, extended on demand. In a cell with several depths of a
    family (a mixed supernet) the depths share one: a depth-n encoder called on the same
    input objects (``x``, ``raw``) as the run in hand, in the same training and grad mode,
    reads its state after block n. The run holds its input tensors, so their identities
    cannot be reused while it is kept; any other input starts a new run. A network with one
    depth (a derived network) runs a fresh one per call."""

    def __init__(self) -> None:
        self.users, self.key, self.parts, self.restore = 0, None, [], None

    def output(self, encoder: SequenceEncoder, x: Tensor, raw: Tensor, depth: int) -> Tensor:
        """The encoder's (B, d) output at ``depth``: LayerNorm, mean over real positions."""
        modes = (encoder.training, torch.is_grad_enabled())
        key = self.key
        if key is None or key[0] is not x or key[1] is not raw or key[2] != modes:
            self._start(encoder, x, raw, modes)
        outs = []
        for mask, keep, states in self.parts:
            while len(states) <= depth:
                states.append(encoder.step(len(states) - 1, states[-1], mask, keep))
            h = encoder.norm(states[depth]) * keep
            outs.append(h.sum(1) / keep.sum(1))
        return outs[0] if self.restore is None else torch.cat(outs)[self.restore]

    def _start(self, encoder: SequenceEncoder, x: Tensor, raw: Tensor, modes) -> None:
        mask = real_positions(raw)
        groups = length_groups(mask)
        self.key, self.parts = (x, raw, modes), []
        for rows, cut in groups:
            xs, m = (x, mask) if rows is None else (x[rows, :cut], mask[rows, :cut])
            self.parts.append((m, m.unsqueeze(-1).to(x.dtype), [encoder.pos(xs)]))
        self.restore = None if groups[0][0] is None else \
            torch.argsort(torch.cat([rows for rows, _ in groups]))


class SequenceEncoder(nn.Module):
    """positions → blocks (masked) → LayerNorm → masked mean; see the module docstring."""

    def __init__(self, blocks: list[nn.Module], pos: nn.Module, norm: nn.Module, attention: bool,
                 run: StackRun | None = None):
        super().__init__()
        self.pos, self.blocks, self.norm, self.attention = pos, nn.ModuleList(blocks), norm, attention
        self.run = run

    def step(self, i: int, h: Tensor, mask: Tensor, keep: Tensor) -> Tensor:
        """Block ``i`` on the hidden state ``h``."""
        return self.blocks[i](h, mask) if self.attention else self.blocks[i](h * keep)

    def forward(self, x: Tensor, raw: Tensor) -> Tensor:
        run = self.run if self.run is not None and self.run.users > 1 else StackRun()
        return run.output(self, x, raw, len(self.blocks))

    def extra_repr(self) -> str:
        return f"depth={len(self.blocks)}, {'attention' if self.attention else 'mamba'}"


def _encoder(width: int, config: OpConfig, n: int, shared: dict[str, nn.Module],
             attention: bool) -> SequenceEncoder:
    family = "attention" if attention else "mamba"
    make = (lambda: TransformerBlock(width, config)) if attention else (lambda: MambaBlock(width, config))
    pos = shared.setdefault("pos", LearnedPositionalEmbedding(width, config.max_len))
    norm = shared.setdefault(f"{family}_norm", nn.LayerNorm(width))
    run = shared.setdefault(f"{family}_run", StackRun())
    run.users += 1
    return SequenceEncoder(_prefix(shared, f"{family}_blocks", n, make), pos, norm, attention, run)


register_op("Transformer_<n>", kinds="SE", arity=2, pooled=True, context=True)(
    lambda width, config, n, shared: _encoder(width, config, n, shared, True))
register_op("Mamba_<n>", kinds="SE", arity=2, pooled=True, context=True)(
    lambda width, config, n, shared: _encoder(width, config, n, shared, False))


class GraphConv(nn.Module):
    """``GCN_<n>``: Eq. 3 on items (B, 1, d) with the batch's graph (B, B)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.gcn = GCN(width, depth)

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        return self.gcn(x[:, 0], graph.to(x.dtype))[:, None]


class MultiModalGraphConv(nn.Module):
    """``MMGCN_<n>``: Eqs. 4-5; an item's V^j is the mean of its two rows."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.gcn = MultiModalGCN(width, depth)

    def forward(self, video: Tensor, text: Tensor, graph: Tensor) -> Tensor:
        v, t = self.gcn(video[:, 0], text[:, 0], graph.to(video.dtype))
        return (0.5 * (v + t))[:, None]


class NoGraph(nn.Module):
    """``NoGCN`` / ``NoMMGCN``: no graph convolution (zeros, an absent op)."""

    def forward(self, x: Tensor, *context: Tensor) -> Tensor:
        return torch.zeros_like(x)


register_op("GCN_<n>", kinds="SG", arity=2, context=True)(
    lambda width, config, n: GraphConv(width, n))
register_op("NoGCN", kinds="SG", arity=2, context=True, absent=True)(
    lambda width, config: NoGraph())
register_op("MMGCN_<n>", kinds="MM", arity=3, context=True)(
    lambda width, config, n: MultiModalGraphConv(width, n))
register_op("NoMMGCN", kinds="MM", arity=3, context=True, absent=True)(
    lambda width, config: NoGraph())


class ConcatFC(nn.Module):
    """``ConcatFC``: FC([V; V_g]) (§3.2.3)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(2 * width, width)

    def forward(self, v: Tensor, vg: Tensor) -> Tensor:
        return self.fc(torch.cat([v, vg], -1))


class _Sum(nn.Module):
    def forward(self, v: Tensor, vg: Tensor) -> Tensor:
        return v + vg


class _GraphOnly(nn.Module):
    def forward(self, v: Tensor, vg: Tensor) -> Tensor:
        return vg


register_op("ConcatFC", kinds="AGG", arity=2)(lambda width, config: ConcatFC(width))
register_op("Sum", kinds="AGG", arity=2)(lambda width, config: _Sum())
register_op("GraphOnly", kinds="AGG", arity=2)(lambda width, config: _GraphOnly())
