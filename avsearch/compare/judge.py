"""Judging a comparison's searches against its random references: the verdict per code
length (:mod:`avsearch.verdict` has the statistics) and how well each search ranks the
references (Kendall τ of its proxy scores)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avsearch.arch import Architecture
from avsearch.compare.plan import CompareSettings, Job, Method

__all__ = ["verdict_section", "proxy_scores", "shared_supernet", "VERDICT_KEY", "VERDICT_METRIC", "VERDICT_SEED",
           "PROXY_ALPHA", "PROXY_SHARED", "PROXY_STEPS"]

VERDICT_KEY = "map@100"      # the verdict's metric: test mAP@100, Table 2's headline column
VERDICT_METRIC = "test mAP@100"
VERDICT_SEED = 0             # seeds the bootstrap and the permutation tests


def verdict_section(settings: CompareSettings, methods: Sequence[Method], bits: Sequence[int | None],
             jobs: Sequence[Job], rows: Sequence[dict[str, Any]],
             randoms: dict[str, dict[str, str]], data, device) -> dict[str, Any]:
    """Per code length: the references' scores, the noise floor, every strategy, scratch row
    and preset judged against the references, and each strategy's ranking of them (τ)."""
    from avsearch import verdict as V
    from avsearch.train import get_budget

    references = [m for m in methods if m.kind == "random"][:settings.references]
    by_name = {r["method"]: r for r in rows}
    budget = get_budget(settings.budget, settings.epochs)
    out: dict[str, Any] = {
        "metric": VERDICT_METRIC, "references": [m.name for m in references],
        "seeds": list(settings.seeds), "alpha": V.ALPHA, "min_seeds": V.MIN_SEEDS,
        "confidence": V.CONFIDENCE, "resamples": V.RESAMPLES, "random_seed": VERDICT_SEED,
        "noise_threshold": V.SEPARABLE_SHARE, "bits": {}}
    for b in bits:
        def scores(name: str) -> list[float]:   # one per seed, in --seeds order
            per_seed = {r["seed"]: r[VERDICT_KEY] for r in by_name[name]["bits"][str(b)]["runs"]}
            return [per_seed[s] for s in settings.seeds]

        table = np.array([scores(m.name) for m in references])
        entry: dict[str, Any] = {
            "reference_scores": {m.name: scores(m.name) for m in references},
            "noise_floor": V.noise_floor(table),
            "methods": [{"method": m.name, "kind": m.kind, "scores": scores(m.name),
                         **V.judge(scores(m.name), table, seed=VERDICT_SEED)}
                        for m in methods if m.kind in ("strategy", "scratch", "preset")],
            "ranking": {}}
        for m in methods:
            if m.kind == "strategy":
                runs = [j for j in jobs if j.method is m and j.bits == b]   # in --seeds order
                entry["ranking"][m.name] = _ranking(runs, [randoms[r.name] for r in references],
                                                    table, data, budget, device,
                                                    settings.proxy_steps)
        out["bits"][str(b)] = entry
    return out


def _ranking(runs: Sequence[Job], references: Sequence[dict[str, str]], table: np.ndarray,
             data, budget, device, steps: int = 0) -> dict[str, Any]:
    """Kendall τ between each reference's proxy score under a strategy's search and its test
    score trained from scratch: both averaged over seeds for τ and its permutation p (one
    ranking per strategy, less noisy than any one seed's), and τ per seed."""
    from avsearch import verdict as V

    proxies, kind = [], None
    for job in runs:
        kind, found = proxy_scores(job.folder, references, data, budget, device, steps,
                                   job.settings)
        if kind is None:
            return {"available": False, "reason": found}
        proxies.append(found)
    proxy = np.array(proxies)                 # (seeds, references)
    truth = table.T
    pooled = V.kendall(proxy.mean(axis=0), truth.mean(axis=0), seed=VERDICT_SEED)
    return {"available": True, "proxy": kind, "proxy_scores": proxy.tolist(), **pooled,
            "tau_per_seed": [V.kendall(p, t, test=False)["tau"] for p, t in zip(proxy, truth)]}


PROXY_ALPHA = "summed log softmax(α)"
PROXY_SHARED = "validation mAP@100 under the shared weights"
PROXY_STEPS = "validation mAP@100 after {steps} steps of its own from the shared weights"


