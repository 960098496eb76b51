"""Shared fixtures: tiny spaces that build in milliseconds."""
from __future__ import annotations

import contextlib
from typing import Iterator

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


def write_ssvh_folder(folder, classes=4, frames=6, width=12):
    """An ActivityNet-layout SSVH folder (reference-facts §2): unlabelled training videos,
    labelled queries and database; features carry their class so retrieval can work."""
    import h5py
    import scipy.io

    rng = np.random.default_rng(0)
    means = rng.normal(size=(classes, width))
    folder.mkdir()
    for feats, label_file, mat_key, n in (("train_feats.h5", None, None, 60),
                                      ("query_feats.h5", "q_label.mat", "q_label", 30),
                                      ("test_feats.h5", "re_label.mat", "re_label", 40)):
        y = np.arange(n) % classes
        with h5py.File(folder / feats, "w") as f:
            f.create_dataset("feats", data=(means[y][:, None] + rng.normal(size=(n, frames, width)))
                             .astype(np.float32))
        if label_file:
            scipy.io.savemat(folder / label_file, {mat_key: np.eye(classes, dtype=np.uint8)[y]})


class Killed(Exception):
    """What :func:`checkpoint_saves` raises to kill a run just before a checkpoint write."""


@contextlib.contextmanager
def checkpoint_saves(kill_before: int | None = None) -> Iterator[list[int]]:
    """Count a run's checkpoint writes (the yielded list grows by one per write); with
    ``kill_before=n``, raise :class:`Killed` instead of the n-th write."""
    from avsearch.train import Checkpoint

    seen: list[int] = []
    original = Checkpoint.save

    def save(self):
        seen.append(1)
        if kill_before is not None and len(seen) == kill_before:
            raise Killed
        original(self)

    Checkpoint.save = save
    try:
        yield seen
    finally:
        Checkpoint.save = original
