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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of whole runs: on 2 shared cores torch's OpenMP workers
    spin against other processes and make smoke runs several times slower; nothing is timed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ---------------------------------------------------------------- independent retrieval reference
REFERENCE_KS = (5, 20, 40, 60, 80, 100)     # the Ks a run reports, GmAP is over these


def reference_map(q_codes: np.ndarray, q_labels: np.ndarray, db_codes: np.ndarray,
                  db_labels: np.ndarray, k: int) -> float:
    """mAP@K divided by K, from the definition: Hamming ranking with ties broken by database
    index, relevant = sharing a label. Written apart from ``avsearch.metrics``."""
    bits = q_codes.shape[1]
    dist = (bits - q_codes.astype(np.int64) @ db_codes.T.astype(np.int64)) // 2
    relevant = (q_labels.astype(np.int64) @ db_labels.T.astype(np.int64)) > 0
    index = np.arange(len(db_codes))
    total = 0.0
    for i in range(len(q_codes)):
        top = np.lexsort((index, dist[i]))[:k]
        hits = relevant[i, top]
        precision = np.cumsum(hits) / np.arange(1, len(top) + 1)
        total += float((precision * hits).sum()) / k
    return total / len(q_codes)


def reference_test_metrics(arch_path, data: Dataset) -> dict[str, float]:
    """Test mAP@K and GmAP of the network an ``.arch`` file holds, recomputed from its weights
    file: codes from the frozen network itself (512 videos a batch, as runs encode), queries
    = test, database = retrieval. What a run records must equal this."""
    net = avsearch.Architecture.load(arch_path).network()

    def codes(split):
        chunks = []
        with torch.no_grad():
            for start in range(0, len(split), 512):
                xs = split.take(np.arange(start, min(start + 512, len(split))))
                chunks.append(net(*(torch.from_numpy(x) for x in xs)).numpy())
        return np.where(np.concatenate(chunks) >= 0, 1, -1)

    test, db = data.split("test"), data.split("retrieval")
    q, d = codes(test), codes(db)
    out = {f"map@{k}": reference_map(q, test.labels, d, db.labels, k) for k in REFERENCE_KS}
    out["gmap"] = float(np.sqrt(sum(v * v for v in out.values())))
    return out


# ---------------------------------------------------------------- a tiny trained architecture
@pytest.fixture(scope="session")
def trained_arch(tmp_path_factory):
    """A real trained ``best.arch`` (the mamba preset, smoke budget, 16 bits: ~15 s on one
    core) shared by the index and service tests; 16-bit codes of a barely trained network
    tie often, which is what the tie-breaking tests need."""
    from avsearch.cli import main

    out = tmp_path_factory.mktemp("trained") / "mamba"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--arch", "mamba", "--budget", "smoke", "--out", str(out), "--quiet",
                     "--no-baselines", "--bits", "16"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out / "best.arch"
