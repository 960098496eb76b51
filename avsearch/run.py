"""``avsearch run``: load data, search, finetune, evaluate, and write the run's artifacts.

Everything the user gave is validated (data, space, strategy, budget, device, output folder)
before anything is written. A run folder holds ``best.arch``, ``best.safetensors``,
``metrics.json``, ``history.jsonl``, ``best.svg``, ``alpha.png``, ``run.json`` (the settings,
so ``--resume`` can refuse a different run) and ``checkpoint.pt``.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from avsearch._files import atomic_write, sha256_file
from avsearch.arch import Architecture
from avsearch.data import Dataset, load_dataset
from avsearch.errors import AvsearchInputError
from avsearch.graph import AUX_INPUT, SearchSpace
from avsearch.inference import anchor_inputs, evaluate, resolve_device, resolve_precision
from avsearch.metrics import PROTOCOLS

if TYPE_CHECKING:
    from avsearch.objectives import Objective

__all__ = ["RunSettings", "recorded_identity", "run", "prepare_space", "check_inputs", "fixed_choices",
           "save_weights"]


@dataclass
class RunSettings:
    """The settings of one ``avsearch run`` (also written to ``run.json``)."""

    space: str = "av_nas"
    strategy: str = "csp"
    strategy_options: dict[str, str] = field(default_factory=dict)
    arch: str | None = None          # a preset name: train it, no search
    data: str = "avdigits"
    recipe: str = "default"
    recipe_options: dict[str, str] = field(default_factory=dict)   # --recipe-set
    objective: str | None = None     # None: the recipe's (supcon by default, infonce for paper)
    objective_options: dict[str, str] = field(default_factory=dict)
    bits: int | None = None
    budget: str = "quick"
    epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"          # training's autocast: auto (bf16 on CUDA), fp32, bf16
    space_options: dict[str, str] = field(default_factory=dict)
    baselines: bool = True

    def identity(self) -> dict[str, Any]:
        """What must match for ``--resume`` to continue this run (the device and the
        precision may change, as a run moves between machines)."""
        out = asdict(self)
        out.pop("device")
        out.pop("precision")
        return out


# settings an older avsearch recorded under another name: old name -> today's
RENAMED_SETTINGS = {"sets": "space_options"}


def recorded_identity(run_json: Path) -> dict[str, Any]:
    """The identity a run folder's ``run.json`` records, in today's names; a setting an older
    avsearch did not record yet had its default value, so adding or renaming a setting does
    not orphan existing runs."""
    try:
        recorded = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AvsearchInputError(f"{run_json}: unreadable ({err})") from None
    recorded = {RENAMED_SETTINGS.get(k, k): v for k, v in recorded.items()}
    # runs written before recipes existed trained as the paper recipe does
    return {**RunSettings().identity(), "recipe": "paper", **recorded}


def prepare_space(name: str, space_options: dict[str, Any], data: Dataset, bits: int | None,
                  objective: Objective | None = None) -> SearchSpace:
    """Build the space for ``data``: its modalities (names, widths) come from the data set;
    an objective's ``space_defaults`` (e.g. AutoSSVH's sampler cell) apply where the space
    has the option and the user did not set it."""
    from avsearch.spaces import SPACES, get_space

    known = SPACES.get(name).options
    defaults = objective.space_defaults if objective is not None else {}
    options: dict[str, Any] = {k: v for k, v in defaults.items() if k in known}
    options.update(space_options)
    if "modalities" in known and "modalities" not in options:
        options["modalities"] = dict(data.modalities)
    for k, o in known.items():
        if o.from_data is not None and k not in options:
            options[k] = o.from_data(data)
    if bits is not None:
        if bits < 1:
            raise AvsearchInputError(f"bits must be >= 1, got {bits}", "bits")
        if "bits" not in known:
            raise AvsearchInputError(f"space {name!r} has no 'bits' option", "bits")
        options["bits"] = bits
    space = get_space(name, **options)
    check_inputs(space, data, f"space {name!r}")
    return space


def check_inputs(space: SearchSpace, data: Dataset, what: str) -> None:
    """Refuse ``data`` unless its modalities (names, order, widths) are ``space``'s inputs,
    and, where the space reads auxiliary semantics (an input named ``aux``), the data's have
    that width; ``what`` names the space's side in the message."""
    widths = dict(space.input_widths)
    aux = widths.pop(AUX_INPUT, None)
    if widths != dict(data.modalities):
        raise AvsearchInputError(f"{what} expects inputs {widths} but data set "
                                 f"{data.name!r} has {dict(data.modalities)}")
    if space.text_inputs != data.text:
        text = [m for m in data.text if m not in space.text_inputs]
        raise AvsearchInputError(
            f"{what} reads {', '.join(space.text_inputs) or 'no modality'} as text but data set "
            f"{data.name!r} has text in {', '.join(data.text) or 'no modality'}"
            + (f" (keep its other modalities: {data.source}:"
               f"{','.join(m for m in data.modalities if m not in text)})"
               if text and len(text) < len(data.modalities) else ""))
    if aux is not None and aux != data.aux_width:
        raise AvsearchInputError(f"{data.source}: {what} reads auxiliary semantics of width {aux} "
                                 f"but this data has " + (f"width {data.aux_width}" if data.aux_width
                                                          else "none (no <role>_tags files)"))


