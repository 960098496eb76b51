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
import json
import statistics
import sys
from pathlib import Path

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/generality/lr")
RATES = ("1e-3", "3e-3")


def test_map(data: str, config: str, lr: str, seed: int) -> float | None:
    """The test mAP@100 of a preset, or of the CNN (config ``CNN``, from the mamba run)."""
    path = RUNS / f"{data}-{'mamba' if config == 'CNN' else config}-{lr}-s{seed}" / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return (metrics["baselines"]["CNN"] if config == "CNN" else metrics)["test"]["map@100"]


def spread(xs: list[float], signed: bool = False) -> str:
    if not xs:
        return "–"
    mean = f"{statistics.mean(xs):+.3f}" if signed else f"{statistics.mean(xs):.3f}"
    return mean + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


print("| data | network | 1e-3 | 3e-3 | 3e-3 − 1e-3 (seeds up) | − CNN at 1e-3 | − CNN at 3e-3 |")
print("|---|---|---:|---:|---:|---:|---:|")
for data in ("v30", "few", "long", "avdigits"):
    for config in ("CNN", "mamba", "transformer"):
        at = {lr: [test_map(data, config, lr, s) for s in (0, 1, 2)] for lr in RATES}
        both = [(a, b) for a, b in zip(*at.values()) if a is not None and b is not None]
        change = [b - a for a, b in both]
        gaps = {lr: [v - c for s, v in enumerate(at[lr])
                     if v is not None and (c := test_map(data, "CNN", lr, s)) is not None]
                for lr in RATES}
        cells = [spread([v for v in at[lr] if v is not None]) for lr in RATES]
        up = f"{spread(change, True)} ({sum(c > 0 for c in change)} of {len(change)})"
        gap_cells = ["" if config == "CNN" else spread(gaps[lr], True) for lr in RATES]
        print(f"| {data} | {config} | {' | '.join(cells)} | {up} | {' | '.join(gap_cells)} |")
print()
print("6e-3, seed 0: " + "; ".join(
    f"{data} mamba {m:.3f}, CNN {c:.3f}" for data in ("v30", "few", "long", "avdigits")
    if (m := test_map(data, "mamba", "6e-3", 0)) is not None
    and (c := test_map(data, "CNN", "6e-3", 0)) is not None))
