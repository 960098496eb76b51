"""Paired differences to the temporal CNN: per data set and configuration, test and validation
mAP@100 minus the CNN's of the same data set and seed (the CNN trained inside that seed's
``mamba`` run), mean ± sample std over the seeds that finished.

    python experiments/generality/paired.py [benchmarks/results/generality/runs]
"""
import json
import statistics
import sys
from pathlib import Path

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/generality/runs")


def load(name: str) -> dict | None:
    try:
        return json.loads((RUNS / name / "metrics.json").read_text())
    except FileNotFoundError:
        return None


def spread(xs: list[float]) -> str:
    return f"{statistics.mean(xs):+.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")


for data in ("v30", "few", "long", "avdigits"):
    for config in ("mamba", "csp", "csp-mean", "transformer", "transformer-max"):
        pairs = []
        for seed in (0, 1, 2):
            base, run = load(f"{data}-mamba-s{seed}"), load(f"{data}-{config}-s{seed}")
            if base and run:
                cnn = base["baselines"]["CNN"]
                pairs.append([run[s]["map@100"] - cnn[s]["map@100"] for s in ("test", "val")])
        if pairs:
            test, val = zip(*pairs)
            above = sum(t > 0 for t in test)
            print(f"{data:9s} {config:12s} n={len(pairs)}  test − CNN {spread(list(test)):18s} "
                  f"({above} of {len(pairs)} above)  val − CNN {spread(list(val))}")
