"""Gradient clipping in the default recipe, paired by data set and seed: test mAP@100 of the
``transformer`` and ``mamba`` presets and of the temporal CNN (trained inside the ``mamba``
runs) with clipping (the default recipe) minus without (``CLIP=0 recipe_run.py``), over the
seeds both sides finished, and each preset minus the same run's CNN under each, over the seeds
whose CNN both sides have; mean ± sample std (n: how many seeds).

    python experiments/generality/clipping.py CLIPPED_RUNS UNCLIPPED_RUNS
"""
import json
import statistics
import sys
from pathlib import Path

CLIPPED, UNCLIPPED = map(Path, sys.argv[1:3])


def test_map(folder: Path, data: str, config: str, seed: int) -> float | None:
    """The preset's test mAP@100, or the CNN's (config ``CNN``, from the mamba run)."""
    path = folder / f"{data}-{'mamba' if config == 'CNN' else config}-s{seed}" / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return (metrics["baselines"]["CNN"] if config == "CNN" else metrics)["test"]["map@100"]


def spread(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.mean(xs):+.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "") \
        + f" (n={len(xs)})"


for data in ("v30", "few", "long", "avdigits"):
    for config in ("transformer", "mamba", "CNN"):
        diffs, gaps = [], {CLIPPED: [], UNCLIPPED: []}
        for seed in (0, 1, 2):
            values = {f: test_map(f, data, config, seed) for f in (CLIPPED, UNCLIPPED)}
            cnn = {f: test_map(f, data, "CNN", seed) for f in (CLIPPED, UNCLIPPED)}
            if None in values.values():
                continue
            diffs.append(values[CLIPPED] - values[UNCLIPPED])
            if None not in cnn.values():       # the gaps to the CNN where both sides have it
                for f in gaps:
                    gaps[f].append(values[f] - cnn[f])
        line = f"{data:9s} {config:12s} clipped − unclipped {spread(diffs):28s}"
        if config != "CNN":
            line += (f" − CNN: clipped {spread(gaps[CLIPPED]):28s} "
                     f"unclipped {spread(gaps[UNCLIPPED])}")
        print(line)
