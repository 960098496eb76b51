"""The T cell's pooling (issue 12): paired differences per data set and seed, test (and
validation) mAP@100, mean ± sample std over the seeds that finished.

* ``csp − csp-mean``: csp searching the pooling too (the default since these runs) against
  csp in the paper's space (``--set pools=mean``) of the same seed;
* ``transformer-max − transformer``: the transformer preset max-pooled (``--set pools=max``)
  against the paper's mean;
* ``… − CNN``: against the temporal CNN of that seed's ``mamba`` run.

    python experiments/generality/pools.py [benchmarks/results/generality/runs]
"""
import sys
from pathlib import Path

from runs import score, spread

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/generality/runs")
PAIRS = (("csp", "csp-mean"), ("transformer-max", "transformer"),
         ("csp", "CNN"), ("csp-mean", "CNN"), ("transformer-max", "CNN"))


for data in ("v30", "few", "long", "avdigits"):
    for new, old in PAIRS:
        diffs = {split: [] for split in ("test", "val")}
        for seed in (0, 1, 2):
            for split, d in diffs.items():
                a, b = score(RUNS, data, new, seed, split), score(RUNS, data, old, seed, split)
                if a is not None and b is not None:
                    d.append(a - b)
        if diffs["test"]:
            above = sum(t > 0 for t in diffs["test"])
            print(f"{data:9s} {new} − {old:12s} n={len(diffs['test'])}  test {spread(diffs['test']):18s} "
                  f"({above} of {len(diffs['test'])} above)  val {spread(diffs['val'])}")
