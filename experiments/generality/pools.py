"""The T cell's pooling (issue 12): paired differences per data set and seed, test (and
validation) mAP@100, mean ± sample std over the seeds that finished.

* ``csp − csp-mean``: csp searching the pooling too (the default since these runs) against
  csp in the paper's space (``--set pools=mean``) of the same seed;
* ``transformer-max − transformer``: the transformer preset max-pooled (``--set pools=max``)
  against the paper's mean;
* ``… − CNN``: against the temporal CNN of that seed's ``mamba`` run.

    python experiments/generality/pools.py [benchmarks/results/generality/runs]
"""
import json
import statistics
import sys
from pathlib import Path

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/generality/runs")
PAIRS = (("csp", "csp-mean"), ("transformer-max", "transformer"),
         ("csp", "CNN"), ("csp-mean", "CNN"), ("transformer-max", "CNN"))


def load(name: str) -> dict | None:
    try:
        return json.loads((RUNS / name / "metrics.json").read_text())
    except FileNotFoundError:
        return None


def score(data: str, config: str, seed: int, split: str) -> float | None:
    if config == "CNN":
        run = load(f"{data}-mamba-s{seed}")
        return run["baselines"]["CNN"][split]["map@100"] if run else None
    run = load(f"{data}-{config}-s{seed}")
    return run[split]["map@100"] if run else None


def spread(xs: list[float]) -> str:
    return f"{statistics.mean(xs):+.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")


for data in ("v30", "few", "long", "avdigits"):
    for new, old in PAIRS:
        diffs = {split: [] for split in ("test", "val")}
        for seed in (0, 1, 2):
            for split, d in diffs.items():
                a, b = score(data, new, seed, split), score(data, old, seed, split)
                if a is not None and b is not None:
                    d.append(a - b)
        if diffs["test"]:
            above = sum(t > 0 for t in diffs["test"])
            print(f"{data:9s} {new} − {old:12s} n={len(diffs['test'])}  test {spread(diffs['test']):18s} "
                  f"({above} of {len(diffs['test'])} above)  val {spread(diffs['val'])}")
