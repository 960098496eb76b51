"""Multi-index hashing on uniform codes, analytically: for m substring tables probed at
per-table radii r_1..r_m, the expected recall@k against the exact top k and the expected
number of candidates and probes (issue 17's "10× at recall ≥ 0.95")::

    python benchmarks/mih_recall.py [--n 10000000] [--bits 64] [--k 100]

An item at Hamming distance d from the query, its d differing bits uniformly placed, is
missed only when every table's substring differs in more than that table's radius; counting
those placements (a product of binomials over the tables, summed to d) over all C(bits, d)
gives the chance to miss it. The exact top k of n uniform codes is taken as all items of the
nearest distances, the last distance in part, in expectation.
"""
from __future__ import annotations

import argparse
from math import comb


def miss(sizes: tuple[int, ...], radii: tuple[int, ...], d: int, bits: int) -> float:
    """P(no table's substring within its radius) for an item at distance d."""
    ways = {0: 1}
    for size, radius in zip(sizes, radii):
        ways = _spread(ways, size, radius, d)
    return ways.get(d, 0) / comb(bits, d)


def _spread(ways: dict[int, int], size: int, radius: int, d: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for t, w in ways.items():
        for j in range(radius + 1, min(size, d - t) + 1):
            out[t + j] = out.get(t + j, 0) + w * comb(size, j)
    return out


def analyse(sizes, radii, n: int, bits: int, k: int) -> tuple[float, float, int]:
    """(expected recall@k, candidates, probes) of one probing scheme."""
    left, found = float(k), 0.0
    for d in range(bits + 1):
        near = min(n * comb(bits, d) / 2 ** bits, left)
        found += near * (1 - miss(sizes, radii, d, bits))
        left -= near
        if left <= 0:
            break
    probes = sum(sum(comb(s, j) for j in range(r + 1)) for s, r in zip(sizes, radii))
    candidates = sum(sum(comb(s, j) for j in range(r + 1)) * n / 2 ** s
                     for s, r in zip(sizes, radii))
    return found / k, candidates, probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("::")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    a = ap.parse_args()
    print("| tables (bits) | radii | recall@k | candidates | probes |\n|---|---|---:|---:|---:|")
    for m in (3, 4, 5):
        sizes = tuple(a.bits // m + (i < a.bits % m) for i in range(m))
        for top in range(1, 6):
            for lowered in range(m):
                radii = tuple(top - (i >= m - lowered) for i in range(m))
                recall, cands, probes = analyse(sizes, radii, a.n, a.bits, a.k)
                if 0.7 <= recall and cands < a.n:
                    print(f"| {m} ({'/'.join(map(str, sizes))}) | {','.join(map(str, radii))} | "
                          f"{recall:.3f} | {cands:,.0f} | {probes:,} |")


if __name__ == "__main__":
    main()