def fixed_choices(space: SearchSpace, arch: str) -> dict[str, str]:
    """The architecture ``arch`` names: a preset of ``space`` or an ``.arch`` file (whose
    choices must fit ``space``, e.g. an architecture found on other data, retrained here)."""
    if arch in space.presets:
        return dict(space.presets[arch])
    if not arch.endswith(".arch"):
        raise AvsearchInputError(f"space {space.name!r} has no preset {arch!r} (presets: "
                                 f"{', '.join(space.presets) or 'none'}; or give an .arch file)")
    loaded = Architecture.load(arch)
    if loaded.space != space.name:
        raise AvsearchInputError(f"{arch}: an architecture of space {loaded.space!r}, "
                                 f"not {space.name!r}")
    try:
        return space.validate(loaded.choices)
    except AvsearchInputError as err:
        raise AvsearchInputError(f"{arch}: does not fit this run's space: {err}") from None


def save_weights(net: torch.nn.Module, path: Path) -> str:
    """Write ``net``'s weights as safetensors, atomically; returns their sha256."""
    from safetensors.torch import save

    atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}))
    return sha256_file(path)


def _default_out(settings: RunSettings, resume: bool) -> Path:
    label = Path(settings.arch).stem if settings.arch else settings.strategy
    if resume:  # the newest run of this space and strategy
        runs = sorted(Path("runs").glob(f"{settings.space}-{label}-*"))
        if not runs:
            raise AvsearchInputError(f"resume: no run folder runs/{settings.space}-{label}-* to "
                                     f"resume; give the run's folder", "resume")
        return runs[-1]
    return Path("runs") / f"{settings.space}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_out(out: Path, settings: RunSettings, resume: bool) -> None:
    run_json = out / "run.json"
    if resume:
        if not run_json.exists():
            raise AvsearchInputError(f"{out}: nothing to resume (no run.json)")
        before = recorded_identity(run_json)
        if before != settings.identity():
            diff = sorted(k for k in set(before) | set(settings.identity())
                          if before.get(k) != settings.identity().get(k))
            raise AvsearchInputError(f"{run_json}: resume with different settings "
                                     f"({', '.join(diff)})", "resume")
    elif out.exists() and any(out.iterdir()):
        raise AvsearchInputError(f"{out}: folder exists and is not empty (resume it, or give "
                                 f"another folder)", "out")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# strategies whose search tasks can be shared through an Optuna storage (avsearch.study)
SHARED_TRIALS = ("random", "spos")


