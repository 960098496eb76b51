"""LAGNH's claims checked on ``fashion4`` (issue 15 item 6): the ``paper`` and ``no_aux``
presets, csp on the ``lagnh`` space, and the LSH/ITQ/PCAH/SH baselines the ``paper`` runs
fit, at 16/32/64/128 bits over seeds 0, 1, 2; and the deep baseline's training time.

Each run is ``avsearch run --space lagnh --objective lagnh --data fashion4 --bits BITS --seed
SEED --out OUT/runs/CONFIG-bBITS-sSEED --quiet`` plus the configuration's flags, in a
subprocess, as ``benchmarks/bench_generality.py`` runs them (its ``run_one`` records every
attempt's code version, load and wall time in the folder's ``bench.json``). A folder with
``metrics.json`` is kept, one with only ``run.json`` is resumed: the same command continues a
stopped experiment. Runs go in priority order (``--bits``' order, seed by seed, then
``--configs``'), so cutting it short leaves the most informative runs done.

Configurations:

* ``paper``: ``--arch paper`` (Table 1), with the baselines (LSH, ITQ, PCAH, SH: fitted with
  the run's seed on the same features; their rows in the table are these runs');
* ``no_aux``: ``--arch no_aux`` (LAGNH-no-aux), ``--no-baselines``;
* ``csp``: ``--strategy csp`` on the whole space, ``--no-baselines``;
* ``supcon``: the deep baselines for training time: ``--arch paper`` under the default,
  supervised recipe (``--objective supcon``), whose baselines are the MLP and temporal-CNN
  hash networks trained on the same features for the same epochs (under ``--objective
  lagnh`` avsearch trains no deep baseline: LAGNH's loss reads nodes they lack).

Then (or with ``--table-only``) writes ``OUT/lagnh.md`` and ``OUT/lagnh.json``: test MAP@1000
(test queries against the retrieval set, relevance = a shared label) as mean ± sample std over
the seeds that finished, per code length; the paired differences paper − no_aux, paper − ITQ
and csp − ITQ per seed; and training seconds.

    python experiments/lagnh/lagnh.py [--configs paper,no_aux,csp] [--bits 64,16,32,128]
        [--seeds 0,1,2] [--out benchmarks/results/lagnh] [--table-only]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generality import _record as generality_record  # noqa: E402
from bench_generality import avsearch, run_one, shown  # noqa: E402

from avsearch._files import atomic_write  # noqa: E402
from avsearch.cli import parse_ints, parse_names  # noqa: E402
from avsearch.compare.measure import summary  # noqa: E402
from avsearch.compare.report import cell  # noqa: E402

BASE = ["run", "--space", "lagnh", "--data", "fashion4"]
LAGNH = ["--objective", "lagnh"]
CONFIGS: dict[str, list[str]] = {   # in priority order
    "paper": [*LAGNH, "--arch", "paper"],
    "no_aux": [*LAGNH, "--arch", "no_aux", "--no-baselines"],
    "csp": [*LAGNH, "--strategy", "csp", "--no-baselines"],
    # the deep baselines: the default (supervised) recipe trains the MLP and temporal CNN
    # hash networks on the same features (and the paper preset with labels)
    "supcon": ["--arch", "paper"],
    # the Gaussian kernel's bandwidth (issue 15 item 2a; the default is 0.1): chosen on
    # validation MAP@1000 only
    **{f"bw{v}": [*LAGNH, "--arch", "paper", "--no-baselines", "--set", f"bandwidth={v}"]
       for v in ("0.03", "0.3", "1.0")},
}
# a baseline's rows come from the runs of one configuration
BASELINE_OF = {"LSH": "paper", "ITQ": "paper", "PCAH": "paper", "SH": "paper",
               "MLP": "supcon", "CNN": "supcon"}
BITS = (64, 16, 32, 128)
KEY = "map@1000"
PAIRS = (("paper", "no_aux"), ("paper", "ITQ"), ("csp", "ITQ"), ("paper", "LSH"),
         ("csp", "paper"))


def folder_name(config: str, bits: int | str, seed: int | str) -> str:
    return f"{config}-b{bits}-s{seed}"


def run_command(config: str, bits: int | str, seed: int | str, folder: Path,
                resume: bool) -> list[str]:
    return avsearch(*BASE, *CONFIGS[config], "--bits", str(bits), "--seed", str(seed),
                    "--out", str(folder), "--quiet", *(["--resume"] if resume else []))


def plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(config, bits, seed) in priority order: code lengths, then seeds, then configurations
    (so a seed's paper and no_aux runs, the ablation's pair, finish together)."""
    return [(c, b, s) for b in args.bits for s in args.seeds for c in args.configs]


