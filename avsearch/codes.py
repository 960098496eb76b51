"""Binary codes: the one sign convention of avsearch.

A code bit is the sign of a relaxed code (tanh output) with sign(0) = +1 (AV-NAS Eq. 35 and
its footnote 1). The hash layers, encoding, the baselines, VHMT's frame vote and the metrics
(which take ±1 codes) all follow it through :func:`binarize`.
"""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["binarize"]

Array = TypeVar("Array", torch.Tensor, np.ndarray)


def binarize(x: Array, dtype: Any = None) -> Array:
    """±1 with sign(0) = +1, as int8 (or ``dtype``); a tensor for a tensor, an array for an
    array."""
    if isinstance(x, torch.Tensor):
        return torch.where(x >= 0, 1, -1).to(torch.int8 if dtype is None else dtype)
    return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int8 if dtype is None else dtype)
