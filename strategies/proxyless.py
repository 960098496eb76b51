"""ProxylessNAS (Cai et al., 2019): binary gates with path-level sampling, so training
memory stays near that of one path.

Every step draws, per cell, candidates from p = softmax(α), through the supernet's policies
(:meth:`~avsearch.supernet.Network.set_policy`):

* W step (a training batch, ``single``): one candidate per cell, the plain single path;
* α step (a held-out batch, DARTS's split, :func:`~avsearch.strategies.held_out_split`;
  ``binary``): two distinct candidates per cell,
  one of them active, behind straight-through binary gates: the forward value is the active
  path's, the gradient is ProxylessNAS's estimate (its Eq. 4) restricted to the pair. After
  α's step each pair keeps its probability mass (``keep_drawn_mass``, the rescaling of
  §3.2.1), so every unsampled candidate's probability is unchanged.

Each step's loss sees one draw (``one_draw``), however often the objective runs the network.

Derivation is the argmax of softmax(α). Optimizers: W as csp (Adam 1e-3); α Adam 1e-3 with
betas (0, 0.999) as ProxylessNAS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from avsearch.diagnostics import distribution_diagnostics
from avsearch.strategies import (RUNNERS_UP, RunContext, SearchOutcome, Strategy, alpha_lr,
                                 alpha_rate, alpha_reach, held_out_share, held_out_split,
                                 path_score, register_strategy, runners_up, search_steps, weight_lr)
from avsearch.train import derive_seed


@register_strategy("proxyless", "ProxylessNAS: binary gates, one or two sampled paths per step; "
                                "argmax; finetune")
@dataclass
class Proxyless(Strategy):
    mixed_supernet = True
    w_lr: float = weight_lr()
    alpha_lr: float = alpha_rate()    # ProxylessNAS's own: 1e-3
    alpha_travel: float = alpha_reach()
    held_out: float = held_out_share()

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("mixed")
        initial = net.probabilities()
        alphas = list(net.arch_parameters())
        w_opt = ctx.trainer.weight_optimizer(net.weight_parameters(), self.w_lr)
        w_split, a_split = held_out_split(ctx.trainer.train_split, self.held_out, ctx.seed)
        a_opt = torch.optim.Adam(alphas, betas=(0.0, 0.999),
                                 lr=alpha_lr(self.alpha_lr, self.alpha_travel,
                                             search_steps(ctx, [w_split, a_split])))

        def step(w_batch, a_batch) -> float:
            # α on a held-out batch: binary gates, two candidates per cell, one active
            net.set_policy("binary")
            a_opt.zero_grad(set_to_none=True)
            with net.one_draw():
                loss = ctx.trainer.loss(net, a_batch, a_split)
            grads = torch.autograd.grad(loss, alphas, allow_unused=True)
            for a, g in zip(alphas, grads):
                a.grad = torch.zeros_like(a) if g is None else g
            ctx.trainer.reduce_gradients(alphas)    # summed over a distributed run's processes
            a_opt.step()
            net.keep_drawn_mass()
            # W on a training batch: one path drawn from softmax(α)
            net.set_policy("single")
            with net.one_draw():
                return ctx.trainer.weight_step(net, [w_opt], w_batch, w_split)

        def score() -> dict:
            value = path_score(ctx, net, net.derive())
            net.set_path(None)    # path_score leaves its path set, which would outrank the policy
            return {ctx.trainer.select: value}

        stage = ctx.trainer.stage("search", net, {"w": w_opt, "alpha": a_opt},
                                  ctx.budget.search_epochs, phase="search", step=step,
                                  streams=[w_split, a_split], score=score,
                                  after_epoch=lambda _: {"alpha": net.probabilities()})
        net.set_policy("softmax")   # the outcome's supernet is the plain mixture
        return SearchOutcome(net.derive(), net.probabilities(), net.weight_state_dict(), stage,
                             supernet=net, diagnostics=distribution_diagnostics(
                                 net.probabilities(), initial),
                             candidates=runners_up(ctx.space, net.probabilities(), RUNNERS_UP,
                                                   derive_seed(ctx.seed, "runners-up")))
