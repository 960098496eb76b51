"""Training recipes: how every network of a run is trained (loss, optimiser, schedule, batch).

A *budget* (``--budget``) says how much a run trains; a *recipe* (``--recipe``) says how.
Both stages of every strategy, the presets, the reference architectures and the trained
baselines use the same recipe, so a comparison differs only in the architecture.

* ``default``: supervised contrastive loss over all in-batch pairs (class-grouped batches of
  128 videos), AdamW (lr 1e-3, decoupled weight decay 0.05 on matrices, not on biases and
  norms), a linear warm-up over the first 5 % of a stage's steps and a cosine decay to 0,
  and the weights' gradient clipped to a global norm of 1 before each step (Pascanu,
  Mikolov & Bengio, ICML 2013; the norm Transformer training commonly uses). Without it the
  ``transformer`` preset's rare gradient spikes (tens of times the median norm) inflate
  Adam's second-moment estimate for the rest of a short stage and it stalls at a higher
  training loss than the temporal CNN (``experiments/generality``).
  ``experiments/generality`` has the measurements that chose it, on data sets avsearch was
  not developed on.
* ``paper``: AV-NAS §5.1 as the authors ran it: InfoNCE with 1 positive and 4 negatives per
  anchor (Eq. 37), Adam at a constant learning rate, no weight decay, the budget's batch.

``--recipe-set`` (:data:`RECIPE_OPTIONS`, :func:`get_recipe`) changes a named recipe's fields.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable

import torch

from avsearch.errors import AvsearchInputError
from avsearch.options import NON_NEGATIVE, POSITIVE, PRIOR, Option, one_of, resolve

__all__ = ["Recipe", "RECIPES", "RECIPE_OPTIONS", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    objective: str               # the loss for labelled data when --objective is not given
    lr: float                    # the weights' peak learning rate
    weight_decay: float          # AdamW's decoupled decay on matrices (0: plain Adam)
    schedule: str                # "cosine" (warm-up, then cosine to 0) or "constant"
    warmup: float = 0.0          # share of a stage's steps spent warming up
    batch_size: int | None = None   # batch of the objective (None: the budget's)
    clip: float = 0.0            # the weights' gradient clipped to this global norm (0: none)

    def optimizer(self, params: Iterable[torch.nn.Parameter], lr: float | None = None
                  ) -> torch.optim.Optimizer:
        """The weights' optimiser; biases, norms and other vectors get no weight decay
        (decaying a LayerNorm's gain toward 0 shrinks its output, not its complexity)."""
        params = [p for p in params if p.requires_grad]
        lr = self.lr if lr is None else lr
        if not self.weight_decay:
            optimizer = torch.optim.Adam(params, lr=lr)
        else:
            groups = [{"params": [p for p in params if p.ndim >= 2],
                       "weight_decay": self.weight_decay},
                      {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
            optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        # what Trainer.weight_step clips these weights' gradient to (an architecture's
        # optimiser, made elsewhere, has no such attribute and is never clipped)
        optimizer.max_grad_norm = self.clip or math.inf
        return optimizer

    def factor(self, step: int, total: int) -> float:
        """The learning rate's multiplier at ``step`` (0-based) of ``total``."""
        if self.schedule == "constant" or total <= 1:
            return 1.0
        warm = max(1, round(self.warmup * total)) if self.warmup else 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


RECIPES = {
    "default": Recipe("default", "supcon", lr=1e-3, weight_decay=0.05, schedule="cosine",
                      warmup=0.05, batch_size=128, clip=1.0),
    "paper": Recipe("paper", "infonce", lr=1e-3, weight_decay=0.0, schedule="constant"),
}


# what ``--recipe-set`` may change (the defaults are the named recipe's own values)
RECIPE_OPTIONS = {
    "lr": Option(None, float, "the weights' peak learning rate", POSITIVE),
    "weight_decay": Option(None, float, "AdamW's decoupled decay on matrices (0: Adam)",
                           NON_NEGATIVE),
    "schedule": Option(None, str, "cosine (warm-up, then cosine to 0) or constant",
                       one_of("cosine", "constant")),
    "warmup": Option(None, float, "share of a stage's steps spent warming up", PRIOR),
    "clip": Option(None, float, "global norm the weights' gradient is clipped to (0: none)",
                   NON_NEGATIVE),
}


def get_recipe(name: str, **options: str | float) -> Recipe:
    """The recipe ``name`` with ``options`` (``--recipe-set``: command-line strings or typed
    values) replacing its fields, read and checked."""
    if name not in RECIPES:
        raise AvsearchInputError(f"unknown recipe {name!r} (choose from {', '.join(RECIPES)})")
    base = RECIPES[name]
    if not options:
        return base
    own = {k: dataclasses.replace(o, default=getattr(base, k), name=k)
           for k, o in RECIPE_OPTIONS.items()}
    values = resolve(own, options, f"recipe {name!r}", "recipe_options")
    return dataclasses.replace(base, **{k: values[k] for k in options})
