"""The mixed av_nas supernet step on a shared machine (issue 18, item 3): how much slower it is
while an unrelated process keeps one core busy, under each thread setting.

Each setting is one ``bench_supernet.py --one D BATCH STEPS`` process (its median step time),
run quiet and then beside a busy process that this script starts (a Python loop spinning on
one core) and stops; the settings alternate over ``--repeats`` rounds. The ratio is a
setting's busy step time over the *default* setting's quiet one (torch's threads = the cores,
OpenMP's default active wait): what a user who starts a run on a shared machine gets.

    python benchmarks/bench_shared.py                # d=64, batch 64, 8 steps, 2 rounds
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
CORES = os.cpu_count() or 1
# name -> (torch threads, extra environment)
SETTINGS = {
    "default": (CORES, {}),
    "passive wait": (CORES, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "one thread fewer": (max(1, CORES - 1), {}),
}


def step_seconds(shape: list[int], threads: int, env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, str(HERE / "bench_supernet.py"), "--one",
                           *map(str, shape), "--threads", str(threads)],
                          capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[64, 64, 8],
                        metavar=("D", "BATCH", "STEPS"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/bench_shared.json")
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.repeats):
        for load in ("quiet", "one core busy"):
            spinner = None
            if load != "quiet":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1)
            try:
                for name, (threads, env) in SETTINGS.items():
                    s = step_seconds(args.shape, threads, env)
                    times.setdefault((name, load), []).append(s)
                    print(f"round {round_ + 1}, {load}, {name} ({threads} threads): "
                          f"{s:.3f} s/step", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    reference = statistics.median(times[("default", "quiet")])
    rows = [{"setting": name, "load": load, "threads": SETTINGS[name][0],
             "step_s": [round(t, 4) for t in ts],
             "slowdown": round(statistics.median(ts) / reference, 2)}
            for (name, load), ts in times.items()]
    print(f"\nd, batch, steps = {args.shape}; {CORES} cores; slowdown = median step / default "
          f"quiet median ({reference:.3f} s)")
    print("| setting | load | threads | s/step | slowdown |\n|---|---|---:|---|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['load']} | {r['threads']} | "
              f"{', '.join(f'{t:.3f}' for t in r['step_s'])} | {r['slowdown']}× |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"shape": args.shape, "cores": CORES, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
