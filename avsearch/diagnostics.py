"""How far a search moved: the numbers every run reports beside its result.

A search whose architecture distribution never left uniform derived a random draw, however
long it ran. These diagnostics make that visible in ``metrics.json`` and the closing summary:

* ``travel``: the largest change of a centred log-probability (a logit of α, up to its
  per-cell constant) from the start of the search; softmax(α) of a cell moves by a factor
  e^travel at most. Adam moves a logit by at most its learning rate per step, so 64 α steps
  at 1e-3 give at most 0.064: no decision.
* ``decided``: cells whose two most likely candidates differ by more than ``margin``
  (default 0.1) in probability.
* ``entropy``: each cell's entropy divided by log(candidates): 1 is uniform, 0 decided.

They apply to any distribution over a cell's candidates: softmax(α) (csp, darts, proxyless)
and the ENAS controller's greedy-path policy.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["distribution_diagnostics", "DECIDED_MARGIN", "bit_agreement"]

DECIDED_MARGIN = 0.1


def _centred_logits(p: Mapping[str, float]) -> np.ndarray:
    logp = np.log(np.clip(np.fromiter(p.values(), float), 1e-12, None))
    return logp - logp.mean()


def distribution_diagnostics(final: Mapping[str, Mapping[str, float]],
                             initial: Mapping[str, Mapping[str, float]] | None = None,
                             margin: float = DECIDED_MARGIN) -> dict[str, Any]:
    """Travel, decided cells and per-cell normalised entropy of per-cell probabilities
    (``initial`` default: uniform)."""
    travel, entropy, decided = 0.0, {}, 0
    for cell, p in final.items():
        probs = np.fromiter(p.values(), float)
        start = (np.zeros(len(probs)) if initial is None
                 else _centred_logits({k: initial[cell][k] for k in p}))
        travel = max(travel, float(np.abs(_centred_logits(p) - start).max()))
        top = np.sort(probs)[::-1]
        decided += int(len(top) < 2 or top[0] - top[1] > margin)
        h = -float(np.sum(probs * np.log(np.clip(probs, 1e-12, None))))
        entropy[cell] = round(h / math.log(len(probs)), 4) if len(probs) > 1 else 0.0
    return {"travel": round(travel, 4), "decided": decided, "cells": len(final),
            "margin": margin, "mean_entropy": round(float(np.mean(list(entropy.values()))), 4)
            if entropy else 0.0, "entropy": entropy}


def bit_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of equal code bits between two (N, bits) ±1 code matrices."""
    if a.shape != b.shape:
        raise ValueError(f"code shapes differ: {a.shape} vs {b.shape}")
    return float((a == b).mean()) if a.size else float("nan")
