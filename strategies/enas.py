"""ENAS (Pham et al., 2018): an LSTM controller samples architectures of the shared-weight
supernet and learns from their validation mAP by REINFORCE.

Every epoch has two phases: the supernet trains one controller-sampled path per batch (the
controller fixed), then the controller takes ``controller_steps`` REINFORCE steps, each on the
validation mAP of one sampled path with the shared weights, against a moving-average baseline
and with an entropy bonus. Epochs are selected on the score of the controller's greedy
(argmax) architecture. To derive, the greedy architecture and ``derive_samples`` sampled ones
are scored on validation and the best is finetuned from the shared weights.

The budget's ``search_trials`` are the controller's REINFORCE steps over the whole search
(``search_trials / search_epochs`` per epoch) unless ``controller_steps`` is given.

Defaults are ENAS's: controller LSTM of 64 units, Adam 3.5e-4, logits 2.5·tanh(logits/5),
baseline decay 0.99, entropy weight 1e-4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avsearch.diagnostics import distribution_diagnostics
from avsearch.graph import SearchSpace
from avsearch.options import AT_LEAST_ONE, COUNT, NON_NEGATIVE, POSITIVE, PRIOR, option
from avsearch.strategies import (RunContext, SearchOutcome, Strategy, path_score, register_strategy,
                                 weight_lr)


class Controller(nn.Module):
    """An LSTM that picks one candidate per cell, in the space's cell order, each choice fed
    back as the next input; the running baseline is a buffer so it is checkpointed."""

    def __init__(self, space: SearchSpace, hidden: int = 64, temperature: float = 5.0,
                 tanh_constant: float = 2.5):
        super().__init__()
        self.cells = space.cells
        self.candidates = [space.candidates(c) for c in self.cells]
        self.temperature, self.tanh_constant = temperature, tanh_constant
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.embed = nn.ModuleList(nn.Embedding(len(c), hidden) for c in self.candidates)
        self.heads = nn.ModuleList(nn.Linear(hidden, len(c)) for c in self.candidates)
        self.register_buffer("baseline", torch.tensor(math.nan))

    def _decide(self, greedy: bool):
        """One decision per cell: (cell, candidate names, distribution, chosen index), each
        choice fed back as the next input."""
        x, state = self.start, None
        for cell, names, embed, head in zip(self.cells, self.candidates, self.embed, self.heads):
            state = self.lstm(x, state)
            logits = self.tanh_constant * torch.tanh(head(state[0]) / self.temperature)
            dist = torch.distributions.Categorical(logits=logits[0])
            index = dist.probs.argmax() if greedy else dist.sample()
            yield cell, names, dist, index
            x = embed(index.view(1))

    def forward(self, greedy: bool = False) -> tuple[dict[str, str], torch.Tensor, torch.Tensor]:
        """An architecture, its log-probability and the summed entropy of the decisions."""
        log_prob, entropy, choices = self.start.new_zeros(()), self.start.new_zeros(()), {}
        for cell, names, dist, index in self._decide(greedy):
            log_prob, entropy = log_prob + dist.log_prob(index), entropy + dist.entropy()
            choices[cell] = names[int(index)]
        return choices, log_prob, entropy

    @torch.no_grad()
    def policy(self) -> dict[str, dict[str, float]]:
        """The probabilities of every cell's candidates along the greedy path."""
        return {cell: dict(zip(names, dist.probs.tolist()))
                for cell, names, dist, _ in self._decide(greedy=True)}


@register_strategy("enas", "ENAS: an LSTM controller trained by REINFORCE on validation mAP, "
                           "alternating with shared-weight training; finetune")
@dataclass
class ENAS(Strategy):
    w_lr: float = weight_lr()
    controller_lr: float = option(3.5e-4, "the controller's Adam learning rate", POSITIVE)
    controller_steps: int = option(0, "REINFORCE steps per epoch (0: the budget's search_trials "
                                      "/ epochs)", COUNT)
    entropy_weight: float = option(1e-4, "weight of the entropy bonus", NON_NEGATIVE)
    baseline_decay: float = option(0.99, "decay of the reward's moving-average baseline", PRIOR)
    derive_samples: int = option(8, "sampled architectures scored beside the greedy one to "
                                    "derive", AT_LEAST_ONE)

    def search(self, ctx: RunContext) -> SearchOutcome:
        net = ctx.network("single-path")
        controller = Controller(ctx.space).to(ctx.device)
        both = nn.ModuleDict({"supernet": net, "controller": controller})
        w_opt = ctx.trainer.weight_optimizer(net.parameters(), self.w_lr)
        c_opt = torch.optim.Adam(controller.parameters(), lr=self.controller_lr)
        steps = self.controller_steps or max(1, math.ceil(ctx.budget.search_trials / ctx.budget.search_epochs))

        def step(batch) -> float:
            with torch.no_grad():
                net.set_path(controller()[0])
            return ctx.trainer.weight_step(net, [w_opt], batch)

        def greedy() -> dict[str, str]:
            with torch.no_grad():
                return controller(greedy=True)[0]

        def train_controller(epoch: int) -> dict:
            rewards = []
            for _ in range(steps):
                choices, log_prob, entropy = controller()
                reward = path_score(ctx, net, choices)
                baseline = reward if math.isnan(controller.baseline) else float(controller.baseline)
                loss = -(reward - baseline) * log_prob - self.entropy_weight * entropy
                c_opt.zero_grad(set_to_none=True)
                loss.backward()
                c_opt.step()
                controller.baseline.fill_(self.baseline_decay * baseline + (1 - self.baseline_decay) * reward)
                rewards.append(reward)
            return {"controller_reward": sum(rewards) / len(rewards), "greedy": greedy()}

        stage = ctx.trainer.stage("search", both, {"w": w_opt, "controller": c_opt},
                                  ctx.budget.search_epochs, phase="search", step=step,
                                  after_epoch=train_controller,
                                  score=lambda: {ctx.trainer.select: path_score(ctx, net, greedy())})

        def derive() -> dict:
            with torch.no_grad():
                candidates = [greedy()] + [controller()[0] for _ in range(self.derive_samples)]
            scores = [path_score(ctx, net, c) for c in candidates]
            order = sorted(range(len(candidates)), key=lambda i: -scores[i])  # stable: ties keep order
            return {"choices": candidates[order[0]], "score": scores[order[0]],
                    "runners_up": [candidates[i] for i in order[1:]]}

        best = ctx.trainer.remember("search/derive", derive, phase="search",
                                    log=lambda v: {"choices": v["choices"], "score": v["score"]})
        runners_up = [c for c in best.get("runners_up", []) if c != best["choices"]]
        policy = controller.policy()    # the greedy path's distributions (not a joint probability)
        return SearchOutcome(best["choices"], None, net.weight_state_dict(), stage, supernet=net,
                             diagnostics={**distribution_diagnostics(policy), "policy": policy},
                             candidates=runners_up)
