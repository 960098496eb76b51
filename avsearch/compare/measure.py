"""Measuring a comparison's runs: their metrics read back, inference timed by the comparison
itself, and the mean and spread over seeds, one row per method."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avsearch.arch import Architecture
from avsearch.compare.plan import Job, Method
from avsearch.errors import AvsearchInputError
from avsearch.metrics import DEFAULT_KS

__all__ = ["time_inference", "record", "summary", "table_rows", "RETRIEVAL_KEYS", "TIME_KEYS",
           "INFERENCE_REPEATS"]

# the retrieval numbers of a run: mAP at every K, and GmAP (VHMT Eq. 29, the SSVH papers' summary)
RETRIEVAL_KEYS = tuple(f"map@{k}" for k in DEFAULT_KS) + ("gmap",)

INFERENCE_REPEATS = 3


# the per-run numbers that are averaged over seeds (besides map@K)
TIME_KEYS = ("supernet_s_per_epoch", "search_s", "search_total_s", "finetune_s_per_epoch",
              "train_total_s", "inference_ms_per_video", "params")


def time_inference(arch_path: Path, split, device, repeats: int = INFERENCE_REPEATS) -> float:
    """Milliseconds per video to encode ``split`` with the frozen network of ``arch_path``:
    the median of ``repeats`` timed passes after one warm-up pass (features read included)."""
    from avsearch.inference import encode_split

    net = Architecture.load(arch_path).network().to(device)
    encode_split(net, split, device)                     # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode_split(net, split, device)                 # ends with .cpu(): synchronised
        seconds.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(seconds) / max(1, len(split))


def record(job: Job, metrics: dict[str, Any], inference_ms: float) -> dict[str, Any]:
    """One run's row of Table 2: test mAP@K, times, inference, parameters."""
    t = metrics.get("time", {})
    epochs = t.get("search_epochs") or 0
    # the successive-halving stage chooses the architecture too: it counts as search time
    search_total = float(t.get("search_s") or 0.0) + float(t.get("halving_s") or 0.0)
    supernet = t.get("supernet_s", t.get("search_s") if epochs else None)
    f_epochs = t.get("finetune_epochs") or 0
    finetune = float(t.get("finetune_s") or 0.0)
    rec: dict[str, Any] = {"seed": job.seed, "out": str(job.folder), "arch_id": metrics.get("arch_id")}
    rec.update({key: metrics["test"].get(key) for key in RETRIEVAL_KEYS})
    rec.update({
        "supernet_s_per_epoch": supernet / epochs if supernet is not None and epochs else None,
        # Table 2's "search time": what the search spends beyond training its supernet
        # (evolution, a controller, trials, successive halving); 0 for csp and DARTS without
        # halving, whose supernet is the search
        "search_s": round(max(0.0, search_total - (supernet or 0.0)), 3),
        "search_total_s": search_total,
        "finetune_s_per_epoch": finetune / f_epochs if f_epochs else None,
        "train_total_s": round(search_total + finetune, 3),
        "inference_ms_per_video": inference_ms,
        "params": metrics.get("params"),
    })
    return rec


def summary(records: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1; None for one seed) of each key over seeds."""
    mean, std = {}, {}
    for key in keys:
        values = [r.get(key) for r in records]
        if not values or any(v is None for v in values):
            mean[key] = std[key] = None
            continue
        arr = np.asarray(values, dtype=float)
        mean[key] = float(arr.mean())
        std[key] = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return {"mean": mean, "std": std}


def table_rows(methods: Sequence[Method], bits: Sequence[int | None], jobs: Sequence[Job],
               randoms: dict[str, dict[str, str]], test, device) -> tuple[list[dict[str, Any]], set[str]]:
    """One row per method (and per baseline the runs reported): per code length its runs'
    records (inference timed on ``test``) and their mean and spread over seeds; and the mAP
    normalisations the runs used."""
    keys = list(RETRIEVAL_KEYS) + list(TIME_KEYS)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, dict[str, list[dict[str, Any]]]] = {}
    normalisations = set()
    derived: dict[Path, str] = {}    # a search run's folder -> the architecture it derived
    for method in methods:
        row = {"method": method.name, "kind": method.kind, "target": method.target, "bits": {}}
        if method.kind == "random":
            row["choices"] = randoms[method.name]
        for b in bits:
            records = []
            for job in (j for j in jobs if j.method is method and j.bits == b):
                metrics = json.loads((job.folder / "metrics.json").read_text())
                normalisations.add(metrics.get("normalisation", "k"))
                if method.kind == "strategy":
                    derived[job.folder] = metrics.get("arch_id")
                elif method.kind == "scratch" and metrics.get("arch_id") != derived[job.after.folder]:
                    raise AvsearchInputError(
                        f"{job.folder}: trained architecture {metrics.get('arch_id')}, but "
                        f"{job.after.folder} derived {derived[job.after.folder]} (was the search "
                        f"run again?); remove {job.folder} to retrain it")
                records.append(record(job, metrics, time_inference(job.folder / "best.arch",
                                                                   test, device)))
                for name, result in metrics.get("baselines", {}).items():
                    per_bits = baselines.setdefault(name, {}).setdefault(str(b), [])
                    if all(r["seed"] != job.seed for r in per_bits):
                        per_bits.append({"seed": job.seed, "out": str(job.folder),
                                         **{key: result["test"].get(key)
                                            for key in RETRIEVAL_KEYS}})
            row["bits"][str(b)] = {"runs": records, **summary(records, keys)}
        rows.append(row)
    for name, per_bits in baselines.items():
        rows.append({"method": name, "kind": "baseline", "target": name,
                     "bits": {b: {"runs": recs, **summary(recs, RETRIEVAL_KEYS)}
                              for b, recs in per_bits.items()}})
    return rows, normalisations
