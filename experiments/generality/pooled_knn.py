"""What a code that preserves the input's similarity can reach (issue 12, self-supervised).

Exact float nearest neighbours (cosine) on pooled, standardised features, ranked like
avsearch's test protocol (test queries against the retrieval database, mAP@100 normalised by K,
ties by database index): no hashing, no learning. A self-supervised hasher whose loss preserves
the mean-pooled features' neighbourhoods (ITQ, VHMT's K-means structure term) is bounded by the
``mean`` row; ``max`` shows what pooling that finds each video's salient steps keeps.

    python experiments/generality/pooled_knn.py avdigits:visual+audio \
        benchmarks/results/generality/data/avdigits-v30.npz:visual+audio
"""
import sys

import numpy as np

from avsearch.data.load import load_dataset

POOLS = {"mean": lambda x: x.mean(1), "max": lambda x: x.max(1)}


def map_at_k(queries: np.ndarray, database: np.ndarray, relevant: np.ndarray, k: int = 100) -> float:
    """mAP@k normalised by k (avsearch's convention) of cosine rankings; stable sort = ties
    by database index."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = database / np.linalg.norm(database, axis=1, keepdims=True)
    top = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant, top, axis=1).astype(np.float64)
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return float(((precision * hits).sum(1) / k).mean())


def main(specs: list[str]) -> None:
    print("| data | " + " | ".join(f"{p}-pooled kNN" for p in POOLS) + " |")
    print("|---|" + "---:|" * len(POOLS))
    for spec in specs:
        data = load_dataset(spec)
        train, test = data.split("train"), data.split("test")   # statistics from training
        db = data.database("test")
        x_train, x_test, x_db = (s.take(np.arange(len(s)))[0].astype(np.float64)
                                 for s in (train, test, db))
        mu, sd = x_train.mean((0, 1)), x_train.std((0, 1)) + 1e-8
        x_test, x_db = (x_test - mu) / sd, (x_db - mu) / sd
        relevant = (test.labels.astype(np.float64) @ db.labels.T.astype(np.float64)) > 0
        scores = [map_at_k(pool(x_test), pool(x_db), relevant) for pool in POOLS.values()]
        print(f"| {spec} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["avdigits:visual+audio"])
