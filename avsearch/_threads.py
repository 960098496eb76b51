"""The process's CPU settings and what the CPU can do: one small pool of threads for the numba
kernels (the scan, the retrieval metrics), how many torch threads a run takes on a shared
machine, an allocator that keeps what it frees, and whether the CPU has bf16 arithmetic.

Plain threads (the kernels release the GIL) rather than numba's parallel layer: a second
OpenMP runtime next to torch's spin-waits at every launch and competes with torch on a small
or shared machine. One pool per process, re-made after a fork, grown on demand.

torch's OpenMP threads wait actively for each other, so a step on every core runs 3× slower
when another process holds one core of two (``benchmarks/bench_shared.py``); on the cores
left free it runs 1.3× slower. :func:`free_cores` counts them.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

__all__ = ["run_workers", "free_cores", "keep_freed_memory", "cpu_has_native_bf16"]

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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a training step frees for the next step (True if set).

    By default glibc maps blocks from 128 KB up (a (64, 25, 128) activation is 800 KB) freshly
    from the kernel and gives freed memory back, so every step faults its pages in again: about
    8,000 page faults and 10 % of a bf16 av_nas step at d=64 (``benchmarks/bench_step.py``).
    Blocks up to 32 MB (glibc's largest threshold) now come from the heap, which is no longer
    trimmed; the process's peak memory is unchanged, its memory after the peak is not returned.
    The same as starting with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=…``;
    jemalloc or tcmalloc under ``LD_PRELOAD`` do likewise. A no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl and others: leave their allocator alone
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AVX-512 BF16 or AMX, as torch reads the CPU's
    flags. (oneDNN's own ``_is_mkldnn_bf16_supported`` says yes on any AVX-512 CPU, which has no
    bf16 arithmetic of its own.)"""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
