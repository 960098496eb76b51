"""AutoSSVH's adversarial frame sampler (paper 002, §3.2 and §3.6).

Grade-Net scores every frame (Eq. 1); Gumbel noise is added and a softmax over the frames
gives p (Eqs. 2-3); the k frames with the largest p are selected (Eq. 4). The forward pass
uses the hard multi-hot selection, the backward pass the gradient of p (straight-through:
mask = hard + p − stopgrad(p)). A gradient reversal layer (Ganin & Lempitsky) between the
sampler and the hashing network turns the sampler's descent into ascent (Eq. 19): the
sampler seeks frames that make the hashing loss *larger*.

Which frames the hashing network sees: Eqs. 4-5 select the M highest-p frames and *drop*
them, keeping M₀ − M; the authors' code instead keeps the top-k of p (after negating the
scores when adversarial). Both are here: :class:`FrameSampler` returns the k selected frames
(``frames``) and the other T − k (``rest``), each in temporal order, each carrying the
straight-through gradient (``rest`` with the opposite sign, as 1 − mask). For the paper's
reading use ``k = M`` and feed ``rest`` to the encoder; for the code's, ``k = M₀ − M`` and
``frames``.

Other departures of the authors' code from the paper, not followed here: it divides the
logits by a temperature 0.5 (ours: ``tau``, default 1 as in Eq. 2), adds Gaussian noise of
scale 10 on top of the Gumbel noise and standardises the result before the softmax.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.ops.names import SAMPLERS
from avsearch.ops.registry import OpConfig, register_op

__all__ = [
    "GradientReversal", "grad_reverse", "GradeNet", "gumbel_noise", "gumbel_topk",
    "FrameSample", "FrameSampler", "DropMask", "SAMPLERS", "frames_to_drop",
]



class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """Identity forward; multiplies the incoming gradient by −λ backward."""
    return _GradReverse.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    """Gradient reversal layer: identity forward, −λ·grad backward (no parameters).

    AutoSSVH §3.6 uses λ = 1 ("multiplying it by −1").
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


class GradeNet(nn.Module):
    """Frame scores, Eq. 1: S = sigmoid(W4(LN(W2(GELU(W1 V))) + V)) ∈ (0, 1)^T.

    Args:
        dim: frame feature width D.
        hidden: width of W1's output; None = D (the paper gives none; the authors' code
            uses D).

    Returns (batch, T) scores for (batch, T, D) frames.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.w4 = nn.Linear(dim, 1)

    def forward(self, v: Tensor) -> Tensor:
        h = self.norm(self.w2(F.gelu(self.w1(v)))) + v
        return torch.sigmoid(self.w4(h)).squeeze(-1)


def gumbel_noise(shape: torch.Size | tuple[int, ...], *, eps: float = 1e-10,
                 dtype: torch.dtype | None = None, device: torch.device | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Eq. 3: G = −log(−log(U) + ε) + ε, U ~ U(0, 1) (U = 0 excluded)."""
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    u = u.clamp_min(torch.finfo(dtype).tiny)
    return -torch.log(-torch.log(u) + eps) + eps


