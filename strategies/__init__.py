"""Search strategies, one module each, installed as ``avsearch.strategies``.

A strategy is a small class with one entry point, :meth:`Strategy.search`, over the shared
training loop (:class:`avsearch.train.Trainer`): it returns the derived architecture and,
when it has them, the weights the derived network inherits. Finetuning, evaluation,
checkpointing and logging are shared, so a new strategy is a few dozen lines; its options
are dataclass fields declared with :func:`~avsearch.options.option`::

    @register_strategy("mine", "what it does")
    @dataclass
    class Mine(Strategy):
        steps: int = option(10, "what it is", AT_LEAST_ONE)

        def search(self, ctx):
            ...
            return SearchOutcome(choices, probabilities, inherited_weights)
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from random import Random   # not `import random`: the strategies.random submodule shadows it
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from avsearch.data import Split
from avsearch.graph import SearchSpace
from avsearch.options import (COUNT, FRACTION, NON_NEGATIVE, POSITIVE, Check, Configurable, Option,
                              one_of, option)
from avsearch.registry import Registry
from avsearch.study import LocalTrials
from avsearch.supernet import Network, compile_space
from avsearch.train import StageResult, Trainer, derive_seed

__all__ = ["RUNNERS_UP", "Strategy", "SearchOutcome", "RunContext", "register_strategy",
           "get_strategy", "list_strategies", "strategy_options", "Preset",
           "uniform_path", "fair_paths", "path_score", "perturb_choices", "removal_scores",
           "alpha_lr", "near_ties",
           "most_probable", "runners_up", "successive_halving", "search_steps", "annealed",
           "probe_score", "train_single_paths", "warm_up", "held_out_split", "STRATEGIES",
           "weight_lr", "alpha_rate", "alpha_reach", "held_out_share"]

# the strategies by name (``--strategy``); the built-ins register themselves on first lookup
STRATEGIES: Registry[type["Strategy"]] = Registry(
    "strategy", builtins=[f"{__name__}.{m}" for m in ("csp", "darts", "spos", "enas",
                                                       "proxyless", "random")])

@dataclass
class RunContext:
    """What a strategy works with: the space, the trainer (data, objective, budget), device."""

    space: SearchSpace
    trainer: Trainer
    device: torch.device
    seed: int
    input_stats: dict[str, tuple[Any, Any]] | None = None  # train (mean, std) per modality
    # where a search's independent tasks run: here one after the other, or shared with other
    # processes through an Optuna storage (avsearch.study.SharedTrials, --storage/--study)
    trials: Any = field(default_factory=LocalTrials)
    anchors: list[Any] | None = None   # the anchor bank's inputs (a space with anchors: LAGNH)

    @property
    def budget(self):
        return self.trainer.budget

    def network(self, mode: str, choices: dict[str, str] | None = None) -> Network:
        """Compile the space in ``mode``, standardising inputs with the training statistics
        and, for a space with anchors, holding the anchor bank.

        The initial weights depend only on the run's seed, the mode and the architecture."""
        torch.manual_seed(derive_seed(self.seed, "init", mode,
                                      self.space.canonical(choices) if choices else ""))
        net = compile_space(self.space, mode, choices)
        if self.input_stats is not None:
            net.set_input_stats(self.input_stats)
        if self.anchors is not None:
            net.set_anchors([torch.as_tensor(x) for x in self.anchors])
        return net.to(self.device)


@dataclass
class SearchOutcome:
    """A search's result: the architecture, softmax(α) when the strategy has it, the weights
    the derived network inherits (None: train from scratch), the search stage's record, the
    supernet as searched (for the code-bit agreement with the derived network) and how far
    the search moved (:mod:`avsearch.diagnostics`)."""

    choices: dict[str, str]
    probabilities: dict[str, dict[str, float]] | None = None
    inherited: dict[str, torch.Tensor] | None = None
    stage: StageResult | None = None
    supernet: Network | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # runners-up, best first: what the successive-halving stage tries beside ``choices``
    candidates: list[dict[str, str]] = field(default_factory=list)


