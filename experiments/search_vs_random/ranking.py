"""Kendall τ of each search's ranking of the references, recomputed on finished runs with
``avsearch compare --verdict``'s own proxy (:func:`avsearch.compare.judge.proxy_scores`), for
a proxy the comparison did not use when it ran (``--proxy-steps``)::

    python experiments/search_vs_random/ranking.py OUT DATA STEPS STRATEGY [STRATEGY ...]

OUT is a comparison's folder (``archs/random-*.arch``, ``runs/``), DATA its data set, STEPS
the proxy's steps (0: as compare ran). Prints per strategy the pooled τ with its permutation
p and τ per seed, as compare.json's ``ranking`` has them, and writes them as JSON to stdout's
last line."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from avsearch import verdict as V
from avsearch.arch import Architecture
from avsearch.compare.judge import VERDICT_KEY, VERDICT_SEED, proxy_scores
from avsearch.data import load_dataset
from avsearch.run import RunSettings, recorded_identity
from avsearch.train import get_budget


def _predating_pools(build):
    """An .arch written before av_nas had the ``pools`` option names no pools, and today's
    default would build the max-pooled space; those runs searched ``pools=mean`` (README)."""
    def build_space(arch: Architecture):
        if arch.space == "av_nas" and "pools" not in arch.space_config:
            arch = dataclasses.replace(arch, space_config={**arch.space_config, "pools": ["mean"]})
        return build(arch)
    return build_space


Architecture.build_space = _predating_pools(Architecture.build_space)


def references(out: Path) -> tuple[list[int], list[dict[str, str]], np.ndarray]:
    """A comparison's seeds, its references' choices and their test scores (seeds × refs)."""
    runs = out / "runs"
    names = sorted({p.name.rsplit("-64b-s", 1)[0] for p in runs.glob("random-*-64b-s*")
                    if p.name.split("-")[1].isdigit()},      # not random search's own runs
                   key=lambda n: int(n.split("-")[1]))
    seeds = sorted({int(p.name.rsplit("-s", 1)[1]) for p in runs.glob(f"{names[0]}-64b-s*")})
    choices = [Architecture.load(out / "archs" / f"{n}.arch").choices for n in names]
    truth = np.array([[json.loads((runs / f"{n}-64b-s{s}" / "metrics.json").read_text())
                       ["test"][VERDICT_KEY] for n in names] for s in seeds])
    return seeds, choices, truth


def run_settings(folder: Path) -> tuple[RunSettings, object]:
    """A finished run's settings and budget, as its run.json recorded them."""
    identity = recorded_identity(folder / "run.json")
    settings = RunSettings(**{k: v for k, v in identity.items()
                              if k in RunSettings.__dataclass_fields__})
    return settings, get_budget(settings.budget, settings.epochs)


def main(out: Path, data_name: str, steps: int, strategies: list[str]) -> dict:
    seeds, references_, truth = references(out)
    data, found = load_dataset(data_name), {}
    for strategy in strategies:
        proxy = []
        for s in seeds:
            folder = out / "runs" / f"{strategy}-64b-s{s}"
            settings, budget = run_settings(folder)
            kind, scores = proxy_scores(folder, references_, data, budget, torch.device("cpu"),
                                        steps, settings)
            proxy.append(scores)
            print(strategy, s, kind, "τ %+.3f" % V.kendall(scores, truth[seeds.index(s)],
                                                            test=False)["tau"], flush=True)
        pooled = V.kendall(np.mean(proxy, axis=0), truth.mean(axis=0), seed=VERDICT_SEED)
        found[strategy] = {"proxy": kind, **pooled, "tau_per_seed": [
            V.kendall(p, t, test=False)["tau"] for p, t in zip(proxy, truth)]}
        print(strategy, "pooled τ %+.3f p %.3g" % (pooled["tau"], pooled["p"]), flush=True)
    print(json.dumps(found))
    return found


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:])
