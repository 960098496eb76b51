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

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from avsearch.errors import AvsearchInputError
from avsearch.graph import SearchSpace
from avsearch.supernet import Network, compile_space
from avsearch.train import StageResult, Trainer

__all__ = ["Strategy", "SearchOutcome", "RunContext", "register_strategy", "get_strategy",
           "list_strategies", "Preset"]

_BUILTIN = ("csp",)
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
        """Compile the space in ``mode``, standardising inputs with the training statistics."""
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
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        return net, ctx.trainer.stage("finetune", net, {"w": opt}, ctx.trainer.one_level_step(net, [opt]),
                                      ctx.budget.finetune_epochs)


class Preset(Strategy):
    """No search: train a named expert architecture of the space (e.g. ``--arch transformer``)."""

    name = "preset"
    summary = "train a preset architecture of the space, no search"

    def __init__(self, preset: str):
        self.preset = preset

    def search(self, ctx: RunContext) -> SearchOutcome:
        if self.preset not in ctx.space.presets:
            raise AvsearchInputError(f"space {ctx.space.name!r} has no preset {self.preset!r} "
                                     f"(presets: {', '.join(ctx.space.presets) or 'none'})")
        return SearchOutcome(dict(ctx.space.presets[self.preset]))


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


def get_strategy(name: str, **options: Any) -> Strategy:
    _load_builtins()
    if name not in _STRATEGIES:
        raise AvsearchInputError(f"unknown strategy {name!r} "
                                 f"(available: {', '.join(sorted(_STRATEGIES))})")
    return _STRATEGIES[name](**options)
