"""How well a search ranks a finished verdict's references, running only the search (no
halving, no finetune), to screen search settings against the same references and to add
references (issue 10, item 2)::

    python experiments/search_vs_random/search_ranking.py COMPARE_JSON DATA STRATEGY SEEDS \
        [--strategy-set K=V ...] [--set K=V ...] [--epochs 2] [--more-references DIR] \
        [--cache DIR]

COMPARE_JSON is a verdict's compare.json (its references' test mAP@100 per seed), DATA the
data set it ran on, SEEDS e.g. 0,1,2,3,4; the search runs as that comparison ran it (budget
``quick``, the given epochs, 64 bits).

``--more-references`` adds random-13, random-14, ... (the next distinct draws, as compare
makes them): a folder DIR holding their runs under the same seeds,
``DIR/runs/random-i-64b-sS``, or a JSON file of their scores (``avd/more-references.json``).
``--more-references DIR --write-archs N`` writes the draws beyond the comparison's up to the
N-th to ``DIR/archs`` and prints the ``avsearch run`` commands that train them.

The proxy is compare's (:func:`avsearch.compare.judge.proxy_scores`): the summed log
softmax(α) of a reference's choices for csp, darts and proxyless; for spos and enas the
validation mAP@100 of its path under the search's shared weights. Each seed's softmax(α),
or its shared-weight scores, is kept in ``--cache`` (default ``ranking-cache/`` here), so a
rerun only scores (a shared-weight search must run again for references it has not scored).
Prints the pooled τ (proxy and truth averaged over seeds) with its permutation p and
bootstrap CI, and τ per seed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avsearch import verdict as V
from avsearch.arch import Architecture
from avsearch.compare.judge import VERDICT_KEY, VERDICT_SEED, alpha_proxy, proxy_scores
from avsearch.compare.plan import RANDOM_SEED, _sample_random
from avsearch.data import load_dataset
from avsearch.objectives import get_objective
from avsearch.run import RunSettings, prepare_space, run
from avsearch.strategies import Strategy
from avsearch.train import get_budget


class _Searched(Exception):
    """Raised where the run would finetune: carries the search's outcome."""


def _stop_after_search(self, ctx, outcome):
    raise _Searched(outcome)


def run_search(data: str, strategy: str, seed: int, strategy_set: dict, space_set: dict,
               epochs: int, out: Path):
    """``avsearch run`` with these settings into ``out`` up to the end of its search (its
    checkpoint and ``best.arch`` there): the search's outcome."""
    Strategy.finetune = _stop_after_search
    settings = RunSettings(space="av_nas", strategy=strategy, strategy_options=strategy_set,
                           space_options=space_set, data=data, budget="quick", epochs=epochs,
                           seed=seed, baselines=False, device="cpu")
    try:
        run(settings, out=out, progress=False)
        raise RuntimeError("the run finished without reaching its finetune")
    except _Searched as searched:
        outcome = searched.args[0]
    space = prepare_space("av_nas", space_set, load_dataset(data), 64,
                          get_objective("supcon", seed=0))
    Architecture.from_space(space, outcome.choices).save(out / "best.arch")   # proxy_scores reads it
    return outcome


