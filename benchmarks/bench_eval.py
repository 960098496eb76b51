"""Benchmark ``retrieval_metrics`` at FCVID scale: time and peak memory.

Synthetic random ±1 codes and labels (default: 45,600 queries = the whole database of 45,600,
64 bits, 239 classes, FCVID protocol with each query's own id excluded, PR curve on). Each
configuration runs in a fresh child process so that its peak RSS (``resource.getrusage``,
``ru_maxrss``) is its own; the peak includes the interpreter, torch and the inputs.

Usage::

    python benchmarks/bench_eval.py [--n 45600] [--bits 64] [--classes 239]
        [--multi-label 0.1] [--block-size 4096 1024] [--threads 2] [--no-exclude-self]

Prints one line per configuration and writes ``benchmarks/results/bench_eval.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "bench_eval.json"


def synthetic(n: int, bits: int, classes: int, multi_label: float,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ±1 int8 codes and (n, classes) multi-hot labels; a ``multi_label`` share of the
    items carries a second label."""
    rng = np.random.default_rng(seed)
    codes = np.where(rng.random((n, bits), dtype=np.float32) < 0.5, -1, 1).astype(np.int8)
    labels = np.zeros((n, classes), dtype=bool)
    labels[np.arange(n), rng.integers(0, classes, n)] = True
    extra = np.nonzero(rng.random(n) < multi_label)[0]
    labels[extra, rng.integers(0, classes, len(extra))] = True
    return codes, labels


def run_one(args: argparse.Namespace, block_size: int) -> dict[str, Any]:
    """One timed evaluation in this process; returns its numbers."""
    import torch

    from avsearch.metrics import retrieval_metrics

    torch.set_num_threads(args.threads)
    codes, labels = synthetic(args.n, args.bits, args.classes, args.multi_label)
    ids = np.arange(args.n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    res = retrieval_metrics(codes, labels, codes, labels, normalisation=args.normalisation,
                            pr_curve=True, block_size=block_size, threads=args.threads,
                            exclude_self_ids=None if args.no_exclude_self else (ids, ids))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "n_queries": args.n, "n_database": args.n, "bits": args.bits,
        "classes": args.classes, "multi_label": args.multi_label,
        "block_size": block_size, "threads": args.threads,
        "exclude_self": not args.no_exclude_self, "normalisation": args.normalisation,
        "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rss_before_eval_mib": round(rss_before / 1024, 1),
        "map": res["map"], "gmap": res["gmap"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=45600, help="queries = database size")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--classes", type=int, default=239)
    ap.add_argument("--multi-label", type=float, default=0.1,
                    help="share of items with a second label")
    ap.add_argument("--block-size", type=int, nargs="+", default=[4096])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--normalisation", default="k")
    ap.add_argument("--no-exclude-self", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(run_one(args, args.block_size[0])))
        return

    runs = []
    for bs in args.block_size:
        cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--bits",
               str(args.bits), "--classes", str(args.classes), "--multi-label",
               str(args.multi_label), "--block-size", str(bs), "--threads", str(args.threads),
               "--normalisation", args.normalisation]
        if args.no_exclude_self:
            cmd.append("--no-exclude-self")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        runs.append(r)
        print(f"{r['n_queries']} x {r['n_database']} x {r['bits']} bits, block {bs}, "
              f"{r['threads']} threads: {r['seconds']:.1f} s wall ({r['cpu_seconds']:.1f} s "
              f"CPU), peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(before evaluation {r['rss_before_eval_mib']:.0f} MiB)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "runs": runs,
    }, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
