"""Does a search beat random? The statistics behind ``avsearch compare --verdict``.

Pure numpy/scipy (no torch), so every number here can be checked by hand. The inputs are
plain arrays of one metric (``compare`` uses test mAP@100):

* ``references``: an (architectures, seeds) table, N random architectures of the space each
  trained from scratch under every seed (Yu et al., "Evaluating the search phase of NAS";
  Li & Talwalkar, "Random search and reproducibility for NAS": a search is judged against
  the distribution of random architectures trained the same way, not against one draw);
* ``method``: one score per seed, the same seeds in the same order.

Per seed s, Δ_s = method_s − median(references[:, s]). :func:`judge` reports the mean Δ with a
seeded bootstrap CI, the mean percentile of the method among the references, a one-sided
Wilcoxon signed-rank p-value of "Δ > 0" and a label: "beats random" only at p < 0.05 over at
least five seeds (with fewer, no signed-rank test can reach 0.05: its smallest p is 2^-n).
:func:`noise_floor` says whether the budget separates architectures at all, and
:func:`kendall` how well a supernet's proxy score ranks the references, with a bootstrap CI
over them (:func:`kendall_ci`).
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Sequence

import numpy as np
import scipy.stats

__all__ = ["ALPHA", "MIN_SEEDS", "SEPARABLE_SHARE", "CONFIDENCE", "RESAMPLES", "deltas",
           "mean_delta_ci", "percentile_among", "wilcoxon_p", "label", "judge", "noise_floor",
           "kendall", "kendall_ci", "tau_b"]

ALPHA = 0.05            # "beats random" needs p below this ...
MIN_SEEDS = 5           # ... over at least this many seeds
SEPARABLE_SHARE = 0.5   # below this between-architecture share, the budget cannot separate archs
CONFIDENCE = 0.95
RESAMPLES = 9999        # bootstrap resamples and permutations (fewer permutations: exact)


def _rng(function, seed: int) -> dict[str, Any]:
    """SciPy's seeding keyword: ``rng`` from 1.15 on, ``random_state`` before (setup.cfg
    allows scipy 1.10)."""
    key = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


def _finite(values: Any, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != ndim or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty {ndim}-d array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: NaN or inf")
    return arr


def deltas(method: Sequence[float], references: Any) -> tuple[np.ndarray, np.ndarray]:
    """(Δ per seed, the references' median per seed): Δ_s = method_s − median_i refs[i, s]."""
    refs = _finite(references, "references", 2)
    scores = _finite(method, "method", 1)
    if refs.shape[1] != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} method scores for {refs.shape[1]} reference seeds")
    median = np.median(refs, axis=0)
    return scores - median, median


