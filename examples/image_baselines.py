"""Unsupervised hashing baselines on the built-in image data, as image-hashing papers report
them: MAP@1000 (test queries against the retrieval set, relevance = sharing a label) of LSH,
ITQ, PCAH and Spectral Hashing at several code lengths.

    python examples/image_baselines.py [--data fashion4] [--bits 16,32,64,128] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np

from avsearch.baselines import pooled, unsupervised_baselines
from avsearch.data import load_dataset
from avsearch.metrics import protocol_for, retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion4")
    parser.add_argument("--bits", default="16,32,64,128")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bits = [int(b) for b in args.bits.split(",")]

    data = load_dataset(args.data)
    protocol = protocol_for(data.images)
    train, test, db = (data.split(s) for s in ("train", "test", "retrieval"))
    x_train, x_test, x_db = pooled(train), pooled(test), pooled(db)
    print(f"{data.name}: {len(train)} training, {len(test)} query, {len(db)} database items; "
          f"{protocol.name} protocol: {protocol.summary}")
    print("| method | " + " | ".join(f"{b} bits" for b in bits) + " |")
    print("|---|" + "---:|" * len(bits))
    for name in unsupervised_baselines(data.images):
        row = []
        for b in bits:
            model = unsupervised_baselines(data.images)[name].fit(x_train, b, args.seed)
            m = retrieval_metrics(model.encode(x_test), test.labels, model.encode(x_db),
                                  db.labels, ks=(1000,), normalisation=protocol.normalisation,
                                  pr_curve=False)
            row.append(m["map"][1000])
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    relevant = np.mean([(test.labels[i] & db.labels).any(axis=1).mean()
                        for i in range(0, len(test), 10)])
    print(f"(a random ranking's precision: {relevant:.3f})")


if __name__ == "__main__":
    main()
