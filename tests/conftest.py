"""Shared fixtures: tiny spaces that build in milliseconds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import avsearch
from avsearch.data import Dataset, Split


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_av():
    """av_nas at a width small enough for tests (two modalities of different widths)."""
    return avsearch.get_space("av_nas", d=16, e=2, bits=8, heads=2, d_state=4,
                              modalities={"visual": 12, "audio": 16})


def class_mean_dataset(name: str, modalities: dict[str, int], sizes: dict[str, int],
                       classes: int = 6, length: int = 5) -> Dataset:
    """Videos whose features carry their class (a class mean plus noise), one split per entry
    of ``sizes``: a data set small enough for whole runs in a test."""
    rng = np.random.default_rng(0)
    means = {m: rng.normal(size=(classes, w)).astype(np.float32) for m, w in modalities.items()}
    splits = {}
    for split, n in sizes.items():
        y = np.arange(n) % classes
        feats = {m: (means[m][y][:, None, :] + rng.normal(size=(n, length, w))).astype(np.float32)
                 for m, w in modalities.items()}
        splits[split] = Split([f"{split}{i}" for i in range(n)], np.eye(classes, dtype=bool)[y], feats)
    return Dataset(name, name, dict(modalities), length, classes, splits)