def run_all(args: argparse.Namespace) -> None:
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    todo = plan(args)
    for i, (config, bits, seed) in enumerate(todo, 1):
        folder = args.out / "runs" / folder_name(config, bits, seed)
        if (folder / "metrics.json").exists():
            continue
        cmd = run_command(config, bits, seed, folder.resolve(), (folder / "run.json").exists())
        print(f"[{i}/{len(todo)}] {time.strftime('%H:%M:%S')} {shown(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = run_one(cmd, folder, args.out / "logs" / f"{folder.name}.log")
        status = "done" if rc == 0 else f"FAILED (exit {rc}, see logs/{folder.name}.log)"
        print(f"    {status} after {time.perf_counter() - t0:.0f} s", flush=True)
        write_table(args)


# ---------------------------------------------------------------- the table
def _record(folder: Path) -> dict[str, Any] | None:
    """A finished run's test and validation MAP@1000, the training seconds, wall time and code
    version ``bench_generality`` reads (for the MLP and CNN baselines, their training
    epochs' seconds), the load at each attempt's start, and its baselines' MAP@1000."""
    rec = generality_record(folder)
    if rec is None:
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    bench = folder / "bench.json"
    rec.update({KEY: metrics["test"][KEY], "val": metrics["val"].get(KEY),
                "arch_id": metrics.get("arch_id"),
                "load": [a.get("loadavg_1min_at_start")
                         for a in (json.loads(bench.read_text())["attempts"] if bench.exists() else [])]})
    for name, b in metrics.get("baselines", {}).items():
        rec["baselines"][name].update({KEY: b["test"][KEY], "val": b["val"].get(KEY)})
    # the network's training epochs without validation, as a baseline's seconds are counted
    history = [json.loads(x) for x in (folder / "history.jsonl").read_text().splitlines() if x.strip()]
    epochs = [x["train_seconds"] for x in history
              if "train_seconds" in x and not x.get("stage", "").startswith("baseline-")]
    rec["epochs_s"] = round(sum(epochs), 1) if epochs else None
    return rec


def _scores(runs: dict[str, dict[int, dict[int, dict[str, Any]]]], method: str, bits: int
            ) -> dict[int, float]:
    """Test MAP@1000 per seed of a configuration or a baseline at ``bits``."""
    return {s: r[KEY] for s, r in _runs(runs, method, bits).items()}


def _runs(runs: dict[str, dict[int, dict[int, dict[str, Any]]]], method: str, bits: int
          ) -> dict[int, dict[str, Any]]:
    """Per seed, a configuration's run records, or a baseline's records in its runs."""
    if method in BASELINE_OF:
        return {s: r["baselines"][method] for s, r in runs.get(BASELINE_OF[method], {}).get(bits, {}).items()
                if method in r["baselines"]}
    return runs.get(method, {}).get(bits, {})


def _available(method: str, configs: list[str]) -> bool:
    return method in configs or BASELINE_OF.get(method) in configs


def table(args: argparse.Namespace) -> dict[str, Any]:
    runs = {c: {b: {s: r for s in args.seeds
                    if (r := _record(args.out / "runs" / folder_name(c, b, s))) is not None}
                for b in args.bits} for c in args.configs}
    bits = sorted(args.bits)
    rows = []
    for method in [*args.configs, *(m for m in BASELINE_OF if _available(m, args.configs))]:
        row: dict[str, Any] = {"method": method, "bits": {}}
        for b in bits:
            scores = _scores(runs, method, b)
            recs = [{KEY: v} for v in scores.values()]
            row["bits"][str(b)] = {"n": len(recs), "per_seed": scores, **summary(recs, [KEY])}
            vals = {s: r["val"] for s, r in _runs(runs, method, b).items() if r.get("val") is not None}
            row["bits"][str(b)]["val"] = {"per_seed": vals,
                                          **summary([{KEY: v} for v in vals.values()], [KEY])}
            times = [{"train_s": r["train_s"] if r.get("epochs_s") is None else r["epochs_s"]}
                     for r in _runs(runs, method, b).values()
                     if r.get("train_s") is not None]
            row["bits"][str(b)]["train_s"] = summary(times, ["train_s"]) if times else None
        rows.append(row)
    pairs = []
    for a, b_ in PAIRS:
        if not (_available(a, args.configs) and _available(b_, args.configs)):
            continue
        entry: dict[str, Any] = {"pair": f"{a} − {b_}", "bits": {}}
        for b in bits:
            sa, sb = _scores(runs, a, b), _scores(runs, b_, b)
            diffs = {s: sa[s] - sb[s] for s in sa if s in sb}
            if diffs:
                entry["bits"][str(b)] = {"n": len(diffs), "per_seed": diffs,
                                         "mean": statistics.mean(diffs.values()),
                                         "std": statistics.stdev(diffs.values()) if len(diffs) > 1 else None,
                                         "above": sum(d > 0 for d in diffs.values())}
        pairs.append(entry)
    commands = {c: shown(run_command(c, "BITS", "SEED", Path("OUT"), False)) for c in args.configs}
    return {"settings": {"configs": args.configs, "bits": bits, "seeds": args.seeds,
                         "metric": "test MAP@1000, test queries against the retrieval set",
                         "commands": commands},
            "rows": rows, "paired": pairs,
            "runs": {c: {str(b): {str(s): r for s, r in per.items()} for b, per in by_bits.items()}
                     for c, by_bits in runs.items()}}


def markdown(result: dict[str, Any]) -> str:
    bits = result["settings"]["bits"]
    lines = ["Test MAP@1000 on `fashion4` (test queries against the retrieval set, relevance = "
             "sharing a label), mean ± sample std over the n seeds that finished (of "
             f"{', '.join(map(str, result['settings']['seeds']))}); models selected on the "
             "validation split only. LSH, ITQ, PCAH, SH: fitted inside the `paper` runs; "
             "MLP, CNN (deep hash networks, supervised contrastive): trained inside the "
             "`supcon` runs (same seed, same features).", "",
             "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|" + "---:|" * len(bits)]
    for row in result["rows"]:
        if row["method"].startswith("bw"):
            continue   # the bandwidth's own table below
        cells = []
        for b in bits:
            c = row["bits"][str(b)]
            cells.append("–" if not c["n"] else f"{cell(c, KEY, 'map')} ({c['n']})")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences of test MAP@1000 (same seed), mean ± std (seeds above 0 "
              "of n):", "", "| pair | " + " | ".join(f"{b} bits" for b in bits) + " |",
              "|---|" + "---:|" * len(bits)]
    for p in result["paired"]:
        cells = []
        for b in bits:
            c = p["bits"].get(str(b))
            cells.append("–" if c is None else f"{c['mean']:+.3f}"
                         + (f" ± {c['std']:.3f}" if c["std"] is not None else "")
                         + f" ({c['above']}/{c['n']})")
        lines.append(f"| {p['pair']} | " + " | ".join(cells) + " |")
    lines += ["", "Training seconds: the training epochs' seconds without validation (search, "
              "successive halving and finetune stages; for the MLP and CNN their epochs), one "
              "thread, on a shared 2-core machine under load 4-7 (not a speed claim):", "",
              "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
              "|---|" + "---:|" * len(bits)]
    for row in result["rows"]:
        if not any(row["bits"][str(b)].get("train_s") for b in bits) or row["method"].startswith("bw"):
            continue   # LSH, ITQ, ...: not timed
        cells = [cell(row["bits"][str(b)]["train_s"], "train_s", "s")
                 if row["bits"][str(b)].get("train_s") else "–" for b in bits]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    bandwidths = [r for r in result["rows"] if r["method"] == "paper" or r["method"].startswith("bw")]
    if any(r["method"].startswith("bw") and any(c["n"] for c in r["bits"].values()) for r in bandwidths):
        lines += ["", "The Gaussian kernel's bandwidth (`--set bandwidth=`, `paper` = the default "
                  "0.1), `paper` preset: **validation** MAP@1000 per seed (the choice reads only "
                  "these), test beside it:", "",
                  "| bandwidth | bits | " + " | ".join(f"val s{s}" for s in result["settings"]["seeds"])
                  + " | val mean | test mean |", "|---|---:|" + "---:|" * (len(result["settings"]["seeds"]) + 2)]
        for row in bandwidths:
            for b in bits:
                c = row["bits"][str(b)]
                if not c["val"]["per_seed"] or not any(
                        r["bits"][str(b)]["val"]["per_seed"] for r in bandwidths if r["method"] != "paper"):
                    continue
                per = [f"{c['val']['per_seed'][s]:.4f}" if s in c["val"]["per_seed"] else "–"
                       for s in result["settings"]["seeds"]]
                name = "0.1 (paper)" if row["method"] == "paper" else row["method"][2:]
                lines.append(f"| {name} | {b} | " + " | ".join(per)
                             + f" | {c['val']['mean'][KEY]:.4f} | {c['mean'][KEY]:.4f} |")
    lines += ["", "Commands (one per configuration, code length and seed):", ""]
    lines += [f"- `{c}`: `{cmd}`" for c, cmd in result["settings"]["commands"].items()]
    return "\n".join(lines) + "\n"


def write_table(args: argparse.Namespace) -> str:
    result = table(args)
    text = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "lagnh.json", json.dumps(result, indent=2))
    atomic_write(args.out / "lagnh.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help=", ".join(CONFIGS))
    p.add_argument("--bits", default=",".join(map(str, BITS)))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lagnh"))
    p.add_argument("--table-only", action="store_true", help="write the table from finished runs")
    args = p.parse_args(argv)
    args.configs = parse_names(args.configs, "--configs")
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)} (choose from {', '.join(CONFIGS)})")
    args.bits, args.seeds = parse_ints(args.bits, "--bits"), parse_ints(args.seeds, "--seeds")
    args.out = Path(args.out)
    if not args.table_only:
        run_all(args)
    print(write_table(args), end="")
    print(f"wrote {args.out / 'lagnh.md'}, {args.out / 'lagnh.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
