"""Running a comparison's runs: in order in this process, or in parallel processes; a
finished run is kept and a started one resumed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from avsearch.compare.plan import Job
from avsearch.errors import AvsearchInputError

__all__ = ["check_workers", "run_jobs"]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    """``workers``: parallel runs, each with cores // workers torch threads, so at most one per
    core."""
    cores = _cores()
    if workers < 1:
        raise AvsearchInputError(f"workers must be >= 1, got {workers}", "workers")
    if workers > cores:
        raise AvsearchInputError(f"workers {workers}: this machine gives avsearch {cores} core"
                                 f"{'s' if cores != 1 else ''}; give at most {cores}", "workers")
    return workers


def run_jobs(jobs: list[Job], workers: int, progress: bool, log: Callable[[str], Any]) -> None:
    """Run every unfinished job: a finished one (metrics.json) is kept, a started one resumed."""
    from avsearch.run import run

    n = len(jobs)
    todo = []
    for i, job in enumerate(jobs, 1):
        if (job.folder / "metrics.json").exists():
            log(f"[{i}/{n}] {job.label}: finished earlier, kept ({job.folder})")
        elif workers == 1:  # in order: a scratch run comes after the search it retrains
            resume = (job.folder / "run.json").exists()
            log(f"[{i}/{n}] {'resuming' if resume else 'running'} {job.label} -> {job.folder}")
            run(job.settings, out=job.folder, resume=resume, progress=progress)
        else:
            todo.append((i, job))
    if todo:
        _run_parallel(todo, n, workers, log)


def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _run_job(settings, folder: str, resume: bool) -> str:
    from avsearch.run import run
    run(settings, out=Path(folder), resume=resume, progress=False)
    return folder


def _run_parallel(todo: list[tuple[int, Job]], n: int, workers: int,
                  log: Callable[[str], Any]) -> None:
    """``workers`` processes, each with cores // workers torch threads; a job starts once the
    run it depends on (a scratch run's search) has ended.

    Spawned, not forked: a fork of a process whose torch has started its OpenMP threads can
    hang. On an error, queued runs are cancelled, running ones finish (each checkpoints, so
    the same command resumes them), and the error is raised."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, _cores() // workers)
    waiting = list(todo)
    unfinished = {id(job) for _, job in todo}   # a run not among them ended earlier
    running: dict[Any, tuple[int, Job]] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    try:
        while waiting or running:
            # no more than ``workers`` submitted, so "running" is logged when a run starts
            for item in [w for w in waiting
                         if w[1].after is None or id(w[1].after) not in unfinished]:
                if len(running) == workers:
                    break
                i, job = item
                waiting.remove(item)
                resume = (job.folder / "run.json").exists()
                log(f"[{i}/{n}] {'resuming' if resume else 'running'} {job.label} -> {job.folder}")
                running[pool.submit(_run_job, job.settings, str(job.folder), resume)] = item
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i, job = running.pop(future)
                future.result()
                unfinished.discard(id(job))
                log(f"[{i}/{n}] finished {job.label}")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
