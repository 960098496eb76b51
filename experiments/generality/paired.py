"""Paired differences to the temporal CNN: per data set and configuration, test and validation
mAP@100 minus the CNN's of the same data set and seed (the CNN trained inside that seed's
``mamba`` run), mean ± sample std over the seeds that finished.

    python experiments/generality/paired.py [benchmarks/results/generality/runs]
"""
import sys
from pathlib import Path

from runs import score, spread

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/generality/runs")


for data in ("v30", "few", "long", "avdigits"):
    for config in ("mamba", "csp", "csp-mean", "transformer", "transformer-max"):
        pairs = []
        for seed in range(5):
            scores = [(score(RUNS, data, config, seed, s), score(RUNS, data, "CNN", seed, s))
                      for s in ("test", "val")]
            if None not in (x for pair in scores for x in pair):
                pairs.append([run - cnn for run, cnn in scores])
        if pairs:
            test, val = zip(*pairs)
            above = sum(t > 0 for t in test)
            print(f"{data:9s} {config:12s} n={len(pairs)}  test − CNN {spread(list(test)):18s} "
                  f"({above} of {len(pairs)} above)  val − CNN {spread(list(val))}")
