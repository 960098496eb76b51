"""Kolmogorov-Arnold layers for VHMT's Temporal Reconstruction Enhancement block (paper 001).

A :class:`KANLinear` layer puts a learnable univariate function on every edge i → j (Eq. 17):

    Φ(x)_j = Σ_i  ω_ji · SiLU(x_i)  +  ω'_ji · Σ_{p=1..N} c_jip · B_{p,q}(x_i)

with B_{p,q} the degree-q B-spline bases on a uniform knot vector, evaluated by the
Cox–de Boor recursion. ω (``base_weight``), ω' (``spline_scaler``) and c (``spline_weight``)
are trained; there is no bias (Eq. 17 has none).

What ``grid_size`` means here
-----------------------------
VHMT §4.3: "TKAN employs 2 KANLinear layers, **5 spline coefficients** (c), and a recursion
degree of q = 3". In Eq. 17 the sum runs over p = 1..N, so N = 5 coefficients per edge.
Here ``grid_size`` **is N, the number of spline coefficients (= B-spline bases) per edge**.
A degree-q spline with N bases on a uniform grid has G = N − q intervals inside
``grid_range``; the knot vector is extended by q intervals on each side, N + q + 1 knots in
all, so that the N bases sum to one everywhere inside ``grid_range``.

Beware: in pykan / efficient-kan ``grid_size`` is G, the number of intervals, and an edge has
G + q coefficients (their default G = 5, q = 3 gives 8). Their ``grid_size=G`` is our
``grid_size=G + spline_order``. With the paper's 5 coefficients and q = 3 the grid has only
2 intervals inside ``grid_range`` (knots every 1.0 on the default (−1, 1)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["uniform_knots", "bspline_bases", "KANLinear", "TemporalKAN"]


def uniform_knots(grid_size: int, spline_order: int,
                  grid_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """The extended uniform knot vector for ``grid_size`` bases of degree ``spline_order``.

    Returns ``grid_size + spline_order + 1`` knots t_0 < ... spaced h = (b − a) / G apart,
    G = grid_size − spline_order, with t_q = a and t_{q+G} = b (float64).
    """
    if spline_order < 0:
        raise ValueError(f"spline_order must be >= 0, got {spline_order}")
    intervals = grid_size - spline_order
    if intervals < 1:
        raise ValueError(f"grid_size (number of spline coefficients, {grid_size}) must exceed "
                         f"spline_order ({spline_order}) so the grid has at least one interval")
    lo, hi = float(grid_range[0]), float(grid_range[1])
    if not hi > lo:
        raise ValueError(f"grid_range must be increasing, got {grid_range}")
    h = (hi - lo) / intervals
    steps = torch.arange(-spline_order, intervals + spline_order + 1, dtype=torch.float64)
    return lo + h * steps


def bspline_bases(x: Tensor, knots: Tensor, spline_order: int) -> Tensor:
    """All degree-``spline_order`` B-spline bases on ``knots`` at ``x``, by Cox–de Boor.

    Args:
        x: any shape (...).
        knots: increasing knot vector (n,).
        spline_order: degree q.

    Returns:
        (..., n − q − 1): B_{j,q}(x) for j = 0..n−q−2. Degree 0 uses half-open intervals
        [t_j, t_{j+1}), so every basis is 0 at and beyond the last knot and before the first.
    """
    t = knots.to(dtype=x.dtype, device=x.device)
    x = x.unsqueeze(-1)
    # degree 0: indicator of [t_j, t_{j+1})
    bases = ((x >= t[:-1]) & (x < t[1:])).to(x.dtype)
    for p in range(1, spline_order + 1):
        # B_{j,p} = (x − t_j)/(t_{j+p} − t_j) B_{j,p−1} + (t_{j+p+1} − x)/(t_{j+p+1} − t_{j+1}) B_{j+1,p−1}
        left = (x - t[:-(p + 1)]) / (t[p:-1] - t[:-(p + 1)]) * bases[..., :-1]
        right = (t[p + 1:] - x) / (t[p + 1:] - t[1:-p]) * bases[..., 1:]
        bases = left + right
    return bases


class KANLinear(nn.Module):
    """One KAN layer, Eq. 17: a SiLU base branch plus a B-spline branch on every edge.

    Args:
        in_features: input width (last dimension; leading dimensions are kept).
        out_features: output width.
        grid_size: N, the number of spline coefficients (B-spline bases) per edge; VHMT: 5.
            See the module docstring: this is *not* pykan's interval count.
        spline_order: degree q of the B-splines; VHMT: 3.
        grid_range: the interval [a, b] on which the bases sum to one; the spline branch
            vanishes for inputs below a − q·h or at/after b + q·h (h the knot spacing), where
            the base branch alone carries the signal.
        scale_noise: the spline coefficients start as N(0, scale_noise²); ω and ω' start like
            ``nn.Linear`` weights (Kaiming uniform), so the layer starts close to a SiLU-MLP.
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5,
                 spline_order: int = 3, grid_range: tuple[float, float] = (-1.0, 1.0),
                 scale_noise: float = 0.1) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.register_buffer("knots", uniform_knots(grid_size, spline_order, grid_range),
                             persistent=False)
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))     # ω
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))   # ω'
        self.spline_weight = nn.Parameter(                                          # c
            torch.empty(out_features, in_features, grid_size))
        self.scale_noise = scale_noise
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5))
        nn.init.normal_(self.spline_weight, std=self.scale_noise)

    def bases(self, x: Tensor) -> Tensor:
        """B_{p,q}(x_i) for every input channel: (..., in_features, grid_size)."""
        return bspline_bases(x, self.knots, self.spline_order)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"KANLinear expects {self.in_features} input features, "
                             f"got shape {tuple(x.shape)}")
        base = F.linear(F.silu(x), self.base_weight)            # Σ_i ω_ji x_i / (1 + e^−x_i)
        coef = self.spline_weight * self.spline_scaler.unsqueeze(-1)   # ω'_ji c_jip
        spline = F.linear(self.bases(x).flatten(-2), coef.flatten(-2))
        return base + spline

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"grid_size={self.grid_size}, spline_order={self.spline_order}, "
                f"grid_range={self.grid_range}")


