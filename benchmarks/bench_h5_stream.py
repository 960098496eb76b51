"""Benchmark streaming an AV-NAS data set from HDF5: peak memory with a bounded handle cache.

Writes a synthetic AV-NAS data set (default 100,000 videos, one HDF5 group each, in two
modality files, 4 steps of width 4 and 2 so that it builds quickly), loads it with
``AVSEARCH_INMEMORY_MAX_MB=0`` (so it streams: ``H5GroupRows``) and reads every training
video once in batches, as an epoch does. Each cache size runs in a fresh child process so that
its peak RSS (``resource.getrusage``, ``ru_maxrss``) is its own; ``--max-open 0`` keeps every
handle ever opened (the behaviour before the cache was bounded) for comparison.

Usage::

    python benchmarks/bench_h5_stream.py [--videos 100000] [--max-open 4096 0] [--dir DIR]

Prints one line per cache size and writes ``benchmarks/results/bench_h5_stream.json``.

Measured with the default command (2 shared CPU cores, Linux, 2026-11-30): peak RSS 816 MiB
with the default cache of 4096 handles per file (8,192 open at the end) against 3,222 MiB
when every handle stays open (200,000); loading itself peaks at 721 MiB either way.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "bench_h5_stream.json"
STEPS, WIDTHS = 4, {"visual.h5": 4, "audio.h5": 2}


def write_avnas(root: Path, videos: int) -> Path:
    """The synthetic data set in ``root``; returns its config. Labels cycle over 10 classes;
    val and test are the first 100 and next 100 videos, the database is the train split."""
    import h5py

    rng = np.random.default_rng(0)
    ids = [f"v{i:06d}" for i in range(videos)]
    for name, width in WIDTHS.items():
        x = rng.normal(size=(videos, STEPS, width)).astype(np.float32)
        with h5py.File(root / name, "w") as f:
            for vid, row in zip(ids, x):
                f.create_group(vid).create_dataset("vectors", data=row)
    lines = [f"{vid},{i % 10}" for i, vid in enumerate(ids)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("\n".join(lines[:100]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[100:200]) + "\n")
    cfg = {"dataset": "synthetic", "Image": "visual.h5", "Audio": "audio.h5", "num_class": 10,
           "train_list": "train.txt", "val_list": "val.txt", "test_list": "test.txt"}
    (root / "avnas.json").write_text(json.dumps(cfg))
    return root / "avnas.json"


def run_one(config: Path, max_open: int, batch: int) -> dict[str, Any]:
    """Load (streaming) and read every training video once in this process."""
    import h5py

    from avsearch.data import load_dataset
    from avsearch.data.h5 import H5GroupRows

    os.environ["AVSEARCH_INMEMORY_MAX_MB"] = "0"
    t0 = time.perf_counter()
    data = load_dataset(config)
    train = data.split("train")
    streams = list(train.features.values())
    assert all(isinstance(s, H5GroupRows) for s in streams), "the data set did not stream"
    for s in streams:   # 0: never close a handle (the unbounded cache)
        s._max_open = max_open or len(train) + 1
    load_s = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    checksum = 0.0
    for start in range(0, len(train), batch):
        for x in train.take(np.arange(start, min(start + batch, len(train)))):
            checksum += float(x.sum())
    stream_s = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    handles = sum(h5py.h5f.get_obj_count(s._handles()[0].id, h5py.h5f.OBJ_DATASET)
                  for s in streams)
    return {"videos": len(train), "max_open": max_open, "batch": batch,
            "load_seconds": round(load_s, 1), "stream_seconds": round(stream_s, 1),
            "rss_after_load_mib": round(rss_loaded / 1024, 1),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "open_dataset_handles_at_end": int(handles), "checksum": checksum}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--max-open", type=int, nargs="+", default=[4096, 0],
                    help="handle cache sizes to compare (0: unbounded)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dir", help="where to write the data set (default: a temporary folder)")
    ap.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(run_one(Path(args.child), args.max_open[0], args.batch)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        config = write_avnas(root, args.videos)
        print(f"wrote {args.videos} videos in {time.perf_counter() - t0:.0f} s")
        runs = []
        for max_open in args.max_open:
            cmd = [sys.executable, __file__, "--child", str(config), "--max-open", str(max_open),
                   "--batch", str(args.batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            runs.append(r)
            print(f"{r['videos']} videos, max_open {max_open or 'unbounded'}: peak RSS "
                  f"{r['peak_rss_mib']:.0f} MiB (after loading {r['rss_after_load_mib']:.0f} "
                  f"MiB), {r['open_dataset_handles_at_end']} dataset handles open at the end, "
                  f"epoch read in {r['stream_seconds']:.0f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "runs": runs}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
