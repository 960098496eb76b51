"""``avsearch compare``: Table 2 of AV-NAS for any space, strategies and data.

Every method — each search strategy, each preset (expert architecture) of the space, and a few
random architectures trained from scratch — is run with the same data, budget, code lengths
and seeds through :func:`avsearch.run.run`, one run folder each under ``OUT/runs/``. The
comparison then reads the runs' ``metrics.json``, times inference itself, and writes
``compare.md`` (Table 2's columns), ``compare.json`` (every number, per seed too) and
``compare.png``.

Runs are kept: a folder with ``metrics.json`` is not run again and one with only ``run.json``
is resumed, so running the same command again continues where a killed comparison stopped.
Everything the user gave is checked before anything runs or is written.
"""
from __future__ import annotations

import io
import json
import math
import random
import shlex
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from avsearch.arch import Architecture, atomic_write
from avsearch.errors import AvsearchInputError
from avsearch.inference import DEFAULT_KS

__all__ = ["CompareSettings", "compare", "parse_names", "parse_ints", "time_inference",
           "markdown_table", "FORMAT", "TABLE_KS", "RANDOM_SEED"]

FORMAT = "avsearch.compare/1"
TABLE_KS = (5, 100)          # the Markdown table's mAP@K columns (compare.json has DEFAULT_KS)
# the retrieval numbers of a run: mAP at every K, and GmAP (VHMT Eq. 29, the SSVH papers' summary)
RETRIEVAL_KEYS = tuple(f"map@{k}" for k in DEFAULT_KS) + ("gmap",)
RANDOM_SEED = 0              # random-i is the i-th draw of space.sample(random.Random(0))
INFERENCE_REPEATS = 3

# the per-run numbers that are averaged over seeds (besides map@K)
_TIME_KEYS = ("supernet_s_per_epoch", "search_s", "search_total_s", "finetune_s_per_epoch",
              "train_total_s", "inference_ms_per_video", "params")

_NORMALISATION = {
    "k": "K (the SSVH papers' convention)",
    "retrieved": "the number of relevant items retrieved (the AV-NAS code's convention)",
    "min": "min(K, number of relevant items)",
}


@dataclass
class CompareSettings:
    """The settings of one ``avsearch compare`` (also written to ``compare.json``)."""

    space: str = "av_nas"
    strategies: list[str] | None = None    # None: every registered strategy
    presets: list[str] | None = None       # None: every preset of the space
    random_archs: int = 2
    data: str = "avdigits"
    objective: str = "infonce"
    objective_options: dict[str, str] = field(default_factory=dict)
    budget: str = "quick"
    epochs: int | None = None
    bits: list[int] | None = None          # None: the space's default code length
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    sets: dict[str, str] = field(default_factory=dict)
    baselines: bool = False


@dataclass
class _Method:
    name: str                  # row label and run-folder prefix
    kind: str                  # strategy | preset | random
    target: str                # strategy name, preset name, or .arch path


@dataclass
class _Job:
    method: _Method
    bits: int | None
    seed: int
    folder: Path
    settings: Any              # avsearch.run.RunSettings

    @property
    def label(self) -> str:
        bits = f", {self.bits} bits" if self.bits is not None else ""
        return f"{self.method.name}{bits}, seed {self.seed}"


# ---------------------------------------------------------------- parsing helpers for the CLI
def parse_names(text: str | None, flag: str) -> list[str] | None:
    """``"csp,darts"`` -> ``["csp", "darts"]``; ``""`` or ``"none"`` -> ``[]``; None -> None."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise AvsearchInputError(f"{flag} {text!r}: expected comma-separated names")
    return list(dict.fromkeys(names))


def parse_ints(text: str | None, flag: str, minimum: int | None = None) -> list[int] | None:
    """``"32,64"`` -> ``[32, 64]`` (None -> None); bad or repeated values are bad input."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise AvsearchInputError(f"{flag} {text!r}: expected comma-separated integers") from None
    if minimum is not None and any(v < minimum for v in values):
        raise AvsearchInputError(f"{flag} {text!r}: every value must be >= {minimum}")
    if len(set(values)) != len(values):
        raise AvsearchInputError(f"{flag} {text!r}: a value is repeated")
    return values