def search(data: str, strategy: str, seed: int, strategy_set: dict, space_set: dict,
           epochs: int, names: list[str], choices: dict) -> dict:
    """``avsearch run`` with these settings up to the end of its search: {"alpha": softmax(α)}
    for an α strategy, else {"proxy": {reference: validation mAP@100 under the shared
    weights}}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        outcome = run_search(data, strategy, seed, strategy_set, space_set, epochs, out)
        if outcome.probabilities:
            return {"alpha": outcome.probabilities}
        space = prepare_space("av_nas", space_set, load_dataset(data), 64,
                              get_objective("supcon", seed=0))
        budget = replace(get_budget("quick", epochs), **space.budgets.get("quick", {}))  # as run's
        kind, scores = proxy_scores(out, [choices[n] for n in names], load_dataset(data), budget,
                                    torch.device("cpu"))
        if kind is None:
            raise RuntimeError(scores)
        return {"proxy": dict(zip(names, scores))}


def references(compare_json: Path, more: Path | None, seeds: list[int]):
    """{name: test score under each of ``seeds``} of the comparison's references and the
    extra ones."""
    verdict = json.loads(compare_json.read_text())["verdict"]
    truth = {n: [v[verdict["seeds"].index(s)] for s in seeds]
             for n, v in verdict["bits"]["64"]["reference_scores"].items()}
    if more is not None and more.suffix == ".json":     # scores kept from such runs
        extra = json.loads(more.read_text())
        return {**truth, **{n: [v[extra["seeds"].index(s)] for s in seeds]
                            for n, v in extra["reference_scores"].items()}}
    i = len(truth) + 1
    while more is not None and (more / "runs" / f"random-{i}-64b-s{seeds[0]}").exists():
        truth[f"random-{i}"] = [json.loads((more / "runs" / f"random-{i}-64b-s{s}" / "metrics.json")
                                           .read_text())["test"][VERDICT_KEY] for s in seeds]
        i += 1
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("::")[0])
    ap.add_argument("compare_json", type=Path)
    ap.add_argument("data")
    ap.add_argument("strategy")
    ap.add_argument("seeds")
    ap.add_argument("--strategy-set", action="append", default=[])
    ap.add_argument("--set", action="append", default=[], dest="space_set")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--more-references", type=Path)
    ap.add_argument("--write-archs", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path(__file__).parent / "ranking-cache")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    strategy_set = dict(o.split("=", 1) for o in a.strategy_set)
    space_set = dict(o.split("=", 1) for o in a.space_set)
    space = prepare_space("av_nas", space_set, load_dataset(a.data), 64,
                          get_objective("supcon", seed=0))
    if a.write_archs:
        (a.more_references / "archs").mkdir(parents=True, exist_ok=True)
        known = references(a.compare_json, None, seeds)
        for name, choices in _sample_random(space, a.write_archs).items():
            if name in known:
                continue
            path = a.more_references / "archs" / f"{name}.arch"
            Architecture.from_space(space, choices, provenance={
                "strategy": "random", "sampled": f"distinct draw {name.split('-')[1]} of "
                                                 f"space.sample(random.Random({RANDOM_SEED}))"}).save(path)
            sets = "".join(f" --set {k}={v}" for k, v in space_set.items())
            for s in seeds:
                print(f"avsearch run --space av_nas --arch {path} --data {a.data} --bits 64 "
                      f"--budget quick --epochs {a.epochs} --seed {s} --no-baselines --quiet"
                      f"{sets} --out {a.more_references}/runs/{name}-64b-s{s}")
        return

    tag = "-".join([a.compare_json.parent.name, a.strategy, f"e{a.epochs}"]
                   + [f"{k}={v}" for k, v in sorted(strategy_set.items())]
                   + [f"set.{k}={v}" for k, v in sorted(space_set.items())])
    cache = a.cache / f"{tag}.json"
    found = json.loads(cache.read_text()) if cache.exists() else {}
    truth = references(a.compare_json, a.more_references, seeds)
    names = sorted(truth, key=lambda n: int(n.split("-")[1]))
    choices = _sample_random(space, len(names))
    for s in seeds:
        got = found.get(str(s))
        if got is None or ("proxy" in got and not set(names) <= set(got["proxy"])):
            found[str(s)] = search(a.data, a.strategy, s, strategy_set, space_set, a.epochs,
                                   names, choices)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(found))
    scores = np.array([truth[n] for n in names]).T                    # seeds × references
    proxy = np.array([alpha_proxy(found[str(s)]["alpha"], [choices[n] for n in names])
                      if "alpha" in found[str(s)] else [found[str(s)]["proxy"][n] for n in names]
                      for s in seeds])
    pooled = V.kendall(proxy.mean(0), scores.mean(0), seed=VERDICT_SEED)
    per_seed = [V.kendall(p, t, test=False)["tau"] for p, t in zip(proxy, scores)]
    ci = pooled["ci"] or (float("nan"), float("nan"))
    print(f"{tag}: {len(names)} references, τ {pooled['tau']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] "
          f"p {pooled['p']:.3f}; per seed {', '.join(f'{t:+.2f}' for t in per_seed)} "
          f"(mean {np.mean(per_seed):+.2f})")


if __name__ == "__main__":
    main()
