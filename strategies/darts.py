"""DARTS (Liu et al., 2019): bilevel search on the mixed supernet, argmax derivation, finetune.

The training data is cut in two (:func:`~avsearch.strategies.held_out_split`): every step updates α on a batch of
the held-out part, then W on a batch of the rest. First order by default (α's gradient at the
current W); ``order=2`` uses the unrolled gradient, Eq. 7 of DARTS, with the Hessian-vector
product by finite differences (Eq. 8):

    ∇α L_val(w', α) − ξ (∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)) / 2ε,
    w' = w − ξ ∇w L_train(w, α),   w± = w ± ε ∇w' L_val(w', α),   ε = 0.01 / ‖∇w' L_val‖.

α's step differentiates only α (``torch.autograd.grad``), so W's gradients are never
computed for it: the α step costs a forward and a partial backward.

ξ is W's learning rate (the virtual step is plain SGD, as in DARTS). Optimizers: W as csp (Adam 1e-3, so the two differ only in the bilevel split); α with
DARTS's Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from avsearch.diagnostics import distribution_diagnostics
from avsearch.options import one_of, option
from avsearch.strategies import (RUNNERS_UP, RunContext, SearchOutcome, Strategy, alpha_lr,
                                 alpha_rate, alpha_reach, held_out_share, held_out_split,
                                 register_strategy, runners_up, search_steps, weight_lr)
from avsearch.train import derive_seed


@register_strategy("darts", "bilevel DARTS: α on held-out training data, W on the rest; argmax; finetune")
@dataclass
class DARTS(Strategy):
    mixed_supernet = True
    order: int = option(1, "α's gradient: 1 first-order, 2 unrolled (second-order)",
                        one_of(1, 2))
    w_lr: float = weight_lr()
    alpha_lr: float = alpha_rate()    # DARTS's own: 3e-4 over 19.5k steps
    alpha_travel: float = alpha_reach()
    held_out: float = held_out_share()

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("mixed")
        initial = net.probabilities()
        weights, alphas = list(net.weight_parameters()), list(net.arch_parameters())
        w_opt = ctx.trainer.weight_optimizer(weights, self.w_lr)
        w_split, a_split = held_out_split(ctx.trainer.train_split, self.held_out, ctx.seed)
        lr = alpha_lr(self.alpha_lr, self.alpha_travel, search_steps(ctx, [w_split, a_split]))
        a_opt = torch.optim.Adam(alphas, lr=lr, betas=(0.5, 0.999), weight_decay=1e-3)

        def train_loss(batch):
            return ctx.trainer.loss(net, batch, w_split)

        def val_loss(batch):
            return ctx.trainer.loss(net, batch, a_split)

        def step(w_batch, a_batch) -> float:
            a_opt.zero_grad(set_to_none=True)
            if self.order == 1:
                grads = torch.autograd.grad(val_loss(a_batch), alphas)
            else:
                grads = unrolled_alpha_grad(weights, alphas, lambda: train_loss(w_batch),
                                            lambda: val_loss(a_batch), xi=self.w_lr,
                                            reduce=ctx.trainer.replicas.all_sum)
            for a, g in zip(alphas, grads):
                a.grad = g
            if self.order == 1:   # the unrolled gradient is summed over processes inside
                ctx.trainer.reduce_gradients(alphas)
            a_opt.step()
            # W's step leaves gradients on α too; the next α step replaces them
            return ctx.trainer.weight_step(net, [w_opt], w_batch, w_split)

        stage = ctx.trainer.stage("search", net, {"w": w_opt, "alpha": a_opt},
                                  ctx.budget.search_epochs, phase="search", step=step,
                                  streams=[w_split, a_split],
                                  after_epoch=lambda _: {"alpha": net.probabilities()})
        return SearchOutcome(net.derive(), net.probabilities(), net.weight_state_dict(), stage,
                             supernet=net, diagnostics=distribution_diagnostics(
                                 net.probabilities(), initial),
                             candidates=runners_up(ctx.space, net.probabilities(), RUNNERS_UP,
                                                   derive_seed(ctx.seed, "runners-up")))


def unrolled_alpha_grad(weights: list[torch.Tensor], alphas: list[torch.Tensor], train_loss, val_loss,
                        xi: float, reduce=list) -> list[torch.Tensor]:
    """DARTS's second-order α gradient (Eqs. 7-8); leaves ``weights`` as it found them.

    ``train_loss()`` and ``val_loss()`` evaluate the network at the current values of
    ``weights`` (which this function moves in place and restores). ``reduce`` turns this
    process's share of each gradient into the whole batch's (a distributed run's sum over
    processes, :meth:`avsearch.distributed.Replicas.all_sum`), so the virtual step w' and
    the finite differences are the same on every process.
    """
    def grads(loss, params):
        got = torch.autograd.grad(loss, params, allow_unused=True)
        return reduce([torch.zeros_like(p) if g is None else g for g, p in zip(got, params)])

    original = [w.detach().clone() for w in weights]
    try:
        g_train = grads(train_loss(), weights)
        with torch.no_grad():                          # w' = w − ξ ∇w L_train(w, α)
            for w, g in zip(weights, g_train):
                w.sub_(xi * g)
        both = grads(val_loss(), alphas + weights)
        d_alpha, d_w = both[:len(alphas)], both[len(alphas):]
        eps = 0.01 / torch.cat([g.flatten() for g in d_w]).norm().clamp_min(1e-12)
        hessian = []
        for sign in (1.0, -1.0):                       # w± = w ± ε ∇w' L_val(w', α)
            with torch.no_grad():
                for w, w0, g in zip(weights, original, d_w):
                    w.copy_(w0 + sign * eps * g)
            hessian.append(grads(train_loss(), alphas))
        return [da - xi * (hp - hm) / (2 * eps) for da, hp, hm in zip(d_alpha, *hessian)]
    finally:
        with torch.no_grad():
            for w, w0 in zip(weights, original):
                w.copy_(w0)
