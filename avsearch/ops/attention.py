"""Attention candidates of AV-NAS Table 1: SelfAttention (M, S, T) and CrossAttention (I).

``SelfAttention`` means three different modules depending on the cell (reference-facts §1):

* M: :class:`AttentionCore`, the bare multi-head core without output projection, residual
  or norm, so that Eq. 6 (MLP after it = output projection, D1=Add = residual, U3=LN) holds;
  with ``OpConfig.attention_positions`` other than ``none``, positions are added to its
  input first (:class:`PositionedAttention`);
* S: :class:`TransformerStage`, learned positions + one pre-norm :class:`TransformerBlock`
  + a final LayerNorm, sequence to sequence;
* T: the same stage followed by a pool over time (:class:`~avsearch.ops.basic.Pooled`): the
  mean as ``SelfAttention`` (the paper), the max as ``SelfAttention/max``, one block shared by both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.ops.basic import FeedForward, pooled_from_shared
from avsearch.ops.dropout import Dropout, dropout
from avsearch.ops.names import ATTENTION_POSITIONS, POOL_SUFFIX
from avsearch.ops.registry import OpConfig, register_op

__all__ = [
    "AttentionCore", "MultiHeadAttention", "CrossAttention", "LearnedPositionalEmbedding",
    "TransformerBlock", "TransformerStage", "SinusoidalPositionalEncoding", "PositionedAttention",
    "ATTENTION_POSITIONS",
]


class AttentionCore(nn.Module):
    """Multi-head scaled dot-product attention: Q/K/V projections, softmax(QKᵀ/√d_h)V per head.

    Heads are concatenated and returned as is: no output projection, residual or norm.
    Dropout is applied to the attention probabilities in training only.

    Args:
        width: model width w; split into ``heads`` heads of width w / heads.
        heads: number of heads; must divide ``width``.
        dropout: dropout probability on the attention probabilities.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if heads < 1 or width % heads != 0:
            raise ValueError(f"attention heads ({heads}) must divide the width ({width}); "
                             f"width {width} with heads {heads} is not possible")
        self.heads = heads
        self.head_dim = width // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)

    def _split(self, t: Tensor) -> Tensor:
        # (B, L, w) -> (B, heads, L, d_h)
        return t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: Tensor, y: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Queries from ``x``, keys and values from ``y`` (``x`` itself when ``y`` is None);
        ``mask`` (B, L_y) bool: the keys that take part (a text's real positions)."""
        kv = x if y is None else y
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(kv)), self._split(self.v_proj(kv))
        keep = None if mask is None else mask[:, None, None, :]
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            # the same attention spelled out, so the probabilities take the fast CPU dropout
            scores = q @ k.transpose(-2, -1) * self.head_dim ** -0.5
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            # softmax in float32 whatever the autocast (torch's bfloat16 softmax over rows this
            # short is 3× slower), back to v's dtype for the product
            probs = dropout(scores.softmax(-1, dtype=torch.float32), self.dropout)
            out = probs.to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).flatten(-2)


