"""Planning a comparison: its settings, the methods and runs it makes of them, and every
check of what the user gave, before anything runs or is written."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsearch.arch import Architecture
from avsearch.errors import AvsearchInputError

__all__ = ["CompareSettings", "Method", "Job", "plan", "space_for", "objective_for", "RANDOM_SEED"]

RANDOM_SEED = 0              # random-i is the i-th draw of space.sample(random.Random(0))


@dataclass
class CompareSettings:
    """The settings of one ``avsearch compare`` (also written to ``compare.json``)."""

    space: str = "av_nas"
    strategies: list[str] | None = None    # None: every registered strategy
    presets: list[str] | None = None       # None: every preset of the space
    random_archs: int = 2
    data: str = "avdigits"
    recipe: str = "default"
    recipe_options: dict[str, str] = field(default_factory=dict)   # --recipe-set
    objective: str | None = None           # None: the recipe's
    objective_options: dict[str, str] = field(default_factory=dict)
    budget: str = "quick"
    epochs: int | None = None
    bits: list[int] | None = None          # None: the space's default code length
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    precision: str = "auto"
    space_options: dict[str, str] = field(default_factory=dict)
    baselines: bool = False
    verdict: bool = False                  # judge every strategy against random references
    references: int = 12                   # the verdict's references: random-1 .. random-N
    proxy_steps: int = 0                   # τ's proxy: a reference's path trains this many steps


@dataclass
class Method:
    name: str                  # row label
    kind: str                  # strategy | scratch | preset | random
    target: str                # strategy name (strategy, scratch), preset name, or .arch path

    @property
    def folder(self) -> str:
        """The run folders' prefix: ``csp/scratch`` runs in ``csp-scratch-…``."""
        return self.name.replace("/", "-")


@dataclass
class Job:
    method: Method
    bits: int | None
    seed: int
    folder: Path
    settings: Any              # avsearch.run.RunSettings
    after: "Job | None" = None  # a run that must finish first (a scratch run's search)

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


# ---------------------------------------------------------------- planning (validates, writes nothing)
def plan(settings: CompareSettings, out: Path) -> tuple[list[Method], list[int | None],
                                                          dict[str, dict[str, str]], list[Job], Any]:
    from avsearch.data import load_dataset
    from avsearch.inference import resolve_device, resolve_precision
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
    if settings.proxy_steps < 0:
        raise AvsearchInputError(f"proxy_steps must be >= 0, got {settings.proxy_steps}",
                                 "proxy_steps")
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
    objective = objective_for(settings)
    resolve_precision(settings.precision, resolve_device(settings.device))
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
        methods.append(Method(n, "strategy", n))
        if settings.verdict:   # beside its inherited-weights row
            methods.append(Method(f"{n}/scratch", "scratch", n))
    taken = {m.name for m in methods} | {m.folder for m in methods}
    for name in presets:
        label = name if name not in taken else f"preset-{name}"
        methods.append(Method(label, "preset", name))
        taken.add(label)
    for name in randoms:
        path = (out / "archs" / f"{name}.arch").resolve()
        methods.append(Method(name, "random", str(path)))
    if not methods:
        raise AvsearchInputError("nothing to compare: no strategies, presets or random architectures")

    if out.exists() and not out.is_dir():
        raise AvsearchInputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / "runs").is_dir()
                                                    or (out / "compare.json").exists()):
        raise AvsearchInputError(f"{out}: folder exists, is not empty and holds no comparison "
                                 f"(give another folder)", "out")

    jobs = []
    searched: dict[tuple[str, int | None, int], Job] = {}
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
                    recipe=settings.recipe, recipe_options=dict(settings.recipe_options),
                    objective=settings.objective,
                    objective_options=dict(settings.objective_options), bits=b, budget=settings.budget,  # resolved: --bits 64 and no --bits are one run
                    epochs=settings.epochs, seed=seed, device=settings.device,
                    precision=settings.precision,
                    space_options=dict(settings.space_options),
                    baselines=settings.baselines and method is methods[0])
                jobs.append(Job(method, b, seed, folder, run_settings, after))
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


def _check_existing(job: Job) -> None:
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


def space_for(settings: CompareSettings, data, b: int | None):
    from avsearch.run import prepare_space
    return prepare_space(settings.space, settings.space_options, data, b, objective_for(settings))


def objective_for(settings: CompareSettings):
    """The comparison's objective: the one given, else its recipe's (the recipe and its
    ``--recipe-set`` options checked on the way)."""
    from avsearch.objectives import get_objective
    from avsearch.recipe import get_recipe
    recipe = get_recipe(settings.recipe, **settings.recipe_options)
    return get_objective(settings.objective or recipe.objective, **settings.objective_options)
