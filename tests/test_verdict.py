"""The search-vs-random verdict: every statistic of avsearch.verdict against hand-computed cases
and SciPy, then `avsearch compare --verdict` end to end at the smoke budget."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from avsearch import Architecture, verdict as V
from avsearch.cli import main
from avsearch.compare.report import markdown_verdict


# ---------------------------------------------------------------- the statistics, by hand
def test_delta_is_the_score_minus_the_references_median_per_seed():
    refs = [[0.1, 0.5],
            [0.3, 0.2],
            [0.2, 0.9]]                       # medians: 0.2 (seed 0), 0.5 (seed 1)
    d, median = V.deltas([0.25, 0.4], refs)
    assert median.tolist() == pytest.approx([0.2, 0.5])
    assert d.tolist() == pytest.approx([0.05, -0.1])
    # an even number of references: the mean of the middle two
    d, median = V.deltas([1.0], [[0.1], [0.4], [0.3], [0.9]])
    assert median.tolist() == pytest.approx([0.35]) and d.tolist() == pytest.approx([0.65])
    with pytest.raises(ValueError, match="2 method scores for 1 reference seeds"):
        V.deltas([1.0, 2.0], [[0.1], [0.2]])


def test_percentile_counts_references_below_and_ties_as_half():
    assert V.percentile_among(0.25, [0.1, 0.3, 0.2]) == pytest.approx(100 * 2 / 3)
    assert V.percentile_among(0.3, [0.1, 0.3, 0.2]) == pytest.approx(100 * 2.5 / 3)
    assert V.percentile_among(0.0, [0.1, 0.3, 0.2]) == 0
    assert V.percentile_among(1.0, [0.1, 0.3, 0.2]) == 100


def _signed_rank_p(values) -> float:
    """P(W+ >= observed) under H0, enumerating all 2^n sign assignments of the ranks of |Δ|
    (zeros dropped): the signed-rank test from its definition, no SciPy."""
    d = [v for v in values if v != 0]
    ranks = scipy.stats.rankdata(np.abs(d))  # average ranks for ties
    observed = sum(r for r, v in zip(ranks, d) if v > 0)
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in
            itertools.product([False, True], repeat=len(d))]
    return sum(s >= observed - 1e-12 for s in sums) / len(sums)


def test_wilcoxon_p_by_hand_and_by_the_signed_rank_definition():
    # |Δ| ranks 3, 4, 1, 2 (0.5 → 1, 1 → 2, 2 → 3, 3 → 4); W+ = 2 + 3 + 4 = 9; of the 16 sign
    # assignments only {2,3,4} (9) and {1,2,3,4} (10) reach 9: p = 2/16
    assert V.wilcoxon_p([1.0, 2.0, -0.5, 3.0]) == pytest.approx(0.125)
    assert V.wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1 / 32)   # all positive
    assert V.wilcoxon_p([-0.1, -0.2, -0.3, -0.4, -0.5]) == pytest.approx(1.0)
    for values in ([0.3, -0.1, 0.25, 0.05, -0.02, 0.4], [0.0, 0.2, -0.1, 0.3],
                   [0.01, -0.03, 0.02, 0.04, 0.05, -0.06, 0.07]):
        assert V.wilcoxon_p(values) == pytest.approx(_signed_rank_p(values)), values
    assert V.wilcoxon_p([0.0, 0.0, 0.0]) is None


def test_label_needs_five_seeds_and_p_below_005():
    assert V.label(1 / 32, 5) == ("beats random", "p = 0.0312 < 0.05 over 5 seeds")
    text, why = V.label(1 / 16, 4)
    assert text == "not shown" and "4 seeds, needs at least 5" in why
    text, why = V.label(0.01, 2)       # a small p from too few seeds is still not shown
    assert text == "not shown" and "needs at least 5" in why
    text, why = V.label(0.2, 8)
    assert text == "not shown" and why == "p = 0.2 ≥ 0.05"
    assert V.label(None, 6)[0] == "not shown"


def test_bootstrap_ci_contains_the_mean_shrinks_with_n_and_is_seeded():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.02, 0.05, 6), rng.normal(0.02, 0.05, 200)
    widths = []
    for values in (small, large):
        mean, (lo, hi) = V.mean_delta_ci(values, seed=3)
        assert mean == pytest.approx(values.mean()) and lo < mean < hi
        widths.append(hi - lo)
        # the percentile interval by hand: quantiles of resampled means (another generator,
        # so only approximately equal)
        own = np.random.default_rng(99)
        means = values[own.integers(0, len(values), (20000, len(values)))].mean(axis=1)
        assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])),
                                         abs=0.15 * (hi - lo))
    assert widths[1] < widths[0] / 3        # ~ 1/sqrt(n): sqrt(200/6) ≈ 5.8
    assert V.mean_delta_ci(small, seed=3) == V.mean_delta_ci(small, seed=3)
    assert V.mean_delta_ci(small, seed=3) != V.mean_delta_ci(small, seed=4)
    assert V.mean_delta_ci([0.2]) == (0.2, None)              # nothing to resample
    assert V.mean_delta_ci([0.2, 0.2, 0.2]) == (pytest.approx(0.2), (pytest.approx(0.2),) * 2)


def test_noise_floor_all_between_seeds_is_0_all_between_architectures_is_1():
    seed_effect = np.array([0.1, 0.4, 0.2])
    only_seeds = np.tile(seed_effect, (4, 1))          # every architecture scores alike
    floor = V.noise_floor(only_seeds)
    assert floor["share"] == pytest.approx(0, abs=1e-12) and floor["separable"] is False
    only_archs = np.tile([[0.1], [0.3], [0.5], [0.2]], (1, 3))  # seeds change nothing
    floor = V.noise_floor(only_archs)
    assert floor["share"] == pytest.approx(1) and floor["var_seed"] == pytest.approx(0, abs=1e-20)
    assert floor["separable"] is True


def test_noise_floor_by_hand_and_its_f_test_against_scipy():
    # a = 2, s = 2: arch means 2 and 6, grand mean 4; MS_arch = 2 (4 + 4) / 1 = 16;
    # MS_seed = (1 + 1 + 1 + 1) / 2 = 2; σ²_arch = (16 − 2) / 2 = 7; share = 7 / 9; F = 8
    floor = V.noise_floor([[1.0, 3.0], [5.0, 7.0]])
    assert floor["var_arch"] == pytest.approx(7) and floor["var_seed"] == pytest.approx(2)
    assert floor["share"] == pytest.approx(7 / 9) and floor["F"] == pytest.approx(8)
    table = np.random.default_rng(0).normal(size=(5, 4)) + np.arange(5)[:, None] * 0.3
    floor = V.noise_floor(table, threshold=0.9)
    ref = scipy.stats.f_oneway(*table)
    assert floor["F"] == pytest.approx(ref.statistic) and floor["p"] == pytest.approx(ref.pvalue)
    # share = ICC(1) = (F − 1) / (F − 1 + s)
    assert floor["share"] == pytest.approx((ref.statistic - 1) / (ref.statistic - 1 + 4))
    assert floor["separable"] is (floor["share"] >= 0.9)
    one_seed = V.noise_floor([[0.1], [0.2], [0.3]])
    assert one_seed["share"] is None and "2 seeds" in one_seed["reason"]


def test_kendall_tau_and_its_permutation_p_on_hand_computed_orders():
    # n = 3, 3! = 6 pairings, τ over them: 1, 1/3, 1/3, −1/3, −1/3, −1
    same = V.kendall([1, 2, 3], [10, 20, 30])
    assert same["tau"] == pytest.approx(1) and same["p"] == pytest.approx(1 / 6) and same["exact"]
    one_swap = V.kendall([1, 2, 3], [1, 3, 2])        # pairs: C, C, D -> (2 − 1) / 3
    assert one_swap["tau"] == pytest.approx(1 / 3) and one_swap["p"] == pytest.approx(3 / 6)
    reverse = V.kendall([3, 2, 1], [1, 2, 3])
    assert reverse["tau"] == pytest.approx(-1) and reverse["p"] == pytest.approx(1)
    # a tie in the proxy: τ-b = 2 / sqrt(2 · 3); the 2 last in 2 of the 6 pairings
    tied = V.kendall([1, 1, 2], [1, 2, 3])
    assert tied["tau"] == pytest.approx(2 / math.sqrt(6)) and tied["p"] == pytest.approx(2 / 6)
    # n = 5 without ties: SciPy's exact null distribution of τ
    x, y = [0.3, 0.1, 0.5, 0.4, 0.2], [3, 2, 4, 5, 1]
    exact = scipy.stats.kendalltau(x, y, method="exact", alternative="greater")
    got = V.kendall(x, y)
    assert got["tau"] == pytest.approx(exact.statistic) and got["p"] == pytest.approx(exact.pvalue)
    # n = 10: 10! pairings > 2000 resamples, so seeded ones: reproducible, and near the exact
    # p (0.078; the resampling's standard error is sqrt(0.078 · 0.922 / 2000) ≈ 0.006)
    x = np.arange(10.0)
    y = np.array([3, 0, 2, 8, 1, 5, 9, 4, 7, 6.0])
    a, b = V.kendall(x, y, seed=1, resamples=2000), V.kendall(x, y, seed=1, resamples=2000)
    assert a == b and not a["exact"]
    assert a["p"] == pytest.approx(scipy.stats.kendalltau(x, y, method="exact",
                                                          alternative="greater").pvalue, abs=0.025)
    assert V.kendall([1, 1, 1], [1, 2, 3])["tau"] is None        # a constant proxy has no order
    assert V.kendall([1, 2, 3], [1, 3, 2], test=False) == {"tau": pytest.approx(1 / 3), "p": None,
                                                           "n": 3}


def test_tau_b_against_scipy_with_and_without_ties():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 9)), rng.normal(size=(50, 9))
    for a, b in ((x, y), (np.round(x), np.round(2 * y))):   # rounding makes ties in both
        expected = [scipy.stats.kendalltau(p, t).statistic for p, t in zip(a, b)]
        assert V.tau_b(a, b) == pytest.approx(expected)
        assert V.tau_b(a.T, b.T, axis=0) == pytest.approx(expected)
    assert np.isnan(V.tau_b(np.ones(4), np.arange(4.0)))      # no order on one side


def test_kendall_ci_covers_the_population_tau_and_narrows_with_more_architectures():
    # proxy and truth bivariate normal with correlation 0.5: the population τ is
    # (2/π) arcsin(0.5) = 1/3 (Greiner's relation)
    rng = np.random.default_rng(0)
    draws = rng.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]], size=48)
    wide = V.kendall_ci(draws[:12, 0], draws[:12, 1], seed=1)
    narrow = V.kendall_ci(draws[:, 0], draws[:, 1], seed=1)
    assert wide[0] < 1 / 3 < wide[1] and narrow[0] < 1 / 3 < narrow[1]
    # τ's standard error, sqrt(2(2n + 5) / 9n(n − 1)) under independence, is 0.45 times as
    # large at n = 48 as at 12: the interval narrows about so
    assert 0.25 < (narrow[1] - narrow[0]) / (wide[1] - wide[0]) < 0.6
    assert narrow[0] > 0          # 48 architectures tell this τ from 0 ...
    low, high = V.kendall_ci(draws[:, 0], rng.permutation(draws[:, 1]), seed=1)
    assert low < 0 < high         # ... and a shuffled pairing's from 0 not
    assert V.kendall_ci(np.arange(8.0), np.arange(8.0) ** 2) == (1.0, 1.0)
    assert V.kendall_ci([1, 2, 3], [1, 3, 2]) is None          # resamples without order
    pooled = V.kendall(draws[:12, 0], draws[:12, 1], seed=1)
    assert pooled["ci"] == wide and pooled["ci"][0] < pooled["tau"] < pooled["ci"][1]


def test_judge_puts_it_together():
    refs = [[0.40, 0.50, 0.45, 0.60, 0.52],
            [0.50, 0.40, 0.55, 0.50, 0.48],
            [0.30, 0.45, 0.50, 0.55, 0.60]]
    method = [0.60, 0.70, 0.65, 0.80, 0.70]          # above every reference, every seed
    got = V.judge(method, refs, seed=0)
    medians = [0.40, 0.45, 0.50, 0.55, 0.52]
    assert got["reference_median"] == pytest.approx(medians)
    assert got["deltas"] == pytest.approx([m - r for m, r in zip(method, medians)])
    assert got["mean_delta"] == pytest.approx(np.mean(got["deltas"]))
    assert got["ci"][0] < got["mean_delta"] < got["ci"][1]
    assert got["percentiles"] == [100.0] * 5 and got["mean_percentile"] == 100
    assert got["p"] == pytest.approx(1 / 32) and got["label"] == "beats random"
    worse = V.judge([0.2] * 5, refs)
    assert worse["mean_percentile"] == 0 and worse["label"] == "not shown"


# ---------------------------------------------------------------- compare --verdict, end to end
SMALL = ["--set", "d=16", "--set", "heads=2", "--set", "d_state=4"]
SEEDS = (0, 1)
REFERENCES = ("random-1", "random-2", "random-3")
STRATEGIES = ("csp", "spos")        # an α strategy and a shared-weight one
ARGS = ["compare", "--strategies", ",".join(STRATEGIES), "--presets", "none", "--random-archs", "0",
        "--verdict", "--references", "3", "--budget", "smoke", "--bits", "8", "--seeds", "0,1",
        "--quiet", *SMALL]
JOBS = min(2, len(os.sched_getaffinity(0)))


@pytest.fixture(scope="module")
def verdict_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("verdict") / "cmp"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*ARGS, "--jobs", str(JOBS), "--out", str(out)]) == 0
    log = buffer.getvalue()
    return out, log


def _metrics(out: Path, folder: str, seed: int) -> dict:
    return json.loads((out / "runs" / f"{folder}-8b-s{seed}" / "metrics.json").read_text())


def _test_map(out: Path, folder: str) -> list[float]:
    return [_metrics(out, folder, s)["test"]["map@100"] for s in SEEDS]


def test_verdict_numbers_are_verdict_py_on_the_runs_metrics(verdict_run):
    out, _ = verdict_run
    v = json.loads((out / "compare.json").read_text())["verdict"]
    assert v["references"] == list(REFERENCES) and v["seeds"] == list(SEEDS)
    entry = v["bits"]["8"]
    table = np.array([_test_map(out, r) for r in REFERENCES])      # read from the run folders
    assert entry["reference_scores"] == {r: _test_map(out, r) for r in REFERENCES}
    floor = V.noise_floor(table)
    assert entry["noise_floor"]["share"] == pytest.approx(floor["share"])
    judged = {m["method"]: m for m in entry["methods"]}
    assert list(judged) == ["csp", "csp/scratch", "spos", "spos/scratch"]
    for name, m in judged.items():
        scores = _test_map(out, name.replace("/", "-"))
        want = V.judge(scores, table, seed=0)
        for key in ("deltas", "reference_median", "percentiles", "mean_delta", "ci",
                    "mean_percentile", "p"):
            assert m[key] == pytest.approx(want[key]), (name, key)
        # fewer than five seeds: never "beats random", and the reason says so
        assert m["label"] == "not shown" and "2 seeds, needs at least 5" in m["reason"]


def test_scratch_rows_retrain_the_derived_architecture_with_arch(verdict_run):
    out, _ = verdict_run
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["methods"]}
    for strategy in STRATEGIES:
        assert rows[f"{strategy}/scratch"]["kind"] == "scratch"
        for seed in SEEDS:
            searched = out / "runs" / f"{strategy}-8b-s{seed}"
            scratch = out / "runs" / f"{strategy}-scratch-8b-s{seed}"
            run_json = json.loads((scratch / "run.json").read_text())
            assert run_json["arch"] == str((searched / "best.arch").resolve())
            derived, retrained = (Architecture.load(f / "best.arch") for f in (searched, scratch))
            assert retrained.choices == derived.choices
            assert retrained.provenance["strategy"] == "preset"   # avsearch run --arch: no search
            assert _metrics(out, f"{strategy}-scratch", seed)["time"]["search_epochs"] == 0


def test_kendall_tau_from_alpha_and_from_the_shared_weights(verdict_run):
    out, _ = verdict_run
    entry = json.loads((out / "compare.json").read_text())["verdict"]["bits"]["8"]
    truth = np.array([_test_map(out, r) for r in REFERENCES]).T        # (seeds, references)
    references = [Architecture.load(out / "archs" / f"{r}.arch").choices for r in REFERENCES]

    # csp: the summed log softmax(α) of each reference's choices, from each run's best.arch
    csp = entry["ranking"]["csp"]
    assert csp["available"] and csp["proxy"] == "summed log softmax(α)"
    proxy = []
    for seed in SEEDS:
        probs = Architecture.load(out / "runs" / f"csp-8b-s{seed}" / "best.arch").probabilities
        proxy.append([sum(math.log(probs[c][op]) for c, op in ref.items()) for ref in references])
    assert np.allclose(csp["proxy_scores"], proxy, rtol=0, atol=1e-9)
    want = V.kendall(np.mean(proxy, axis=0), truth.mean(axis=0), seed=0)
    assert (csp["tau"], csp["p"]) == (pytest.approx(want["tau"]), pytest.approx(want["p"]))
    assert csp["tau_per_seed"] == pytest.approx(
        [scipy.stats.kendalltau(p, t).statistic for p, t in zip(proxy, truth)])
    # three references leave τ's bootstrap CI undefined (a resample may draw one three times);
    # with one, compare.md gives it beside τ
    assert csp["ci"] is None and want["ci"] is None
    result = json.loads((out / "compare.json").read_text())
    result["verdict"]["bits"]["8"]["ranking"]["csp"]["ci"] = [-0.25, 0.5]
    row = f"| csp | summed log softmax(α) | {csp['tau']:+.2f} [-0.25, +0.50] |".replace("-", "−")
    assert row in markdown_verdict(result)

    # spos: validation mAP@100 of a path under the supernet the search kept; the proxy of the
    # architecture spos derived is the score its own evolution gave it (history.jsonl)
    spos = entry["ranking"]["spos"]
    assert spos["available"] and spos["proxy"].startswith("validation mAP@100")
    from avsearch.compare.judge import proxy_scores
    from avsearch.data import load_dataset
    from avsearch.train import get_budget

    data, budget = load_dataset("avdigits"), get_budget("smoke")
    for seed in SEEDS:
        folder = out / "runs" / f"spos-8b-s{seed}"
        trials = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
        trials = [t for t in trials if t["stage"].startswith("search/evolution/")]
        derived = Architecture.load(folder / "best.arch").choices
        recorded = max(t["score"] for t in trials if t["choices"] == derived)
        kind, scores = proxy_scores(folder, [derived], data, budget, torch.device("cpu"))
        assert kind == spos["proxy"] and scores[0] == pytest.approx(recorded, abs=1e-6)
    want = V.kendall(np.mean(spos["proxy_scores"], axis=0), truth.mean(axis=0), seed=0)
    assert spos["tau"] == pytest.approx(want["tau"])


def test_proxy_steps_rank_by_each_path_after_steps_of_its_own(verdict_run, tmp_path):
    """--proxy-steps 2 on the finished comparison: only the verdict is recomputed,
    and every strategy's proxy, csp's included, is a reference's validation mAP@100 after 2
    AdamW steps of its own from the search's shared weights, which a fixed network holding
    those weights, trained by hand on the same batches, reproduces."""
    from avsearch.data import load_dataset
    from avsearch.inference import evaluate
    from avsearch.objectives import get_objective
    from avsearch.supernet import compile_space
    from avsearch.train import Trainer, derive_seed, get_budget

    out = verdict_run[0]
    weights = {p: p.stat().st_mtime_ns for p in out.rglob("best.safetensors")}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*ARGS, "--jobs", str(JOBS), "--proxy-steps", "2", "--out", str(out)]) == 0
        result = json.loads((out / "compare.json").read_text())
    finally:   # the module's other tests read the comparison without --proxy-steps
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*ARGS, "--jobs", str(JOBS), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("best.safetensors")} == weights
    assert "--proxy-steps 2" in result["command"]
    entry = result["verdict"]["bits"]["8"]
    truth = np.array([_test_map(out, r) for r in REFERENCES]).T
    for strategy in STRATEGIES:
        ranking = entry["ranking"][strategy]
        assert ranking["proxy"] == "validation mAP@100 after 2 steps of its own from the shared weights"
        want = V.kendall(np.mean(ranking["proxy_scores"], axis=0), truth.mean(axis=0), seed=0)
        assert ranking["tau"] == pytest.approx(want["tau"])
    # by hand: csp, seed 1, the first reference
    seed, choices = 1, Architecture.load(out / "archs" / "random-1.arch").choices
    folder = out / "runs" / f"csp-8b-s{seed}"
    shared = torch.load(folder / "checkpoint.pt", weights_only=True)["stages"]["search"]["best"]
    space = Architecture.load(folder / "best.arch").build_space()
    net = compile_space(space, "fixed", choices)
    net.load_state_dict({k: shared[k] for k in net.state_dict()})
    data, budget = load_dataset("avdigits"), get_budget("smoke")
    trainer = Trainer(data, get_objective("supcon", seed=seed), budget, torch.device("cpu"),
                      tmp_path, progress=False, seed=seed)
    batches = trainer.batches([data.split("train")], 1, 2 * trainer.batch_size)[:2]
    opt = torch.optim.AdamW([p for p in net.parameters() if p.ndim >= 2], lr=1e-3, weight_decay=0.05)
    opt.add_param_group({"params": [p for p in net.parameters() if p.ndim < 2], "weight_decay": 0.0})
    torch.manual_seed(derive_seed(seed, "path-steps", space.canonical(choices)))
    net.train()
    for (batch,) in batches:      # the recipe's AdamW: no decay on vectors
        opt.zero_grad()
        trainer.loss(net, batch).backward()
        opt.step()
    score = evaluate(net, data, "val", torch.device("cpu"), limit=budget.eval_limit)["map@100"]
    assert entry["ranking"]["csp"]["proxy_scores"][SEEDS.index(seed)][0] == pytest.approx(score, abs=1e-9)


def test_compare_md_and_png_carry_the_verdict(verdict_run):
    import matplotlib.image

    out, _ = verdict_run
    md = (out / "compare.md").read_text()
    section = md.split("## Verdict: search vs random", 1)[1]
    result = json.loads((out / "compare.json").read_text())
    for m in result["verdict"]["bits"]["8"]["methods"]:
        line = re.search(rf"^\| {re.escape(m['method'])} \| (.*)$", section, re.M).group(1)
        cells = [c.strip() for c in line.split("|")]
        delta = float(cells[0].split(" ")[0].replace("−", "-"))
        assert delta == pytest.approx(m["mean_delta"], abs=5e-5)
        assert cells[3].startswith("not shown (2 seeds, needs at least 5")
    assert "Noise floor: " in section and ("cannot separate architectures" in section
                                           or "this budget separates architectures" in section)
    assert re.search(r"^\| csp \| summed log softmax\(α\) \| [+−]\d\.\d\d \|", section, re.M)
    image = matplotlib.image.imread(out / "compare.png")
    assert image.shape[0] > 800        # the verdict's strip plot below the two panels


def test_parallel_runs_start_a_scratch_run_after_its_search(verdict_run):
    out, log = verdict_run
    lines = log.splitlines()
    if JOBS > 1:
        for strategy in STRATEGIES:
            for seed in SEEDS:
                done = next(i for i, line in enumerate(lines)
                            if f"finished {strategy}, 8 bits, seed {seed}" in line)
                start = next(i for i, line in enumerate(lines)
                             if f"running {strategy}/scratch, 8 bits, seed {seed}" in line)
                assert done < start
    assert sum("running " in line for line in lines) == 4 * len(STRATEGIES) + 2 * len(REFERENCES)


def test_a_stopped_verdict_resumes_and_keeps_finished_runs(verdict_run, capsys):
    out, _ = verdict_run
    first = json.loads((out / "compare.json").read_text())["verdict"]
    # stopped mid-way: one scratch run unfinished, one reference run never started
    unfinished = out / "runs" / "csp-scratch-8b-s1"
    (unfinished / "metrics.json").unlink()
    missing = out / "runs" / "random-2-8b-s0"
    for f in missing.iterdir():
        f.unlink()
    missing.rmdir()
    kept = {r: (r / "best.safetensors").stat().st_mtime_ns for r in (out / "runs").iterdir()
            if r not in (unfinished, missing)}

    md = (out / "compare.md").read_text()
    command = shlex.split(re.search(r"^avsearch compare .*$", md, re.M).group(0))
    assert "--verdict" in command and command[command.index("--references") + 1] == "3"
    assert main([*command[1:], "--quiet"]) == 0
    log = capsys.readouterr().out
    assert log.count("finished earlier, kept") == len(kept)
    assert "resuming csp/scratch, 8 bits, seed 1" in log and "running random-2, 8 bits, seed 0" in log
    assert all((r / "best.safetensors").stat().st_mtime_ns == t for r, t in kept.items())
    again = json.loads((out / "compare.json").read_text())["verdict"]
    assert again["bits"]["8"]["reference_scores"] == first["bits"]["8"]["reference_scores"]
    assert [m["mean_delta"] for m in again["bits"]["8"]["methods"]] == \
        [m["mean_delta"] for m in first["bits"]["8"]["methods"]]