class MultiHeadAttention(nn.Module):
    """MHA(x, y, y) of Vaswani et al.: :class:`AttentionCore` followed by an output projection."""

    def __init__(self, width: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.core = AttentionCore(width, heads, dropout)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, y: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.out_proj(self.core(x, y, mask))


class CrossAttention(nn.Module):
    """``CrossAttention`` (I cells): LN(x + Drop(MHA(x, y, y))).

    Queries come from x, keys and values from y; the residual goes to x.
    """

    def __init__(self, width: int, config: OpConfig) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(width, config.heads, config.dropout)
        self.dropout = Dropout(config.dropout)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.attn(x, y)))


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned embedding of each position 0..L−1 (L ≤ ``max_len``) to the sequence.

    The network's only positional signal (attention is otherwise permutation-equivariant).
    """

    def __init__(self, width: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(0.02 * torch.randn(max_len, width))

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the positional embedding's "
                             f"max_len {self.max_len}; raise OpConfig.max_len")
        return x + self.weight[:length]


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding of Vaswani et al. (2017, §3.5) to the sequence:
    PE(t, 2i) = sin(t / 10000^(2i/w)), PE(t, 2i+1) = cos(t / 10000^(2i/w)), t = 0..L−1.

    No parameters, any length; an odd width drops the last cosine.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        length, width = x.shape[1], self.width
        t = torch.arange(length, device=x.device, dtype=torch.float32)[:, None]
        freq = torch.pow(10000.0, -torch.arange(0, width, 2, device=x.device,
                                                 dtype=torch.float32) / width)
        pe = torch.stack([torch.sin(t * freq), torch.cos(t * freq)], dim=-1).flatten(-2)
        return x + pe[:, :width].to(x.dtype)


class PositionedAttention(nn.Module):
    """An M cell's ``SelfAttention`` that sees time order: positions added to its input,
    then :class:`AttentionCore` (Q, K and V all read them).

    Eqs. 6-8 of AV-NAS put the Transformer encoder of Vaswani et al. in the space, whose
    input carries positional encodings (§3.5); without them, attention in the M cells, and
    CrossAttention after them, treat a video's steps as a set, and only the T cell's learned
    positions (the authors' code) see their order. Which positions: ``learned``
    (:class:`LearnedPositionalEmbedding`, as the T cell's) or ``sinusoidal``
    (:class:`SinusoidalPositionalEncoding`).
    """

    def __init__(self, width: int, config: OpConfig) -> None:
        super().__init__()
        kind = config.attention_positions
        if kind not in ATTENTION_POSITIONS[1:]:
            raise ValueError(f"attention positions must be one of {ATTENTION_POSITIONS}, "
                             f"got {kind!r}")
        self.pos = (LearnedPositionalEmbedding(width, config.max_len) if kind == "learned"
                    else SinusoidalPositionalEncoding(width))
        self.core = AttentionCore(width, config.heads, config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.core(self.pos(x))


class TransformerBlock(nn.Module):
    """One pre-norm Transformer block: x + Drop(MHA(LN x)), then x + Drop(FFN(LN x)).

    No positional embedding and no final norm, so that blocks can be stacked.
    """

    def __init__(self, width: int, config: OpConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, config.heads, config.dropout)
        self.drop1 = Dropout(config.dropout)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, config.ffn_mult, config.dropout)
        self.drop2 = Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` (B, L) bool: the positions attention reads (None: all)."""
        x = x + self.drop1(self.attn(self.norm1(x), mask=mask))
        return x + self.drop2(self.ffn(self.norm2(x)))


class TransformerStage(nn.Module):
    """Learned positions → :class:`TransformerBlock` → LayerNorm; the S/T ``SelfAttention``."""

    def __init__(self, width: int, config: OpConfig) -> None:
        super().__init__()
        self.pos = LearnedPositionalEmbedding(width, config.max_len)
        self.block = TransformerBlock(width, config)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.block(self.pos(x)))


# ---------------------------------------------------------------- registration (Table 1)

@register_op("SelfAttention", kinds="M")
def _self_attention_core(width: int, config: OpConfig) -> nn.Module:
    if config.attention_positions != "none":
        return PositionedAttention(width, config)
    return AttentionCore(width, config.heads, config.dropout)


@register_op("SelfAttention", kinds="S")
def _self_attention_stage(width: int, config: OpConfig) -> nn.Module:
    return TransformerStage(width, config)


@register_op("SelfAttention", kinds="T", pooled=True)
@register_op("SelfAttention/<pool>", kinds="T", pooled=True, pattern="SelfAttention" + POOL_SUFFIX)
def _self_attention_pooled(width: int, config: OpConfig, shared: dict[str, nn.Module],
                           pool: str = "mean") -> nn.Module:
    return pooled_from_shared(shared, "SelfAttention", lambda: TransformerStage(width, config), pool)


@register_op("CrossAttention", kinds="I", arity=2)
def _cross_attention(width: int, config: OpConfig) -> nn.Module:
    return CrossAttention(width, config)
