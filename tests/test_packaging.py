"""A wheel built from the repository (not an editable install) carries spaces and strategies."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy: an in-tree build would leave build/ beside the sources
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(src)], check=True)
    (path,) = out.glob("avsearch-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("avsearch/spaces/__init__.py", "avsearch/spaces/av_nas.py",
                     "avsearch/strategies/__init__.py", "avsearch/ops/scan.py", "avsearch/cli.py"):
        assert required in names
    assert not any(n.startswith(("spaces/", "strategies/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "avsearch = avsearch.cli:console" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_works_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True)
    code = ("import avsearch, avsearch.spaces as s; "
            "assert avsearch.__file__.startswith(%r), avsearch.__file__; "
            "assert s.__file__.startswith(%r), s.__file__; "
            "print(avsearch.get_space('av_nas').count())") % (str(target), str(target))
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(2 * 78364164096)
