"""experiments/generality/clipping.py: clipped minus unclipped, paired by seed, by hand."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "experiments" / "generality" / "clipping.py"


def _run(folder: Path, name: str, value: float, cnn: float | None = None) -> None:
    (folder / name).mkdir(parents=True)
    metrics = {"test": {"map@100": value}}
    if cnn is not None:
        metrics["baselines"] = {"CNN": {"test": {"map@100": cnn}}}
    (folder / name / "metrics.json").write_text(json.dumps(metrics))


def test_pairs_by_seed_and_leaves_out_seeds_one_side_lacks(tmp_path):
    clipped, unclipped = tmp_path / "clip", tmp_path / "noclip"
    # v30, seeds 0 and 1 on both sides; seed 2: the transformer on both sides, the mamba run
    # (and its CNN) only clipped
    for seed, (t, m, c, t0, m0, c0) in enumerate([(0.37, 0.38, 0.39, 0.36, 0.38, 0.38),
                                                  (0.35, 0.37, 0.38, 0.31, 0.36, 0.37)]):
        _run(clipped, f"v30-transformer-s{seed}", t)
        _run(clipped, f"v30-mamba-s{seed}", m, c)
        _run(unclipped, f"v30-transformer-s{seed}", t0)
        _run(unclipped, f"v30-mamba-s{seed}", m0, c0)
    _run(clipped, "v30-transformer-s2", 0.9)
    _run(clipped, "v30-mamba-s2", 0.9, 0.9)
    _run(unclipped, "v30-transformer-s2", 0.8)
    out = subprocess.run([sys.executable, str(SCRIPT), str(clipped), str(unclipped)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    transformer = next(line for line in out if line.startswith("v30       transformer"))
    # clipped − unclipped: 0.01, 0.04, 0.10 → mean 0.05, sample std sqrt(0.0042 / 2) = 0.0458
    assert "clipped − unclipped +0.0500 ± 0.0458 (n=3)" in transformer
    # − CNN over seeds 0 and 1 (seed 2 has no unclipped CNN): clipped −0.02, −0.03 → −0.025 ± 0.0071; unclipped: −0.02, −0.06 → −0.04 ± 0.0283
    assert "clipped -0.0250 ± 0.0071 (n=2)" in transformer
    assert "unclipped -0.0400 ± 0.0283 (n=2)" in transformer
    cnn = next(line for line in out if line.startswith("v30       CNN"))
    assert "+0.0100 ± 0.0000 (n=2)" in cnn
    assert "(n=2)" in next(line for line in out if line.startswith("v30       mamba"))
    assert next(line for line in out if line.startswith("few       transformer")).count("–") == 3
