"""experiments/generality/pooled_knn.py: its float-neighbour mAP@K against avsearch's metrics."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from avsearch.metrics import retrieval_metrics

SCRIPT = Path(__file__).parents[1] / "experiments" / "generality" / "pooled_knn.py"


def _load():
    spec = importlib.util.spec_from_file_location("pooled_knn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cosine_ranking_of_codes_scores_as_avsearch_ranks_them():
    """On ±1 vectors of 16 bits (norm 4: every normalised entry and dot product exact) the
    cosine is 1 − 2·Hamming/16 exactly, so the float kNN must give avsearch's mAP@K, ties by
    database index included (few bits: many ties)."""
    rng = np.random.default_rng(0)
    q, db = rng.choice([-1, 1], (40, 16)), rng.choice([-1, 1], (300, 16))
    q_labels, db_labels = rng.integers(0, 5, 40), rng.integers(0, 5, 300)
    relevant = q_labels[:, None] == db_labels[None]
    ours = _load().map_at_k(q.astype(float), db.astype(float), relevant, k=100)
    reference = retrieval_metrics(q.astype(np.int8), q_labels, db.astype(np.int8), db_labels,
                                  ks=(100,), pr_curve=False)["map"][100]
    assert abs(ours - reference) < 1e-12
    assert 0.05 < ours < 0.5           # not a degenerate case (all or nothing relevant)