RUNNERS_UP = 7           # candidates a strategy offers the halving stage beside its choice
INHERIT_AGREEMENT = 0.9   # inherit=auto: the least code-bit agreement that keeps W*


@dataclass
class Strategy(Configurable, abc.ABC):
    """Base class: ``search`` is the strategy; what follows it is shared.

    Lifecycle: a strategy is built with its options (checked then, before a run writes
    anything); ``search(ctx)`` trains what it searches through ``ctx.trainer`` and returns a
    :class:`SearchOutcome`; ``finetune(ctx, outcome)`` (shared) derives, optionally runs the
    successive-halving stage, and trains the derived network. ``search`` is abstract;
    ``mixed_supernet`` defaults to False (set it when the outcome's supernet is a softmax(α)
    mixture, so ``derive=perturb`` works).

    Options every strategy has:

    * ``inherit``: whether the derived network starts from the weights the search trained
      (``yes``, AV-NAS's Eq. 44), from scratch (``no``, the AV-NAS code), or (``auto``) from
      them only when, on validation videos, its codes agree with the supernet's on at least
      90 % of the bits: weights trained as one term of a mixture may not fit the network
      that runs the chosen op alone.
    * ``halving``: train this many candidates (the derived architecture and the strategy's
      runners-up) standalone by successive halving, one finetune epoch per round, keeping the
      better half on validation, before the winner is finetuned. 0 or 1: off; -1 (the
      default): the budget's (``quick``: 8, ``smoke`` and ``paper``: off).
    * ``derive``: how a mixed supernet's architecture is read off: ``argmax`` of softmax(α),
      or ``perturb``, DARTS-PT's perturbation-based selection (Wang et al., ICLR 2021,
      "Rethinking Architecture Selection in Differentiable NAS"; :func:`perturb_choices`):
      per cell, the op whose removal from the mixture lowers the validation score the most.
      Only for strategies with a mixed supernet (``mixed_supernet``: csp, darts, proxyless).
    * ``perturb_tune``: with ``derive=perturb``, weight steps that train the supernet (its
      decided cells fixed) between two decisions, as DARTS-PT tunes it; 0: none.
    """

    kind: ClassVar[str] = "strategy"
    name: ClassVar[str] = "base"
    summary: ClassVar[str] = ""
    mixed_supernet: ClassVar[bool] = False

    inherit: str = option("auto", "finetune from the searched weights: yes, no, or auto (when "
                                  "the codes agree on 90 % of validation bits)",
                          one_of("auto", "yes", "no"))
    halving: int = option(-1, "candidates of the successive-halving stage (0, 1: off; -1: "
                              "the budget's)",
                          Check(lambda v: v >= -1, "an integer >= 0, or -1 for the budget's"))
    derive: str = option("argmax", "how a mixed supernet's architecture is read off: argmax "
                                   "or perturb (DARTS-PT)")
    perturb_tune: int = option(0, "weight steps after each decision of derive=perturb", COUNT)

    def __post_init__(self) -> None:   # bad options are refused before a run writes anything
        super().__post_init__()
        if self.derive not in (("argmax", "perturb") if self.mixed_supernet else ("argmax",)):
            self.refuse("derive", "argmax or perturb" if self.mixed_supernet
                        else "argmax (perturb needs a mixed supernet: csp, darts, proxyless)")

    @abc.abstractmethod
    def search(self, ctx: RunContext) -> SearchOutcome:
        """Search ``ctx.space`` with ``ctx.trainer``; the outcome names the architecture."""

    def finetune(self, ctx: RunContext, outcome: SearchOutcome) -> tuple[Network, StageResult]:
        """Train the derived network (Eq. 44), selecting its weights on validation (Eq. 45)."""
        if self.derive == "perturb":
            perturb_choices(ctx, outcome, self.perturb_tune)
        halving = ctx.budget.halving if self.halving < 0 else self.halving
        if not (halving > 1 and outcome.candidates):
            ctx.trials.finalise()     # a shared search: one worker goes on (else after halving)
        net = ctx.network("fixed", outcome.choices)
        inherited = outcome.inherited if self.inherit != "no" else None
        if inherited is not None:
            net.inherit(inherited)
            if outcome.supernet is not None:
                agreement = inherited_agreement(ctx, outcome.supernet, net, outcome.choices)
                outcome.diagnostics["bit_agreement"] = round(agreement, 4)
                if self.inherit == "auto" and agreement < INHERIT_AGREEMENT:
                    inherited = None
                    net = ctx.network("fixed", outcome.choices)
        outcome.diagnostics["inherited"] = inherited is not None
        if halving > 1 and outcome.candidates:
            # only a supernet's weights fit every candidate (random search's are the winner's own)
            shared = inherited if outcome.supernet is not None else None
            net, inherited = successive_halving(ctx, outcome, halving, shared)
        lr = ctx.budget.finetune_lr if inherited is not None else None   # None: the recipe's
        opt = ctx.trainer.weight_optimizer(net.parameters(), lr)
        return net, ctx.trainer.stage("finetune", net, {"w": opt}, ctx.budget.finetune_epochs,
                                      phase="finetune")


