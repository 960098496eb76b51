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
