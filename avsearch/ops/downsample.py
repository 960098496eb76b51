"""Temporal downsampling by 2 for VHMT's teacher encoder (paper 001, Eq. 5, Table 3).

Modes: ``haar``, ``db4``, ``sym8`` — one level of a discrete wavelet transform along time,
keeping only the low band F_low (Eq. 4: "only F_low is used") — and ``maxpool``, ``avgpool``
(Table 3, Exps. VIII-IX).

The wavelet filters are PyWavelets' (``pywt.Wavelet(name).dec_lo``), applied with plain torch
ops (an index gather and L strided multiply-adds), so the transform is differentiable,
runs on any device and survives ``torch.export``. The result equals
``pywt.dwt(x, name, mode=boundary)[0]`` along time.

Boundary and output length
--------------------------
* ``boundary="periodization"`` (default): T → ceil(T/2) for every wavelet, so Eq. 5's
  DWT halves the sequence like the pooling modes do (25 → 13 → 7 frames). An odd-length
  sequence is first extended by repeating its last frame (what PyWavelets does), then
  wrapped periodically.
* ``boundary="symmetric"`` (PyWavelets' default): half-sample symmetric extension, T →
  floor((T + L − 1)/2) for a filter of length L: ceil(T/2) for Haar (L = 2) but *more* than
  half for db4 (L = 8: 25 → 16) and sym8 (L = 16: 25 → 20; even T = 1 → 8). Offered for
  comparison with PyWavelets' default, not for stacking.

The pooling modes are kernel 2, stride 2 with ``ceil_mode=True``: T → ceil(T/2); for odd T the
last output is the last frame alone (max and mean of one frame).

Scale: the wavelet low band keeps PyWavelets' orthonormal filters, so for Haar and even T
it is exactly √2 × ``avgpool``; each level multiplies a constant signal by √2.
"""
from __future__ import annotations


import torch
from torch import Tensor, nn

from avsearch.ops.names import DOWNSAMPLE_MODES, WAVELETS

__all__ = ["WAVELETS", "DOWNSAMPLE_MODES", "BOUNDARIES", "downsampled_length", "TemporalDownsample"]

BOUNDARIES = ("periodization", "symmetric")


def _lowpass(name: str) -> list[float]:
    try:
        import pywt
    except ImportError as exc:  # pragma: no cover - pywavelets is a dependency
        raise ImportError("wavelet downsampling needs PyWavelets (pip install PyWavelets)") from exc
    return list(pywt.Wavelet(name).dec_lo)


def downsampled_length(length: int, mode: str = "haar", boundary: str = "periodization") -> int:
    """Output length of :class:`TemporalDownsample` for an input of ``length`` steps."""
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")
    if mode in WAVELETS and boundary == "symmetric":
        return (length + len(_lowpass(mode)) - 1) // 2
    return (length + 1) // 2


class TemporalDownsample(nn.Module):
    """Halve the time axis of (batch, T, d): a wavelet low band or a pooling (module docstring).

    Args:
        mode: ``haar``, ``db4``, ``sym8``, ``maxpool`` or ``avgpool``.
        boundary: signal extension of the wavelet modes, ``periodization`` (T → ceil(T/2))
            or ``symmetric`` (T → floor((T + L − 1)/2)); ignored by the pooling modes.
    """

    def __init__(self, mode: str = "haar", boundary: str = "periodization") -> None:
        super().__init__()
        if mode not in DOWNSAMPLE_MODES:
            raise ValueError(f"unknown downsampling mode {mode!r}; choose one of "
                             f"{', '.join(DOWNSAMPLE_MODES)}")
        if boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {boundary!r}; choose one of {', '.join(BOUNDARIES)}")
        self.mode = mode
        self.boundary = boundary
        if mode in WAVELETS:
            # flipped, so that out[i] = Σ_m w[m] x_ext[2i + m] is the convolution with dec_lo
            taps = torch.tensor(_lowpass(mode)[::-1], dtype=torch.float64)
            self.register_buffer("taps", taps, persistent=False)
            self.filter_length = taps.numel()
        else:
            self.taps = None
            self.filter_length = 2

    def output_length(self, length: int) -> int:
        return downsampled_length(length, self.mode, self.boundary)

    def _extension_index(self, length: int, out_len: int, device: torch.device) -> Tensor:
        # a_i = Σ_j h[j] x[e(2i + c − j)] (PyWavelets' convention; c = L/2 for periodization,
        # 1 otherwise). With w = flipped h: a_i = Σ_m w[m] x_ext[2i + m] and
        # x_ext[k] = x[e(k + c − L + 1)], k = 0 .. 2(out_len − 1) + L − 1.
        taps = self.filter_length
        shift = (taps // 2 if self.boundary == "periodization" else 1) - taps + 1
        k = torch.arange(2 * (out_len - 1) + taps, device=device) + shift
        if self.boundary == "periodization":
            # period = T rounded up to even; the extra frame of an odd T repeats the last one
            return k.remainder(length + length % 2).clamp(max=length - 1)
        m = k.remainder(2 * length)          # half-sample symmetric: period 2T, mirror at edges
        return torch.where(m < length, m, 2 * length - 1 - m)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        out_len = self.output_length(length)
        if self.taps is None:
            # pairs (2i, 2i+1); an odd T's last pair repeats the last frame, which gives the
            # max and mean of that frame alone (= ceil_mode pooling), with no shape branch
            idx = torch.arange(2 * out_len, device=x.device).clamp(max=length - 1)
            pairs = x.index_select(1, idx).unflatten(1, (out_len, 2))
            return pairs.amax(dim=2) if self.mode == "maxpool" else pairs.mean(dim=2)
        ext = x.index_select(1, self._extension_index(length, out_len, x.device))
        taps = self.taps.to(dtype=x.dtype)
        stop = 2 * (out_len - 1) + 1
        out = ext[:, 0:stop:2] * taps[0]
        for m in range(1, self.filter_length):
            out = out + ext[:, m:m + stop:2] * taps[m]
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", boundary={self.boundary!r}" if self.taps is not None else "")