def run(settings: RunSettings, out: Path | None = None, resume: bool = False,
        progress: bool = True, storage: str | None = None,
        study: str | None = None, artifacts: str | None = None) -> dict[str, Any]:
    """Run a search (or train a preset), finetune, evaluate; returns the metrics summary.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this and they train as one
    (:mod:`avsearch.distributed`); rank 0 alone writes the run folder. With ``storage`` and
    ``study`` several runs share the search's trials (:mod:`avsearch.study`): the one that
    finalises returns the summary, the others ``{"finalised_by": worker, ...}``; they pass
    weights through the artifact folder ``artifacts`` (default: beside a journal file)."""
    from avsearch import distributed
    from avsearch.objectives import get_objective
    from avsearch.recipe import get_recipe
    from avsearch.strategies import Preset, get_strategy
    from avsearch.train import get_budget

    # -- validate everything before writing anything
    strategy = None if settings.arch else get_strategy(settings.strategy, **settings.strategy_options)
    budget = get_budget(settings.budget, settings.epochs)
    device = resolve_device(settings.device)
    resolve_precision(settings.precision, device)
    recipe = get_recipe(settings.recipe, **settings.recipe_options)
    objective_name = settings.objective or recipe.objective
    objective = get_objective(objective_name, seed=settings.seed, **settings.objective_options)
    data = load_dataset(settings.data)
    space = prepare_space(settings.space, settings.space_options, data, settings.bits, objective)
    objective.check_space(space)
    budget = replace(budget, **space.budgets.get(budget.name, {}))   # the space's own, if any
    anchors = anchor_inputs(space, data.split("train"), settings.seed)
    if settings.arch:
        strategy = Preset(fixed_choices(space, settings.arch))
    if objective.supervised and not data.split("train").labels.any():
        raise AvsearchInputError(f"data set {data.name!r}: the training split has no labels, which "
                                 f"objective {objective_name!r} needs (a self-supervised "
                                 f"objective such as vhmt does not)", "objective")
    shared = None
    if (storage is None) != (study is None):
        raise AvsearchInputError("storage and study go together: give both or neither",
                                 "storage" if storage is None else "study")
    if storage is not None:
        from avsearch.study import check_study, open_storage
        if settings.arch or settings.strategy not in SHARED_TRIALS:
            raise AvsearchInputError(f"strategy {settings.arch and 'preset' or settings.strategy!r} "
                                     f"does not share trials through a storage (these do: "
                                     f"{', '.join(SHARED_TRIALS)})", "storage")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise AvsearchInputError("a storage's workers are separate runs, not the processes "
                                     "of one torchrun", "storage")
        opened = open_storage(storage)            # refused here if it cannot be opened
        check_study(opened, study, settings.identity())
        from avsearch.study import default_artifacts, safe_url
        artifacts = artifacts or default_artifacts(storage)
        if artifacts is None:
            raise AvsearchInputError(f"storage {safe_url(storage)}: a database storage "
                                     f"needs an artifact folder every worker sees, for the "
                                     f"weights they pass on", "artifacts")
        shared = (opened, storage, study, artifacts)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and objective.own_parameters:
        raise AvsearchInputError(f"objective {objective_name!r} trains parameters of its own, "
                                 f"which a run on several processes does not keep identical "
                                 f"yet: run it in one process", "objective")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not objective.shardable:
        raise AvsearchInputError(f"objective {objective_name!r} relates every item of a batch to "
                                 f"the others (a graph over them), which a run on several "
                                 f"processes does not split yet: run it in one process", "objective")
    replicas, device = distributed.join(device)
    try:
        summary = _run(settings, out, resume, progress, replicas, device, strategy, budget,
                       recipe, objective, data, space, anchors, shared)
    except BaseException:
        distributed.leave(ok=False)
        raise
    distributed.leave()
    return summary


