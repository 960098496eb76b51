"""The weights' peak learning rate of the default recipe, 1e-3 (the default) against 3e-3,
paired by data set and seed: test mAP@100 of the temporal CNN (trained inside the ``mamba``
runs), the ``mamba`` preset and the ``transformer`` preset, their change from 1e-3 to 3e-3
(in how many seeds it rose), and each preset minus the CNN at each rate (the transformer
against the CNN of the ``mamba`` run of the same rate and seed); mean ± sample std over the
seeds. Runs are named ``DATA-CONFIG-LR-sSEED`` (6e-3: seed 0 only, printed apart).

    avsearch run --space av_nas --arch mamba --data DATA --seed SEED --recipe-set lr=3e-3 \\
        --out RUNS/DATA-mamba-3e-3-sSEED --quiet
    python experiments/generality/lr_screen.py RUNS
"""
import sys
from pathlib import Path

from runs import score, spread

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/generality/lr")
RATES = ("1e-3", "3e-3")


print("| data | network | 1e-3 | 3e-3 | 3e-3 − 1e-3 (seeds up) | − CNN at 1e-3 | − CNN at 3e-3 |")
print("|---|---|---:|---:|---:|---:|---:|")
for data in ("v30", "few", "long", "avdigits"):
    for config in ("CNN", "mamba", "transformer"):
        at = {lr: [score(RUNS, data, config, s, tag=f"-{lr}") for s in (0, 1, 2)] for lr in RATES}
        both = [(a, b) for a, b in zip(*at.values()) if a is not None and b is not None]
        change = [b - a for a, b in both]
        cnn = {lr: [score(RUNS, data, "CNN", s, tag=f"-{lr}") for s in (0, 1, 2)] for lr in RATES}
        gaps = {lr: [v - c for v, c in zip(at[lr], cnn[lr]) if v is not None and c is not None]
                for lr in RATES}
        cells = [spread([v for v in at[lr] if v is not None], 3, signed=False) for lr in RATES]
        up = f"{spread(change, 3)} ({sum(c > 0 for c in change)} of {len(change)})"
        gap_cells = ["" if config == "CNN" else spread(gaps[lr], 3) for lr in RATES]
        print(f"| {data} | {config} | {' | '.join(cells)} | {up} | {' | '.join(gap_cells)} |")
print()
print("6e-3, seed 0: " + "; ".join(
    f"{data} mamba {m:.3f}, CNN {c:.3f}" for data in ("v30", "few", "long", "avdigits")
    if (m := score(RUNS, data, "mamba", 0, tag="-6e-3")) is not None
    and (c := score(RUNS, data, "CNN", 0, tag="-6e-3")) is not None))
