"""How well a single-path supernet's shared weights rank the references (issue 10, item 2):
train spos's supernet, or a variant of its training, for STEPS updates, then score each
reference's path on validation under the shared weights as they are, and print Kendall τ
against the references' test mAP@100 (mean over the comparison's seeds and that seed's)::

    python experiments/search_vs_random/supernet_ranking.py OUT DATA SEED STEPS [VARIANT ...]

OUT is a comparison's folder (``archs/random-*.arch``, ``runs/random-K-64b-sS/metrics.json``),
DATA its data set (the references' space: ``av_nas`` with ``pools=mean``, 64 bits, the
``quick`` budget's batches and the default recipe). VARIANT, any of: ``fair`` (FairNAS's
strict fairness: each update accumulates :func:`~avsearch.strategies.fair_paths`),
``lr=X`` (the weights' peak rate, default 1e-3), ``clip=X`` (gradient-norm clipping),
``tau=X`` (SupCon's temperature), ``norm`` (a parameter-free LayerNorm on every cell's
output, in the supernet only), ``fixed=N`` (N steps of the first reference's path first),
``limit=N`` (validation capped at N queries and database videos; default all).
The numbers of experiments/search_vs_random/README.md's session-6 table come from it."""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from avsearch.data import load_dataset
from avsearch.objectives import get_objective
from avsearch.recipe import get_recipe
from avsearch.run import prepare_space
from avsearch.strategies import RunContext, fair_paths, path_score, uniform_path
from avsearch.train import Trainer, get_budget


def references(out: Path):
    """Names, choices and test mAP@100 per seed of the comparison's references."""
    scores: dict[str, dict[int, float]] = {}
    for f in out.glob("runs/random-*-64b-s*/metrics.json"):
        name, seed = f.parent.name.rsplit("-64b-s", 1)
        if name.split("-")[1].isdigit():
            scores.setdefault(name, {})[int(seed)] = json.loads(f.read_text())["test"]["map@100"]
    names = sorted(scores, key=lambda a: int(a.split("-")[1]))
    archs = {a: json.loads((out / "archs" / f"{a}.arch").read_text())["choices"] for a in names}
    return names, archs, scores


def main(out: str, data: str, seed: int, steps: int, *variant: str) -> None:
    opts = dict(v.split("=") if "=" in v else (v, "1") for v in variant)
    names, archs, truth = references(Path(out))
    torch.set_num_threads(1)
    budget = get_budget("quick", 2)
    # the variant's rate and clipping (none unless asked: the table's runs did not clip)
    recipe = dataclasses.replace(get_recipe("default"), lr=float(opts.get("lr", 1e-3)),
                                 clip=float(opts.get("clip", 0)))
    objective = get_objective(recipe.objective, seed=seed)
    if "tau" in opts:
        objective.tau = float(opts["tau"])
    ds = load_dataset(data)
    space = prepare_space("av_nas", {"pools": "mean"}, ds, 64, objective)
    trainer = Trainer(ds, objective, budget, torch.device("cpu"), Path(tempfile.mkdtemp()),
                      seed=seed, recipe=recipe, progress=False)
    ctx = RunContext(space, trainer, torch.device("cpu"), seed, ds.split("train").moments())
    if "norm" in opts:
        from avsearch.supernet import Cell
        forward = Cell.forward

        def normalised(self, inputs, weights):
            y = forward(self, inputs, weights)
            return torch.nn.functional.layer_norm(y, y.shape[-1:])
        Cell.forward = normalised
    net = ctx.network("single-path")
    opt = trainer.weight_optimizer(net.weight_parameters())
    fixed = int(opts.get("fixed", 0))
    torch.manual_seed(seed)
    epochs = math.ceil(steps / budget.steps("search"))
    batches = [b for e in range(1, epochs + 1)
               for b in trainer.batches([trainer.train_split], e, trainer.anchors("search"))][:steps]
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]
    losses = []
    for i, (batch,) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * recipe.factor(i, len(batches))
        paths = (fair_paths(space) if "fair" in opts else
                 [archs[names[0]] if i < fixed else uniform_path(space)])
        net.train()
        losses.append(trainer.weight_step(net, [opt], batch,
                                          passes=[lambda p=p: net.set_path(p) for p in paths]))
    limit = int(opts["limit"]) if "limit" in opts else None
    scores = [path_score(ctx, net, archs[a], limit) for a in names]
    mean = [statistics.mean(truth[a].values()) for a in names]
    own = [truth[a][seed] for a in names]
    print(f"{data} seed {seed} {' '.join(variant) or 'uniform'} {steps} updates: "
          f"tau {kendalltau(scores, mean).statistic:+.3f} (against seed {seed}'s scores "
          f"{kendalltau(scores, own).statistic:+.3f}), mean validation {np.mean(scores):.4f}, "
          f"loss {np.mean(losses[:8]):.3f} -> {np.mean(losses[-8:]):.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])
