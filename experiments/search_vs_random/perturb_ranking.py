"""Kendall τ of a perturbation proxy (DARTS-PT's op importance under a search's W*) against
the references' scores from scratch, beside the verdict's own softmax(α) proxy::

    python experiments/search_vs_random/perturb_ranking.py OUT DATA STRATEGY

OUT is a comparison's folder (``archs/random-*.arch``, ``runs/``), DATA its data set, STRATEGY
a mixed-supernet search of it (csp, darts, proxyless). Per seed, the search stage's supernet
(W* and α from ``checkpoint.pt``) is scored on validation (the budget's ``eval_limit``, as
the search scores) with each candidate of each cell removed from its mixture in turn
(:func:`avsearch.strategies.removal_scores`, every other cell mixed); a candidate's
importance is the score it costs. A reference's proxy is the sum of its choices' importance
(``sum``) or of their ranks within their cells scaled to [0, 1] (``rank``). Prints τ per seed
and pooled (the proxies and scores averaged over seeds, with the permutation p), as
compare.json's ``ranking`` has them. Every seed's removal scores are kept in
``OUT/perturb-STRATEGY-sSEED.json``, so a rerun only recomputes τ."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ranking import references, run_settings  # also: old .arch files build their own space

from avsearch import verdict as V
from avsearch.arch import Architecture
from avsearch.compare.judge import VERDICT_KEY, VERDICT_SEED, proxy_scores
from avsearch.data import load_dataset
from avsearch.inference import evaluate
from avsearch.strategies import removal_scores
from avsearch.supernet import compile_space


def importance(folder: Path, data, cache: Path) -> dict[str, dict[str, float]]:
    """Per cell and candidate: the validation score W* loses when the candidate is removed."""
    if cache.exists():
        return json.loads(cache.read_text())
    _, budget = run_settings(folder)
    arch = Architecture.load(folder / "best.arch")
    net = compile_space(arch.build_space(), "mixed")
    stage = torch.load(folder / "checkpoint.pt", weights_only=True, map_location="cpu")
    net.load_state_dict(stage["stages"]["search"]["best"])
    net.eval()

    def score() -> float:
        return float(evaluate(net, data, "val", torch.device("cpu"),
                              limit=budget.eval_limit)[VERDICT_KEY])

    gates = net.probabilities(net.temperature)
    base = score()
    found = {cell: {op: base - s for op, s in removal_scores(net, gates, cell, score).items()}
             for cell in gates if len(gates[cell]) > 1}
    net.set_gates(None)
    cache.write_text(json.dumps(found))
    return found


def proxy(found: dict[str, dict[str, float]], choices: dict[str, str], kind: str) -> float:
    total = 0.0
    for cell, op in choices.items():
        if cell in found:
            order = sorted(found[cell], key=found[cell].get)
            total += found[cell][op] if kind == "sum" else order.index(op) / (len(order) - 1)
    return total


def main(out: Path, data_name: str, strategy: str) -> None:
    torch.set_num_threads(1)
    seeds, choices, truth = references(out)
    data = load_dataset(data_name)
    proxies: dict[str, list[list[float]]] = {"sum": [], "rank": [], "softmax(α)": []}
    for i, s in enumerate(seeds):
        folder = out / "runs" / f"{strategy}-64b-s{s}"
        found = importance(folder, data, out / f"perturb-{strategy}-s{s}.json")
        proxies["sum"].append([proxy(found, c, "sum") for c in choices])
        proxies["rank"].append([proxy(found, c, "rank") for c in choices])
        # the verdict's own proxy (softmax(α) from best.arch; no training, nothing else read)
        proxies["softmax(α)"].append(proxy_scores(folder, choices, None, None, None)[1])
        print(s, "  ".join(f"{k} τ {V.kendall(p[-1], truth[i], test=False)['tau']:+.2f}"
                           for k, p in proxies.items()), flush=True)
    for kind, p in proxies.items():
        pooled = V.kendall(np.mean(p, axis=0), truth.mean(axis=0), seed=VERDICT_SEED)
        per_seed = [V.kendall(q, t, test=False)["tau"] for q, t in zip(p, truth)]
        print(f"{kind}: pooled τ {pooled['tau']:+.2f} (p {pooled['p']:.2g}), per seed "
              + ", ".join(f"{t:+.2f}" for t in per_seed))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
