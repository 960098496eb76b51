"""Do finer scores of a path under the shared weights rank the references better than the
verdict's validation mAP@100 of its binary codes? (issue 10, item 2; tenth session)::

    python experiments/search_vs_random/shared_metrics.py STRATEGY SEEDS OUT

For spos or enas on avdigits, each seed's search runs as the verdict ran it (``quick``, 2
epochs; kept in ``OUT/run-STRATEGY-sSEED``, so a rerun only scores), then each of the 24
references' paths (``avd/compare.json`` and ``avd/more-references.json``) is scored under
the search's shared weights on the whole validation set by: ``binary``, mAP@100 of its
±1 codes (the verdict's proxy); ``relaxed``, mAP@100 ranking by the inner product of the
tanh codes before the sign (no ties where collapsed codes tie); ``fisher``, the relaxed
database codes' between-class over within-class sum of squares; ``distinct``, how many
distinct binary codes the database gets. Prints Kendall τ of each against the references'
test mAP@100 (both averaged over seeds), its 95 % CI and permutation p, and τ per seed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import search_ranking as SR
from avsearch import verdict as V
from avsearch.compare.judge import VERDICT_KEY, VERDICT_SEED, shared_supernet
from avsearch.compare.plan import _sample_random
from avsearch.data import load_dataset
from avsearch.inference import encode_split, flat_metrics
from avsearch.metrics import retrieval_metrics
from avsearch.objectives import get_objective
from avsearch.run import prepare_space

HERE = Path(__file__).parent
METRICS = ("binary", "relaxed", "fisher", "distinct")


def shared_weights(strategy: str, seed: int, out: Path):
    """The single-path supernet of this seed's search, with its shared weights."""
    if not (out / "checkpoint.pt").exists():
        out.mkdir(parents=True, exist_ok=True)
        SR.run_search("avdigits", strategy, seed, {}, {}, 2, out)
    net = shared_supernet(out)
    if isinstance(net, str):
        raise RuntimeError(net)
    return net.eval()


def scores(net, data, paths: dict[str, dict]) -> dict[str, dict[str, float]]:
    q, db = data.split("val"), data.database("val")
    qc, dc = q.labels.argmax(1), db.labels.argmax(1)     # one label a video
    cpu = torch.device("cpu")
    found = {}
    for name, choices in paths.items():
        net.set_path(choices)
        with torch.no_grad():
            hq, hd = (encode_split(net, s, cpu, relaxed=True) for s in (q, db))
        bq, bd = (np.where(h >= 0, 1, -1).astype(np.int8) for h in (hq, hd))
        binary = flat_metrics(retrieval_metrics(bq, q.labels, bd, db.labels, ks=(100,),
                                                pr_curve=False))[VERDICT_KEY]
        top = np.argsort(-(hq @ hd.T), axis=1, kind="stable")[:, :100]
        hit = dc[top] == qc[:, None]
        relaxed = ((np.cumsum(hit, 1) / np.arange(1, 101)) * hit).sum(1).mean() / 100
        mean = hd.mean(0)
        within = sum(((hd[dc == c] - hd[dc == c].mean(0)) ** 2).sum() for c in np.unique(dc))
        between = sum((dc == c).sum() * ((hd[dc == c].mean(0) - mean) ** 2).sum()
                      for c in np.unique(dc))
        found[name] = {"binary": float(binary), "relaxed": float(relaxed),
                       "fisher": float(between / max(within, 1e-12)),
                       "distinct": len(np.unique(bd, axis=0))}
    return found


def main() -> None:
    strategy, seeds, out = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], Path(sys.argv[3])
    torch.set_num_threads(1)
    truth = SR.references(HERE / "avd/compare.json", HERE / "avd/more-references.json", seeds)
    names = sorted(truth, key=lambda n: int(n.split("-")[1]))
    data = load_dataset("avdigits")
    space = prepare_space("av_nas", {}, data, 64, get_objective("supcon", seed=0))
    drawn = _sample_random(space, len(names))
    paths = {n: drawn[n] for n in names}
    found = []
    for s in seeds:
        cache = out / f"{strategy}-s{s}.json"
        if not cache.exists():
            net = shared_weights(strategy, s, out / f"run-{strategy}-s{s}")
            cache.write_text(json.dumps(scores(net, data, paths)))
        found.append(json.loads(cache.read_text()))
    truth_ = np.array([truth[n] for n in names]).T
    for metric in METRICS:
        proxy = np.array([[f[n][metric] for n in names] for f in found])
        pooled = V.kendall(proxy.mean(0), truth_.mean(0), seed=VERDICT_SEED)
        per_seed = [V.kendall(p, t, test=False)["tau"] for p, t in zip(proxy, truth_)]
        lo, hi = pooled["ci"]
        print(f"{strategy} {metric:8s} τ {pooled['tau']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
              f"p {pooled['p']:.3f}; per seed {', '.join(f'{t:+.2f}' for t in per_seed)}")


if __name__ == "__main__":
    main()