def mean_delta_ci(values: Sequence[float], seed: int = 0, confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES) -> tuple[float, tuple[float, float] | None]:
    """The mean of ``values`` and its percentile-bootstrap CI (scipy.stats.bootstrap, seeded;
    None with fewer than two values, where resampling has nothing to vary).

    Percentile rather than BCa: BCa's jackknife acceleration is undefined or erratic at the
    two to five seeds a comparison usually has, the percentile interval is always defined."""
    arr = _finite(values, "values", 1)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, None
    if np.ptp(arr) == 0:     # every resample has the same mean; scipy warns about degenerate data
        return mean, (mean, mean)
    res = scipy.stats.bootstrap((arr,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                method="percentile", **_rng(scipy.stats.bootstrap, seed))
    return mean, (float(res.confidence_interval.low), float(res.confidence_interval.high))


def percentile_among(score: float, references: Sequence[float]) -> float:
    """Percent of ``references`` below ``score``, ties counting half (percentileofscore's
    ``kind="mean"``): 50 is the references' median, 100 beats them all."""
    return float(scipy.stats.percentileofscore(_finite(references, "references", 1), score,
                                               kind="mean"))


def wilcoxon_p(values: Sequence[float]) -> float | None:
    """One-sided Wilcoxon signed-rank p-value of "the Δs are centred above 0"
    (scipy.stats.wilcoxon, ``alternative="greater"``, zeros dropped as in Wilcoxon's original
    test). None when every Δ is 0: there is nothing to rank."""
    arr = _finite(values, "values", 1)
    if not np.any(arr):
        return None
    return float(scipy.stats.wilcoxon(arr, alternative="greater").pvalue)


def label(p: float | None, seeds: int, alpha: float = ALPHA,
          min_seeds: int = MIN_SEEDS) -> tuple[str, str]:
    """("beats random" | "not shown", why)."""
    p_text = "no p-value (every Δ is 0)" if p is None else f"p = {p:.3g}"
    if seeds < min_seeds:
        plural = "s" if seeds != 1 else ""
        return "not shown", f"{seeds} seed{plural}, needs at least {min_seeds}; {p_text}"
    if p is None or p >= alpha:
        return "not shown", p_text + ("" if p is None else f" ≥ {alpha:g}")
    return "beats random", f"p = {p:.3g} < {alpha:g} over {seeds} seeds"


def judge(method: Sequence[float], references: Any, seed: int = 0) -> dict[str, Any]:
    """Everything the verdict says about one method: per seed Δ, the references' median and
    the method's percentile among them; the mean Δ and its bootstrap CI (seeded by ``seed``),
    the mean percentile, the one-sided Wilcoxon p, and the label with its reason."""
    refs = _finite(references, "references", 2)
    d, median = deltas(method, refs)
    scores = np.asarray(method, dtype=float)
    percentiles = [percentile_among(scores[s], refs[:, s]) for s in range(refs.shape[1])]
    mean, ci = mean_delta_ci(d, seed=seed)
    p = wilcoxon_p(d)
    text, why = label(p, len(d))
    return {"deltas": d.tolist(), "reference_median": median.tolist(),
            "percentiles": percentiles, "mean_delta": mean,
            "ci": None if ci is None else list(ci), "confidence": CONFIDENCE,
            "mean_percentile": float(np.mean(percentiles)), "p": p,
            "label": text, "reason": why}


def noise_floor(table: Any, threshold: float = SEPARABLE_SHARE) -> dict[str, Any]:
    """How much of the references' spread is the architecture and how much the seed.

    A one-way random-effects ANOVA over the (a architectures × s seeds) table y_ij, with
    architecture i as the group and its s seeds as replicates::

        ȳ_i = mean_j y_ij,  ȳ = mean_ij y_ij
        MS_arch = s · Σ_i (ȳ_i − ȳ)² / (a − 1)
        MS_seed = Σ_ij (y_ij − ȳ_i)² / (a (s − 1))
        σ²_seed = MS_seed
        σ²_arch = max(0, (MS_arch − MS_seed) / s)
        share   = σ²_arch / (σ²_arch + σ²_seed)            (the intraclass correlation ICC(1))

    ``share`` is the part of one run's variance that comes from which architecture it is;
    the rest is seed-to-seed noise of the same architecture. Below ``threshold`` two random
    architectures differ less than two seeds of one, so this budget cannot separate
    architectures and no verdict about a search means much. Also F = MS_arch / MS_seed and its
    p-value (scipy.stats.f) for "the architectures differ at all". Needs a ≥ 2 and s ≥ 2;
    ``share`` is None when nothing varies.
    """
    y = _finite(table, "table", 2)
    a, s = y.shape
    out: dict[str, Any] = {"architectures": a, "seeds": s, "threshold": threshold,
                           "share": None, "var_arch": None, "var_seed": None, "F": None, "p": None,
                           "separable": None}
    if a < 2 or s < 2:
        out["reason"] = (f"needs at least 2 architectures and 2 seeds (has {a} and {s}) to "
                         f"tell the two apart")
        return out
    arch_means = y.mean(axis=1)
    ms_arch = s * float(((arch_means - y.mean()) ** 2).sum()) / (a - 1)
    ms_seed = float(((y - arch_means[:, None]) ** 2).sum()) / (a * (s - 1))
    var_arch = max(0.0, (ms_arch - ms_seed) / s)
    total = var_arch + ms_seed
    out.update(var_arch=var_arch, var_seed=ms_seed)
    if ms_seed > 0:
        out["F"] = ms_arch / ms_seed
        out["p"] = float(scipy.stats.f.sf(out["F"], a - 1, a * (s - 1)))
    elif ms_arch > 0:
        out["F"], out["p"] = math.inf, 0.0
    if total > 0:
        out["share"] = var_arch / total
        out["separable"] = out["share"] >= threshold
    else:
        out["reason"] = "every reference scored the same under every seed"
    return out


def kendall(proxy: Sequence[float], truth: Sequence[float], seed: int = 0,
            resamples: int = RESAMPLES, test: bool = True) -> dict[str, Any]:
    """Kendall's τ-b between a proxy score and the true score of the same architectures, with
    a one-sided permutation p-value of "τ > 0" (scipy.stats.permutation_test: the proxy is
    re-paired with the truth at random; exact over all n! pairings when n! ≤ ``resamples``,
    else ``resamples`` seeded ones). A permutation test rather than kendalltau's own p: it is
    exact for small n and stays right when the proxy has ties (an α that has not moved).
    ``test=False``: τ only (p None), for the per-seed values beside a tested summary."""
    x = _finite(proxy, "proxy", 1)
    y = _finite(truth, "truth", 1)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"kendall: need two equal-length arrays of at least 2, "
                         f"got {x.size} and {y.size}")
    tau = float(scipy.stats.kendalltau(x, y).statistic)
    if math.isnan(tau):  # one side constant: no order to compare
        return {"tau": None, "p": None, "n": int(x.size), "reason": "a constant score has no order"}

    if not test:
        return {"tau": tau, "p": None, "n": int(x.size)}

    res = scipy.stats.permutation_test((x,), lambda p, axis: tau_b(p, y, axis),
                                       permutation_type="pairings", vectorized=True,
                                       n_resamples=resamples, alternative="greater",
                                       **_rng(scipy.stats.permutation_test, seed))
    return {"tau": tau, "p": float(res.pvalue), "n": int(x.size),
            "exact": math.factorial(int(x.size)) <= resamples,
            "ci": kendall_ci(x, y, seed, resamples), "confidence": CONFIDENCE}


def tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's τ-b along ``axis`` of x and y (broadcast), for many resamples at once:
    Σ sign(x_i − x_j) sign(y_i − y_j) / sqrt(Σ sign(x_i − x_j)² · Σ sign(y_i − y_j)²) over
    pairs, NaN where one side is constant. O(n²) per row, meant for the few dozen
    architectures of a verdict (scipy.stats.kendalltau takes one pair of arrays a call)."""
    x, y = np.broadcast_arrays(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1))
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-2, -1)) / np.sqrt((sx * sx).sum((-2, -1)) * (sy * sy).sum((-2, -1)))


def kendall_ci(proxy: Sequence[float], truth: Sequence[float], seed: int = 0,
               resamples: int = RESAMPLES, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile-bootstrap CI of Kendall's τ-b over the architectures (scipy.stats.bootstrap,
    ``paired``: an architecture's proxy and truth are resampled together, seeded): how far τ
    measured on these N references may lie from τ over the whole space. With a dozen
    references it is about a unit wide. None when a resample without order (one architecture
    drawn N times) leaves it undefined, as with two or three references."""
    with warnings.catch_warnings():   # a resample without order: NaN, which says so below
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        res = scipy.stats.bootstrap((np.asarray(proxy, float), np.asarray(truth, float)), tau_b,
                                    paired=True, vectorized=True, n_resamples=resamples,
                                    confidence_level=confidence, method="percentile",
                                    **_rng(scipy.stats.bootstrap, seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return None if math.isnan(low) or math.isnan(high) else (low, high)
