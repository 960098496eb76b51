"""How many torch threads a run takes on a shared machine (avsearch._threads.free_cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from avsearch._threads import free_cores


@pytest.mark.parametrize("busy, cores, free", [
    (0.0, 2, 2), (0.59, 2, 2),           # idle, or a daemon waking now and then: all free
    (0.6, 2, 1), (1.0, 2, 1), (1.4, 2, 1),
    (2.0, 2, 1), (7.0, 2, 1),            # never fewer than one
    (1.7, 4, 2), (0.0, 1, 1)])
def test_free_cores_counts_a_core_busy_from_60_percent(busy, cores, free):
    assert free_cores(busy=busy, cores=cores) == free


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores: one to keep busy")
def test_a_run_beside_a_busy_core_leaves_it_alone(tmp_path):
    """A real `avsearch run`, with a process spinning on one core beside it and no
    OMP_NUM_THREADS, trains on fewer threads than the machine's cores (metrics.json)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        done = subprocess.run([sys.executable, "-m", "avsearch.cli", "run", "--arch", "mamba",
                               "--budget", "smoke", "--epochs", "1", "--no-baselines",
                               "--quiet", "--set", "d=16", "--out", str(tmp_path / "run")],
                              capture_output=True, text=True, env=env)
    finally:
        spinner.kill()
        spinner.wait()
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 1 <= metrics["threads"] < os.cpu_count()


# A 4 MB block allocated and freed 50 times, then the page faults that cost (by default glibc
# gives some of the freed memory back to the kernel, so a round faults pages in again)
_FAULTS = """
import resource, torch
x = torch.empty(1 << 20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    x = torch.empty(1 << 20); x.fill_(1.0); del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_avsearch_program_keeps_freed_memory_for_the_next_step():
    """The `avsearch` program (console) sets the allocator before any command runs: blocks
    freed by one step are reused by the next without faulting their pages in again."""
    def faults(setup: str) -> int:
        code = setup + _FAULTS
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True)
        return int(done.stdout.split()[-1])

    plain = faults("")
    # console() runs its command through main(); here main measures instead
    program = faults("import avsearch.cli as cli\n"
                     "cli.main = lambda **kw: exec(" + repr(_FAULTS) + ")\n"
                     "cli.console()\n")
    assert plain > 1_000             # measured here: ~140 pages a round without the setting
    assert program < plain / 20      # measured here: none
