"""Writing a comparison: compare.md (Table 2's layout, the verdict) and compare.png."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avsearch._files import atomic_write
from avsearch.compare.judge import PROXY_ALPHA, PROXY_SHARED
from avsearch.compare.plan import RANDOM_SEED
from avsearch.metrics import NORMALISATIONS

__all__ = ["markdown", "markdown_table", "markdown_verdict", "noise_sentence", "plot_compare",
           "cell", "TABLE_KS", "TIME_COLUMNS"]

TABLE_KS = (5, 100)          # the Markdown table's mAP@K columns (compare.json has DEFAULT_KS)


def _fmt(value: float | None, kind: str, like: float | None = None) -> str:
    """``value`` for the table; ``like`` (a mean, when ``value`` is its std) fixes unit and
    decimals, so ``0.0057 ± 0.0009`` and ``13.4 ± 0.1`` line up."""
    if value is None:
        return "–"
    ref = abs(value if like is None else like)
    if kind == "map":
        return f"{value:.4f}"
    if kind == "params":
        scale, suffix = (1e6, "M") if ref >= 1e5 else (1e3, "k")
        return f"{value / scale:.{2 if suffix == 'M' else 1}f}{suffix}"
    if ref == 0:
        return "0"
    if kind == "ms":  # three significant digits of the mean
        decimals = max(0, 2 - math.floor(math.log10(ref)))
    else:             # seconds
        decimals = 0 if ref >= 100 else 1 if ref >= 1 else 2
    return f"{value:.{decimals}f}"


def cell(stats: dict[str, Any], key: str, kind: str) -> str:
    mean, std = stats["mean"].get(key), stats["std"].get(key)
    if mean is None:
        return "–"
    if std is None or (std == 0 and (mean == 0 or kind == "params")):
        return _fmt(mean, kind)   # one seed, or nothing varies (no search time, a fixed net)
    return f"{_fmt(mean, kind)} ± {_fmt(std, kind, like=mean)}"


TIME_COLUMNS = (("supernet_s_per_epoch", "supernet / epoch (s)", "s"),
                 ("search_s", "search (s)", "s"),
                 ("finetune_s_per_epoch", "finetune / epoch (s)", "s"),
                 ("inference_ms_per_video", "inference (ms / video)", "ms"),
                 ("params", "params", "params"))


def _longest(bits: Sequence[Any]) -> str:
    """The longest code length (Table 2 reports times and sizes at 64 bits), as a JSON key."""
    return str(bits[-1]) if len(bits) == 1 else str(max(int(b) for b in bits))


def markdown_table(result: dict[str, Any]) -> str:
    """Table 2's layout: mAP@K at each code length, then times and size at the longest code."""
    bits = [str(b) for b in result["settings"]["bits"]]
    longest = _longest(bits)
    unit = lambda b: f" {b} bits" if b != "None" else ""  # noqa: E731
    header = ["method"] + [f"{title}{unit(b)}" for b in bits
                           for title in [*(f"mAP@{k}" for k in TABLE_KS), "GmAP"]] + \
             [title for _, title, _ in TIME_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in result["methods"]:
        cells = [row["method"] if row["kind"] != "baseline" else f"{row['method']} (baseline)"]
        for b in bits:
            stats = row["bits"].get(b)
            cells += [cell(stats, key, "map") if stats else "–"
                      for key in [*(f"map@{k}" for k in TABLE_KS), "gmap"]]
        stats = row["bits"].get(longest)
        cells += [cell(stats, key, kind) if stats and row["kind"] != "baseline" else "–"
                  for key, _, kind in TIME_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """compare.md: the command, what the numbers are, Table 2, and times at every code length."""
    s = result["settings"]
    norm = result["normalisation"]
    norm_text = NORMALISATIONS.get(norm, str(norm)) if isinstance(norm, str) else \
        f"mixed ({', '.join(norm)}): do not compare these rows"
    seeds = s["seeds"]
    epochs = "" if s["epochs"] is None else f" ({s['epochs']} epochs per stage)"
    spread = (f"mean ± sample standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))})"
              if len(seeds) > 1 else f"seed {seeds[0]}")
    parts = [
        f"# avsearch compare: {s['space']} on {result['data']}", "",
        "```", result["command"], "```", "",
        f"Test queries against the retrieval database; mAP@K divided by {norm_text}. "
        f"Budget `{s['budget']}`{epochs}, {spread}, device {result['device']}.", "",
        markdown_table(result), "",
        (f"Times and parameters at {_longest(s['bits'])} bits (every code length: below). "
         if len(s["bits"]) > 1 else "") +
        "Columns: *supernet / epoch* is the search stage's supernet training per epoch; "
        "*search* is the search's time beyond that (evolution, a controller, trials, the "
        "successive-halving stage: 0 when the supernet's α is all of the search); "
        "*finetune / epoch* trains the derived or given architecture; *inference* encodes the "
        "test split "
        f"(median of {result['inference_repeats']} passes after a warm-up); *params* counts the "
        "derived network's parameters. `–`: not applicable (no supernet; baselines are "
        "reported by mAP only). "
        + (f"`random-i` is the i-th distinct draw of `space.sample(random.Random({RANDOM_SEED}))`, "
           f"trained from scratch, the same architecture for every seed (the strategy `random` "
           f"is random search)."
           if any(r["kind"] == "random" for r in result["methods"]) else ""),
    ]
    if len(s["bits"]) > 1:
        parts += ["", "Times and size at every code length:", "",
                  "| method | bits | " + " | ".join(t for _, t, _ in TIME_COLUMNS) + " |",
                  "|---|---:" + "|---:" * len(TIME_COLUMNS) + "|"]
        for row in result["methods"]:
            if row["kind"] == "baseline":
                continue
            for b, stats in row["bits"].items():
                parts.append(f"| {row['method']} | {b} | " +
                             " | ".join(cell(stats, k, kind) for k, _, kind in TIME_COLUMNS) + " |")
    if "verdict" in result:
        parts += ["", markdown_verdict(result)]
    parts += ["", "All numbers, per seed too: `compare.json`; the plot: `compare.png`; the runs: "
              "`runs/<method>-<bits>b-s<seed>/`.", ""]
    return "\n".join(parts)


def _signed(value: float, decimals: int = 4) -> str:
    return f"{value:+.{decimals}f}".replace("-", "−")


def noise_sentence(floor: dict[str, Any]) -> str:
    """What the noise floor means for this comparison, in one paragraph."""
    if floor["share"] is None:
        return (f"Noise floor: not measured ({floor.get('reason', 'too few runs')}); with one "
                f"seed nothing says whether this budget separates architectures at all.")
    share, threshold = floor["share"], floor["threshold"]
    stats = (f"one-way ANOVA over {floor['architectures']} references × {floor['seeds']} seeds: "
             f"σ²_arch = {floor['var_arch']:.3g}, σ²_seed = {floor['var_seed']:.3g}"
             + (f", F = {floor['F']:.3g}, p = {floor['p']:.3g}" if floor["F"] is not None else ""))
    head = (f"Noise floor: {share:.0%} of the references' variance lies between architectures, "
            f"{1 - share:.0%} between seeds of one architecture ({stats}). ")
    if share < threshold:
        return head + (f"Below {threshold:.0%}: **this budget cannot separate architectures** "
                       f"(two seeds of one architecture differ as much as two architectures), "
                       f"so no verdict above says much about the search; give a larger budget.")
    return head + f"At or above {threshold:.0%}: this budget separates architectures."


def markdown_verdict(result: dict[str, Any]) -> str:
    """compare.md's "Verdict: search vs random": per code length the judged rows, the noise
    floor, and each strategy's ranking of the references."""
    v = result["verdict"]
    refs = v["references"]
    seeds = v["seeds"]
    pct = f"{v['confidence']:.0%}"
    parts = [
        "## Verdict: search vs random", "",
        f"References: {len(refs)} random architectures of the space ({refs[0]} … {refs[-1]}), "
        f"each trained from scratch under every seed ({', '.join(map(str, seeds))}) with the "
        f"same budget as a preset. Per seed, Δ = a row's {v['metric']} minus the references' "
        f"median. *mean Δ [CI]*: {pct} percentile bootstrap of the mean Δ over seeds "
        f"({v['resamples']} resamples, seed {v['random_seed']}); *percentile*: the row's rank "
        f"among the references (ties count half), per seed, then averaged; *p*: one-sided "
        f"Wilcoxon signed-rank test of Δ > 0. The verdict is \"beats random\" only at "
        f"p < {v['alpha']:g} over at least {v['min_seeds']} seeds, otherwise \"not shown\". "
        f"`<strategy>/scratch` is the architecture the strategy derived, retrained from scratch "
        f"(`avsearch run --arch` on its `best.arch`) beside its row with inherited weights."]
    many = len(v["bits"]) > 1
    for b, entry in v["bits"].items():
        if many:
            parts += ["", f"### {b} bits"]
        parts += ["", "| method | mean Δ [CI] | mean percentile | p | verdict |",
                  "|---|---:|---:|---:|---|"]
        for m in entry["methods"]:
            ci = "" if m["ci"] is None else f" [{_signed(m['ci'][0])}, {_signed(m['ci'][1])}]"
            p = "–" if m["p"] is None else f"{m['p']:.3g}"
            parts.append(f"| {m['method']} | {_signed(m['mean_delta'])}{ci} | "
                         f"{m['mean_percentile']:.0f} | {p} | {m['label']} ({m['reason']}) |")
        parts += ["", noise_sentence(entry["noise_floor"]), "",
                  "How well each search ranks the references: Kendall τ between a reference's "
                  "proxy score under the search and its test mAP@100 trained from scratch, each "
                  f"averaged over seeds, with a seeded percentile-bootstrap {pct} CI over the "
                  "references (how far τ over the whole space may lie from τ on these few); "
                  "*p*: one-sided permutation test of τ > 0 (exact up to "
                  f"{v['resamples']} permutations, else that many, seeded). The proxy is "
                  f"*{PROXY_ALPHA}* (the log-probability the search's softmax(α) in `best.arch` "
                  f"gives the reference's choices) or *{PROXY_SHARED}* (its path in the "
                  f"supernet the search trained, kept in the run's `checkpoint.pt`).", "",
                  "| strategy | proxy | τ [CI] | p | τ per seed |", "|---|---|---:|---:|---|"]
        for name, r in entry["ranking"].items():
            if not r["available"]:
                parts.append(f"| {name} | not available: {r['reason']} | – | – | – |")
                continue
            tau = "–" if r["tau"] is None else _signed(r["tau"], 2)
            if r.get("ci"):   # compare.json written before the CI existed has none
                tau += f" [{_signed(r['ci'][0], 2)}, {_signed(r['ci'][1], 2)}]"
            p = "–" if r["p"] is None else f"{r['p']:.3g}"
            per_seed = ", ".join("–" if t is None else _signed(t, 2) for t in r["tau_per_seed"])
            parts.append(f"| {name} | {r['proxy']} | {tau} | {p} | {per_seed} |")
    return "\n".join(parts)


def plot_compare(result: dict[str, Any], path: Path, k: int = 100) -> Path:
    """Left: test mAP@k of every method, one group of bars per code length, seed std as error
    bars. Right: mAP@k against training time (search + finetune) at the longest code length.
    With a verdict, below: the references per seed with the judged rows marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"map@{k}"
    bits = [str(b) for b in result["settings"]["bits"]]
    longest = _longest(bits)
    rows = result["methods"]
    models = [r for r in rows if r["kind"] != "baseline"]
    # tab10's nine non-grey colours (grey is the baselines'), then their light tab20 twins
    tab20 = plt.get_cmap("tab20").colors
    palette = [tab20[2 * i + light] for light in (0, 1) for i in range(10) if i != 7]
    colors = {r["method"]: palette[i % len(palette)] for i, r in enumerate(models)}
    greys = iter(["0.35", "0.55", "0.75", "0.45", "0.65"] * len(rows))
    colors.update({r["method"]: next(greys) for r in rows if r["kind"] == "baseline"})
    hatch = {"strategy": "", "preset": "//", "random": "..", "baseline": "xx"}
    marker = {"strategy": "o", "preset": "s", "random": "^"}

    n, gap = len(rows), 1.0
    width = max(9.0, 4.5 + 0.42 * n * len(bits))
    ratios = [max(1.2, 0.13 * n * len(bits)), 1]
    verdict = result.get("verdict")
    if verdict:
        fig = plt.figure(figsize=(width, 9.4))
        grid = fig.add_gridspec(2, 2, width_ratios=ratios, height_ratios=[1, 0.95])
        ax, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        _plot_verdict(fig.add_subplot(grid[1, :]), verdict, longest, colors)
    else:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(width, 4.8),
                                      gridspec_kw={"width_ratios": ratios})
    ticks, labels = [], []
    for g, b in enumerate(bits):
        base = g * (n + gap)
        for i, row in enumerate(rows):
            stats = row["bits"].get(b)
            if not stats or stats["mean"].get(key) is None:
                continue
            std = stats["std"].get(key)
            ax.bar(base + i, stats["mean"][key], 0.85, yerr=std, capsize=3,
                   color=colors[row["method"]], hatch=hatch.get(row["kind"], ""),
                   edgecolor="white", linewidth=0.5, error_kw={"elinewidth": 1, "ecolor": "0.15"})
            ticks.append(base + i)
            labels.append(row["method"])
        if b != "None":  # the group's code length, above its bars
            ax.text(base + (n - 1) / 2, 0.97, f"{b} bits", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=10, fontweight="bold")
        if g:
            ax.axvline(base - (gap + 1) / 2, color="0.8", lw=0.8)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8.5)
    ax.set_xlim(-0.8, len(bits) * (n + gap) - gap - 0.2)
    ax.set_ylabel(f"test mAP@{k}")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)   # room for the code-length labels
    seeds = result["settings"]["seeds"]
    ax.set_title(f"test mAP@{k}, " + (f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1
                                       else f"seed {seeds[0]}"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    for row in models:
        stats = row["bits"].get(longest)
        if not stats or stats["mean"].get(key) is None:
            continue
        x, y = stats["mean"]["train_total_s"], stats["mean"][key]
        ax2.errorbar([x], [y], xerr=stats["std"].get("train_total_s"), yerr=stats["std"].get(key),
                     fmt=marker.get(row["kind"], "o"), color=colors[row["method"]], ms=7, capsize=3,
                     label=row["method"], alpha=0.9)
    ax2.set_xlabel("training time: search + finetune (s)")
    ax2.set_ylabel(f"test mAP@{k}")
    ax2.set_title("mAP against training time" + (f", {longest} bits" if longest != "None" else ""),
                  fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.margins(x=0.15, y=0.15)
    ax2.legend(fontsize=8.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0),
               handletextpad=0.3)
    kinds = {r["kind"] for r in rows}
    key_text = ", ".join(text for kind, text in (("preset", "// presets"),
                                                 ("random", ".. random architectures"),
                                                 ("baseline", "xx baselines")) if kind in kinds)
    fig.suptitle(f"{result['settings']['space']} on {result['data']}, budget "
                 f"{result['settings']['budget']}" + (f"; hatched: {key_text}" if key_text else ""),
                 fontsize=10.5)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def _plot_verdict(ax, verdict: dict[str, Any], bits: str, colors: dict[str, Any]) -> None:
    """A strip plot: per seed, the references' scores (grey) and their median (black bar),
    with every judged row marked (filled: a strategy; hollow: its derived architecture from
    scratch; square: a preset)."""
    entry = verdict["bits"].get(bits) or next(iter(verdict["bits"].values()))
    seeds = verdict["seeds"]
    refs = np.array(list(entry["reference_scores"].values()))      # (references, seeds)
    spread = np.linspace(-0.28, 0.28, refs.shape[0]) if refs.shape[0] > 1 else np.zeros(1)
    for s in range(len(seeds)):
        order = np.argsort(refs[:, s])
        ax.scatter(s + spread, refs[order, s], s=22, color="0.6", zorder=2,
                   label="references" if s == 0 else None)
        ax.hlines(np.median(refs[:, s]), s - 0.34, s + 0.34, color="0.1", lw=1.6, zorder=3,
                  label="references' median" if s == 0 else None)
    judged = entry["methods"]
    offsets = np.linspace(-0.2, 0.2, len(judged)) if len(judged) > 1 else np.zeros(1)
    for m, dx in zip(judged, offsets):
        strategy = m["method"].split("/")[0]
        color = colors.get(strategy, colors.get(m["method"], "C0"))
        face = "none" if m["kind"] == "scratch" else color
        marker = "s" if m["kind"] == "preset" else "o"
        ax.scatter(np.arange(len(seeds)) + dx, m["scores"], s=70, marker=marker,
                   facecolors=face, edgecolors=color, linewidths=1.8, zorder=4,
                   label=f"{m['method']}: Δ {_signed(m['mean_delta'])}, {m['label']}")
    ax.set_xticks(range(len(seeds)))
    ax.set_xticklabels([f"seed {s}" for s in seeds])
    ax.set_xlim(-0.6, len(seeds) - 0.4)
    ax.set_ylabel(verdict["metric"])
    floor = entry["noise_floor"]["share"]
    ax.set_title(f"Verdict: search vs {len(verdict['references'])} random references"
                 + (f", {bits} bits" if bits != "None" else "")
                 + ("" if floor is None else f"; between-architecture share {floor:.0%}"),
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