def command_line(settings: CompareSettings, out: Path, methods: Sequence[_Method],
                 bits: Sequence[int | None]) -> str:
    """The full command (every option explicit) that reproduces this comparison."""
    strategies = [m.target for m in methods if m.kind == "strategy"]
    presets = [m.target for m in methods if m.kind == "preset"]
    args = ["avsearch", "compare", "--space", settings.space,
            "--strategies", ",".join(strategies) or "none",
            "--presets", ",".join(presets) or "none",
            "--random-archs", str(settings.random_archs), "--data", settings.data,
            "--objective", settings.objective]
    for key, value in settings.objective_options.items():
        args += ["--objective-set", f"{key}={value}"]
    args += ["--budget", settings.budget]
    if settings.epochs is not None:
        args += ["--epochs", str(settings.epochs)]
    if any(b is not None for b in bits):
        args += ["--bits", ",".join(str(b) for b in bits)]
    args += ["--seeds", ",".join(map(str, settings.seeds)), "--device", settings.device]
    for key, value in settings.sets.items():
        args += ["--set", f"{key}={value}"]
    if settings.baselines:
        args.append("--baselines")
    args += ["--out", str(out)]
    return shlex.join(args)


# ---------------------------------------------------------------- planning (validates, writes nothing)
def _plan(settings: CompareSettings, out: Path) -> tuple[list[_Method], list[int | None],
                                                          dict[str, dict[str, str]], list[_Job], Any]:
    from avsearch.data import load_dataset
    from avsearch.inference import resolve_device
    from avsearch.objectives import get_objective
    from avsearch.run import RunSettings, prepare_space
    from avsearch.strategies import get_strategy, list_strategies
    from avsearch.train import get_budget

    if settings.random_archs < 0:
        raise AvsearchInputError(f"--random-archs must be >= 0, got {settings.random_archs}")
    if not settings.seeds:
        raise AvsearchInputError("--seeds: give at least one seed")
    if len(set(settings.seeds)) != len(settings.seeds):
        raise AvsearchInputError(f"--seeds {settings.seeds}: a seed is repeated")
    if settings.bits is not None:
        if not settings.bits:
            raise AvsearchInputError("--bits: give at least one code length")
        if any(b < 1 for b in settings.bits) or len(set(settings.bits)) != len(settings.bits):
            raise AvsearchInputError(f"--bits {settings.bits}: code lengths must be >= 1 and distinct")
    strategies = list(list_strategies()) if settings.strategies is None else list(settings.strategies)
    for name in strategies:
        get_strategy(name)          # unknown names are bad input, before anything runs
    get_budget(settings.budget, settings.epochs)
    objective = get_objective(settings.objective, **settings.objective_options)
    resolve_device(settings.device)
    data = load_dataset(settings.data)
    spaces = [prepare_space(settings.space, settings.sets, data, b, objective)
              for b in (settings.bits or [None])]
    bits = [s.config.get("bits") for s in spaces]
    space = spaces[0]
    presets = list(space.presets) if settings.presets is None else list(settings.presets)
    for name in presets:
        if name not in space.presets:
            raise AvsearchInputError(f"space {space.name!r} has no preset {name!r} "
                                     f"(presets: {', '.join(space.presets) or 'none'})")

    randoms = _sample_random(space, settings.random_archs)
    methods = [_Method(n, "strategy", n) for n in strategies]
    taken = set(strategies)
    for name in presets:
        label = name if name not in taken else f"preset-{name}"
        methods.append(_Method(label, "preset", name))
        taken.add(label)
    for name in randoms:
        path = (out / "archs" / f"{name}.arch").resolve()
        methods.append(_Method(name, "random", str(path)))
    if not methods:
        raise AvsearchInputError("nothing to compare: no strategies, presets or random architectures")

    if out.exists() and not out.is_dir():
        raise AvsearchInputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / "runs").is_dir()
                                                    or (out / "compare.json").exists()):
        raise AvsearchInputError(f"{out}: folder exists, is not empty and holds no comparison "
                                 f"(give another --out)")

    jobs = []
    for method in methods:
        for b in bits:
            for seed in settings.seeds:
                folder = out / "runs" / (f"{method.name}-{b}b-s{seed}" if b is not None
                                         else f"{method.name}-s{seed}")
                run_settings = RunSettings(
                    space=settings.space, strategy=method.target if method.kind == "strategy" else "csp",
                    arch=None if method.kind == "strategy" else method.target, data=settings.data,
                    objective=settings.objective,
                    objective_options=dict(settings.objective_options), bits=b, budget=settings.budget,  # resolved: --bits 64 and no --bits are one run
                    epochs=settings.epochs, seed=seed, device=settings.device,
                    sets=dict(settings.sets),
                    baselines=settings.baselines and method is methods[0])
                jobs.append(_Job(method, b, seed, folder, run_settings))
    for job in jobs:
        _check_existing(job)
    for name, choices in randoms.items():
        path = out / "archs" / f"{name}.arch"
        if path.exists():
            try:
                same = Architecture.load(path).choices == choices
            except AvsearchInputError:
                same = False
            if not same:
                raise AvsearchInputError(f"{path}: not the architecture {name} this comparison "
                                         f"samples (edited, or another space?); give another --out")
    return methods, bits, randoms, jobs, data


