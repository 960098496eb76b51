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

With ``verdict``, the first ``references`` random architectures are the references of a
search-vs-random verdict (:mod:`avsearch.verdict`), every strategy's derived architecture is
also trained from scratch (a row ``<strategy>/scratch``, ``avsearch run --arch`` on the
strategy run's ``best.arch``), and compare.md/.json/.png gain the verdict, the noise floor and
how well each supernet ranks the references (Kendall τ). Independent runs can train in
parallel processes (``jobs``).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from avsearch._files import atomic_write
from avsearch.arch import Architecture
from avsearch.errors import AvsearchInputError
from avsearch.metrics import DEFAULT_KS, NORMALISATIONS

__all__ = ["CompareSettings", "compare", "time_inference", "markdown_table", "FORMAT", "TABLE_KS",
           "RANDOM_SEED"]

FORMAT = "avsearch.compare/1"
TABLE_KS = (5, 100)          # the Markdown table's mAP@K columns (compare.json has DEFAULT_KS)
# the retrieval numbers of a run: mAP at every K, and GmAP (VHMT Eq. 29, the SSVH papers' summary)
RETRIEVAL_KEYS = tuple(f"map@{k}" for k in DEFAULT_KS) + ("gmap",)
RANDOM_SEED = 0              # random-i is the i-th draw of space.sample(random.Random(0))
INFERENCE_REPEATS = 3

# the per-run numbers that are averaged over seeds (besides map@K)
_TIME_KEYS = ("supernet_s_per_epoch", "search_s", "search_total_s", "finetune_s_per_epoch",
              "train_total_s", "inference_ms_per_video", "params")



@dataclass
class CompareSettings:
    """The settings of one ``avsearch compare`` (also written to ``compare.json``)."""

    space: str = "av_nas"
    strategies: list[str] | None = None    # None: every registered strategy
    presets: list[str] | None = None       # None: every preset of the space
    random_archs: int = 2
    data: str = "avdigits"
    recipe: str = "default"
    objective: str | None = None           # None: the recipe's
    objective_options: dict[str, str] = field(default_factory=dict)
    budget: str = "quick"
    epochs: int | None = None
    bits: list[int] | None = None          # None: the space's default code length
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    space_options: dict[str, str] = field(default_factory=dict)
    baselines: bool = False
    verdict: bool = False                  # judge every strategy against random references
    references: int = 12                   # the verdict's references: random-1 .. random-N


@dataclass
class _Method:
    name: str                  # row label
    kind: str                  # strategy | scratch | preset | random
    target: str                # strategy name (strategy, scratch), preset name, or .arch path

    @property
    def folder(self) -> str:
        """The run folders' prefix: ``csp/scratch`` runs in ``csp-scratch-…``."""
        return self.name.replace("/", "-")


@dataclass
class _Job:
    method: _Method
    bits: int | None
    seed: int
    folder: Path
    settings: Any              # avsearch.run.RunSettings
    after: "_Job | None" = None  # a run that must finish first (a scratch run's search)

    @property
    def label(self) -> str:
        bits = f", {self.bits} bits" if self.bits is not None else ""
        return f"{self.method.name}{bits}, seed {self.seed}"


def _variant(entry: str) -> tuple[str, dict[str, str]]:
    """An entry of ``strategies``: ``csp`` or a variant with options,
    ``csp+halving=4+policy=gumbel`` (its own row, the ``strategy_options`` of its runs)."""
    name, *options = entry.split("+")
    pairs = [o.partition("=") for o in options]
    if any(not k or not eq for k, eq, _ in pairs):
        raise AvsearchInputError(f"strategies {entry!r}: a variant is NAME+KEY=VALUE[+KEY=VALUE]",
                                 "strategies")
    return name, {k: v for k, _, v in pairs}


def _python_call(resolved: CompareSettings, out: Path) -> str:
    """The call that reproduces a comparison from Python, every setting explicit."""
    return f"avsearch.compare.compare({resolved!r}, {str(out)!r})"


# ---------------------------------------------------------------- planning (validates, writes nothing)
def _plan(settings: CompareSettings, out: Path) -> tuple[list[_Method], list[int | None],
                                                          dict[str, dict[str, str]], list[_Job], Any]:
    from avsearch.data import load_dataset
    from avsearch.inference import resolve_device
    from avsearch.run import RunSettings, prepare_space
    from avsearch.strategies import get_strategy, list_strategies
    from avsearch.train import get_budget

    if settings.random_archs < 0:
        raise AvsearchInputError(f"random_archs must be >= 0, got {settings.random_archs}",
                                 "random_archs")
    if settings.verdict and settings.references < 2:
        raise AvsearchInputError(f"references must be >= 2 for a verdict (a median and a rank "
                                 f"need several references), got {settings.references}",
                                 "references")
    if not settings.seeds:
        raise AvsearchInputError("seeds: give at least one seed", "seeds")
    if len(set(settings.seeds)) != len(settings.seeds):
        raise AvsearchInputError(f"seeds {settings.seeds}: a seed is repeated", "seeds")
    if settings.bits is not None:
        if not settings.bits:
            raise AvsearchInputError("bits: give at least one code length", "bits")
        if any(b < 1 for b in settings.bits) or len(set(settings.bits)) != len(settings.bits):
            raise AvsearchInputError(f"bits {settings.bits}: code lengths must be >= 1 and distinct",
                                     "bits")
    strategies = list(list_strategies()) if settings.strategies is None else list(settings.strategies)
    for name in strategies:         # unknown names or options are bad input, before anything runs
        variant, options = _variant(name)
        get_strategy(variant, **options)
    if settings.verdict and not strategies:
        raise AvsearchInputError("verdict judges strategies, and strategies names none", "verdict")
    get_budget(settings.budget, settings.epochs)
    objective = _objective(settings)
    resolve_device(settings.device)
    data = load_dataset(settings.data)
    spaces = [prepare_space(settings.space, settings.space_options, data, b, objective)
              for b in (settings.bits or [None])]
    bits = [s.config.get("bits") for s in spaces]
    space = spaces[0]
    presets = list(space.presets) if settings.presets is None else list(settings.presets)
    for name in presets:
        if name not in space.presets:
            raise AvsearchInputError(f"space {space.name!r} has no preset {name!r} "
                                     f"(presets: {', '.join(space.presets) or 'none'})")

    # the references are random-1 .. random-N: the same draws a plain comparison makes, so
    # the random architectures it trained count as references
    randoms = _sample_random(space, max(settings.random_archs,
                                        settings.references if settings.verdict else 0))
    methods = []
    for n in strategies:
        methods.append(_Method(n, "strategy", n))
        if settings.verdict:   # beside its inherited-weights row
            methods.append(_Method(f"{n}/scratch", "scratch", n))
    taken = {m.name for m in methods} | {m.folder for m in methods}
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
                                 f"(give another folder)", "out")

    jobs = []
    searched: dict[tuple[str, int | None, int], _Job] = {}
    for method in methods:
        for b in bits:
            for seed in settings.seeds:
                folder = out / "runs" / (f"{method.folder}-{b}b-s{seed}" if b is not None
                                         else f"{method.folder}-s{seed}")
                after, arch = None, None if method.kind == "strategy" else method.target
                if method.kind == "scratch":  # what this seed's search derived, from scratch
                    after = searched[method.target, b, seed]
                    arch = str((after.folder / "best.arch").resolve())
                strategy, options = _variant(method.target) if method.kind == "strategy" else ("csp", {})
                run_settings = RunSettings(
                    space=settings.space, strategy=strategy, strategy_options=options,
                    arch=arch, data=settings.data,
                    recipe=settings.recipe, objective=settings.objective,
                    objective_options=dict(settings.objective_options), bits=b, budget=settings.budget,  # resolved: --bits 64 and no --bits are one run
                    epochs=settings.epochs, seed=seed, device=settings.device,
                    space_options=dict(settings.space_options),
                    baselines=settings.baselines and method is methods[0])
                jobs.append(_Job(method, b, seed, folder, run_settings, after))
                if method.kind == "strategy":
                    searched[method.target, b, seed] = jobs[-1]
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
                                         f"samples (edited, or another space?); give another "
                                         f"folder", "out")
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
                                 f"({', '.join(diff)}); give another folder", "out")
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
            log: Callable[[str], Any] = print, workers: int = 1,
            command: Callable[[CompareSettings, Path], str] | None = None) -> dict[str, Any]:
    """Run every method (skipping finished runs), then write compare.md/.json/.png into ``out``.

    ``progress`` shows the runs' progress bars (with one worker); ``log`` gets one line per
    run as it starts; ``workers`` runs that many runs at once, each in its own process.
    ``command(resolved, out)`` writes what reproduces the comparison, for compare.md, from
    the settings with every default made explicit (the command line gives one that writes
    the ``avsearch compare`` command); by default, the Python call. Returns what
    ``compare.json`` holds.
    """
    from avsearch.inference import resolve_device

    out = Path(out)
    _check_jobs(workers)
    methods, bits, randoms, jobs, data = _plan(settings, out)
    resolved = dataclasses.replace(
        settings, strategies=[m.target for m in methods if m.kind == "strategy"],
        presets=[m.target for m in methods if m.kind == "preset"], bits=bits)
    command = (command or _python_call)(resolved, out)

    # -- from here on, things are written
    for name, choices in randoms.items():
        path = out / "archs" / f"{name}.arch"
        if not path.exists():
            space = _space(settings, data, bits[0])
            Architecture.from_space(space, choices, provenance={
                "strategy": "random", "sampled": f"distinct draw {name.split('-')[1]} of "
                                                 f"space.sample(random.Random({RANDOM_SEED}))"}).save(path)
    _run_jobs(jobs, workers, progress, log)

    # -- read the runs, time inference (after training, so every run is timed alike)
    device = resolve_device(settings.device)
    test = data.split("test")
    log(f"timing inference on the test split ({len(test)} videos, median of "
        f"{INFERENCE_REPEATS} after a warm-up) ...")
    keys = list(RETRIEVAL_KEYS) + list(_TIME_KEYS)
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
        "settings": dataclasses.asdict(resolved),
        "data": data.name, "split": "test", "database": "retrieval",
        "normalisation": sorted(normalisations)[0] if len(normalisations) == 1 else sorted(normalisations),
        "ks": list(DEFAULT_KS), "inference_repeats": INFERENCE_REPEATS, "device": str(device),
        "methods": rows,
    }
    if settings.verdict:
        log("verdict: scoring the references under each search's supernet ...")
        result["verdict"] = _verdict(settings, methods, bits, jobs, rows, randoms, data, device)
    atomic_write(out / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write(out / "compare.md", markdown(result))
    plot_compare(result, out / "compare.png")
    return result


# ---------------------------------------------------------------- running (one process or several)
def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _check_jobs(jobs: int) -> int:
    """``workers``: parallel runs, each with cores // workers torch threads, so at most one per
    core."""
    cores = _cores()
    if jobs < 1:
        raise AvsearchInputError(f"workers must be >= 1, got {jobs}", "workers")
    if jobs > cores:
        raise AvsearchInputError(f"workers {jobs}: this machine gives avsearch {cores} core"
                                 f"{'s' if cores != 1 else ''}; give at most {cores}", "workers")
    return jobs


def _run_jobs(jobs: list[_Job], workers: int, progress: bool, log: Callable[[str], Any]) -> None:
    """Run every unfinished job: a finished one (metrics.json) is kept, a started one resumed."""
    from avsearch.run import run

    n = len(jobs)
    todo = []
    for i, job in enumerate(jobs, 1):
        if (job.folder / "metrics.json").exists():
            log(f"[{i}/{n}] {job.label}: finished earlier, kept ({job.folder})")
        elif workers == 1:  # in order: a scratch run comes after the search it retrains
            resume = (job.folder / "run.json").exists()
            log(f"[{i}/{n}] {'resuming' if resume else 'running'} {job.label} -> {job.folder}")
            run(job.settings, out=job.folder, resume=resume, progress=progress)
        else:
            todo.append((i, job))
    if todo:
        _run_parallel(todo, n, workers, log)


def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _run_job(settings, folder: str, resume: bool) -> str:
    from avsearch.run import run
    run(settings, out=Path(folder), resume=resume, progress=False)
    return folder


def _run_parallel(todo: list[tuple[int, _Job]], n: int, workers: int,
                  log: Callable[[str], Any]) -> None:
    """``workers`` processes, each with cores // workers torch threads; a job starts once the
    run it depends on (a scratch run's search) has ended.

    Spawned, not forked: a fork of a process whose torch has started its OpenMP threads can
    hang. On an error, queued runs are cancelled, running ones finish (each checkpoints, so
    the same command resumes them), and the error is raised."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, _cores() // workers)
    waiting = list(todo)
    unfinished = {id(job) for _, job in todo}   # a run not among them ended earlier
    running: dict[Any, tuple[int, _Job]] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    try:
        while waiting or running:
            # no more than ``workers`` submitted, so "running" is logged when a run starts
            for item in [w for w in waiting
                         if w[1].after is None or id(w[1].after) not in unfinished]:
                if len(running) == workers:
                    break
                i, job = item
                waiting.remove(item)
                resume = (job.folder / "run.json").exists()
                log(f"[{i}/{n}] {'resuming' if resume else 'running'} {job.label} -> {job.folder}")
                running[pool.submit(_run_job, job.settings, str(job.folder), resume)] = item
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i, job = running.pop(future)
                future.result()
                unfinished.discard(id(job))
                log(f"[{i}/{n}] finished {job.label}")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


# ---------------------------------------------------------------- the verdict
VERDICT_KEY = "map@100"      # the verdict's metric: test mAP@100, Table 2's headline column
VERDICT_METRIC = "test mAP@100"
VERDICT_SEED = 0             # seeds the bootstrap and the permutation tests


def _verdict(settings: CompareSettings, methods: Sequence[_Method], bits: Sequence[int | None],
             jobs: Sequence[_Job], rows: Sequence[dict[str, Any]],
             randoms: dict[str, dict[str, str]], data, device) -> dict[str, Any]:
    """Per code length: the references' scores, the noise floor, every strategy, scratch row
    and preset judged against the references, and each strategy's ranking of them (τ)."""
    from avsearch import verdict as V
    from avsearch.train import get_budget

    references = [m for m in methods if m.kind == "random"][:settings.references]
    by_name = {r["method"]: r for r in rows}
    budget = get_budget(settings.budget, settings.epochs)
    out: dict[str, Any] = {
        "metric": VERDICT_METRIC, "references": [m.name for m in references],
        "seeds": list(settings.seeds), "alpha": V.ALPHA, "min_seeds": V.MIN_SEEDS,
        "confidence": V.CONFIDENCE, "resamples": V.RESAMPLES, "random_seed": VERDICT_SEED,
        "noise_threshold": V.SEPARABLE_SHARE, "bits": {}}
    for b in bits:
        def scores(name: str) -> list[float]:   # one per seed, in --seeds order
            per_seed = {r["seed"]: r[VERDICT_KEY] for r in by_name[name]["bits"][str(b)]["runs"]}
            return [per_seed[s] for s in settings.seeds]

        table = np.array([scores(m.name) for m in references])
        entry: dict[str, Any] = {
            "reference_scores": {m.name: scores(m.name) for m in references},
            "noise_floor": V.noise_floor(table),
            "methods": [{"method": m.name, "kind": m.kind, "scores": scores(m.name),
                         **V.judge(scores(m.name), table, seed=VERDICT_SEED)}
                        for m in methods if m.kind in ("strategy", "scratch", "preset")],
            "ranking": {}}
        for m in methods:
            if m.kind == "strategy":
                runs = [j for j in jobs if j.method is m and j.bits == b]   # in --seeds order
                entry["ranking"][m.name] = _ranking(runs, [randoms[r.name] for r in references],
                                                    table, data, budget, device)
        out["bits"][str(b)] = entry
    return out


def _ranking(runs: Sequence[_Job], references: Sequence[dict[str, str]], table: np.ndarray,
             data, budget, device) -> dict[str, Any]:
    """Kendall τ between each reference's proxy score under a strategy's search and its test
    score trained from scratch: both averaged over seeds for τ and its permutation p (one
    ranking per strategy, less noisy than any one seed's), and τ per seed."""
    from avsearch import verdict as V

    proxies, kind = [], None
    for job in runs:
        kind, found = _proxy(job.folder, references, data, budget, device)
        if kind is None:
            return {"available": False, "reason": found}
        proxies.append(found)
    proxy = np.array(proxies)                 # (seeds, references)
    truth = table.T
    pooled = V.kendall(proxy.mean(axis=0), truth.mean(axis=0), seed=VERDICT_SEED)
    return {"available": True, "proxy": kind, "proxy_scores": proxy.tolist(), **pooled,
            "tau_per_seed": [V.kendall(p, t, test=False)["tau"] for p, t in zip(proxy, truth)]}


PROXY_ALPHA = "summed log softmax(α)"
PROXY_SHARED = "validation mAP@100 under the shared weights"


def _proxy(folder: Path, references: Sequence[dict[str, str]], data, budget,
           device) -> tuple[str | None, Any]:
    """(what the proxy is, one score per reference) from one search run, or (None, why not).

    With softmax(α) in ``best.arch`` (csp, darts, proxyless): Σ over cells of
    log softmax(α)[cell][the reference's choice], the log-probability the search's
    distribution gives the reference; no training. Otherwise, a finished ``search`` stage in
    ``checkpoint.pt`` is the shared-weight supernet the search scored paths with (spos, enas):
    the validation mAP@100 of each reference's path under it, on the budget's eval_limit as
    the search scored paths. Random search trains its candidates apart: it has neither."""
    arch = Architecture.load(folder / "best.arch")
    if arch.probabilities:
        tiny = np.finfo(float).tiny
        try:
            return PROXY_ALPHA, [float(sum(np.log(max(arch.probabilities[c][op], tiny))
                                           for c, op in choices.items()))
                                 for choices in references]
        except KeyError as err:
            return None, f"{folder / 'best.arch'}: softmax(α) has no entry {err}"
    import torch

    from avsearch.inference import evaluate
    from avsearch.supernet import compile_space

    path = folder / "checkpoint.pt"
    if not path.exists():
        return None, f"{path} is missing (the run's shared weights are gone)"
    stage = torch.load(path, weights_only=True, map_location="cpu").get("stages", {}).get("search")
    if not stage or not stage.get("done") or not stage.get("best"):
        return None, "the search shares no weights between architectures (no supernet stage)"
    net = compile_space(arch.build_space(), "single-path")
    own = net.state_dict()
    for prefix in ("", "supernet."):   # ENAS checkpoints its supernet beside the controller
        state = {k[len(prefix):]: v for k, v in stage["best"].items() if k.startswith(prefix)}
        if all(k in state and state[k].shape == v.shape for k, v in own.items()):
            break
    else:
        return None, f"{path}: its search stage holds no single-path supernet of this space"
    net.load_state_dict({k: state[k] for k in own})
    net.to(device)
    scores = []
    for choices in references:
        net.set_path(choices)
        metrics = evaluate(net, data, "val", device, limit=budget.eval_limit)
        scores.append(float(metrics[VERDICT_KEY]))
    return PROXY_SHARED, scores


def _space(settings: CompareSettings, data, b: int | None):
    from avsearch.run import prepare_space
    return prepare_space(settings.space, settings.space_options, data, b, _objective(settings))


def _objective(settings: CompareSettings):
    """The comparison's objective: the one given, else its recipe's."""
    from avsearch.objectives import get_objective
    from avsearch.recipe import get_recipe
    return get_objective(settings.objective or get_recipe(settings.recipe).objective,
                         **settings.objective_options)


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
    norm_text = NORMALISATIONS.get(norm, str(norm)) if isinstance(norm, str) else \
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
        "*search* is the search's time beyond that (evolution, a controller, trials, the "
        "successive-halving stage: 0 when the supernet's α is all of the search); "
        "*finetune / epoch* trains the derived or given architecture; *inference* encodes the "
        "test split "
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
    if "verdict" in result:
        parts += ["", markdown_verdict(result)]
    parts += ["", "All numbers, per seed too: `compare.json`; the plot: `compare.png`; the runs: "
              "`runs/<method>-<bits>b-s<seed>/`.", ""]
    return "\n".join(parts)


def _signed(value: float, decimals: int = 4) -> str:
    return f"{value:+.{decimals}f}".replace("-", "−")


def noise_sentence(floor: dict[str, Any]) -> str:
    """What the noise floor means for this comparison, in one paragraph."""
    if floor["share"] is None:
        return (f"Noise floor: not measured ({floor.get('reason', 'too few runs')}); with one "
                f"seed nothing says whether this budget separates architectures at all.")
    share, threshold = floor["share"], floor["threshold"]
    stats = (f"one-way ANOVA over {floor['architectures']} references × {floor['seeds']} seeds: "
             f"σ²_arch = {floor['var_arch']:.3g}, σ²_seed = {floor['var_seed']:.3g}"
             + (f", F = {floor['F']:.3g}, p = {floor['p']:.3g}" if floor["F"] is not None else ""))
    head = (f"Noise floor: {share:.0%} of the references' variance lies between architectures, "
            f"{1 - share:.0%} between seeds of one architecture ({stats}). ")
    if share < threshold:
        return head + (f"Below {threshold:.0%}: **this budget cannot separate architectures** "
                       f"(two seeds of one architecture differ as much as two architectures), "
                       f"so no verdict above says much about the search; give a larger budget.")
    return head + f"At or above {threshold:.0%}: this budget separates architectures."


def markdown_verdict(result: dict[str, Any]) -> str:
    """compare.md's "Verdict: search vs random": per code length the judged rows, the noise
    floor, and each strategy's ranking of the references."""
    v = result["verdict"]
    refs = v["references"]
    seeds = v["seeds"]
    pct = f"{v['confidence']:.0%}"
    parts = [
        "## Verdict: search vs random", "",
        f"References: {len(refs)} random architectures of the space ({refs[0]} … {refs[-1]}), "
        f"each trained from scratch under every seed ({', '.join(map(str, seeds))}) with the "
        f"same budget as a preset. Per seed, Δ = a row's {v['metric']} minus the references' "
        f"median. *mean Δ [CI]*: {pct} percentile bootstrap of the mean Δ over seeds "
        f"({v['resamples']} resamples, seed {v['random_seed']}); *percentile*: the row's rank "
        f"among the references (ties count half), per seed, then averaged; *p*: one-sided "
        f"Wilcoxon signed-rank test of Δ > 0. The verdict is \"beats random\" only at "
        f"p < {v['alpha']:g} over at least {v['min_seeds']} seeds, otherwise \"not shown\". "
        f"`<strategy>/scratch` is the architecture the strategy derived, retrained from scratch "
        f"(`avsearch run --arch` on its `best.arch`) beside its row with inherited weights."]
    many = len(v["bits"]) > 1
    for b, entry in v["bits"].items():
        if many:
            parts += ["", f"### {b} bits"]
        parts += ["", "| method | mean Δ [CI] | mean percentile | p | verdict |",
                  "|---|---:|---:|---:|---|"]
        for m in entry["methods"]:
            ci = "" if m["ci"] is None else f" [{_signed(m['ci'][0])}, {_signed(m['ci'][1])}]"
            p = "–" if m["p"] is None else f"{m['p']:.3g}"
            parts.append(f"| {m['method']} | {_signed(m['mean_delta'])}{ci} | "
                         f"{m['mean_percentile']:.0f} | {p} | {m['label']} ({m['reason']}) |")
        parts += ["", noise_sentence(entry["noise_floor"]), "",
                  "How well each search ranks the references: Kendall τ between a reference's "
                  "proxy score under the search and its test mAP@100 trained from scratch, each "
                  "averaged over seeds; *p*: one-sided permutation test of τ > 0 (exact up to "
                  f"{v['resamples']} permutations, else that many, seeded). The proxy is "
                  f"*{PROXY_ALPHA}* (the log-probability the search's softmax(α) in `best.arch` "
                  f"gives the reference's choices) or *{PROXY_SHARED}* (its path in the "
                  f"supernet the search trained, kept in the run's `checkpoint.pt`).", "",
                  "| strategy | proxy | τ | p | τ per seed |", "|---|---|---:|---:|---|"]
        for name, r in entry["ranking"].items():
            if not r["available"]:
                parts.append(f"| {name} | not available: {r['reason']} | – | – | – |")
                continue
            tau = "–" if r["tau"] is None else _signed(r["tau"], 2)
            p = "–" if r["p"] is None else f"{r['p']:.3g}"
            per_seed = ", ".join("–" if t is None else _signed(t, 2) for t in r["tau_per_seed"])
            parts.append(f"| {name} | {r['proxy']} | {tau} | {p} | {per_seed} |")
    return "\n".join(parts)


def plot_compare(result: dict[str, Any], path: Path, k: int = 100) -> Path:
    """Left: test mAP@k of every method, one group of bars per code length, seed std as error
    bars. Right: mAP@k against training time (search + finetune) at the longest code length.
    With a verdict, below: the references per seed with the judged rows marked."""
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
    width = max(9.0, 4.5 + 0.42 * n * len(bits))
    ratios = [max(1.2, 0.13 * n * len(bits)), 1]
    verdict = result.get("verdict")
    if verdict:
        fig = plt.figure(figsize=(width, 9.4))
        grid = fig.add_gridspec(2, 2, width_ratios=ratios, height_ratios=[1, 0.95])
        ax, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        _plot_verdict(fig.add_subplot(grid[1, :]), verdict, longest, colors)
    else:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(width, 4.8),
                                      gridspec_kw={"width_ratios": ratios})
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


