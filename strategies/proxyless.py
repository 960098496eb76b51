"""ProxylessNAS (Cai et al., 2019): binary gates with path-level sampling, so training
memory stays near that of one path.

Every step samples, per cell, candidates from p = softmax(α):

* W step (a training batch): one candidate per cell, the plain single path;
* α step (a held-out batch, as DARTS's split): two distinct candidates per cell; one of the
  two is active (drawn from p renormalised over the two). The cell outputs
  Σ_{i∈pair} (g_i + p_i − sg(p_i)) o_i(x) with g the one-hot binary gate: the forward value is the
  active path's, and the gradient reaching p_i is ∂L/∂g_i = ⟨∂L/∂out, o_i(x)⟩, ProxylessNAS's
  estimate (its Eq. 4) restricted to the pair. After α's step the pair's α are shifted by a
  common offset so that the two together keep their probability mass, leaving every unsampled
  candidate's probability unchanged (the rescaling of §3.2.1).

Derivation is the argmax of softmax(α). Optimizers: W as csp (Adam 1e-3); α Adam 1e-3 with
betas (0, 0.999) as ProxylessNAS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from avsearch._options import FRACTION, NON_NEGATIVE, POSITIVE
from avsearch.diagnostics import distribution_diagnostics
from avsearch.strategies import (RUNNERS_UP, RunContext, SearchOutcome, Strategy, alpha_lr,
                                 near_ties, path_score, register_strategy, search_steps)
from avsearch.supernet import key


@register_strategy("proxyless", "ProxylessNAS: binary gates, one or two sampled paths per step; "
                                "argmax; finetune")
@dataclass
class Proxyless(Strategy):
    w_lr: float = 1e-3
    alpha_lr: float = 0.0      # 0: alpha_travel / α steps (ProxylessNAS's own: 1e-3)
    alpha_travel: float = 4.0
    held_out: float = 0.5

    def option_checks(self) -> dict:
        return dict(w_lr=POSITIVE, alpha_lr=NON_NEGATIVE, alpha_travel=POSITIVE, held_out=FRACTION)

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("mixed")
        initial = net.probabilities()
        cells = ctx.space.cells
        alphas = {c: net.alpha[key(c)] for c in cells}
        w_opt = ctx.trainer.weight_optimizer(net.weight_parameters(), self.w_lr)
        w_split, a_split = ctx.trainer.held_out(self.held_out)
        a_opt = torch.optim.Adam(alphas.values(), betas=(0.0, 0.999),
                                 lr=alpha_lr(self.alpha_lr, self.alpha_travel,
                                             search_steps(ctx, [w_split, a_split])))

        def sample(cell: str, k: int) -> list[int]:
            p = alphas[cell].detach().softmax(0)
            return torch.multinomial(p, min(k, len(p)), replacement=False).tolist()

        def step(w_batch, a_batch) -> float:
            # α: two candidates per cell, one active, straight-through binary gates
            pairs, gates = {}, {}
            for c in cells:
                pair = sample(c, 2)
                p = alphas[c][pair].softmax(0)
                active = int(torch.multinomial(p.detach(), 1))
                hard = torch.zeros_like(p)
                hard[active] = 1.0
                names = ctx.space.candidates(c)
                pairs[c] = pair
                gates[c] = {names[i]: g for i, g in zip(pair, hard + p - p.detach())}
            net.set_gates(gates)
            before = {c: alphas[c].detach()[pairs[c]].logsumexp(0) for c in cells}
            a_opt.zero_grad(set_to_none=True)
            grads = torch.autograd.grad(ctx.trainer.loss(net, a_batch, a_split), list(alphas.values()),
                                        allow_unused=True)
            for a, g in zip(alphas.values(), grads):
                a.grad = torch.zeros_like(a) if g is None else g
            a_opt.step()
            with torch.no_grad():     # keep the pair's total probability mass (§3.2.1)
                for c in cells:
                    alphas[c][pairs[c]] += before[c] - alphas[c][pairs[c]].logsumexp(0)
            # W: one sampled path
            net.set_gates({c: {ctx.space.candidates(c)[sample(c, 1)[0]]: None} for c in cells})
            loss = ctx.trainer.weight_step(net, [w_opt], w_batch, w_split)
            net.set_gates(None)
            return loss

        stage = ctx.trainer.stage("search", net, {"w": w_opt, "alpha": a_opt}, step,
                                  ctx.budget.search_epochs, streams=[w_split, a_split],
                                  score=lambda: {ctx.trainer.select: path_score(ctx, net, net.derive())},
                                  log=lambda: {"alpha": net.probabilities()})
        net.set_path(None)
        return SearchOutcome(net.derive(), net.probabilities(), net.weight_state_dict(), stage,
                             supernet=net, diagnostics=distribution_diagnostics(
                                 net.probabilities(), initial),
                             candidates=near_ties(ctx.space, net.probabilities(), RUNNERS_UP))
