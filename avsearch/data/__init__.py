"""Data sets: per-modality feature sequences, multi-hot labels, and named splits.

Every source (the built-in ``avdigits``, an AV-NAS JSON config, an SSVH folder of videos or
images) loads into one :class:`Dataset`; everything downstream sees only this interface.
Features are array-likes of shape (N, T, D) per modality, or (N, D) for images — numpy arrays,
or h5py datasets that stream from disk — and :meth:`Split.take` gives both as (n, T, D)
sequences (an image is one step). A split may carry auxiliary semantics (:attr:`Split.aux`).
"""
from __future__ import annotations

from avsearch.data.dataset import SPLITS, Dataset, Split
from avsearch.data.load import load_dataset, register_builtin

__all__ = ["SPLITS", "Dataset", "Split", "load_dataset", "register_builtin"]