def _sample_random(space, n: int) -> dict[str, dict[str, str]]:
    """``n`` distinct uniform draws from ``space``; the same for every seed and code length
    (seeds vary how an architecture is trained, not which one it is)."""
    rng = random.Random(RANDOM_SEED)
    out: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        choices = space.sample(rng)
        arch_id = space.arch_id(choices)
        if arch_id not in seen:
            seen.add(arch_id)
            out[f"random-{len(out) + 1}"] = choices
    return out


def _check_existing(job: _Job) -> None:
    """A run folder left by an earlier comparison must hold the same run (bar baselines)."""
    run_json = job.folder / "run.json"
    if not run_json.exists():
        if job.folder.is_dir() and any(p for p in job.folder.iterdir() if not p.name.startswith(".")):
            raise AvsearchInputError(f"{job.folder}: not empty but has no run.json; remove it")
        return
    from avsearch.run import recorded_identity

    before = recorded_identity(run_json)
    wanted = job.settings.identity()
    diff = sorted(k for k in set(before) | set(wanted)
                  if k != "baselines" and before.get(k) != wanted.get(k))
    if diff:
        raise AvsearchInputError(f"{job.folder}: an earlier run with different settings "
                                 f"({', '.join(diff)}); give another --out")
    # resume as it was started, with or without baselines
    job.settings.baselines = bool(before.get("baselines", job.settings.baselines))


# ---------------------------------------------------------------- measuring
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


def _record(job: _Job, metrics: dict[str, Any], inference_ms: float) -> dict[str, Any]:
    """One run's row of Table 2: test mAP@K, times, inference, parameters."""
    t = metrics.get("time", {})
    epochs = t.get("search_epochs") or 0
    search_total = float(t.get("search_s") or 0.0)
    supernet = t.get("supernet_s", search_total if epochs else None)
    f_epochs = t.get("finetune_epochs") or 0
    finetune = float(t.get("finetune_s") or 0.0)
    rec: dict[str, Any] = {"seed": job.seed, "out": str(job.folder), "arch_id": metrics.get("arch_id")}
    rec.update({key: metrics["test"].get(key) for key in RETRIEVAL_KEYS})
    rec.update({
        "supernet_s_per_epoch": supernet / epochs if supernet is not None and epochs else None,
        # Table 2's "search time": what the search spends beyond training its supernet
        # (evolution, a controller, trials); 0 for csp and DARTS, whose supernet is the search
        "search_s": round(max(0.0, search_total - (supernet or 0.0)), 3),
        "search_total_s": search_total,
        "finetune_s_per_epoch": finetune / f_epochs if f_epochs else None,
        "train_total_s": round(search_total + finetune, 3),
        "inference_ms_per_video": inference_ms,
        "params": metrics.get("params"),
    })
    return rec


