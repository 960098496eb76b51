"""Random search: sample architectures uniformly, train each briefly, keep the best by
validation mAP, finetune it from its own weights. The others, best first, are the halving
stage's runners-up.

The candidates share the search budget equally: each trains for the search epochs on
1/``candidates`` of the search stage's anchors per epoch (or, with no anchor cap, for
1/``candidates`` of the epochs), so random search processes as many training videos as the
one-shot strategies' supernet stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


from avsearch.options import AT_LEAST_ONE, option
from avsearch.strategies import RunContext, SearchOutcome, Strategy, register_strategy, weight_lr
from avsearch.train import derive_seed


@register_strategy("random", "random search: sample architectures, train each briefly, keep the "
                             "best on validation; finetune")
@dataclass
class RandomSearch(Strategy):
    candidates: int = option(4, "random architectures that share the search budget",
                             AT_LEAST_ONE)
    w_lr: float = weight_lr()

    def search(self, ctx: RunContext) -> SearchOutcome:
        budget, n = ctx.budget, max(1, self.candidates)
        total = ctx.trainer.anchors("search")
        anchors = math.ceil(total / n) if total else None
        epochs = budget.search_epochs if total else max(1, budget.search_epochs // n)
        draws = [ctx.space.sample(derive_seed(ctx.seed, "random", i)) for i in range(n)]

        def train(i: int):
            net = ctx.network("fixed", draws[i])
            opt = ctx.trainer.weight_optimizer(net.parameters(), self.w_lr)
            result = ctx.trainer.stage(f"search/candidate-{i}", net, {"w": opt}, epochs,
                                       phase="search", anchors=anchors)
            return result.best_score, net

        # the candidates are independent tasks: here, or shared with other workers (--storage),
        # who pass each candidate's trained weights on
        scores = ctx.trials.evaluate(n, train, batch="search/candidates", weights=True)
        order = sorted(range(n), key=lambda i: -scores[i])   # stable: earlier draw on ties
        # the winner's weights: trained by another worker, or its finished stage's best state
        # from this run's checkpoint
        net = ctx.network("fixed", draws[order[0]])
        if not ctx.trials.restore("search/candidates", order[0], net):
            _, net = train(order[0])
        weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return SearchOutcome(draws[order[0]], None, weights, None,
                             candidates=[draws[i] for i in order[1:]])
