"""``make demo``'s search run before and after a change: wall time and videos/s per stage.

The run is ``avsearch run --space av_nas --strategy csp`` on avdigits (make demo's; its export,
draw and eval take seconds). "Before" is a git revision (default: the commit before the speed
work of issue 18), built into its own folder with pip and imported from there; "after" is this
checkout. Each side first runs a smoke run (numba compiles its kernels into its cache), then the
two sides alternate ``--repeats`` times, each run in its own process, so drift or background load
reaches both alike. Extra variants of "after" (``--after-args``) run in the same rotation.

Per stage (search's supernet, the halving candidates, finetune), videos/s is the stage's training
videos (``anchors`` in history.jsonl) over its training seconds; the wall time is the process's.

    python benchmarks/bench_demo.py                              # before = cf74adc^, 1 repeat
    python benchmarks/bench_demo.py --after-args "--precision bf16" --repeats 2

Writes benchmarks/results/bench_demo.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEMO = ["run", "--space", "av_nas", "--strategy", "csp", "--quiet"]


def build_before(rev: str, where: Path) -> Path:
    """``rev`` of this repository installed (not editable) into ``where``/site; returns it."""
    src, site = where / "src", where / "site"
    if not (site / "avsearch").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(src), rev],
                       check=True, capture_output=True)
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--no-build-isolation", "--target", str(site), str(src)], check=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(src)],
                           check=True, capture_output=True)
    return site


def one_run(pythonpath: str | None, extra: list[str], out: Path, budget: list[str]) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t0 = time.perf_counter()
    # from the run's own folder: ``-m`` puts the working directory first on sys.path, where a
    # checkout's avsearch/ would shadow the side's
    out.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", *DEMO, *budget, *extra,
                           "--out", str(out)], env=env, capture_output=True, text=True, cwd=out)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{out}: exit {done.returncode}\n{done.stderr[-2000:]}")
    stages = collections.defaultdict(lambda: [0, 0.0])
    for line in (out / "history.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train_seconds" in rec and "anchors" in rec:
            stage = stages[rec.get("stage", "?").split("/")[0]]
            stage[0] += rec["anchors"]
            stage[1] += rec["train_seconds"]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": round(wall, 1), "time": metrics["time"], "threads": metrics.get("threads"),
            "test_map@100": metrics["test"]["map@100"],
            "videos_per_s": {k: round(a / s, 1) for k, (a, s) in stages.items() if s > 0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="cf74adc^", help="git revision of the 'before' side")
    parser.add_argument("--after-args", action="append", default=[],
                        help="extra avsearch run arguments for another 'after' variant")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "bench_demo.json"))
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before],
                         check=True, capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="bench_demo-"))
    sides = {f"before ({rev})": (str(build_before(rev, work / rev)), []), "after": (None, [])}
    for extra in args.after_args:
        sides[f"after {extra}"] = (None, shlex.split(extra))
    for i, (path, extra) in enumerate(sides.values()):   # untimed: kernels compile, caches fill
        one_run(path, extra, work / f"warm-{i}", ["--budget", "smoke"])
    runs = collections.defaultdict(list)
    for r in range(args.repeats):
        for i, (name, (path, extra)) in enumerate(sides.items()):
            res = one_run(path, extra, work / f"run{r}-{i}", [])
            runs[name].append(res)
            print(f"{name:<28} wall {res['wall_s']:7.1f} s  "
                  + "  ".join(f"{k} {v:7.1f} videos/s" for k, v in res["videos_per_s"].items())
                  + f"  test mAP@100 {res['test_map@100']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "command": "avsearch " + " ".join(DEMO), "before": rev,
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                               "runs": runs}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
