"""FCVID-scale data that does not fit in memory: one training epoch streamed from an SSVH file.

Generates, on demand and in a temporary folder (never committed), an SSVH folder of FCVID's
size: ``fcv_train_feats.h5`` of 45,585 x 25 x 4096 float32 features (17.4 GiB), 239 classes,
and a small ``fcv_test_feats.h5`` (queries and database, FCVID's protocol; 20 % of it carved
out as validation). Then, each in a fresh child process so that its peak RSS is its own:

* **full**: ``avsearch run --arch transformer`` (no search) on it with the ``paper`` budget
  and ``--epochs 1``: one finetune epoch over all 45,585 videos (batch 128), streamed from
  the file (``AVSEARCH_INMEMORY_MAX_MB``, 2 GB by default, is far below 17 GiB); its peak
  RSS (goal: under 4 GB) and training videos/s (``history.jsonl``);
* **subset**: the same on the first ``--subset`` training videos, once in memory (the limit
  raised) and once streamed (``AVSEARCH_INMEMORY_MAX_MB=0``): streaming's videos/s as a
  fraction of the in-memory path's;
* **torchrun**: the streamed subset on 2 processes (gloo): which training-file rows each
  process read (``H5Rows`` reads, counted in the process), to show that each reads only its
  shard of every batch and of the input statistics.

Beside wall times it records CPU times and the machine's load (``_load.Meter``): on a
shared machine the speeds say as much about the other jobs.

    python benchmarks/bench_fcvid_stream.py                       # FCVID's size (needs ~18 GB disk)
    python benchmarks/bench_fcvid_stream.py --videos 3000 --subset 1000   # does it run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _load import Meter   # benchmarks/_load.py

HERE = Path(__file__).resolve()
BLOCK = 256   # videos written at a time


def write_folder(folder: Path, videos: int, test: int, steps: int, width: int, classes: int,
                 source: Path | None = None) -> float:
    """The SSVH folder (features with a class signal, labels as .npy); with ``source``, the
    first ``videos`` training videos of that folder's file instead of new ones. Returns the
    seconds it took."""
    import h5py

    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, width)).astype(np.float32)
    for role, n in (("train", videos), ("test", test)):
        labels = rng.integers(0, classes, n)
        onehot = np.zeros((n, classes), bool)
        onehot[np.arange(n), labels] = True
        np.save(folder / f"fcv_{role}_labels.npy", onehot)
        with h5py.File(folder / f"fcv_{role}_feats.h5", "w") as f:
            ds = f.create_dataset("feats", (n, steps, width), np.float32)
            src = h5py.File(source / f"fcv_{role}_feats.h5", "r")["feats"] if source else None
            for start in range(0, n, BLOCK):
                stop = min(n, start + BLOCK)
                if src is not None:
                    ds[start:stop] = src[start:stop]
                    continue
                block = rng.standard_normal((stop - start, steps, width), np.float32)
                block += centres[labels[start:stop], None, :]
                ds[start:stop] = block
        if source:   # the subset's labels are the source's first rows
            np.save(folder / f"fcv_{role}_labels.npy",
                    np.load(source / f"fcv_{role}_labels.npy")[:n])
    return time.perf_counter() - t0


def run_args(folder: Path, out: Path, d: int) -> list[str]:
    return ["run", "--data", str(folder), "--arch", "transformer", "--budget", "paper",
            "--epochs", "1", "--set", f"d={d}", "--bits", "64", "--no-baselines", "--quiet",
            "--device", "cpu", "--out", str(out)]


def worker(folder: Path, out: Path, d: int, report: Path) -> None:
    """In this process (one rank under torchrun): the run, counting the training file's rows
    that H5Rows reads, by what read them (the input statistics, training steps, encoding
    for evaluation: the call stack says); writes ``report`` (per rank)."""
    import traceback

    from avsearch.cli import main
    from avsearch.data import h5

    train_file = str(folder / "fcv_train_feats.h5")
    rows: dict[str, list[np.ndarray]] = {"moments": [], "training": [], "evaluation": []}
    read = h5.H5Rows._read_unique

    def counting(self, index):
        if self._paths == [train_file]:
            names = {frame.name for frame in traceback.extract_stack()}
            kind = ("moments" if "moments" in names else
                    "evaluation" if "encode_split" in names else "training")
            rows[kind].append(np.asarray(index if self._rows is None else self._rows[index]))
        return read(self, index)

    h5.H5Rows._read_unique = counting
    assert main(run_args(folder, out, d)) == 0
    rank = int(os.environ.get("RANK", "0"))
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    report_rows = {}
    for kind, parts in rows.items():
        got = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        report_rows[kind] = {"reads": int(len(got)), "rows": np.unique(got).tolist()}
    Path(f"{report}.{rank}").write_text(json.dumps({
        "rank": rank, "rows": report_rows, "streamed": bool(rows["training"]), "read_bytes": int(io["rchar"]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def one(folder: Path, tmp: Path, name: str, d: int, env: dict[str, str],
        processes: int = 1) -> dict[str, Any]:
    out, report = tmp / name, tmp / f"{name}.json"
    cmd = [sys.executable, str(HERE), "--worker", str(folder), str(out), str(d), str(report)]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", str(processes),
               "--master-port", str(port), *cmd[1:]]
    with Meter() as meter:
        subprocess.run(cmd, env=env, check=True)
    history = [json.loads(line) for line in (out / "history.jsonl").open()]
    epoch = [r for r in history if r.get("stage") == "finetune"][0]
    ranks = [json.loads(Path(f"{report}.{r}").read_text()) for r in range(processes)]
    result = {"videos": epoch["anchors"], "train_s": epoch["train_seconds"],
              "videos_per_second": epoch["videos_per_second"],
              "peak_rss_mib": round(max(r["peak_rss_mib"] for r in ranks), 1), **meter.record,
              "ranks": [{**{k: v for k, v in r.items() if k != "rows"},
                         **{f"{kind}_rows_read": v["reads"] for kind, v in r["rows"].items()},
                         **{f"{kind}_distinct_rows": len(v["rows"])
                            for kind, v in r["rows"].items()}} for r in ranks]}
    if processes > 1:   # which training-file rows both processes read, by what read them
        result["rows_in_file"] = epoch["anchors"]
        result["rows_read_by_both"] = {
            kind: len(set(ranks[0]["rows"][kind]["rows"]) & set(ranks[1]["rows"][kind]["rows"]))
            for kind in ranks[0]["rows"]}
    print(f"{name}: {result['videos_per_second']:.1f} videos/s, peak RSS "
          f"{result['peak_rss_mib']:.0f} MiB, {result['wall_s']:.0f} s wall, "
          f"{result['cpu_s']:.0f} s CPU, load {result['load_1min'][0]:.1f}-"
          f"{result['load_1min'][1]:.1f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=45_585)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=239)
    parser.add_argument("--subset", type=int, default=4_000,
                        help="training videos of the in-memory comparison (1.6 GB at 4000)")
    parser.add_argument("--d", type=int, default=64, help="model width")
    parser.add_argument("--dir", help="where to write the data (default: a temporary folder, "
                                      "removed at the end)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["full", "subset", "torchrun"])
    parser.add_argument("--out", default="benchmarks/results/bench_fcvid_stream.json")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        folder, out, d, report = args.worker
        worker(Path(folder), Path(out), int(d), Path(report))
        return
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench_fcvid-"))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("AVSEARCH_INMEMORY_MAX_MB", None)
    result: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "worker"}}
    try:
        full, sub = tmp / "fcvid", tmp / "fcvid-subset"
        shape = (args.videos, args.steps, args.width)
        result["file_gib"] = round(np.prod(shape) * 4 / 2**30, 2)
        if "full" not in args.skip:
            with Meter() as meter:
                write_folder(full, args.videos, args.test, args.steps, args.width, args.classes)
            result["write"] = meter.record
            print(f"wrote {result['file_gib']} GiB of features in {meter.record['wall_s']:.0f} s",
                  flush=True)
            result["full"] = one(full, tmp, "full", args.d, env)
        if "subset" not in args.skip or "torchrun" not in args.skip:
            write_folder(sub, args.subset, args.test, args.steps, args.width, args.classes,
                         source=full if "full" not in args.skip else None)
        if "subset" not in args.skip:   # in memory whatever its size (the limit raised)
            memory = one(sub, tmp, "subset-in-memory", args.d,
                         {**env, "AVSEARCH_INMEMORY_MAX_MB": str(1 << 20)})
            streamed = one(sub, tmp, "subset-streamed", args.d,
                           {**env, "AVSEARCH_INMEMORY_MAX_MB": "0"})
            result["subset"] = {"in_memory": memory, "streamed": streamed,
                                "streamed_over_in_memory": round(
                                    streamed["videos_per_second"] / memory["videos_per_second"], 3)}
        if "torchrun" not in args.skip:
            result["torchrun"] = one(sub, tmp, "subset-torchrun-2", args.d,
                                     {**env, "AVSEARCH_INMEMORY_MAX_MB": "0"}, processes=2)
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=1))


if __name__ == "__main__":
    main()