def perturb_choices(ctx: RunContext, outcome: SearchOutcome, tune: int = 0) -> None:
    """DARTS-PT's perturbation-based selection (Wang et al., ICLR 2021, Alg. 1), replacing
    ``outcome.choices``: α's magnitude need not say how much an op contributes to the
    supernet, so the cells (leaders; followers run their leader's choice) are decided in an
    order the seed fixes, each by removing every candidate in turn from its mixture (the
    others keep their weights in the supernet's eval mixture, softmax(α/τ), renormalised)
    and scoring the supernet on validation (the trainer's selection metric, the budget's
    ``eval_limit`` videos). The candidate whose
    removal scores lowest is chosen (ties: the higher α) and its cell runs it alone from
    then on. ``tune`` > 0 trains the supernet's weights that many steps after each decision
    (a stage ``search/perturb/<cell>/tune``, which the checkpoint keeps), and the derived
    network inherits the tuned weights. Decisions are remembered by the checkpoint.

    The record goes to ``outcome.diagnostics["perturb"]``. The halving stage's runners-up
    keep their differences from the argmax, applied to the new choice."""
    net = outcome.supernet
    probs = net.probabilities()
    # the mixture the supernet computes in eval (softmax(α/τ) after an annealed search)
    mixture = net.probabilities(net.temperature)
    gates = {c: dict(p) for c, p in mixture.items()}
    order = list(ctx.space.cells)
    Random(derive_seed(ctx.seed, "perturb")).shuffle(order)
    argmax = most_probable(probs)
    cells = {}

    def decide(cell: str) -> dict[str, Any]:
        scores = removal_scores(net, gates, cell,
                                lambda: float(ctx.trainer.validate(net)[ctx.trainer.select]))
        return {"scores": scores, "choice": min(scores, key=lambda o: (scores[o], -probs[cell][o]))}

    for cell in order:
        if len(probs[cell]) == 1:                          # nothing to remove
            cells[cell] = {"scores": {}, "choice": argmax[cell]}
        else:
            cells[cell] = ctx.trainer.remember(f"search/perturb/{cell}", lambda c=cell: decide(c),
                                               phase="search",
                                               log=lambda d, c=cell: {"cell": c, **d})
        gates[cell] = {cells[cell]["choice"]: None}
        if tune > 0:
            net.set_gates(gates)
            opt = ctx.trainer.weight_optimizer(net.weight_parameters())
            ctx.trainer.stage(f"search/perturb/{cell}/tune", net, {"w": opt}, 1, phase="search",
                              anchors=tune * ctx.trainer.batch_size)
    net.set_gates(None)
    choices = {c: cells[c]["choice"] for c in ctx.space.cells}
    outcome.candidates = [{**choices, **{c: o for c, o in cand.items() if o != argmax[c]}}
                          for cand in outcome.candidates]
    outcome.choices = choices
    if tune > 0 and outcome.inherited is not None:
        outcome.inherited = net.weight_state_dict()
    outcome.diagnostics["perturb"] = {
        "order": order, "tune_steps": tune,
        "changed_cells": sum(choices[c] != argmax[c] for c in choices),
        "cells": {c: {**cells[c], "argmax": argmax[c]} for c in order}}


