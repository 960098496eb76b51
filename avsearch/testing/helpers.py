"""What the conformance suites (and avsearch's own tests) run on: tiny data sets whose
features carry their class, a way to kill a run at a checkpoint, and retrieval numbers
recomputed apart from :mod:`avsearch.metrics`."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from avsearch.data import Dataset, Split, register_builtin

__all__ = ["class_mean_dataset", "Killed", "checkpoint_saves", "reference_map",
           "reference_test_metrics", "DATA_AV", "DATA_V", "TINY_SIZES", "postgres_server",
           "NoPostgres"]

TINY_SIZES = {"train": 96, "val": 24, "test": 24, "retrieval": 72}
DATA_AV = "avsearch-testing-av"    # two modalities, visual 12-d and audio 10-d
DATA_V = "avsearch-testing-v"      # one modality, visual 8-d


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


register_builtin(DATA_AV, lambda: class_mean_dataset(DATA_AV, {"visual": 12, "audio": 10},
                                                      TINY_SIZES))
register_builtin(DATA_V, lambda: class_mean_dataset(DATA_V, {"visual": 8}, TINY_SIZES))


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
                  db_labels: np.ndarray, k: int, normalisation: str = "k") -> float:
    """mAP@K divided by K (``normalisation="k"``) or by the relevant items retrieved within
    the top K (``"retrieved"``, 0 when none; the image-hashing protocol), from the definition:
    Hamming ranking with ties broken by database index, relevant = sharing a label. Written
    apart from ``avsearch.metrics``."""
    bits = q_codes.shape[1]
    dist = (bits - q_codes.astype(np.int64) @ db_codes.T.astype(np.int64)) // 2
    relevant = (q_labels.astype(np.int64) @ db_labels.T.astype(np.int64)) > 0
    index = np.arange(len(db_codes))
    total = 0.0
    for i in range(len(q_codes)):
        top = np.lexsort((index, dist[i]))[:k]
        hits = relevant[i, top]
        precision = np.cumsum(hits) / np.arange(1, len(top) + 1)
        denominator = k if normalisation == "k" else max(int(hits.sum()), 1)
        total += float((precision * hits).sum()) / denominator
    return total / len(q_codes)


def reference_test_metrics(arch_path: str | Path, data: Dataset) -> dict[str, float]:
    """Test mAP@K and GmAP of the network an ``.arch`` file holds, recomputed from its weights
    file: codes from the frozen network itself (512 videos a batch, as runs encode), queries
    = test, database = retrieval. What a run records must equal this."""
    from avsearch.arch import Architecture

    net = Architecture.load(arch_path).network()

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


# ---------------------------------------------------------------- a PostgreSQL server of our own
class NoPostgres(Exception):
    """PostgreSQL's server is not installed here and cannot be installed (the reason)."""


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server (Debian's ``postgresql``; installed first when missing and this
    process is root with apt-get) in a temporary folder, listening on a Unix socket there
    only; yields its SQLAlchemy URL and stops it and removes the folder afterwards. As root
    it runs as the ``postgres`` user (initdb refuses root). Raises :class:`NoPostgres`."""
    import os
    import shutil
    import subprocess
    import tempfile

    def server_bin() -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        return found[-1].parent if found else None

    root = os.geteuid() == 0
    if server_bin() is None and root and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                       "-qq postgresql", shell=True, check=False, capture_output=True)
    bin_dir = server_bin()
    if bin_dir is None:
        raise NoPostgres("PostgreSQL's server is not installed and cannot be here (needs root "
                         "and apt-get: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="avsearch-pg-"))
    as_user: list[str] = []
    if root:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(folder / "data")]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A",
                        "trust", "-U", "avsearch"], check=True, capture_output=True)
        subprocess.run([*pg_ctl, "-l", str(folder / "log"), "-w", "-o",
                        f"-k {folder} -c listen_addresses=''", "start"], check=True,
                       capture_output=True)
        yield f"postgresql://avsearch@/postgres?host={folder}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
