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
also trained from scratch (a row ``<strategy>/scratch``, a run of the strategy run's
``best.arch``), and compare.md/.json/.png gain the verdict, the noise floor and how well
each supernet ranks the references (Kendall τ). Independent runs can train in parallel
processes (``workers``).

The package follows a comparison's course: :mod:`~avsearch.compare.plan` (settings, methods,
runs; every check), :mod:`~avsearch.compare.running` (one process or several),
:mod:`~avsearch.compare.measure` (metrics read back, inference timed, seed statistics),
:mod:`~avsearch.compare.judge` (the verdict and each search's ranking of the references) and
:mod:`~avsearch.compare.report` (compare.md and compare.png); :func:`compare` runs them.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from avsearch._files import atomic_write
from avsearch.arch import Architecture
from avsearch.compare.judge import verdict_section
from avsearch.compare.measure import INFERENCE_REPEATS, table_rows, time_inference
from avsearch.compare.plan import RANDOM_SEED, CompareSettings, plan, space_for
from avsearch.compare.report import TABLE_KS, markdown, markdown_table, plot_compare
from avsearch.compare.running import check_workers, run_jobs
from avsearch.metrics import DEFAULT_KS

__all__ = ["CompareSettings", "compare", "time_inference", "markdown_table", "FORMAT", "TABLE_KS",
           "RANDOM_SEED"]

FORMAT = "avsearch.compare/1"


def _python_call(resolved: CompareSettings, out: Path) -> str:
    """The call that reproduces a comparison from Python, every setting explicit."""
    return f"avsearch.compare.compare({resolved!r}, {str(out)!r})"


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
    check_workers(workers)
    methods, bits, randoms, jobs, data = plan(settings, out)
    resolved = dataclasses.replace(
        settings, strategies=[m.target for m in methods if m.kind == "strategy"],
        presets=[m.target for m in methods if m.kind == "preset"], bits=bits)
    command = (command or _python_call)(resolved, out)

    # -- from here on, things are written
    for name, choices in randoms.items():
        path = out / "archs" / f"{name}.arch"
        if not path.exists():
            space = space_for(settings, data, bits[0])
            Architecture.from_space(space, choices, provenance={
                "strategy": "random", "sampled": f"distinct draw {name.split('-')[1]} of "
                                                 f"space.sample(random.Random({RANDOM_SEED}))"}).save(path)
    run_jobs(jobs, workers, progress, log)

    # -- read the runs, time inference (after training, so every run is timed alike)
    device = resolve_device(settings.device)
    test = data.split("test")
    log(f"timing inference on the test split ({len(test)} videos, median of "
        f"{INFERENCE_REPEATS} after a warm-up) ...")
    rows, normalisations = table_rows(methods, bits, jobs, randoms, test, device)
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
        result["verdict"] = verdict_section(settings, methods, bits, jobs, rows, randoms, data,
                                            device)
    atomic_write(out / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write(out / "compare.md", markdown(result))
    plot_compare(result, out / "compare.png")
    return result
