"""How well an α strategy's softmax(α) ranks a finished verdict's references, running only
the search (no halving, no finetune), for screening search settings against the same
references (issue 10, item 2)::

    python experiments/search_vs_random/alpha_ranking.py COMPARE_JSON DATA STRATEGY SEEDS \
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

Each seed's softmax(α) is kept in ``--cache`` (default ``alpha-cache/`` here), so a rerun only
scores. Prints the pooled τ (proxy and truth averaged over seeds) with its permutation p and
bootstrap CI, and τ per seed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from avsearch import verdict as V
from avsearch.arch import Architecture
from avsearch.compare.judge import VERDICT_KEY, VERDICT_SEED, alpha_proxy
from avsearch.compare.plan import RANDOM_SEED, _sample_random
from avsearch.data import load_dataset
from avsearch.objectives import get_objective
from avsearch.run import RunSettings, prepare_space, run
from avsearch.strategies import Strategy


class _Searched(Exception):
    """Raised where the run would finetune: carries the search's outcome."""


def _stop_after_search(self, ctx, outcome):
    raise _Searched(outcome)


def searched_alpha(data: str, strategy: str, seed: int, strategy_set: dict, space_set: dict,
                   epochs: int) -> dict:
    """softmax(α) after the search stage of ``avsearch run`` with these settings."""
    Strategy.finetune = _stop_after_search
    settings = RunSettings(space="av_nas", strategy=strategy, strategy_options=strategy_set,
                           space_options=space_set, data=data, budget="quick", epochs=epochs,
                           seed=seed, baselines=False, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        try:
            run(settings, out=Path(out), progress=False)
        except _Searched as searched:
            return searched.args[0].probabilities
    raise RuntimeError("the run finished without reaching its finetune")


def references(compare_json: Path, more: Path | None, seeds: list[int]):
    """{name: test score per seed} of the comparison's references and the extra ones."""
    found = json.loads(compare_json.read_text())["verdict"]["bits"]["64"]["reference_scores"]
    truth = {n: v for n, v in found.items()}
    if more is not None and more.suffix == ".json":     # scores kept from such runs
        extra = json.loads(more.read_text())
        assert extra["seeds"] == seeds, f"{more} holds seeds {extra['seeds']}"
        return {**truth, **extra["reference_scores"]}
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
    ap.add_argument("--cache", type=Path, default=Path(__file__).parent / "alpha-cache")
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
    alphas = json.loads(cache.read_text()) if cache.exists() else {}
    for s in seeds:
        if str(s) not in alphas:
            alphas[str(s)] = searched_alpha(a.data, a.strategy, s, strategy_set, space_set,
                                            a.epochs)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(alphas))

    truth = references(a.compare_json, a.more_references, seeds)
    names = sorted(truth, key=lambda n: int(n.split("-")[1]))
    choices = _sample_random(space, len(names))
    scores = np.array([truth[n] for n in names]).T                    # seeds × references
    proxy = np.array([alpha_proxy(alphas[str(s)], [choices[n] for n in names]) for s in seeds])
    pooled = V.kendall(proxy.mean(0), scores.mean(0), seed=VERDICT_SEED)
    per_seed = [V.kendall(p, t, test=False)["tau"] for p, t in zip(proxy, scores)]
    ci = pooled["ci"] or (float("nan"), float("nan"))
    print(f"{tag}: {len(names)} references, τ {pooled['tau']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] "
          f"p {pooled['p']:.3f}; per seed {', '.join(f'{t:+.2f}' for t in per_seed)} "
          f"(mean {np.mean(per_seed):+.2f})")


if __name__ == "__main__":
    main()
