"""Gradient clipping in the default recipe, paired by data set and seed: test mAP@100 of the
``transformer`` and ``mamba`` presets and of the temporal CNN (trained inside the ``mamba``
runs) with clipping (the default recipe) minus without (``CLIP=0 recipe_run.py``), over the
seeds both sides finished, and each preset minus the same run's CNN under each, over the seeds
whose CNN both sides have; mean ± sample std (n: how many seeds).

    python experiments/generality/clipping.py CLIPPED_RUNS UNCLIPPED_RUNS
"""
import sys
from pathlib import Path

from runs import score, spread

CLIPPED, UNCLIPPED = map(Path, sys.argv[1:3])


def counted(xs: list[float]) -> str:
    return spread(xs) + (f" (n={len(xs)})" if xs else "")


for data in ("v30", "few", "long", "avdigits"):
    for config in ("transformer", "mamba", "CNN"):
        diffs, gaps = [], {CLIPPED: [], UNCLIPPED: []}
        for seed in (0, 1, 2):
            values = {f: score(f, data, config, seed) for f in (CLIPPED, UNCLIPPED)}
            cnn = {f: score(f, data, "CNN", seed) for f in (CLIPPED, UNCLIPPED)}
            if None in values.values():
                continue
            diffs.append(values[CLIPPED] - values[UNCLIPPED])
            if None not in cnn.values():       # the gaps to the CNN where both sides have it
                for f in gaps:
                    gaps[f].append(values[f] - cnn[f])
        line = f"{data:9s} {config:12s} clipped − unclipped {counted(diffs):28s}"
        if config != "CNN":
            line += (f" − CNN: clipped {counted(gaps[CLIPPED]):28s} "
                     f"unclipped {counted(gaps[UNCLIPPED])}")
        print(line)
