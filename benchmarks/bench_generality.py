"""Generality check (issue 12 item 4): the default ``avsearch run`` on data it was not tuned on.

For each seed, each data set (avdigits variants built with ``avsearch data build avdigits
--variant NAME`` into ``--data-dir`` when missing, and the built-in ``avdigits``) and each
configuration, runs ``avsearch run --space av_nas ... --out OUT/runs/DATA-CONFIG-sSEED --quiet``
in a subprocess. Seed-major order, so a partial benchmark has seed 0 of everything first.
A run folder with ``metrics.json`` is kept, one with only ``run.json`` is resumed
(``--resume``): running the same command again continues a stopped benchmark.

Configurations, most informative first:

* ``mamba``: ``--arch mamba``, default recipe, with the baselines (its LSH/ITQ/MLP/CNN are the
  table's baseline rows);
* ``csp``: ``--strategy csp``, default recipe, ``--no-baselines``;
* ``mamba-paper``: ``--arch mamba --recipe paper --no-baselines`` (AV-NAS's InfoNCE, Adam);
* ``transformer``: ``--arch transformer --no-baselines``.

Then (or with ``--table-only``) writes ``OUT/generality.md`` and ``OUT/generality.json``: per
data set, test mAP@5/@20/@100 as mean ± sample std over the seeds that finished (n), the wall
time of each run as this script measured it (the whole subprocess: data loading, training,
evaluation, and for ``mamba`` the baselines), and the training time avsearch books (resumed
parts included).

Usage::

    python benchmarks/bench_generality.py [--data v30,few,long,avdigits] [--seeds 0,1,2]
        [--configs mamba,csp,mamba-paper,transformer] [--out benchmarks/results/generality]
        [--data-dir OUT/data] [--table-only]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from avsearch._files import atomic_write
from avsearch.cli import parse_ints, parse_names
from avsearch.compare.measure import summary
from avsearch.compare.report import cell

ROOT = Path(__file__).resolve().parent.parent
CONFIGS: dict[str, list[str]] = {   # in priority order
    "mamba": ["--arch", "mamba"],
    "csp": ["--strategy", "csp", "--no-baselines"],
    # csp in the paper's space, whose T pools by the mean only (the default until issue 12's
    # pooling runs)
    "csp-mean": ["--strategy", "csp", "--no-baselines", "--set", "pools=mean"],
    "mamba-paper": ["--arch", "mamba", "--recipe", "paper", "--no-baselines"],
    "transformer": ["--arch", "transformer", "--no-baselines"],
    # the presets max-pooled over time (issue 12)
    "transformer-max": ["--arch", "transformer", "--no-baselines", "--set", "pools=max"],
    "mamba-max": ["--arch", "mamba", "--no-baselines", "--set", "pools=max"],
}
BASELINES = ("CNN", "MLP", "ITQ")   # taken from the mamba runs
BASELINE_OF = "mamba"
DATA = ("v30", "few", "long", "avdigits")
KS = (5, 20, 100)
KEYS = [f"map@{k}" for k in KS] + ["wall_s", "train_s"]


def avsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "avsearch.cli", *args]


def shown(cmd: list[str]) -> str:
    """A command as a user types it (``avsearch ...``)."""
    return shlex.join(["avsearch", *cmd[3:]] if cmd[:3] == avsearch() else cmd)


def data_path(name: str, data_dir: Path) -> str:
    """``--data`` for a data set: the built-in name, or the variant's file (built if missing)."""
    if name == "avdigits":
        return name
    path = data_dir / f"avdigits-{name}.npz"
    if not path.exists():
        cmd = avsearch("data", "build", "avdigits", "--variant", name, "--out", str(data_dir))
        print(f"building {name}: {shown(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
    return str(path.resolve())


def run_command(data: str, config: str, seed: int | str, folder: Path, resume: bool) -> list[str]:
    return avsearch("run", "--space", "av_nas", *CONFIGS[config], "--data", data,
                    "--seed", str(seed), "--out", str(folder), "--quiet",
                    *(["--resume"] if resume else []))


CODE = ("avsearch", "strategies", "spaces")   # what a run imports from this tree


def code_version() -> dict[str, Any]:
    """The commit the tree is at, and which of its code files differ from it (the tree is
    shared: code can change between the runs of one benchmark)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *args],
                              capture_output=True, text=True).stdout
    diff = git("diff", "HEAD", "--", *CODE)
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "modified": git("diff", "HEAD", "--name-only", "--", *CODE).split(),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None}


def run_one(cmd: list[str], folder: Path, log: Path) -> int:
    """Run ``cmd`` (output to ``log``) and record the attempt in ``folder/bench.json``: start,
    code version, load, and wall time (None for an attempt that was killed)."""
    bench = folder / "bench.json"
    record = json.loads(bench.read_text()) if bench.exists() else {"attempts": []}
    attempt = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": None, "rc": None,
               "resume": "--resume" in cmd, "code": code_version(),
               "loadavg_1min_at_start": os.getloadavg()[0]}
    record["attempts"].append(attempt)

    def save() -> None:
        record["wall_s"] = round(sum(a["wall_s"] or 0 for a in record["attempts"]), 1)
        if folder.is_dir():
            atomic_write(bench, json.dumps(record, indent=2))

    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {shown(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        saved = False
        while proc.poll() is None:   # record the attempt as soon as the run made its folder
            if not saved and folder.is_dir():
                save()
                saved = True
            time.sleep(5)
    attempt.update(wall_s=round(time.perf_counter() - t0, 1), rc=proc.returncode,
                   loadavg_1min_at_end=os.getloadavg()[0])
    save()
    return proc.returncode


def run_all(args: argparse.Namespace) -> None:
    paths = {name: data_path(name, args.data_dir) for name in args.data}
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    plan = [(s, d, c) for s in args.seeds for d in args.data for c in args.configs]
    for i, (seed, name, config) in enumerate(plan, 1):
        folder = args.out / "runs" / f"{name}-{config}-s{seed}"
        if (folder / "metrics.json").exists():
            continue
        resume = (folder / "run.json").exists()
        cmd = run_command(paths[name], config, seed, folder.resolve(), resume)
        print(f"[{i}/{len(plan)}] {time.strftime('%H:%M:%S')} {shown(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = run_one(cmd, folder, args.out / "logs" / f"{folder.name}.log")
        status = "done" if rc == 0 else f"FAILED (exit {rc}, see logs/{folder.name}.log)"
        print(f"    {status} after {time.perf_counter() - t0:.0f} s", flush=True)
        write_table(args)   # the table follows the runs


# ---------------------------------------------------------------- the table
def _record(folder: Path) -> dict[str, Any] | None:
    """A finished run's numbers: test mAP@K, wall and training time, and its baselines."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    bench = folder / "bench.json"
    attempts = json.loads(bench.read_text())["attempts"] if bench.exists() else []
    # wall time only when every attempt ended (a killed one has none)
    wall = round(sum(a["wall_s"] for a in attempts), 1) \
        if attempts and all(a["wall_s"] is not None for a in attempts) else None
    t = metrics["time"]
    train = t["search_s"] + t.get("halving_s", 0.0) + t["finetune_s"]
    rec = {**{f"map@{k}": metrics["test"].get(f"map@{k}") for k in KS}, "wall_s": wall,
           "train_s": round(train, 1), "params": metrics.get("params"),
           "code": attempts[-1].get("code") if attempts else None}
    history = folder / "history.jsonl"
    lines = [json.loads(x) for x in history.read_text().splitlines() if x.strip()] \
        if history.exists() else []
    rec["baselines"] = {}
    for name, b in metrics.get("baselines", {}).items():
        stage = f"baseline-{name.lower()}"
        train = sum(x.get("train_seconds", 0) for x in lines if x.get("stage") == stage)
        rec["baselines"][name] = {**{f"map@{k}": b["test"].get(f"map@{k}") for k in KS},
                                  "wall_s": None, "train_s": round(train, 1) if train else None}
    return rec


def perfect(data: str) -> dict[str, float]:
    """Test mAP@K of a perfect ranking: min(K, R_q) / K averaged over queries (normalised by K,
    R_q the database items sharing a label with query q)."""
    import numpy as np

    from avsearch.data import load_dataset
    d = load_dataset(data)
    q, db = d.split("test").labels.astype(np.float32), d.split("retrieval").labels.astype(np.float32)
    relevant = ((q @ db.T) > 0).sum(axis=1)
    return {f"map@{k}": round(float(np.minimum(k, relevant).mean() / k), 4) for k in KS}


def table(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"settings": {"data": args.data, "configs": args.configs,
                                           "seeds": args.seeds,
                                           "commands": {c: shown(run_command("DATA", c, "SEED", Path("OUT"), False))
                                                        for c in args.configs}},
                              "data": {}}
    for name in args.data:
        path = args.data_dir / f"avdigits-{name}.npz"
        entry: dict[str, Any] = {"file": str(path) if name != "avdigits" else "built-in",
                                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()
                                 if path.exists() else None, "rows": []}
        if name == "avdigits" or path.exists():
            entry["perfect"] = perfect(name if name == "avdigits" else str(path))
        per_config = {}
        for config in args.configs:
            runs = {s: _record(args.out / "runs" / f"{name}-{config}-s{s}") for s in args.seeds}
            per_config[config] = {s: r for s, r in runs.items() if r is not None}
        rows = [(c, "config", per_config[c]) for c in args.configs]
        if BASELINE_OF in per_config:
            rows += [(b, "baseline", {s: r["baselines"][b] for s, r in per_config[BASELINE_OF].items()
                                      if b in r["baselines"]}) for b in BASELINES]
        for method, kind, runs in rows:
            entry["rows"].append({"method": method, "kind": kind, "n": len(runs),
                                  "seeds": sorted(runs), "per_seed": {str(s): r for s, r in runs.items()},
                                  **_summary_present(list(runs.values()))})
        result["data"][name] = entry
    return result


def _summary_present(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std of each key over the records that have it (wall time can be missing)."""
    out: dict[str, Any] = {"mean": {}, "std": {}}
    for key in KEYS:
        stats = summary([r for r in records if r.get(key) is not None], [key])
        out["mean"][key], out["std"][key] = stats["mean"][key], stats["std"][key]
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Generality check: av_nas at the default budget on avdigits variants", "",
             "Test queries against the retrieval database, 64 bits, mAP normalised by K; "
             "mean ± sample std over the n seeds that finished. Baselines (CNN, MLP, ITQ) are "
             f"those of the `{BASELINE_OF}` runs (same recipe and budget). Wall: the whole "
             "`avsearch run` subprocess on a shared 2-core machine (for mamba, including training "
             "the baselines); train: search + successive-halving + finetune seconds avsearch "
             "books (for a baseline, "
             "its training epochs without validation).", ""]
    for config, cmd in result["settings"]["commands"].items():
        lines.append(f"- `{config}`: `{cmd}`")
    header = ["method", "n", *(f"mAP@{k}" for k in KS), "wall / run (s)", "train (s)"]
    for name, entry in result["data"].items():
        lines += ["", f"## {name}" + (f" (`{Path(entry['file']).name}`)" if entry["file"] != "built-in" else ""), "",
                  "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        for row in entry["rows"]:
            label = row["method"] + (" (baseline)" if row["kind"] == "baseline" else "")
            if row["n"] == 0:
                cells = ["–"] * (len(header) - 2)
            else:
                cells = [cell(row, f"map@{k}", "map") for k in KS] + \
                        [cell(row, "wall_s", "s"), cell(row, "train_s", "s")]
            lines.append("| " + " | ".join([label, str(row["n"]), *cells]) + " |")
        if "perfect" in entry:
            lines.append("| perfect ranking | | " + " | ".join(f"{entry['perfect'][f'map@{k}']:.4f}" for k in KS)
                         + " | | |")
    versions: dict[str, int] = {}
    for entry in result["data"].values():
        for row in entry["rows"]:
            if row["kind"] == "config":
                for r in row["per_seed"].values():
                    c = r.get("code")
                    v = "unrecorded" if not c else c["commit"] + (
                        f" + uncommitted changes (diff {c['diff_sha256']}: {', '.join(c['modified'])})"
                        if c["diff_sha256"] else "")
                    versions[v] = versions.get(v, 0) + 1
    lines += ["", "Code the finished runs ran (the tree is shared and changes between runs):", ""]
    lines += [f"- {n} run(s): {v}" for v, n in versions.items()]
    return "\n".join(lines) + "\n"


def write_table(args: argparse.Namespace) -> str:
    result = table(args)
    text = markdown(result)
    atomic_write(args.out / "generality.json", json.dumps(result, indent=2))
    atomic_write(args.out / "generality.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=",".join(DATA), help="data sets: avdigits and variant names")
    p.add_argument("--configs", default=",".join(CONFIGS), help=", ".join(CONFIGS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generality"))
    p.add_argument("--data-dir", help="where variants are built (default OUT/data)")
    p.add_argument("--table-only", action="store_true", help="write the table from finished runs")
    args = p.parse_args(argv)
    args.data = parse_names(args.data, "--data")
    args.configs = parse_names(args.configs, "--configs")
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)} (choose from {', '.join(CONFIGS)})")
    args.seeds = parse_ints(args.seeds, "--seeds")
    args.out = Path(args.out)
    args.data_dir = Path(args.data_dir) if args.data_dir else args.out / "data"
    if not args.table_only:
        run_all(args)
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_table(args), end="")
    print(f"wrote {args.out / 'generality.md'}, {args.out / 'generality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