def removal_scores(net: Network, gates: dict[str, dict[str, float | None]], cell: str,
                   score: Callable[[], float]) -> dict[str, float]:
    """DARTS-PT's perturbation of one cell of a mixed supernet: per candidate of ``cell``,
    ``score()`` with that candidate removed from the cell's mixture (the others keep their
    weights in ``gates[cell]``, renormalised), every other cell as ``gates`` sets it. The
    supernet's gates are left set; ``net.set_gates(None)`` returns it to its policy."""
    scores = {}
    for op in gates[cell]:
        rest = {o: p for o, p in gates[cell].items() if o != op}
        total = sum(rest.values())
        net.set_gates({**gates, cell: {o: p / total for o, p in rest.items()}})
        scores[op] = score()
    return scores


def successive_halving(ctx: RunContext, outcome: SearchOutcome, count: int,
                       inherited: dict[str, torch.Tensor] | None) -> tuple[Network, dict | None]:
    """Train ``count`` candidates (the derived architecture first, then the runners-up)
    standalone, one finetune epoch a round, keeping the better half by validation score
    until one is left (Jamieson & Talwalkar 2016; the last stage of NNI's and Optuna's
    multi-fidelity searches). Each starts from ``inherited`` (or from scratch) and continues
    from its own weights in the next round. Sets ``outcome.choices`` to the winner and
    returns its network and weights.

    Each round is a batch of ``ctx.trials``: in a search shared through a storage, workers
    train a round's candidates in parallel and pass their weights on; then one finalises."""
    pool, seen = [], set()
    for choices in [outcome.choices, *outcome.candidates]:
        if ctx.space.canonical(choices) not in seen and len(pool) < count:
            seen.add(ctx.space.canonical(choices))
            pool.append(choices)
    nets = {}
    for choices in pool:
        net = ctx.network("fixed", choices)
        if inherited is not None:
            net.inherit(inherited)
        nets[ctx.space.canonical(choices)] = net
    lr = ctx.budget.finetune_lr if inherited is not None else None   # None: the recipe's
    rounds, survivors = [], pool
    while len(survivors) > 1:
        def train(i: int, survivors=survivors, rung=len(rounds)):
            net = nets[ctx.space.canonical(survivors[i])]
            opt = ctx.trainer.weight_optimizer(net.parameters(), lr)
            result = ctx.trainer.stage(f"halving/{rung}/{ctx.space.arch_id(survivors[i])[:12]}",
                                       net, {"w": opt}, 1, phase="halving")
            return result.best_score, net

        batch = f"halving/{len(rounds)}"
        scores = ctx.trials.evaluate(len(survivors), train, batch=batch, weights=True)
        rounds.append({ctx.space.arch_id(c)[:12]: round(s, 4) for c, s in zip(survivors, scores)})
        order = sorted(range(len(survivors)), key=lambda i: -scores[i])  # stable: ties keep rank
        for i in order[:max(1, len(survivors) // 2)]:    # they go on from their own weights
            ctx.trials.restore(batch, i, nets[ctx.space.canonical(survivors[i])])
        survivors = [survivors[i] for i in order[:max(1, len(survivors) // 2)]]
    ctx.trials.finalise()
    outcome.choices = survivors[0]
    outcome.diagnostics["halving"] = {"rounds": rounds, "winner": ctx.space.arch_id(outcome.choices)[:12],
                                      "derived_won": survivors[0] is pool[0]}
    net = nets[ctx.space.canonical(outcome.choices)]
    return net, {k: v.detach().clone() for k, v in net.state_dict().items()}


def most_probable(probabilities: dict[str, dict[str, float]]) -> dict[str, str]:
    """Per cell, the candidate of highest probability: the argmax architecture (Eq. 42)."""
    return {c: max(p, key=p.get) for c, p in probabilities.items()}


def runners_up(space: SearchSpace, probabilities: dict[str, dict[str, float]], k: int,
               seed: int) -> list[dict[str, str]]:
    """``k`` distinct architectures other than the argmax for the halving stage: draws from
    softmax(α) (seeded), topped up with :func:`near_ties` when α has decided so much that
    draws repeat. Draws rather than near-ties first: at short budgets α barely ranks
    architectures (Kendall τ ≈ 0 against scratch training on avdigits, issue 10), so the
    stage needs candidates that differ in more than the least decided cell."""
    rng = Random(seed)
    best = most_probable(probabilities)
    seen, found = {space.canonical(best)}, []
    for _ in range(20 * k):
        if len(found) == k:
            break
        draw = {c: rng.choices(list(p), weights=list(p.values()))[0] for c, p in probabilities.items()}
        if space.canonical(draw) not in seen:
            seen.add(space.canonical(draw))
            found.append(draw)
    for tie in near_ties(space, probabilities, k):
        if len(found) < k and space.canonical(tie) not in seen:
            seen.add(space.canonical(tie))
            found.append(tie)
    return found


def near_ties(space: SearchSpace, probabilities: dict[str, dict[str, float]], k: int) -> list[dict[str, str]]:
    """The argmax architecture with one cell changed to its runner-up, least decided cells
    (smallest top-two margin) first: the architectures an α search nearly chose."""
    best = most_probable(probabilities)
    margins = []
    for cell, p in probabilities.items():
        if cell in space.cells and len(p) > 1:
            top = sorted(p.items(), key=lambda kv: -kv[1])
            margins.append((top[0][1] - top[1][1], cell, top[1][0]))
    return [{**best, cell: runner_up} for _, cell, runner_up in sorted(margins)[:k]]


def probe_score(ctx: RunContext, net: Network, probes: int = 2) -> dict[str, float]:
    """Validation score of a supernet trained on single paths: the mean score of ``probes``
    fixed random paths (the run's seed fixes them), comparable from epoch to epoch."""
    paths = [ctx.space.sample(derive_seed(ctx.seed, "probe", i)) for i in range(probes)]
    return {ctx.trainer.select: sum(path_score(ctx, net, p) for p in paths) / len(paths)}


def train_single_paths(ctx: RunContext, net: Network, name: str, epochs: int, lr: float,
                       probes: int = 2, fair: bool = False) -> StageResult:
    """Stage ``name`` of the search: a supernet's weights train one uniformly random path per
    step (SPOS), epochs selected by the mean score of ``probes`` fixed paths. ``fair``: each
    step accumulates the gradients of the :func:`fair_paths` instead (FairNAS)."""
    opt = ctx.trainer.weight_optimizer(net.weight_parameters(), lr)

    def step(batch) -> float:
        if fair:
            return ctx.trainer.weight_step(net, [opt], batch, passes=[
                lambda p=p: net.set_path(p) for p in fair_paths(ctx.space)])
        net.set_path(uniform_path(ctx.space))
        return ctx.trainer.weight_step(net, [opt], batch)

    return ctx.trainer.stage(name, net, {"w": opt}, epochs, phase="search", step=step,
                             score=lambda: probe_score(ctx, net, probes))


def warm_up(ctx: RunContext, net: Network, epochs: int, lr: float) -> None:
    """Train a mixed supernet's weights on uniform single paths for ``epochs`` epochs (stage
    ``search/warmup``) before its α moves: α stepping from the first batch rewards the ops
    that lower the loss soonest (parameter-free ones), not the ones that end best (DARTS's
    Skip collapse; the warm-up of PC-DARTS, ProxylessNAS and DARTS-PT)."""
    if epochs >= 1:
        train_single_paths(ctx, net, "search/warmup", epochs, lr)
        net.set_path(None)


def inherited_agreement(ctx: RunContext, supernet: Network, derived: Network,
                        choices: dict[str, str]) -> float:
    """Share of equal code bits, on validation videos, between the supernet as searched (a
    mixed one with its softmax(α) mixture, a single-path one on the derived path) and the
    derived network holding the weights it inherits: how well those weights fit it."""
    from avsearch.diagnostics import bit_agreement
    from avsearch.inference import encode_split

    split = ctx.trainer.data.split("val")
    limit = ctx.budget.eval_limit
    supernet.set_path(None if supernet.mode == "mixed" else choices)
    a = encode_split(supernet, split, ctx.device, limit=limit)
    b = encode_split(derived, split, ctx.device, limit=limit)
    return bit_agreement(a, b)


def held_out_split(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """The training split cut in two at random (fixed by the seed): weights train on the
    first part, architecture parameters on the second, ``fraction`` of it (DARTS's bilevel
    data, §2.3 of DARTS; ProxylessNAS's α steps)."""
    n = len(train)
    order = np.random.default_rng(seed).permutation(n)
    cut = min(n - 1, max(1, round(n * (1 - fraction))))
    return train.subset(order[:cut]), train.subset(order[cut:])


def alpha_lr(given: float, travel: float, steps: int) -> float:
    """α's Adam learning rate: ``given``, or (when 0) ``travel`` divided by the search's α
    ``steps``. Adam moves a logit by about its learning rate per step, so a fixed rate lets α
    travel in proportion to the budget: 64 steps at 1e-3 decide nothing, DARTS's 19.5k at
    3e-4 move logits by up to ~6 (issue 10). Deriving it gives every budget the same reach."""
    return given or travel / steps


def search_steps(ctx: RunContext, streams=None, epochs: int | None = None) -> int:
    """Optimiser steps of ``epochs`` search epochs (default: the budget's) over ``streams``."""
    per_epoch = len(ctx.trainer.batches(streams or [ctx.trainer.train_split], 1,
                                        ctx.trainer.anchors("search")))
    return max(1, per_epoch * (ctx.budget.search_epochs if epochs is None else epochs))


def annealed(tau: tuple[float, ...], optimizer: torch.optim.Optimizer, total: int) -> float:
    """τ annealed geometrically from ``tau[0]`` at the first step of ``optimizer`` to
    ``tau[-1]`` at its ``total``-th (GDAS anneals 10 → 0.1). The step count is the
    optimiser's own, which the checkpoint keeps, so a resumed search anneals on."""
    state = next((s for s in optimizer.state.values() if "step" in s), None)
    done = float(state["step"]) if state else 0.0
    start, end = float(tau[0]), float(tau[-1])
    return start * (end / start) ** min(1.0, done / max(1, total - 1))


class Preset(Strategy):
    """No search: train a given architecture from scratch (``--arch``: a preset of the space
    or an ``.arch`` file's choices, which :func:`avsearch.run.fixed_choices` reads)."""

    name = "preset"
    summary = "train a preset or an .arch file's architecture, no search"

    def __init__(self, choices: dict[str, str]):
        super().__init__(inherit="no")
        self.choices = dict(choices)

    def search(self, ctx: RunContext) -> SearchOutcome:
        return SearchOutcome(ctx.space.validate(self.choices))


def register_strategy(name: str, summary: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Register a :class:`Strategy` subclass as ``--strategy name``."""
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name, cls.summary = name, summary
        return STRATEGIES.register(name, cls)

    return deco


def list_strategies() -> dict[str, str]:
    """Registered strategies and their one-line summaries."""
    return {n: c.summary for n, c in STRATEGIES.items().items()}


def strategy_options(name: str) -> dict[str, Option]:
    """A strategy's options (``--strategy-set KEY=VALUE``): name, type, default, help."""
    return STRATEGIES.get(name).options()


def get_strategy(name: str, **options: Any) -> Strategy:
    """An instance of a registered strategy with its options (strings from the command line,
    or typed values), read and checked."""
    return STRATEGIES.get(name).build(**options)


# ---------------------------------------------------------------- options several strategies have
def weight_lr() -> Any:
    """The ``w_lr`` option: the weights' learning rate in the search."""
    return option(1e-3, "the weights' learning rate in the search", POSITIVE)


def alpha_rate() -> Any:
    """The ``alpha_lr`` option of an α strategy (see :func:`alpha_lr`)."""
    return option(0.0, "α's Adam learning rate (0: alpha_travel / α steps)", NON_NEGATIVE)


def alpha_reach() -> Any:
    """The ``alpha_travel`` option of an α strategy (see :func:`alpha_lr`)."""
    return option(4.0, "how far α's logits may travel over the search (DARTS ~6, PC-DARTS ~2)",
                  POSITIVE)


def held_out_share() -> Any:
    """The ``held_out`` option: the share of the training data α trains on."""
    return option(0.5, "share of the training data α trains on (the rest trains W)", FRACTION)


# ---------------------------------------------------------------- shared by one-shot strategies
def uniform_path(space: SearchSpace) -> dict[str, str]:
    """A uniformly random path (one candidate per cell) drawn from torch's global generator,
    which the training loop seeds per stage and checkpoints."""
    return {c: space.candidates(c)[int(torch.randint(len(space.candidates(c)), ()))]
            for c in space.cells}


def fair_paths(space: SearchSpace) -> list[dict[str, str]]:
    """FairNAS's strict fairness (Chu et al., "FairNAS", ICCV 2021, §3.2, Alg. 1): m paths
    that between them run every candidate of every cell equally often, so one update
    accumulates every candidate's gradient the same number of times. FairNAS's cells all have
    m candidates and each runs once; here m is the least common multiple of the cells'
    candidate counts and a cell of k candidates runs each m / k times (m / k independent
    permutations of its candidates, from torch's global generator)."""
    m = math.lcm(*(len(space.candidates(c)) for c in space.cells))
    order = {}
    for c in space.cells:
        names = space.candidates(c)
        order[c] = [names[int(i)] for _ in range(m // len(names))
                    for i in torch.randperm(len(names))]
    return [{c: order[c][j] for c in space.cells} for j in range(m)]


def path_score(ctx: RunContext, net: Network, choices: dict[str, str], limit: int | None = None,
               steps: int = 0, lr: float | None = None) -> float:
    """Validation score of one path of a supernet with its shared (inherited) weights.

    ``steps`` > 0: the path first trains that many weight steps of its own from the shared
    weights (the recipe's optimiser at ``lr``, default the recipe's rate; the first ``steps``
    batches of the search's first epoch, so every path sees the same data), and the supernet
    gets its weights and torch's generator back afterwards. On avdigits at the ``quick``
    budget a single-path supernet's paths all score at chance (their codes barely depend on
    the video), while 8 steps of a path's own rank the references (issue 10;
    experiments/search_vs_random has the numbers): a reduced-training proxy (EcoNAS, Zhou et
    al., CVPR 2020) started from the shared weights."""
    net.set_path(choices)
    if steps > 0:
        saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
        generator = torch.get_rng_state()
        torch.manual_seed(derive_seed(ctx.seed, "path-steps", ctx.space.canonical(choices)))
        opt = ctx.trainer.weight_optimizer(net.weight_parameters(), lr)
        was_training = net.training
        net.train()
        for batch in ctx.trainer.batches([ctx.trainer.train_split], 1,
                                         steps * ctx.trainer.batch_size)[:steps]:
            ctx.trainer.weight_step(net, [opt], *batch)
        net.train(was_training)
    try:
        return float(ctx.trainer.validate(net, limit)[ctx.trainer.select])
    finally:
        if steps > 0:
            net.load_state_dict(saved)
            torch.set_rng_state(generator)