def _run(settings, out, resume, progress, replicas, device, strategy, budget, recipe, objective,
         data, space, anchors, shared) -> dict[str, Any]:
    from avsearch import __version__
    from avsearch.draw import render, space_to_dot
    from avsearch.objectives import SELECTION
    from avsearch.strategies import RunContext
    from avsearch.train import Trainer

    # rank 0 names and checks the folder (the others may not see it), before anyone writes
    out = replicas.on_writer(lambda: out or _default_out(settings, resume))
    replicas.on_writer(lambda: _check_out(out, settings, resume))
    writer = replicas.writer
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "run.json", json.dumps(settings.identity(), indent=2))
    _seed_everything(settings.seed)
    trainer = Trainer(data, objective, budget, device, out, resume=resume, progress=progress,
                      seed=settings.seed, recipe=recipe, replicas=replicas,
                      precision=settings.precision)
    stats = replicas.moments(data.split("train"))   # each process reads its part
    ctx = RunContext(space, trainer, device, settings.seed, stats, anchors=anchors)
    if shared is not None:
        from avsearch.study import FinalisedElsewhere, SharedTrials
        opened, url, name, artifacts = shared
        ctx.trials = SharedTrials(url, name, settings.identity(), SharedTrials.worker_id(out),
                                  storage=opened, artifacts=artifacts)

    t0 = time.perf_counter()
    try:   # a worker of a shared search learns in either that another one finalises
        outcome = strategy.search(ctx)
        net, finetune = strategy.finetune(ctx, outcome)
    except Exception as err:
        if shared is None or not isinstance(err, FinalisedElsewhere):
            raise
        return {"out": str(out), "finalised_by": err.worker, "message": str(err)}
    total = time.perf_counter() - t0

    # -- final evaluation: validation for the record, test once
    val = evaluate(net, data, "val", device,   # each process encodes its share of a database
                   db_codes=replicas.database_codes(net, data.database("val"), device))
    test = evaluate(net, data, "test", device, pr_curve=True,
                    db_codes=replicas.database_codes(net, data.database("test"), device))
    baselines = None
    if settings.baselines and space.towers:   # a video-text space: CCA-LSH, CCA-ITQ
        from avsearch.baselines import run_cross_modal_baselines
        baselines = run_cross_modal_baselines(data, space.config.get("bits", 64), settings.seed)
    elif settings.baselines:   # trained by every process of a distributed run, as the rest
        from avsearch.baselines import run_baselines
        baselines = run_baselines(data, space.config.get("bits", 64), settings.seed, trainer,
                                  device, stats, per_video=space.op_config.input_norm == "video")
    if not writer:   # the others' work is done: their weights are rank 0's, bit for bit
        return {"out": str(out), "rank": replicas.rank, "choices": outcome.choices}
    sha = save_weights(net, out / "best.safetensors")
    arch = Architecture.from_space(
        space, outcome.choices, probabilities=outcome.probabilities, weights="best.safetensors",
        weights_sha256=sha,
        provenance={"strategy": strategy.name, "preset": settings.arch, "seed": settings.seed,
                    "data": data.source, "data_name": data.name, "length": data.length,
                    **({"lengths": data.lengths,   # a text's tokens, for export
                        "tokens": [m for m in data.text if data.vocabulary(m) is not None],
                        # the words of each token modality, so serve can tokenize captions
                        "vocabulary": {m: data.vocabulary(m).to_json() for m in data.text
                                       if data.vocabulary(m) is not None}}
                       if data.text else {}),
                    "budget": asdict(budget), "device": str(device), "avsearch": __version__},
        metrics={"val": _scalars(val), "test": _scalars(test)})
    arch.save(out / "best.arch")

    summary: dict[str, Any] = {
        "arch_id": arch.arch_id, "strategy": strategy.name, "data": data.name,
        "bits": space.config.get("bits"), "normalisation": val.get("normalisation", "k"),
        "val": val, "test": test,
        "selection": {"criterion": trainer.select, "what": SELECTION.get(trainer.select, "")},
        "params": sum(p.numel() for p in net.parameters()),
        "processes": replicas.world, "threads": torch.get_num_threads(),
        "precision": str(resolve_precision(settings.precision, device) or torch.float32).removeprefix("torch."),
        "search": outcome.diagnostics,     # how far the search moved (avsearch.diagnostics)
        # search_s covers all of the search (a supernet, trials, candidates); the supernet's
        # own stage is Table 2's "supernet time per epoch"
        "time": {"search_s": round(trainer.seconds("search"), 3),
                 "supernet_s": round(outcome.stage.seconds, 3) if outcome.stage else None,
                 "search_epochs": outcome.stage.epochs if outcome.stage else 0,
                 "halving_s": round(trainer.seconds("halving"), 3),
                 "finetune_s": round(trainer.seconds("finetune"), 3),
                 "finetune_epochs": finetune.epochs,
                 "total_s_this_process": round(total, 1)},
    }
    if baselines is not None:
        summary["baselines"] = baselines
    summary["out"] = str(out)
    atomic_write(out / "metrics.json", json.dumps(summary, indent=2))

    dot = space_to_dot(space, arch.choices, arch.probabilities)
    try:
        render(dot, out / "best.svg")
    except AvsearchInputError as err:  # no Graphviz: keep the DOT text, say so
        render(dot, out / "best.dot")
        print(f"note: {err}")
    from avsearch.plots import plot_alpha
    plot_alpha(trainer.history.read(), out / "alpha.png")
    return summary


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics (mAP@K, P@K, R@K, GmAP) for ``best.arch``; curves stay in metrics.json."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def search_lines(diagnostics: dict[str, Any]) -> list[str]:
    """The closing summary's account of how far the search moved."""
    lines = []
    if "travel" in diagnostics:
        d = diagnostics
        lines.append(f"search moved: logits travelled up to {d['travel']:.3f}, {d['decided']} of "
                     f"{d['cells']} cells decided (top-two margin > {d['margin']}), mean "
                     f"normalised entropy {d['mean_entropy']:.3f}")
    if "trials" in diagnostics:
        d = diagnostics
        lines.append(f"evolution: {d['trials']} trials, {d['distinct']} distinct architectures, "
                     f"median score {d['first_generation_median']:.4f} in the first generation, "
                     f"{d['last_generation_median']:.4f} in the last, best {d['best']:.4f}")
    if "bit_agreement" in diagnostics:
        lines.append(f"the derived network with inherited weights agrees with the supernet on "
                     f"{100 * diagnostics['bit_agreement']:.1f}% of validation code bits: "
                     f"finetuned {'from them' if diagnostics.get('inherited') else 'from scratch'}")
    if "halving" in diagnostics:
        h = diagnostics["halving"]
        lines.append(f"successive halving over {len(h['rounds'][0])} candidates: "
                     f"{'the derived architecture' if h['derived_won'] else 'a runner-up'} won "
                     f"({h['winner']})")
    return lines


