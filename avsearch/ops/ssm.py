"""State-space candidates of AV-NAS Table 1: SelfSSM (M, S, T) and CrossSSM (I).

``SelfSSM`` means three different modules depending on the cell (reference-facts §1):

* M: :class:`S6`, the bare selective SSM without in/out projection, gate or convolution,
  so that Eq. 9 (Conv_k, SiLU, Hadamard and Up/Down around it) builds a Mamba block;
* S: :class:`MambaBlock`, a full Mamba block with residual, sequence to sequence;
* T: the same block followed by a pool over time (:class:`~avsearch.ops.basic.Pooled`): the
  mean as ``SelfSSM`` (the paper), the max as ``SelfSSM/max``, one block shared by both.

``CrossSSM`` is :class:`CrossMamba` (Eqs. 15-32, Figs. 3-4). All scans go through
:func:`avsearch.ops.scan.selective_scan`, whose signature is mamba-ssm's ``selective_scan_fn``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.ops.basic import CausalDepthwiseConv, pooled_from_shared
from avsearch.ops.names import POOL_SUFFIX
from avsearch.ops.registry import OpConfig, register_op
from avsearch.ops.scan import selective_scan

__all__ = [
    "s4d_real_log_a", "init_dt_projection", "SelectionProjection", "S6", "MambaBlock",
    "CrossMamba",
]


def _dt_rank(width: int, dt_rank: int | None) -> int:
    return dt_rank if dt_rank is not None else math.ceil(width / 16)


def s4d_real_log_a(width: int, d_state: int) -> Tensor:
    """S4D-real initialisation of log(−A): log(1), ..., log(N) for every channel, (width, N)."""
    n = torch.arange(1, d_state + 1, dtype=torch.get_default_dtype())
    return torch.log(n).repeat(width, 1)


def init_dt_projection(dt_proj: nn.Linear, dt_min: float = 1e-3, dt_max: float = 1e-1,
                       dt_floor: float = 1e-4) -> None:
    """Mamba's Δ initialisation: weights U(±rank^−½), bias = softplus⁻¹(dt), dt log-uniform.

    With this bias, softplus(bias) (the initial step size per channel) lies in [dt_min, dt_max].
    """
    bound = dt_proj.in_features ** -0.5
    nn.init.uniform_(dt_proj.weight, -bound, bound)
    log_dt = torch.rand(dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min))
    dt = torch.exp(log_dt + math.log(dt_min)).clamp(min=dt_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus


class SelectionProjection(nn.Module):
    """The selection mechanism: one linear map x → (Δ_low, B, C), then Δ = dt_proj(Δ_low).

    Returns Δ *without* its bias (``dt_proj.bias`` is handed to the scan as ``delta_bias``,
    which adds it and applies softplus), and B, C, all in the scan's (batch, ·, L) layout.

    Args:
        width: channels of x and of Δ.
        d_state: state size N (rows of B and C).
        dt_rank: rank of the Δ projection.
    """

    def __init__(self, width: int, d_state: int, dt_rank: int) -> None:
        super().__init__()
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.x_proj = nn.Linear(width, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, width)
        init_dt_projection(self.dt_proj)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt_low, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt_low, self.dt_proj.weight)  # bias goes to the scan
        return delta.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2)


class S6(nn.Module):
    """The bare selective SSM (Mamba's S6): y_t = C_t h_t + D·x_t, h_t = Ā_t h_{t−1} + B̄_t x_t.

    Ā_t = exp(Δ_t A), B̄_t = Δ_t B_t, Δ_t = softplus(dt_proj(Δ_low_t) + bias), where
    (Δ_low, B, C) is a linear function of x_t. A = −exp(A_log) (S4D-real init), D starts at
    ones. Causal; no in/out projection, gate or convolution.

    Args:
        width: channels w.
        d_state: state size N per channel.
        dt_rank: rank of the Δ projection; None = ceil(w / 16).
    """

    def __init__(self, width: int, d_state: int = 16, dt_rank: int | None = None) -> None:
        super().__init__()
        self.select = SelectionProjection(width, d_state, _dt_rank(width, dt_rank))
        self.A_log = nn.Parameter(s4d_real_log_a(width, d_state))
        self.D = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        delta, b, c = self.select(x)
        y = selective_scan(x.transpose(1, 2), delta, -torch.exp(self.A_log), b, c, D=self.D,
                           delta_bias=self.select.dt_proj.bias, delta_softplus=True)
        return y.transpose(1, 2)


class MambaBlock(nn.Module):
    """A Mamba block with residual: x + out_proj(S6(SiLU(conv(x_in))) ⊗ SiLU(z)).

    (x_in, z) = in_proj(LN x), each of width ``expand``·w; conv is causal and depthwise
    (kernel ``config.ssm_conv``); S6 runs at the expanded width. Stackable.
    """

    def __init__(self, width: int, config: OpConfig, expand: int = 2) -> None:
        super().__init__()
        inner = expand * width
        self.norm = nn.LayerNorm(width)
        self.in_proj = nn.Linear(width, 2 * inner, bias=False)
        self.conv = CausalDepthwiseConv(inner, config.ssm_conv)
        self.ssm = S6(inner, config.d_state, config.dt_rank)
        self.out_proj = nn.Linear(inner, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x_in, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        y = self.ssm(F.silu(self.conv(x_in))) * F.silu(z)
        return x + self.out_proj(y)


class CrossMamba(nn.Module):
    """``CrossSSM`` (I cells): CrossMamba(X, Y) of Eqs. 15-32, bidirectional.

    The scan input is X's stream c_x; its Δ, B, C come from Y's stream c_y, so Y decides
    what of X is kept. Two scans with their own A (A_1 forward, A_2 backward) share Δ, B, C.
    The backward scan runs on the time-reversed sequence: c_x *and* Δ, B, C are reversed
    (the authors' code reverses only c_x, which is not a reverse-time scan).
    """

    def __init__(self, width: int, config: OpConfig) -> None:
        super().__init__()
        d_state = config.d_state
        self.norm_x = nn.LayerNorm(width)
        self.norm_y = nn.LayerNorm(width)
        self.linear_x = nn.Linear(width, width, bias=False)
        self.linear_y = nn.Linear(width, width, bias=False)
        self.conv_x = CausalDepthwiseConv(width, config.ssm_conv)
        self.conv_y = CausalDepthwiseConv(width, config.ssm_conv)
        self.select = SelectionProjection(width, d_state, _dt_rank(width, config.dt_rank))
        self.A1_log = nn.Parameter(s4d_real_log_a(width, d_state))
        self.A2_log = nn.Parameter(s4d_real_log_a(width, d_state))
        self.out_proj = nn.Linear(width, width, bias=False)  # Linear^F of Eq. 32

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        hx = self.linear_x(self.norm_x(x))                  # Linear_x(LN X) = c_x^Res, Eq. 17
        c_x = self.conv_x(hx).transpose(1, 2)               # Eq. 15, scan layout (B, w, L)
        c_x_silu = F.silu(hx)                               # Eq. 16
        c_y = self.conv_y(self.linear_y(self.norm_y(y)))    # Eq. 18
        # Eqs. 19-21, with Mamba's parametrisation of Δ: low rank, then softplus(· + bias)
        delta, b, c = self.select(c_y)
        kw = dict(delta_bias=self.select.dt_proj.bias, delta_softplus=True)
        z = selective_scan(c_x, delta, -torch.exp(self.A1_log), b, c, **kw)    # Eqs. 22-26
        z_back = selective_scan(c_x.flip(-1), delta.flip(-1), -torch.exp(self.A2_log),
                                b.flip(-1), c.flip(-1), **kw)                   # Eqs. 23, 27-28
        big_z = (z + z_back.flip(-1)).transpose(1, 2)                           # Eqs. 29-31
        # Eq. 32 applies SiLU to c_x^SiLU, which Eq. 16 already passed through SiLU: as written.
        return self.out_proj((big_z + hx) * F.silu(c_x_silu))


# ---------------------------------------------------------------- registration (Table 1)

@register_op("SelfSSM", kinds="M")
def _self_ssm_core(width: int, config: OpConfig) -> nn.Module:
    return S6(width, config.d_state, config.dt_rank)


@register_op("SelfSSM", kinds="S")
def _self_ssm_block(width: int, config: OpConfig) -> nn.Module:
    return MambaBlock(width, config)


@register_op("SelfSSM", kinds="T", pooled=True)
@register_op("SelfSSM/<pool>", kinds="T", pooled=True, pattern="SelfSSM" + POOL_SUFFIX)
def _self_ssm_pooled(width: int, config: OpConfig, shared: dict[str, nn.Module],
                     pool: str = "mean") -> nn.Module:
    return pooled_from_shared(shared, "SelfSSM", lambda: MambaBlock(width, config), pool)


@register_op("CrossSSM", kinds="I", arity=2)
def _cross_ssm(width: int, config: OpConfig) -> nn.Module:
    return CrossMamba(width, config)
