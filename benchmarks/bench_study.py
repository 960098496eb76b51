"""Random search's candidates shared through PostgreSQL: trials per minute with 1 and 2
workers, and what the storage adds per trial.

Three settings of ``avsearch run --strategy random --strategy-set candidates=N`` on the same
data, budget and seed, no baselines:

* ``local``: one run, no storage (the trials' time is ``metrics.json``'s ``search_s``);
* ``1 worker``: one run with ``--storage`` on a PostgreSQL server of our own (Debian's
  ``postgresql`` in a temporary folder, :func:`avsearch.testing.helpers.postgres_server`);
* ``2 workers``: two such runs started together.

Trials per minute are N over the span from the first trial's start to the last one's end as
the storage records them (local: over ``search_s``); the storage's overhead per trial is
(1 worker's span − local ``search_s``) / N: queueing, heartbeats, polling. On a 2-core machine
two workers share the cores one worker uses, so they cannot show scaling. Beside each
setting's wall time it records the CPU time of its processes and the machine's load
(``_load.Meter``): on a shared machine the wall times say as much about the other jobs.

    python benchmarks/bench_study.py                       # avdigits, smoke budget, 8 candidates
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _load import Meter   # benchmarks/_load.py


def command(args, out: Path, storage: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "avsearch", "run", "--strategy", "random", "--strategy-set",
           f"candidates={args.candidates}", "--strategy-set", "halving=0", "--data", args.data,
           "--budget", args.budget, "--no-baselines", "--quiet", "--out", str(out)]
    return cmd + (["--storage", storage, "--study", "bench",
                   "--artifacts", str(out.parent / "artifacts")] if storage else [])


def span(storage: str) -> float:
    import optuna

    from avsearch.study import open_storage
    trials = [t for t in optuna.load_study(study_name="bench", storage=open_storage(storage)).trials
              if t.user_attrs.get("batch") == "search/candidates" and t.datetime_complete is not None]
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="avdigits")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/bench_study.json")
    args = parser.parse_args()
    from avsearch.testing.helpers import postgres_server

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    tmp = Path(tempfile.mkdtemp(prefix="bench_study-"))
    result: dict = {"settings": vars(args)}
    with Meter() as meter:
        subprocess.run(command(args, tmp / "local"), env=env, check=True, stdout=subprocess.DEVNULL)
    local = json.loads((tmp / "local" / "metrics.json").read_text())["time"]["search_s"]
    result["local"] = {"seconds": local, "trials_per_minute": 60 * args.candidates / local,
                       "run": meter.record}
    for workers in (1, 2):
        with postgres_server() as url:
            (tmp / f"w{workers}").mkdir()
            with Meter() as meter:
                procs = [subprocess.Popen(command(args, tmp / f"w{workers}" / str(i), url),
                                          env=env, stdout=subprocess.DEVNULL)
                         for i in range(workers)]
                assert all(p.wait() == 0 for p in procs)
            seconds = span(url)
        result[f"{workers}_workers"] = {"seconds": seconds,
                                        "trials_per_minute": 60 * args.candidates / seconds,
                                        "runs": meter.record}
        print(f"{workers} worker(s): {result[f'{workers}_workers']['trials_per_minute']:.1f} "
              f"trials/min", flush=True)
    result["storage_overhead_s_per_trial"] = (result["1_workers"]["seconds"] - local) / args.candidates
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| setting | trials/min | wall s (all runs) | CPU s | load (1 min, start-end) |\n"
          "|---|---:|---:|---:|---|")
    for key, name in (("local", "local"), ("1_workers", "1 worker, PostgreSQL"),
                      ("2_workers", "2 workers, PostgreSQL")):
        r = result[key]
        m = r.get("run") or r["runs"]
        print(f"| {name} | {r['trials_per_minute']:.1f} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
              f"{m['load_1min'][0]:.1f}-{m['load_1min'][1]:.1f} on {m['cores']} cores |")
    print(f"storage overhead: {result['storage_overhead_s_per_trial']:.2f} s per trial")


if __name__ == "__main__":
    main()
