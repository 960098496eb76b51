"""Shared fixtures: tiny spaces that build in milliseconds."""
from __future__ import annotations

import pytest
import torch

import avsearch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_av():
    """av_nas at a width small enough for tests (two modalities of different widths)."""
    return avsearch.get_space("av_nas", d=16, e=2, bits=8, heads=2, d_state=4,
                              modalities={"visual": 12, "audio": 16})