def _summary(records: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
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


# ---------------------------------------------------------------- the command
def compare(settings: CompareSettings, out: str | Path, progress: bool = True,
            log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every method (skipping finished runs), then write compare.md/.json/.png into ``out``.

    ``progress`` shows the runs' progress bars; ``log`` gets one line per run as it starts.
    Returns what ``compare.json`` holds.
    """
    from avsearch.inference import resolve_device
    from avsearch.run import run

    out = Path(out)
    methods, bits, randoms, jobs, data = _plan(settings, out)
    command = command_line(settings, out, methods, bits)

    # -- from here on, things are written
    for name, choices in randoms.items():
        path = out / "archs" / f"{name}.arch"
        if not path.exists():
            space = _space(settings, data, bits[0])
            Architecture.from_space(space, choices, provenance={
                "strategy": "random", "sampled": f"distinct draw {name.split('-')[1]} of "
                                                 f"space.sample(random.Random({RANDOM_SEED}))"}).save(path)
    n = len(jobs)
    for i, job in enumerate(jobs, 1):
        if (job.folder / "metrics.json").exists():
            log(f"[{i}/{n}] {job.label}: finished earlier, kept ({job.folder})")
            continue
        resume = (job.folder / "run.json").exists()
        log(f"[{i}/{n}] {'resuming' if resume else 'running'} {job.label} -> {job.folder}")
        run(job.settings, out=job.folder, resume=resume, progress=progress)

    # -- read the runs, time inference (after training, so every run is timed alike)
    device = resolve_device(settings.device)
    test = data.split("test")
    log(f"timing inference on the test split ({len(test)} videos, median of "
        f"{INFERENCE_REPEATS} after a warm-up) ...")
    keys = list(RETRIEVAL_KEYS) + list(_TIME_KEYS)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, dict[str, list[dict[str, Any]]]] = {}
    normalisations = set()
    for method in methods:
        row = {"method": method.name, "kind": method.kind, "target": method.target, "bits": {}}
        if method.kind == "random":
            row["choices"] = randoms[method.name]
        for b in bits:
            records = []
            for job in (j for j in jobs if j.method is method and j.bits == b):
                metrics = json.loads((job.folder / "metrics.json").read_text())
                normalisations.add(metrics.get("normalisation", "k"))
                records.append(_record(job, metrics, time_inference(job.folder / "best.arch",
                                                                    test, device)))
                for name, result in metrics.get("baselines", {}).items():
                    per_bits = baselines.setdefault(name, {}).setdefault(str(b), [])
                    if all(r["seed"] != job.seed for r in per_bits):
                        per_bits.append({"seed": job.seed, "out": str(job.folder),
                                         **{key: result["test"].get(key)
                                            for key in RETRIEVAL_KEYS}})
            row["bits"][str(b)] = {"runs": records, **_summary(records, keys)}
        rows.append(row)
    for name, per_bits in baselines.items():
        rows.append({"method": name, "kind": "baseline", "target": name,
                     "bits": {b: {"runs": recs, **_summary(recs, RETRIEVAL_KEYS)}
                              for b, recs in per_bits.items()}})

    result = {
        "format": FORMAT, "command": command,
        "settings": {**settings.__dict__, "bits": bits,
                     "strategies": [m.target for m in methods if m.kind == "strategy"],
                     "presets": [m.target for m in methods if m.kind == "preset"]},
        "data": data.name, "split": "test", "database": "retrieval",
        "normalisation": sorted(normalisations)[0] if len(normalisations) == 1 else sorted(normalisations),
        "ks": list(DEFAULT_KS), "inference_repeats": INFERENCE_REPEATS, "device": str(device),
        "methods": rows,
    }
    atomic_write(out / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write(out / "compare.md", markdown(result))
    plot_compare(result, out / "compare.png")
    return result


def _space(settings: CompareSettings, data, b: int | None):
    from avsearch.objectives import get_objective
    from avsearch.run import prepare_space
    return prepare_space(settings.space, settings.sets, data, b,
                         get_objective(settings.objective, **settings.objective_options))


# ---------------------------------------------------------------- writing
def _fmt(value: float | None, kind: str, like: float | None = None) -> str:
    """``value`` for the table; ``like`` (a mean, when ``value`` is its std) fixes unit and
    decimals, so ``0.0057 ± 0.0009`` and ``13.4 ± 0.1`` line up."""
    if value is None:
        return "–"
    ref = abs(value if like is None else like)
    if kind == "map":
        return f"{value:.4f}"
    if kind == "params":
        scale, suffix = (1e6, "M") if ref >= 1e5 else (1e3, "k")
        return f"{value / scale:.{2 if suffix == 'M' else 1}f}{suffix}"
    if ref == 0:
        return "0"
    if kind == "ms":  # three significant digits of the mean
        decimals = max(0, 2 - math.floor(math.log10(ref)))
    else:             # seconds
        decimals = 0 if ref >= 100 else 1 if ref >= 1 else 2
    return f"{value:.{decimals}f}"


def _cell(stats: dict[str, Any], key: str, kind: str) -> str:
    mean, std = stats["mean"].get(key), stats["std"].get(key)
    if mean is None:
        return "–"
    if std is None or (std == 0 and (mean == 0 or kind == "params")):
        return _fmt(mean, kind)   # one seed, or nothing varies (no search time, a fixed net)
    return f"{_fmt(mean, kind)} ± {_fmt(std, kind, like=mean)}"


_TIME_COLUMNS = (("supernet_s_per_epoch", "supernet / epoch (s)", "s"),
                 ("search_s", "search (s)", "s"),
                 ("finetune_s_per_epoch", "finetune / epoch (s)", "s"),
                 ("inference_ms_per_video", "inference (ms / video)", "ms"),
                 ("params", "params", "params"))


def _longest(bits: Sequence[Any]) -> str:
    """The longest code length (Table 2 reports times and sizes at 64 bits), as a JSON key."""
    return str(bits[-1]) if len(bits) == 1 else str(max(int(b) for b in bits))


def markdown_table(result: dict[str, Any]) -> str:
    """Table 2's layout: mAP@K at each code length, then times and size at the longest code."""
    bits = [str(b) for b in result["settings"]["bits"]]
    longest = _longest(bits)
    unit = lambda b: f" {b} bits" if b != "None" else ""  # noqa: E731
    header = ["method"] + [f"{title}{unit(b)}" for b in bits
                           for title in [*(f"mAP@{k}" for k in TABLE_KS), "GmAP"]] + \
             [title for _, title, _ in _TIME_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in result["methods"]:
        cells = [row["method"] if row["kind"] != "baseline" else f"{row['method']} (baseline)"]
        for b in bits:
            stats = row["bits"].get(b)
            cells += [_cell(stats, key, "map") if stats else "–"
                      for key in [*(f"map@{k}" for k in TABLE_KS), "gmap"]]
        stats = row["bits"].get(longest)
        cells += [_cell(stats, key, kind) if stats and row["kind"] != "baseline" else "–"
                  for key, _, kind in _TIME_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """compare.md: the command, what the numbers are, Table 2, and times at every code length."""
    s = result["settings"]
    norm = result["normalisation"]
    norm_text = _NORMALISATION.get(norm, str(norm)) if isinstance(norm, str) else \
        f"mixed ({', '.join(norm)}): do not compare these rows"
    seeds = s["seeds"]
    epochs = "" if s["epochs"] is None else f" ({s['epochs']} epochs per stage)"
    spread = (f"mean ± sample standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))})"
              if len(seeds) > 1 else f"seed {seeds[0]}")
    parts = [
        f"# avsearch compare: {s['space']} on {result['data']}", "",
        "```", result["command"], "```", "",
        f"Test queries against the retrieval database; mAP@K divided by {norm_text}. "
        f"Budget `{s['budget']}`{epochs}, {spread}, device {result['device']}.", "",
        markdown_table(result), "",
        (f"Times and parameters at {_longest(s['bits'])} bits (every code length: below). "
         if len(s["bits"]) > 1 else "") +
        "Columns: *supernet / epoch* is the search stage's supernet training per epoch; "
        "*search* is the search's time beyond that (evolution, a controller, trials: 0 when "
        "the supernet's α is the search); *finetune / epoch* trains the derived or given "
        "architecture; *inference* encodes the test split "
        f"(median of {result['inference_repeats']} passes after a warm-up); *params* counts the "
        "derived network's parameters. `–`: not applicable (no supernet; baselines are "
        "reported by mAP only). "
        + (f"`random-i` is the i-th distinct draw of `space.sample(random.Random({RANDOM_SEED}))`, "
           f"trained from scratch, the same architecture for every seed (the strategy `random` "
           f"is random search)."
           if any(r["kind"] == "random" for r in result["methods"]) else ""),
    ]
    if len(s["bits"]) > 1:
        parts += ["", "Times and size at every code length:", "",
                  "| method | bits | " + " | ".join(t for _, t, _ in _TIME_COLUMNS) + " |",
                  "|---|---:" + "|---:" * len(_TIME_COLUMNS) + "|"]
        for row in result["methods"]:
            if row["kind"] == "baseline":
                continue
            for b, stats in row["bits"].items():
                parts.append(f"| {row['method']} | {b} | " +
                             " | ".join(_cell(stats, k, kind) for k, _, kind in _TIME_COLUMNS) + " |")
    parts += ["", "All numbers, per seed too: `compare.json`; the plot: `compare.png`; the runs: "
              "`runs/<method>-<bits>b-s<seed>/`.", ""]
    return "\n".join(parts)


def plot_compare(result: dict[str, Any], path: Path, k: int = 100) -> Path:
    """Left: test mAP@k of every method, one group of bars per code length, seed std as error
    bars. Right: mAP@k against training time (search + finetune) at the longest code length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"map@{k}"
    bits = [str(b) for b in result["settings"]["bits"]]
    longest = _longest(bits)
    rows = result["methods"]
    models = [r for r in rows if r["kind"] != "baseline"]
    # tab10's nine non-grey colours (grey is the baselines'), then their light tab20 twins
    tab20 = plt.get_cmap("tab20").colors
    palette = [tab20[2 * i + light] for light in (0, 1) for i in range(10) if i != 7]
    colors = {r["method"]: palette[i % len(palette)] for i, r in enumerate(models)}
    greys = iter(["0.35", "0.55", "0.75", "0.45", "0.65"] * len(rows))
    colors.update({r["method"]: next(greys) for r in rows if r["kind"] == "baseline"})
    hatch = {"strategy": "", "preset": "//", "random": "..", "baseline": "xx"}
    marker = {"strategy": "o", "preset": "s", "random": "^"}

    n, gap = len(rows), 1.0
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(max(9.0, 4.5 + 0.42 * n * len(bits)), 4.8),
        gridspec_kw={"width_ratios": [max(1.2, 0.13 * n * len(bits)), 1]})
    ticks, labels = [], []
    for g, b in enumerate(bits):
        base = g * (n + gap)
        for i, row in enumerate(rows):
            stats = row["bits"].get(b)
            if not stats or stats["mean"].get(key) is None:
                continue
            std = stats["std"].get(key)
            ax.bar(base + i, stats["mean"][key], 0.85, yerr=std, capsize=3,
                   color=colors[row["method"]], hatch=hatch.get(row["kind"], ""),
                   edgecolor="white", linewidth=0.5, error_kw={"elinewidth": 1, "ecolor": "0.15"})
            ticks.append(base + i)
            labels.append(row["method"])
        if b != "None":  # the group's code length, above its bars
            ax.text(base + (n - 1) / 2, 0.97, f"{b} bits", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=10, fontweight="bold")
        if g:
            ax.axvline(base - (gap + 1) / 2, color="0.8", lw=0.8)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8.5)
    ax.set_xlim(-0.8, len(bits) * (n + gap) - gap - 0.2)
    ax.set_ylabel(f"test mAP@{k}")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)   # room for the code-length labels
    seeds = result["settings"]["seeds"]
    ax.set_title(f"test mAP@{k}, " + (f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1
                                       else f"seed {seeds[0]}"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    for row in models:
        stats = row["bits"].get(longest)
        if not stats or stats["mean"].get(key) is None:
            continue
        x, y = stats["mean"]["train_total_s"], stats["mean"][key]
        ax2.errorbar([x], [y], xerr=stats["std"].get("train_total_s"), yerr=stats["std"].get(key),
                     fmt=marker.get(row["kind"], "o"), color=colors[row["method"]], ms=7, capsize=3,
                     label=row["method"], alpha=0.9)
    ax2.set_xlabel("training time: search + finetune (s)")
    ax2.set_ylabel(f"test mAP@{k}")
    ax2.set_title("mAP against training time" + (f", {longest} bits" if longest != "None" else ""),
                  fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.margins(x=0.15, y=0.15)
    ax2.legend(fontsize=8.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0),
               handletextpad=0.3)
    kinds = {r["kind"] for r in rows}
    key_text = ", ".join(text for kind, text in (("preset", "// presets"),
                                                 ("random", ".. random architectures"),
                                                 ("baseline", "xx baselines")) if kind in kinds)
    fig.suptitle(f"{result['settings']['space']} on {result['data']}, budget "
                 f"{result['settings']['budget']}" + (f"; hatched: {key_text}" if key_text else ""),
                 fontsize=10.5)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path
