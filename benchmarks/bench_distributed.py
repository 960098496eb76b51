"""Supernet training on 1 and 2 processes: videos/s of csp's search stage under torchrun (gloo).

Each setting is one ``torchrun --nproc-per-node P -m avsearch run`` of csp on avdigits (the
same global batch of 128 videos for every P: each process encodes its share), search stage
only worth timing: ``--epochs`` search epochs of the budget's steps, no halving stage and no
baselines; the numbers are the search epochs' ``videos_per_second`` from ``history.jsonl``
(training steps only, validation excluded), the median over epochs. Each process gets the
cores divided by P as torch threads (``--cores``), so both settings use the machine's
cores, and the settings alternate over ``--repeats`` rounds so the machine's load reaches
them alike.

On a 2-core machine this cannot show scaling: two processes of one thread share the two
cores that one process of two threads uses, and add the gathers and the all-reduce. Beside
the speeds it records each run's wall time, the CPU time of its processes and the machine's
load (``_load.Meter``): on a shared machine the speeds say as much about the other jobs.

    python benchmarks/bench_distributed.py                  # d=64, quick budget steps
    python benchmarks/bench_distributed.py --repeats 1 --epochs 1 --budget smoke   # does it run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _load import Meter   # benchmarks/_load.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(processes: int, threads: int, args: argparse.Namespace, out: Path,
            runs: list[dict]) -> list[float]:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [str(torchrun), "--nproc-per-node", str(processes), "--master-port", str(free_port()),
           "-m", "avsearch", "run", "--strategy", "csp", "--strategy-set", "halving=0",
           "--data", args.data,
           "--budget", args.budget, "--epochs", str(args.epochs), "--set", f"d={args.d}",
           "--no-baselines", "--quiet", "--device", "cpu", "--out", str(out)]
    with Meter() as meter:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    runs.append({"processes": processes, "threads": threads, **meter.record})
    history = [json.loads(line) for line in (out / "history.jsonl").open()]
    return [r["videos_per_second"] for r in history if r.get("stage") == "search"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="avdigits")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="benchmarks/results/bench_distributed.json")
    args = parser.parse_args()

    speeds: dict[int, list[float]] = {1: [], 2: []}
    runs: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_distributed-"))
    try:
        for r in range(args.repeats):
            for processes in (1, 2):
                folder = tmp / f"p{processes}-r{r}"
                threads = max(1, args.cores // processes)
                speeds[processes] += one_run(processes, threads, args, folder, runs)
                print(f"round {r + 1}: {processes} process(es) x {threads} thread(s): "
                      f"{statistics.median(speeds[processes]):.0f} videos/s so far; run "
                      f"{runs[-1]['wall_s']:.0f} s wall, {runs[-1]['cpu_s']:.0f} s CPU, load "
                      f"{runs[-1]['load_1min'][0]:.1f}-{runs[-1]['load_1min'][1]:.1f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"machine": platform.processor() or platform.machine(), "cores": args.cores,
              "settings": vars(args),
              "videos_per_second": {str(p): statistics.median(v) for p, v in speeds.items()},
              "per_epoch": {str(p): v for p, v in speeds.items()}, "runs": runs}
    result["speedup_2_over_1"] = result["videos_per_second"]["2"] / result["videos_per_second"]["1"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"| processes | videos/s |\n|---:|---:|\n| 1 | {result['videos_per_second']['1']:.0f} |\n"
          f"| 2 | {result['videos_per_second']['2']:.0f} |\n"
          f"2 over 1: {result['speedup_2_over_1']:.2f}x")


if __name__ == "__main__":
    main()
