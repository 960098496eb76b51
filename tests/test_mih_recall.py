"""benchmarks/mih_recall.py's analysis of multi-index hashing on uniform codes, against a
simulation (random placements of an item's differing bits) and against the pigeonhole bound
(exact search: an item within m·(r+1) − 1 bits is never missed)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from mih_recall import analyse, miss  # noqa: E402


def test_miss_probability_against_a_simulation():
    rng = np.random.default_rng(0)
    sizes, radii, bits = (16, 16, 16, 16), (3, 3, 2, 2), 64
    table = np.repeat(np.arange(4), 16)                       # which table each bit is in
    for d in (13, 15, 17):
        flips = np.argsort(rng.random((40_000, bits)), axis=1)[:, :d]   # d distinct bits
        per_table = np.stack([(table[flips] == t).sum(1) for t in range(4)], axis=1)
        simulated = (per_table > np.array(radii)).all(1).mean()
        assert abs(simulated - miss(sizes, radii, d, bits)) < 0.01, d


def test_exact_radii_miss_nothing_within_the_pigeonhole_bound():
    sizes = (16, 16, 16, 16)
    assert all(miss(sizes, (3, 3, 3, 3), d, 64) == 0 for d in range(16))
    assert miss(sizes, (3, 3, 3, 3), 16, 64) > 0
    recall, candidates, probes = analyse(sizes, (3, 3, 3, 3), 10_000_000, 64, 100)
    assert abs(recall - 1.0) < 1e-12
    assert probes == 4 * (1 + 16 + 120 + 560)
    assert abs(candidates - probes * 10_000_000 / 2 ** 16) < 1
