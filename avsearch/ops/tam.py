"""VHMT's Temporal Attention Module and its Table 4 variants (paper 001, §3.2-3.3).

TAM (Eq. 11), read as written:

    y = MHA(LN(x)) + LN(x),        z = TRE(LN(y)) + LN(y)

The residuals add the *normalised* input, not x itself as in a ViT block. ``residual="input"``
gives the usual pre-norm form y = x + MHA(LN x), z = y + TRE(LN y) for comparison; the default
is the paper's. MHA is :class:`~avsearch.ops.attention.MultiHeadAttention` (Q/K/V
projections, scaled softmax with dropout on the probabilities, output projection), Eq. 12.
The block carries no positional signal; a space adds it before the first block.

TRE (Eqs. 13-16):

    x_MLP  = Drop(Linear(Drop(GELU(Linear(LN(x_in))))))     (13)
    x'_MLP = Reshape(LN(x_MLP))                             (14)
    x_TKAN = Reshape(TKAN(x'_MLP))                          (15)
    x_out  = x_TKAN ⊙ x_MLP                                 (16)

What the paper leaves open, and what we chose:

* the MLP's hidden width — ViT's ratio 4 (``mlp_ratio``); its output width must be d for the
  Hadamard product of Eq. 16 and the residual of Eq. 11;
* "Reshape" — undefined; read as the (B, T, d) ↔ (B·T, d) flattening a 2-D KANLinear needs,
  so TKAN acts per time step on the features (see :class:`~avsearch.ops.kan.TemporalKAN`,
  whose ``axis="time"`` is the other reading);
* TKAN's hidden width — d (``kan_hidden``); 2 KANLinear layers, 5 coefficients, degree 3 (§4.3);
* LN is applied twice in a row on y (Eq. 11's LN(y), then Eq. 13's own LN): kept as written;
* the Eq. 14 LN normalises x_MLP before TKAN, but Eq. 16 multiplies TKAN's output by the
  *un-normalised* x_MLP: kept as written.

Table 4 variants (the "TRE" column names the second sub-block, the "MHA" column the first):

=============  ==========================  ============================
variant        token mixer (first)         second sub-block
=============  ==========================  ============================
``MHA``        MHA                         none (z = y)
``MHA+MLP``    MHA                         Eq. 13's MLP
``MHA+KAN``    MHA                         TKAN alone
``Mamba+TRE``  Mamba mixer                 TRE
``MHA+TRE``    MHA                         TRE (the paper's TAM)
=============  ==========================  ============================

The Mamba mixer is :class:`~avsearch.ops.ssm.MambaBlock`'s body (in_proj → causal conv →
SiLU → S6, gated by SiLU(z), out_proj) without the block's own norm and residual: Eq. 11
supplies both.

Also here: :class:`TAMDecoder` (Eq. 6 plus the projections and the temporal upsampling that a
reconstruction needs but the paper does not spell out) and :class:`FrameHashLayer` (Eqs. 9-10).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.codes import binarize
from avsearch.ops.attention import LearnedPositionalEmbedding, MultiHeadAttention
from avsearch.ops.dropout import Dropout
from avsearch.ops.kan import TemporalKAN
from avsearch.ops.names import TAM_VARIANTS
from avsearch.ops.registry import OpConfig
from avsearch.ops.ssm import MambaBlock

__all__ = [
    "TAM_VARIANTS", "TREMLP", "TRE", "MambaMixer", "TAMBlock", "tam_block", "TAMDecoder",
    "FrameHashLayer", "sign_pm1",
]

_RESIDUALS = ("normed", "input")


class TREMLP(nn.Module):
    """Eq. 13: Drop(Linear(Drop(GELU(Linear(LN(x)))))), width d → mlp_ratio·d → d."""

    def __init__(self, width: int, mlp_ratio: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))


class TRE(nn.Module):
    """Temporal Reconstruction Enhancement, Eqs. 13-16: x_out = TKAN(LN(MLP(x))) ⊙ MLP(x).

    Args:
        width: d.
        mlp_ratio: hidden width of Eq. 13's MLP over d (ViT's 4; the paper gives none).
        dropout: both dropouts of Eq. 13.
        kan_hidden: width between TKAN's two KANLinear layers; None = d.
        grid_size: spline coefficients per KAN edge (VHMT §4.3: 5).
        spline_order: B-spline degree (VHMT §4.3: q = 3).
    """

    def __init__(self, width: int, mlp_ratio: int = 4, dropout: float = 0.1,
                 kan_hidden: int | None = None, grid_size: int = 5, spline_order: int = 3) -> None:
        super().__init__()
        self.mlp = TREMLP(width, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(width)
        self.tkan = TemporalKAN(width, kan_hidden, grid_size=grid_size, spline_order=spline_order)

    def forward(self, x: Tensor) -> Tensor:
        x_mlp = self.mlp(x)                        # Eq. 13
        x_tkan = self.tkan(self.norm(x_mlp))       # Eqs. 14-15 (Reshape: per time step)
        return x_tkan * x_mlp                      # Eq. 16, Hadamard


class MambaMixer(nn.Module):
    """The body of a :class:`~avsearch.ops.ssm.MambaBlock`, without its norm and residual.

    out_proj(S6(SiLU(conv(x_in))) ⊗ SiLU(z)), (x_in, z) = in_proj(u): Table 4 (IV)'s token
    mixer, in the place of MHA in Eq. 11. The block's modules (and so its initialisation) are
    MambaBlock's own; its LayerNorm is replaced by the identity and never used.
    """

    def __init__(self, width: int, config: OpConfig, expand: int = 2) -> None:
        super().__init__()
        self.block = MambaBlock(width, config, expand)
        self.block.norm = nn.Identity()

    def forward(self, u: Tensor) -> Tensor:
        b = self.block
        x_in, z = b.in_proj(u).chunk(2, dim=-1)
        return b.out_proj(b.ssm(F.silu(b.conv(x_in))) * F.silu(z))


class TAMBlock(nn.Module):
    """One TAM block (Eq. 11) in one of the Table 4 variants (module docstring).

    Args:
        width: d; (batch, T, d) in and out.
        variant: one of :data:`TAM_VARIANTS`.
        config: heads, dropout (attention probabilities and Eq. 13), and the Mamba settings
            (d_state, dt_rank, ssm_conv) of the ``Mamba+TRE`` variant.
        residual: ``"normed"`` (Eq. 11 as written: add LN(x), LN(y)) or ``"input"`` (add x, y).
        mlp_ratio, kan_hidden, grid_size, spline_order: as :class:`TRE`.
    """

    def __init__(self, width: int, variant: str = "MHA+TRE", config: OpConfig | None = None, *,
                 residual: str = "normed", mlp_ratio: int = 4, kan_hidden: int | None = None,
                 grid_size: int = 5, spline_order: int = 3) -> None:
        super().__init__()
        if variant not in TAM_VARIANTS:
            raise ValueError(f"unknown TAM variant {variant!r}; choose one of "
                             f"{', '.join(TAM_VARIANTS)}")
        if residual not in _RESIDUALS:
            raise ValueError(f"residual must be one of {_RESIDUALS}, got {residual!r}")
        config = config if config is not None else OpConfig()
        self.variant = variant
        self.residual = residual
        mixer, second = variant.split("+") if "+" in variant else (variant, None)
        self.norm1 = nn.LayerNorm(width)
        self.mixer = (MambaMixer(width, config) if mixer == "Mamba"
                      else MultiHeadAttention(width, config.heads, config.dropout))
        if second is None:
            self.norm2 = None
            self.ffn = None
        else:
            self.norm2 = nn.LayerNorm(width)
            if second == "MLP":
                self.ffn = TREMLP(width, mlp_ratio, config.dropout)
            elif second == "KAN":
                self.ffn = TemporalKAN(width, kan_hidden, grid_size=grid_size,
                                       spline_order=spline_order)
            else:
                self.ffn = TRE(width, mlp_ratio, config.dropout, kan_hidden, grid_size,
                               spline_order)

    def forward(self, x: Tensor) -> Tensor:
        nx = self.norm1(x)
        y = self.mixer(nx) + (nx if self.residual == "normed" else x)     # Eq. 11, left
        if self.ffn is None:
            return y
        ny = self.norm2(y)
        return self.ffn(ny) + (ny if self.residual == "normed" else y)   # Eq. 11, right

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, residual={self.residual!r}"


def tam_block(variant: str, width: int, heads: int | None = None, *,
              config: OpConfig | None = None, **options) -> TAMBlock:
    """Build a :class:`TAMBlock`; ``heads`` overrides ``config.heads`` when given.

    ``options`` go to :class:`TAMBlock` (residual, mlp_ratio, kan_hidden, grid_size,
    spline_order).
    """
    config = config if config is not None else OpConfig()
    if heads is not None:
        config = dataclasses.replace(config, heads=heads)
    return TAMBlock(width, variant, config, **options)


class TAMDecoder(nn.Module):
    """VHMT's teacher decoder: Eq. 6's TAM^{×D_T} with what a reconstruction needs around it.

    Eq. 6 writes D_T(H) = TAM^{×D_T}(H) and Eq. 19 compares its output with the T × D input
    frames, but the encoder has shortened the sequence (one DWT per stage, Eq. 5) and works at
    width d ≠ D. So the decoder (1) projects the input width to d (``in_features``: d for the
    latent H of §3.3, or the code length k for the per-frame soft codes of Eq. 9 — the paper
    says "hash code decoding" without naming which), (2) resamples time to the requested
    length by linear interpolation (the paper gives no upsampling; interpolation works for
    any number of DWT levels and odd lengths), (3) adds a learned positional embedding
    (attention alone is blind to order), (4) runs D_T TAM blocks, (5) projects d → D.

    Args:
        in_features: width of the decoder input.
        width: d, the TAM width.
        out_features: D, the frame-feature width to reconstruct.
        depth: D_T (Table 3: 1 or 2).
        variant: TAM variant of every block.
        config: as :class:`TAMBlock`; ``max_len`` bounds the positional embedding.
        positional: add the learned positional embedding after upsampling.
        **options: further :class:`TAMBlock` options.
    """

    def __init__(self, in_features: int, width: int, out_features: int, depth: int = 1,
                 variant: str = "MHA+TRE", config: OpConfig | None = None, *,
                 positional: bool = True, **options) -> None:
        super().__init__()
        config = config if config is not None else OpConfig()
        self.in_proj = nn.Linear(in_features, width) if in_features != width else nn.Identity()
        self.pos = LearnedPositionalEmbedding(width, config.max_len) if positional else None
        self.blocks = nn.Sequential(*[TAMBlock(width, variant, config, **options)
                                      for _ in range(depth)])
        self.out_proj = nn.Linear(width, out_features)

    def forward(self, h: Tensor, length: int | None = None) -> Tensor:
        """(batch, T', in_features) → (batch, length or T', out_features)."""
        x = self.in_proj(h)
        if length is not None and length != x.shape[1]:
            x = F.interpolate(x.transpose(1, 2), size=length, mode="linear",
                              align_corners=False).transpose(1, 2)
        if self.pos is not None:
            x = self.pos(x)
        return self.out_proj(self.blocks(x))


def sign_pm1(x: Tensor) -> Tensor:
    """±1 in x's dtype, by :func:`avsearch.codes.binarize` (sign(0) = +1)."""
    return binarize(x, x.dtype)


class FrameHashLayer(nn.Module):
    """VHMT's hash layer, Eqs. 9-10.

    forward: H̃ = tanh(LN(FC(E))) ∈ (−1, 1)^{T×k} per frame (Eq. 9), the relaxed codes that
    losses use. :meth:`codes`: H = sign(H̃), b̃ = mean over T of H, b = sign(b̃) (Eq. 10): a
    per-bit majority vote of the frames' binary codes, sign(0) = +1 on ties.
    """

    def __init__(self, width: int, bits: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, bits)
        self.norm = nn.LayerNorm(bits)

    def forward(self, e: Tensor) -> Tensor:
        return torch.tanh(self.norm(self.fc(e)))

    @staticmethod
    def codes(h_tilde: Tensor) -> Tensor:
        """(batch, T, k) soft codes → (batch, k) ±1 video codes (Eq. 10)."""
        return sign_pm1(sign_pm1(h_tilde).mean(dim=1))
