"""Search strategies, one module each, installed as ``avsearch.strategies``.

A strategy is a small class with one entry point, :meth:`Strategy.search`, over the shared
training loop (:class:`avsearch.train.Trainer`): it returns the derived architecture and,
when it has them, the weights the derived network inherits. Finetuning, evaluation,
checkpointing and logging are shared, so a new strategy is a few dozen lines::

    @register_strategy("mine", "what it does")
    class Mine(Strategy):
        def search(self, ctx):
            ...
            return SearchOutcome(choices, probabilities, inherited_weights)
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from avsearch._options import convert_options
from avsearch.errors import AvsearchInputError
from avsearch.graph import SearchSpace
from avsearch.supernet import Network, compile_space
from avsearch.train import StageResult, Trainer, derive_seed

__all__ = ["Strategy", "SearchOutcome", "RunContext", "register_strategy", "get_strategy",
           "list_strategies", "strategy_options", "Preset", "fixed_choices", "uniform_path",
           "path_score"]

_BUILTIN = ("csp", "darts", "spos", "enas", "proxyless", "random")
_STRATEGIES: dict[str, type["Strategy"]] = {}

SCRATCH_LR = 1e-3    # a network that inherits nothing trains from scratch at Adam's usual rate


@dataclass
class RunContext:
    """What a strategy works with: the space, the trainer (data, objective, budget), device."""

    space: SearchSpace
    trainer: Trainer
    device: torch.device
    seed: int
    input_stats: dict[str, tuple[Any, Any]] | None = None  # train (mean, std) per modality

    @property
    def budget(self):
        return self.trainer.budget

    def network(self, mode: str, choices: dict[str, str] | None = None) -> Network:
        """Compile the space in ``mode``, standardising inputs with the training statistics.

        The initial weights depend only on the run's seed, the mode and the architecture."""
        torch.manual_seed(derive_seed(self.seed, "init", mode,
                                      self.space.canonical(choices) if choices else ""))
        net = compile_space(self.space, mode, choices)
        if self.input_stats is not None:
            net.set_input_stats(self.input_stats)
        return net.to(self.device)


@dataclass
class SearchOutcome:
    """A search's result: the architecture, softmax(α) when the strategy has it, the weights
    the derived network inherits (None: train from scratch), and the search stage's record."""

    choices: dict[str, str]
    probabilities: dict[str, dict[str, float]] | None = None
    inherited: dict[str, torch.Tensor] | None = None
    stage: StageResult | None = None


class Strategy:
    """Base class: ``search`` is the strategy; ``finetune`` is shared."""

    name = "base"
    summary = ""

    def search(self, ctx: RunContext) -> SearchOutcome:
        raise NotImplementedError

    def finetune(self, ctx: RunContext, outcome: SearchOutcome) -> tuple[Network, StageResult]:
        """Train the derived network (Eq. 44), selecting its weights on validation (Eq. 45)."""
        net = ctx.network("fixed", outcome.choices)
        if outcome.inherited is not None:
            net.inherit(outcome.inherited)
        lr = ctx.budget.finetune_lr if outcome.inherited is not None else SCRATCH_LR
        opt = ctx.trainer.weight_optimizer(net.parameters(), lr)
        return net, ctx.trainer.stage("finetune", net, {"w": opt}, ctx.trainer.one_level_step(net, [opt]),
                                      ctx.budget.finetune_epochs)


def fixed_choices(space: SearchSpace, arch: str) -> dict[str, str]:
    """The architecture ``arch`` names: a preset of ``space`` or an ``.arch`` file (whose
    choices must fit ``space``, e.g. an architecture found on other data, retrained here)."""
    if arch in space.presets:
        return dict(space.presets[arch])
    if not arch.endswith(".arch"):
        raise AvsearchInputError(f"space {space.name!r} has no preset {arch!r} (presets: "
                                 f"{', '.join(space.presets) or 'none'}; or give an .arch file)")
    from avsearch.arch import Architecture

    loaded = Architecture.load(arch)
    if loaded.space != space.name:
        raise AvsearchInputError(f"{arch}: an architecture of space {loaded.space!r}, "
                                 f"not {space.name!r}")
    try:
        return space.validate(loaded.choices)
    except AvsearchInputError as err:
        raise AvsearchInputError(f"{arch}: does not fit this run's space: {err}") from None


class Preset(Strategy):
    """No search: train a given architecture from scratch, a preset of the space
    (``--arch transformer``) or an ``.arch`` file (``--arch found.arch``)."""

    name = "preset"
    summary = "train a preset or an .arch file's architecture, no search"

    def __init__(self, arch: str):
        self.arch = arch

    def search(self, ctx: RunContext) -> SearchOutcome:
        return SearchOutcome(fixed_choices(ctx.space, self.arch))


def register_strategy(name: str, summary: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name, cls.summary = name, summary
        _STRATEGIES[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"{__name__}.{module}")


def list_strategies() -> dict[str, str]:
    """Registered strategies and their one-line summaries."""
    _load_builtins()
    return {n: c.summary for n, c in sorted(_STRATEGIES.items())}


def strategy_options(name: str) -> dict[str, Any]:
    """A strategy's options (``--strategy-set KEY=VALUE``) and their defaults: the fields of
    its dataclass."""
    cls = _lookup(name)
    return {f.name: f.default for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def get_strategy(name: str, **options: Any) -> Strategy:
    """An instance of a registered strategy; option values given as strings (from the command
    line) are converted to the type of the option's default."""
    cls = _lookup(name)
    return cls(**convert_options(f"strategy {name!r}", options, strategy_options(name),
                                 "--strategy-set"))


def _lookup(name: str) -> type[Strategy]:
    _load_builtins()
    if name not in _STRATEGIES:
        raise AvsearchInputError(f"unknown strategy {name!r} "
                                 f"(available: {', '.join(sorted(_STRATEGIES))})")
    return _STRATEGIES[name]


# ---------------------------------------------------------------- shared by one-shot strategies
def uniform_path(space: SearchSpace) -> dict[str, str]:
    """A uniformly random path (one candidate per cell) drawn from torch's global generator,
    which the training loop seeds per stage and checkpoints."""
    return {c: space.candidates(c)[int(torch.randint(len(space.candidates(c)), ()))]
            for c in space.cells}


def path_score(ctx: RunContext, net: Network, choices: dict[str, str], limit: int | None = None) -> float:
    """Validation score of one path of a supernet with its shared (inherited) weights."""
    net.set_path(choices)
    return float(ctx.trainer.validate(net, limit)[ctx.trainer.select])
