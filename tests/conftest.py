"""Shared fixtures: tiny spaces that build in milliseconds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import avsearch


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
    """av_nas at a width small enough for tests (two modalities of different widths), in the
    paper's space (its T pools by the mean: two T candidates, as the mechanism tests set
    them; tests/test_pools.py covers the searched pooling)."""
    return avsearch.get_space("av_nas", d=16, e=2, bits=8, heads=2, d_state=4,
                              modalities={"visual": 12, "audio": 16}, pools="mean")


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


# ---------------------------------------------------------------- Debian's data packages
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
WORDNET = Path("/usr/share/wordnet/data.noun")


def needs_debian(*files: Path) -> pytest.MarkDecorator:
    """Skip a test unless these files of Debian's data packages (``make setup`` installs them:
    dataset-fashion-mnist, wordnet-base) are present, saying which package to install."""
    package = {FASHION_MNIST: "dataset-fashion-mnist", WORDNET: "wordnet-base"}
    missing = [package.get(f, str(f)) for f in files if not f.exists()]
    return pytest.mark.skipif(bool(missing), reason=f"needs Debian's {' and '.join(missing)} "
                                                    f"(apt-get install {' '.join(missing)}, or "
                                                    f"make setup)")
