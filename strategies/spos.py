"""SPOS, single-path one-shot (Guo et al., 2020): train the supernet one uniformly random path
per step, then search it with an evolutionary algorithm whose fitness is the validation mAP of
a path with the supernet's (inherited) weights, then finetune the winner from those weights.

The evolution is Optuna's NSGA-II over the space's categorical choices (one parameter per
cell). Each trial's score is checkpointed, and the sampler is re-seeded per trial from the run's
seed, so a resumed search asks for the same architectures in the same order.

Model selection for the supernet itself (which epoch's W to keep) uses the mean validation
score of a few fixed random paths.

Shared through a storage (``--storage``, :mod:`avsearch.study`), the supernet is one task:
the first worker trains it and the others load its weights from the artifact store (every
trial must be scored under the same W, and training it on every worker would repeat the
search's costliest part); each generation of the evolution is a batch of tasks, its new
architectures, scored in parallel. NSGA-II asks a generation's architectures from the
previous generations' scores alone, so asking a whole generation before scoring it gives
the architectures of one-by-one asking, and every worker, reading every score, asks the
same next generation: the search equals the one-process run.

``path_steps`` > 0 scores an architecture after that many weight steps of its own from the
shared weights (:func:`~avsearch.strategies.path_score`; the supernet gets its weights back
after each): on avdigits at the ``quick`` budget every path of the supernet scores at chance
as it is, and 8 steps of its own make the score rank architectures (issue 10,
experiments/search_vs_random).

The budget's ``search_trials`` are the evolution's trials unless ``trials`` is given; the
population is a third of them (at least 4) unless ``population`` is given. The ``paper``
budget's 1000 trials are SPOS's 20 generations of 50 with ``population=50``; the default
population makes them 3 generations of 333.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from avsearch.options import AT_LEAST_ONE, COUNT, option
from avsearch.strategies import (RUNNERS_UP, RunContext, SearchOutcome, Strategy, path_score,
                                 register_strategy, train_single_paths, weight_lr)
from avsearch.train import StageResult, derive_seed


@register_strategy("spos", "single-path one-shot: uniform paths train the supernet, NSGA-II "
                           "(Optuna) searches it; finetune")
@dataclass
class SPOS(Strategy):
    trials: int = option(0, "architectures the evolution scores (0: the budget's search_trials)",
                         COUNT)
    population: int = option(0, "NSGA-II population (0: a third of the trials, at least 4)", COUNT)
    w_lr: float = weight_lr()
    probes: int = option(2, "fixed random paths whose mean score selects the supernet's epoch",
                         AT_LEAST_ONE)
    fair: bool = option(False, "FairNAS's strict fairness: each supernet step accumulates the "
                               "gradients of paths that run every candidate equally often")
    path_steps: int = option(0, "weight steps a path trains on its own, from the shared "
                                "weights, before the evolution scores it (0: none)", COUNT)

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("single-path")

        def supernet(_):
            result = train_single_paths(ctx, net, "search", ctx.budget.search_epochs, self.w_lr,
                                        self.probes, self.fair)
            return {"score": result.best_score, "epoch": result.best_epoch,
                    "seconds": result.seconds}, net

        # trained once, by one worker of a shared search, whose weights the others load
        done = ctx.trials.evaluate(1, supernet, batch="search/supernet", weights=True)[0]
        ctx.trials.restore("search/supernet", 0, net)
        stage = StageResult(done["score"], done["epoch"], done["seconds"], ctx.budget.search_epochs)
        trials = self.trials or ctx.budget.search_trials
        population = self.population or max(4, trials // 3)
        best = evolve(ctx, lambda choices: path_score(ctx, net, choices, steps=self.path_steps,
                                                      lr=self.w_lr), trials, population)
        scores = [t["score"] for t in ctx.trainer.remembered("search/evolution/")]
        distinct = {ctx.space.canonical(t["choices"]) for t in ctx.trainer.remembered("search/evolution/")}
        # the evolution's equivalent of α's travel: how much better its last generation is
        # than its first (random) one, and how many architectures it actually scored
        diagnostics = {"trials": len(scores), "distinct": len(distinct),
                       "best": round(max(scores), 4),
                       "first_generation_median": round(float(np.median(scores[:population])), 4),
                       "last_generation_median": round(float(np.median(scores[-population:])), 4)}
        ranked = {ctx.space.canonical(t["choices"]): t for t in
                  sorted(ctx.trainer.remembered("search/evolution/"), key=lambda t: -t["score"])}
        runners_up = [t["choices"] for t in ranked.values() if t["choices"] != best][:RUNNERS_UP]
        return SearchOutcome(best, None, net.weight_state_dict(), stage, supernet=net,
                             diagnostics=diagnostics, candidates=runners_up)


def evolve(ctx: RunContext, fitness: Callable[[dict[str, str]], float], trials: int, population: int,
           name: str = "search/evolution") -> dict[str, str]:
    """NSGA-II over the space's cells; returns the best architecture (earliest among ties).

    A generation at a time: its architectures are asked, the new ones scored (a batch of
    ``ctx.trials``, shared with other workers in a shared search; an architecture asked
    again keeps its score), then told. Each trial's score is remembered by the checkpoint."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = ctx.space
    distributions = {c: CategoricalDistribution(space.candidates(c)) for c in space.cells}
    study = optuna.create_study(direction="maximize")
    seen: dict[str, float] = {}    # architecture -> score, over the generations so far
    results: list[tuple[float, dict[str, str]]] = []
    for generation, first in enumerate(range(0, trials, population)):
        asked = []
        for i in range(first, min(trials, first + population)):
            study.sampler = optuna.samplers.NSGAIISampler(
                population_size=population, seed=derive_seed(ctx.seed, name, i) % 2**32)
            trial = study.ask(distributions)
            asked.append((i, trial, {c: trial.params[c] for c in space.cells}))
        new = list({space.canonical(ch): ch for _, _, ch in asked
                    if space.canonical(ch) not in seen}.values())
        scores = ctx.trainer.remember(
            f"{name}-generation/{generation}", phase="search",
            compute=lambda: ctx.trials.evaluate(len(new), lambda j: float(fitness(new[j])),
                                                batch=f"{name}/{generation}"),
            log=lambda v: {"generation": generation, "scored": len(v)})
        seen.update((space.canonical(ch), score) for ch, score in zip(new, scores))
        for i, trial, choices in asked:
            value = ctx.trainer.remember(
                f"{name}/{i}", lambda: {"choices": choices, "score": seen[space.canonical(choices)]},
                phase="search", log=lambda v: {"trial": i, **v})
            if value["choices"] != choices:
                raise RuntimeError(f"{name}: trial {i} asked for another architecture than the "
                                   f"checkpointed run did; the resumed search cannot continue")
            study.tell(trial, value["score"])
            results.append((value["score"], choices))
    return max(results, key=lambda r: r[0])[1]   # max keeps the first of equal scores
