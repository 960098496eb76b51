"""Coarse search → prune → finetune, AV-NAS §4.3 (Eqs. 39-45).

Coarse search trains the mixed supernet (Eq. 39) with one-level updates: W and α step on the
same training batch with separate optimizers (Eq. 40); after every epoch the validation mAP
decides which (W, α) to keep (Eq. 41). Pruning takes the argmax of softmax(α) per cell
(Eqs. 42-43). Finetuning trains the pruned network starting from the searched weights W*
(Eq. 44 — the paper's text; the authors' code retrains from scratch) and keeps its best
validation state (Eq. 45).

Optimizers: Adam 1e-3 for both W and α (the authors' readme; their code uses SGD 1e-3 for W,
which at short budgets barely moves W).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from avsearch.strategies import RunContext, SearchOutcome, Strategy, register_strategy


@register_strategy("csp", "coarse search, prune, finetune: one-level W/α on the mixed supernet (AV-NAS)")
@dataclass
class CSP(Strategy):
    w_lr: float = 1e-3
    alpha_lr: float = 1e-3

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("mixed")
        w_opt = ctx.trainer.weight_optimizer(net.weight_parameters(), self.w_lr)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=self.alpha_lr)
        stage = ctx.trainer.stage("search", net, {"w": w_opt, "alpha": a_opt},
                                  ctx.trainer.one_level_step(net, [w_opt, a_opt]), ctx.budget.search_epochs,
                                  log=lambda: {"alpha": net.probabilities()})
        # net now holds the best (W*, α*); prune = argmax per cell
        return SearchOutcome(net.derive(), net.probabilities(), net.weight_state_dict(), stage)
