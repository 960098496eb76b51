"""One small thread pool for the numba kernels (the scan, the retrieval metrics).

Plain threads (the kernels release the GIL) rather than numba's parallel layer: a second
OpenMP runtime next to torch's spin-waits at every launch and competes with torch on a small
or shared machine. One pool per process, re-made after a fork, grown on demand.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

__all__ = ["run_workers"]

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
