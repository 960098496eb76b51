"""The examples run as a user would run them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_custom_space_example():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_space.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tiny_rnnfree: 24 architectures" in done.stdout  # 3 · 2 · 2 · 2
    assert "derived codes:" in done.stdout and "digraph tiny_rnnfree" in done.stdout


def test_image_baselines_example():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "image_baselines.py"),
                           "--bits", "16"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): float(line.split("|")[2])
            for line in done.stdout.splitlines() if line.startswith("| ") and "method" not in line}
    assert set(rows) == {"LSH", "ITQ", "PCAH", "SH"}
    chance = float(done.stdout.rsplit("precision: ", 1)[1].rstrip(")\n"))
    # MAP@1000 of every baseline is far above what a random ranking's precision gives
    assert min(rows.values()) > chance + 0.2, (rows, chance)
