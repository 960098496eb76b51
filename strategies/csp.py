"""Coarse search → prune → finetune, AV-NAS §4.3 (Eqs. 39-45).

Coarse search trains the mixed supernet (Eq. 39) with one-level updates: W and α step on the
same training batch with separate optimizers (Eq. 40); after every epoch the validation mAP
decides which (W, α) to keep (Eq. 41). Pruning takes the argmax of softmax(α) per cell
(Eqs. 42-43). Finetuning trains the pruned network starting from the searched weights W*
(Eq. 44 — the paper's text; the authors' code retrains from scratch) and keeps its best
validation state (Eq. 45).

Optimizers: W as the recipe says (Adam/AdamW at 1e-3, the authors' readme; their code uses
SGD 1e-3, which at short budgets barely moves W). α: Adam at ``alpha_lr``; 0 (the default)
derives it from the budget as ``alpha_travel`` / α steps (:func:`~avsearch.strategies.alpha_lr`),
so a short search can still decide; ``--strategy-set alpha_lr=1e-3`` is the authors' rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from avsearch.diagnostics import distribution_diagnostics
from avsearch.options import Check, one_of, option
from avsearch.strategies import (RUNNERS_UP, RunContext, SearchOutcome, Strategy, alpha_lr,
                                 alpha_rate, alpha_reach, annealed, register_strategy, runners_up,
                                 search_steps, warm_up, weight_lr)
from avsearch.train import derive_seed


@register_strategy("csp", "coarse search, prune, finetune: one-level W/α on the mixed supernet (AV-NAS)")
@dataclass
class CSP(Strategy):
    mixed_supernet = True
    w_lr: float = weight_lr()
    alpha_lr: float = alpha_rate()
    alpha_travel: float = alpha_reach()
    # Off by default: at the quick budget a warm-up epoch (32 steps) left the loss at chance on
    # avdigits and v30 (4.92 and 4.94 against log 127 = 4.84) and spent half the search.
    warmup_epochs: int = option(0, "uniform single-path epochs before α moves (-1: half the "
                                   "search)")
    policy: str = option("softmax", "softmax (every candidate, softmax(α/τ)), gumbel (one "
                                    "path a step, GDAS) or binary (two candidates a cell, one "
                                    "active: ProxylessNAS's gates)",
                         one_of("softmax", "gumbel", "binary"))
    tau: tuple[float, ...] = option((1.0, 1.0), "τ at the first and last α step (GDAS: 10,0.1)",
                                    Check(lambda t: len(t) in (1, 2) and min(t) > 0,
                                          "one or two numbers > 0"))

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("mixed")
        initial = net.probabilities()
        epochs = ctx.budget.search_epochs
        warm = epochs // 2 if self.warmup_epochs < 0 else min(self.warmup_epochs, epochs - 1)
        warm_up(ctx, net, warm, self.w_lr)
        steps = search_steps(ctx, epochs=epochs - warm)
        w_opt = ctx.trainer.weight_optimizer(net.weight_parameters(), self.w_lr)
        # binary gates give an undrawn candidate a zero gradient, which Adam's momentum would
        # still move: without it (β1 = 0, ProxylessNAS's own) only the drawn pair moves
        a_opt = torch.optim.Adam(net.arch_parameters(),
                                 lr=alpha_lr(self.alpha_lr, self.alpha_travel, steps),
                                 betas=(0.0, 0.999) if self.policy == "binary" else (0.9, 0.999))

        def step(batch) -> float:   # one level (Eq. 40): W and α step on the same batch's loss
            net.set_policy(self.policy, annealed(self.tau, a_opt, steps))
            with net.one_draw():   # a two-view objective's passes share one drawn path
                loss = ctx.trainer.weight_step(net, [w_opt, a_opt], batch)
            if self.policy == "binary":   # each drawn pair keeps its mass (ProxylessNAS §3.2.1)
                net.keep_drawn_mass()
            return loss

        stage = ctx.trainer.stage(
            "search", net, {"w": w_opt, "alpha": a_opt}, epochs - warm, phase="search", step=step,
            after_epoch=lambda _: {"alpha": net.probabilities(), "tau": net.temperature})
        # net now holds the best (W*, α*); prune = argmax per cell
        return SearchOutcome(net.derive(), net.probabilities(), net.weight_state_dict(), stage,
                             supernet=net, diagnostics=distribution_diagnostics(
                                 net.probabilities(), initial),
                             candidates=runners_up(ctx.space, net.probabilities(), RUNNERS_UP,
                                                   derive_seed(ctx.seed, "runners-up")))