def _plot_verdict(ax, verdict: dict[str, Any], bits: str, colors: dict[str, Any]) -> None:
    """A strip plot: per seed, the references' scores (grey) and their median (black bar),
    with every judged row marked (filled: a strategy; hollow: its derived architecture from
    scratch; square: a preset)."""
    entry = verdict["bits"].get(bits) or next(iter(verdict["bits"].values()))
    seeds = verdict["seeds"]
    refs = np.array(list(entry["reference_scores"].values()))      # (references, seeds)
    spread = np.linspace(-0.28, 0.28, refs.shape[0]) if refs.shape[0] > 1 else np.zeros(1)
    for s in range(len(seeds)):
        order = np.argsort(refs[:, s])
        ax.scatter(s + spread, refs[order, s], s=22, color="0.6", zorder=2,
                   label="references" if s == 0 else None)
        ax.hlines(np.median(refs[:, s]), s - 0.34, s + 0.34, color="0.1", lw=1.6, zorder=3,
                  label="references' median" if s == 0 else None)
    judged = entry["methods"]
    offsets = np.linspace(-0.2, 0.2, len(judged)) if len(judged) > 1 else np.zeros(1)
    for m, dx in zip(judged, offsets):
        strategy = m["method"].split("/")[0]
        color = colors.get(strategy, colors.get(m["method"], "C0"))
        face = "none" if m["kind"] == "scratch" else color
        marker = "s" if m["kind"] == "preset" else "o"
        ax.scatter(np.arange(len(seeds)) + dx, m["scores"], s=70, marker=marker,
                   facecolors=face, edgecolors=color, linewidths=1.8, zorder=4,
                   label=f"{m['method']}: Δ {_signed(m['mean_delta'])}, {m['label']}")
    ax.set_xticks(range(len(seeds)))
    ax.set_xticklabels([f"seed {s}" for s in seeds])
    ax.set_xlim(-0.6, len(seeds) - 0.4)
    ax.set_ylabel(verdict["metric"])
    floor = entry["noise_floor"]["share"]
    ax.set_title(f"Verdict: search vs {len(verdict['references'])} random references"
                 + (f", {bits} bits" if bits != "None" else "")
                 + ("" if floor is None else f"; between-architecture share {floor:.0%}"),
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