def gumbel_topk(scores: Tensor, k: int, *, noise_scale: float = 1.0, tau: float = 1.0,
                eps: float = 1e-10, noise: bool = True,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Gumbel-softmax top-k over the last axis (Eqs. 2-4).

    p = softmax((S + δ·G) / τ) (Eq. 2 has τ = 1), hard = multi-hot of the k largest p.

    Returns:
        (indices, hard, soft): indices (..., k) of the selected entries in increasing order;
        hard (..., T) multi-hot, no gradient; soft (..., T) the probabilities p, which carry
        the gradient.
    """
    length = scores.shape[-1]
    if not 1 <= k <= length:
        raise ValueError(f"cannot select k={k} of {length} frames")
    logits = scores
    if noise and noise_scale != 0:
        logits = logits + noise_scale * gumbel_noise(scores.shape, eps=eps, dtype=scores.dtype,
                                                     device=scores.device, generator=generator)
    soft = torch.softmax(logits / tau, dim=-1)
    indices = soft.detach().topk(k, dim=-1).indices.sort(dim=-1).values
    hard = torch.zeros_like(soft).scatter_(-1, indices, 1.0)
    return indices, hard, soft


class FrameSample(NamedTuple):
    """What :class:`FrameSampler` returns (T frames in, k selected).

    frames: (B, k, D) the selected frames in temporal order, times the straight-through mask
        (value 1, gradient of p); indices: (B, k) their positions, increasing.
    rest: (B, T − k, D) the other frames in temporal order, times 1 − mask; rest_indices:
        (B, T − k).
    mask: (B, T) straight-through mask, hard in value; hard: (B, T) the multi-hot selection,
        no gradient; soft: (B, T) p of Eq. 2 (uniform 1/T in random mode).
    """

    frames: Tensor
    indices: Tensor
    rest: Tensor
    rest_indices: Tensor
    mask: Tensor
    hard: Tensor
    soft: Tensor


def _gather_frames(v: Tensor, idx: Tensor) -> Tensor:
    return v.gather(1, idx.unsqueeze(-1).expand(-1, -1, v.shape[-1]))


class FrameSampler(nn.Module):
    """AutoSSVH's differentiable frame sampler (Grade-Net, Gumbel top-k, straight-through, GRL).

    Args:
        dim: frame feature width D.
        k: number of frames to select (see the module docstring for which set the encoder
            sees).
        mode: ``"gumbel"`` (the paper's sampler) or ``"random"`` (k frames drawn uniformly
            without replacement; no parameters, no gradient — Table 3's "w/ Random").
        noise_scale: δ of Eq. 2.
        tau: softmax temperature (Eq. 2: 1).
        eps: ε of Eq. 3.
        adversarial: put the gradient reversal layer between sampler and hashing network
            (Table 3 (I) "w/o ADV" is ``adversarial=False``).
        grl_lambda: λ of the reversal (paper: 1).
        hidden: Grade-Net's hidden width (None = D).

    In training mode Gumbel noise is added; in eval mode the selection is the deterministic
    top-k of the scores.
    """

    def __init__(self, dim: int, k: int, mode: str = "gumbel", *, noise_scale: float = 1.0,
                 tau: float = 1.0, eps: float = 1e-10, adversarial: bool = True,
                 grl_lambda: float = 1.0, hidden: int | None = None) -> None:
        super().__init__()
        if mode not in ("gumbel", "random"):
            raise ValueError(f"sampler mode must be 'gumbel' or 'random', got {mode!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.dim, self.k, self.mode = dim, k, mode
        self.noise_scale, self.tau, self.eps = noise_scale, tau, eps
        self.adversarial = adversarial
        self.grl = GradientReversal(grl_lambda)
        self.grade = GradeNet(dim, hidden) if mode == "gumbel" else None

    def forward(self, v: Tensor, generator: torch.Generator | None = None,
                k: int | None = None) -> FrameSample:
        """Select ``k`` frames of ``v`` (default: the ``k`` given at construction)."""
        batch, length, _ = v.shape
        k = self.k if k is None else k
        if not 1 <= k <= length:
            raise ValueError(f"cannot select k={k} of {length} frames")
        if self.mode == "random":
            draw = torch.rand(batch, length, device=v.device, generator=generator)
            indices = draw.topk(k, dim=-1).indices.sort(dim=-1).values
            hard = torch.zeros(batch, length, dtype=v.dtype, device=v.device)
            hard.scatter_(-1, indices, 1.0)
            soft = torch.full_like(hard, 1.0 / length)
            mask = hard
        else:
            scores = self.grade(v)                                                # Eq. 1
            indices, hard, soft = gumbel_topk(                                    # Eqs. 2-4
                scores, k, noise_scale=self.noise_scale, tau=self.tau, eps=self.eps,
                noise=self.training, generator=generator)
            p = self.grl(soft) if self.adversarial else soft                      # §3.6 GRL
            mask = hard + p - p.detach()                                          # STE
        # the unselected positions in increasing order: a stable sort puts hard's zeros first
        rest_indices = hard.argsort(dim=-1, stable=True)[:, :length - k]
        frames = _gather_frames(v, indices) * mask.gather(1, indices).unsqueeze(-1)
        rest = _gather_frames(v, rest_indices) * (1 - mask).gather(1, rest_indices).unsqueeze(-1)
        return FrameSample(frames, indices, rest, rest_indices, mask, hard, soft)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, k={self.k}, mode={self.mode!r}, noise_scale={self.noise_scale}, "
                f"tau={self.tau}, adversarial={self.adversarial}")


def frames_to_drop(length: int, ratio: float) -> int:
    """M of Eq. 4: ``round(ratio · length)``, kept within [1, length − 1] so that a view
    always drops a frame and keeps one."""
    if length < 2:
        raise ValueError(f"a frame sampler needs videos of at least 2 frames, got {length}")
    return min(length - 1, max(1, round(ratio * length)))


class DropMask(nn.Module):
    """A sampler cell's op: which frames one view drops (Eqs. 4-5), as a mask.

    In training, (B, T, D) with the value 1 on the M = ``frames_to_drop(T, ratio)`` frames
    the sampler selects and 0 elsewhere, constant along the features (an expanded view of a
    (B, T, 1) mask, so it costs no memory); its gradient is the straight-through gradient of
    Eq. 2's p, reversed by the GRL in adversarial mode. The objective builds the view as
    x · (1 − mask) and reconstructs the dropped frames (see
    :class:`avsearch.objectives.AutoSSVH`); a mixed cell's sum of masks weights frames
    softly. In eval mode nothing is dropped (zeros): inference sees every frame.

    ``adversarial_weight``: in a mixed or gated cell the candidate's weight (softmax(α))
    reaches the loss through a gradient reversal (see :class:`avsearch.supernet.Cell`). A
    weight that descended the loss would learn to pick the sampler whose views are easiest
    to encode — random over adversarial by construction; reversed, α plays the sampler's side
    of the min-max (Eq. 19) and prefers the sampler that makes the hashing task hardest,
    AutoSSVH's premise. Neither says which sampler gives better codes: training each does
    (``experiments/autossvh_sampler``).
    """

    adversarial_weight = True

    def __init__(self, width: int, mode: str, ratio: float) -> None:
        super().__init__()
        if not 0 < ratio < 1:
            raise ValueError(f"drop ratio must be in (0, 1), got {ratio}")
        self.ratio = ratio
        self.sampler = FrameSampler(width, 1, "random" if mode == "random" else "gumbel",
                                    adversarial=mode == "adversarial")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return torch.zeros_like(x)
        sample = self.sampler(x, k=frames_to_drop(x.shape[1], self.ratio))
        return sample.mask.to(x.dtype).unsqueeze(-1).expand_as(x)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"


def _sampler_op(mode: str):
    def factory(width: int, config: OpConfig) -> nn.Module:
        return DropMask(width, mode, config.drop_ratio)

    return factory


for _mode in SAMPLERS:
    register_op(_mode, kinds="FS")(_sampler_op(_mode))
