"""Threads: one small pool for the numba kernels (the scan, the retrieval metrics), and how
many torch threads a run takes on a shared machine.

Plain threads (the kernels release the GIL) rather than numba's parallel layer: a second
OpenMP runtime next to torch's spin-waits at every launch and competes with torch on a small
or shared machine. One pool per process, re-made after a fork, grown on demand.

torch's OpenMP threads wait actively for each other, so a step on every core runs 3× slower
when another process holds one core of two (``benchmarks/bench_shared.py``); on the cores
left free it runs 1.3× slower. :func:`free_cores` counts them.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

__all__ = ["run_workers", "free_cores"]

_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)  # (pid, threads)
_lock = threading.Lock()


def run_workers(work: Callable[[int], None], workers: int) -> None:
    """Call ``work(w)`` for ``w`` in ``range(workers)`` concurrently (``w = 0`` on this thread)
    and return when all are done, re-raising the first error."""
    global _pool, _pool_key
    if workers <= 1:
        work(0)
        return
    with _lock:
        pid, size = _pool_key
        if pid != os.getpid() or size < workers - 1:
            if pid == os.getpid() and _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="avsearch")
            _pool_key = (os.getpid(), workers - 1)
        pool = _pool
    futures = [pool.submit(work, w) for w in range(1, workers)]
    work(0)
    for f in futures:
        f.result()


def free_cores(busy: float | None = None, cores: int | None = None, sample_s: float = 0.25) -> int:
    """The cores other processes leave free: all of them less the ones busy over
    ``sample_s`` seconds (``busy``: that count, measured by psutil when None), at least 1.

    Busy cores are counted from 60 % on (``floor(busy + 0.4)``): a core a system daemon wakes
    now and then stays free, and one a compute job holds does not."""
    cores = cores or os.cpu_count() or 1
    if busy is None:
        import psutil

        busy = sum(psutil.cpu_percent(interval=sample_s, percpu=True)) / 100
    return max(1, min(cores, cores - math.floor(busy + 0.4)))