class TemporalKAN(nn.Module):
    """TKAN of VHMT's TRE block: TKAN(x̃) = (Φ_2 ∘ Φ_1)(x̃), two :class:`KANLinear` layers.

    Eq. 15 wraps TKAN in "Reshape", which the paper does not define. We read it as the
    flattening a 2-D KANLinear needs: (B, T, d) → (B·T, d) → back, i.e. the KAN acts on the
    feature axis of every time step (``axis="feature"``, the default). It cannot mix time
    steps, and the time length may vary (it halves after each DWT). ``axis="time"`` is the
    other reading — the KAN acts along time, per channel: (B, T, d) → (B·d, T) — and then
    needs the sequence length fixed at construction.

    Args:
        width: d (``axis="feature"``) — input and output width.
        hidden: width between Φ_1 and Φ_2; None = the input width (the paper gives none).
        axis: "feature" or "time" (see above).
        length: the sequence length T, required for ``axis="time"``.
        grid_size, spline_order, grid_range: as :class:`KANLinear`.
    """

    def __init__(self, width: int, hidden: int | None = None, *, axis: str = "feature",
                 length: int | None = None, grid_size: int = 5, spline_order: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        if axis not in ("feature", "time"):
            raise ValueError(f"axis must be 'feature' or 'time', got {axis!r}")
        if axis == "time" and length is None:
            raise ValueError("TemporalKAN(axis='time') needs the sequence length")
        self.axis = axis
        features = width if axis == "feature" else int(length)
        hidden = features if hidden is None else hidden
        kw = dict(grid_size=grid_size, spline_order=spline_order, grid_range=grid_range)
        self.layers = nn.Sequential(KANLinear(features, hidden, **kw),
                                    KANLinear(hidden, features, **kw))

    def forward(self, x: Tensor) -> Tensor:
        if self.axis == "feature":
            return self.layers(x)          # KANLinear keeps leading dims: the Reshape of Eq. 15
        return self.layers(x.transpose(-1, -2)).transpose(-1, -2)