def summary_table(summary: dict[str, Any], ks: tuple[int, ...] | None = None) -> str:
    """The closing table: the derived network against the baselines, test mAP@K (by default
    the Ks of the run's protocol: for images MAP@1000 too)."""
    ks = ks or PROTOCOLS[summary["test"].get("protocol", "video")].ks
    rows = [(f"{summary['strategy']} {summary['arch_id'][:8]}", summary["test"])]
    for name, metrics in summary.get("baselines", {}).items():
        rows.append((name, metrics["test"]))
    header = f"{'method':<22}" + "".join(f"{'mAP@' + str(k):>9}" for k in ks)
    lines = [f"test retrieval, {summary['bits']} bits, mAP normalised by "
             f"{'K' if summary['normalisation'] == 'k' else summary['normalisation']}", header,
             "-" * len(header)]
    for name, m in rows:
        lines.append(f"{name:<22}" + "".join(f"{m.get(f'map@{k}', float('nan')):>9.4f}" for k in ks))
    for direction, m in summary["test"].get("directions", {}).items():   # cross-modal: the mean above
        lines.append(f"  {direction:<20}" + "".join(f"{m[f'map@{k}']:>9.4f}" for k in ks)
                     + f"   mAP (whole database) {m['map@all']:.4f}")
    cnn = summary.get("baselines", {}).get("CNN")
    if cnn is not None:   # the strong simple baseline: say plainly which side wins
        gap = summary["test"]["map@100"] - cnn["test"]["map@100"]
        lines.append(f"the temporal CNN baseline beats this network by {-gap:.4f} test mAP@100"
                     if gap < 0 else f"this network beats the temporal CNN baseline by "
                                     f"{gap:.4f} test mAP@100")
    lines.extend(search_lines(summary.get("search", {})))
    t = summary["time"]
    halving = f"successive halving {t['halving_s']:.0f} s, " if t.get("halving_s") else ""
    lines.append(f"search {t['search_s']:.0f} s ({t['search_epochs']} epochs), {halving}finetune "
                 f"{t['finetune_s']:.0f} s ({t['finetune_epochs']} epochs), "
                 f"{summary['params'] / 1e6:.2f} M parameters")
    if "selection" in summary:
        lines.append(f"models selected by {summary['selection']['what'] or summary['selection']['criterion']}")
    return "\n".join(lines)