def proxy_scores(folder: Path, references: Sequence[dict[str, str]], data, budget,
                 device, steps: int = 0, settings=None) -> tuple[str | None, Any]:
    """(what the proxy is, one score per reference) from one search run, or (None, why not).

    With softmax(α) in ``best.arch`` (csp, darts, proxyless) and ``steps`` 0: Σ over cells
    of log softmax(α)[cell][the reference's choice], the log-probability the search's
    distribution gives the reference; no training. Otherwise, a finished ``search`` stage in
    ``checkpoint.pt`` is the shared-weight supernet the search trained (a mixed one's W*, or
    the single-path one spos and enas scored paths with): the validation mAP@100 of each
    reference's path under it, on the budget's eval_limit as the search scored paths; with
    ``steps`` > 0, after that many weight steps of the path's own from the shared weights
    (:func:`avsearch.strategies.path_score`, the run's objective and recipe from
    ``settings``, its :class:`~avsearch.run.RunSettings`). Random search trains its
    candidates apart: it has neither."""
    arch = Architecture.load(folder / "best.arch")
    if arch.probabilities and not steps:
        try:
            return PROXY_ALPHA, alpha_proxy(arch.probabilities, references)
        except KeyError as err:
            return None, f"{folder / 'best.arch'}: softmax(α) has no entry {err}"
    from avsearch.inference import evaluate
    from avsearch.strategies import path_score

    net = shared_supernet(folder, arch)
    if isinstance(net, str):
        return None, net
    net.to(device)
    if steps:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:   # the trainer's folder; nothing is written
            ctx = _path_context(net.space, settings, data, budget, device, Path(tmp))
            return PROXY_STEPS.format(steps=steps), [
                float(path_score(ctx, net, dict(choices), steps=steps)) for choices in references]
    scores = []
    for choices in references:
        net.set_path(choices)
        metrics = evaluate(net, data, "val", device, limit=budget.eval_limit)
        scores.append(float(metrics[VERDICT_KEY]))
    return PROXY_SHARED, scores


def shared_supernet(folder: Path, arch: Architecture | None = None):
    """The single-path supernet a finished search in ``folder`` trained, with its shared
    weights (a mixed one's W*, or spos's and enas's), or why there is none (a str)."""
    import torch

    from avsearch.supernet import compile_space

    arch = arch or Architecture.load(folder / "best.arch")
    path = folder / "checkpoint.pt"
    if not path.exists():
        return f"{path} is missing (the run's shared weights are gone)"
    stage = torch.load(path, weights_only=True, map_location="cpu").get("stages", {}).get("search")
    if not stage or not stage.get("done") or not stage.get("best"):
        return "the search shares no weights between architectures (no supernet stage)"
    net = compile_space(arch.build_space(), "single-path")
    own = net.state_dict()
    for prefix in ("", "supernet."):   # ENAS checkpoints its supernet beside the controller
        state = {k[len(prefix):]: v for k, v in stage["best"].items() if k.startswith(prefix)}
        if all(k in state and state[k].shape == v.shape for k, v in own.items()):
            break
    else:
        return f"{path}: its search stage holds no single-path supernet of this space"
    net.load_state_dict({k: state[k] for k in own})
    return net


def alpha_proxy(probabilities: dict[str, dict[str, float]],
                references: Sequence[dict[str, str]]) -> list[float]:
    """Per reference, Σ over cells of log softmax(α)[cell][its choice]: the log-probability a
    search's distribution gives it (KeyError for a choice the distribution lacks)."""
    tiny = np.finfo(float).tiny
    return [float(sum(np.log(max(probabilities[c][op], tiny)) for c, op in choices.items()))
            for choices in references]


def _path_context(space, settings, data, budget, device, folder: Path):
    """A strategy's context for scoring paths of a finished run (:func:`proxy_scores`): its
    objective, recipe and seed, and a trainer selecting on the verdict's metric."""
    from avsearch.objectives import get_objective
    from avsearch.recipe import get_recipe
    from avsearch.strategies import RunContext
    from avsearch.train import Trainer

    recipe = get_recipe(settings.recipe, **settings.recipe_options)
    objective = get_objective(settings.objective or recipe.objective, seed=settings.seed,
                              **settings.objective_options)
    trainer = Trainer(data, objective, budget, device, folder, progress=False,
                      select=VERDICT_KEY, seed=settings.seed, recipe=recipe)
    return RunContext(space, trainer, device, settings.seed)
