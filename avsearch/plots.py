"""Plots a person would rather look at than read: how softmax(α) moves during a search."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from avsearch._files import atomic_write

__all__ = ["plot_alpha"]


def plot_alpha(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One panel per cell, one line per candidate: softmax(α) after every search epoch.

    Returns the path written, or None when the history has no α (a run without search).
    """
    records = [r for r in history if "alpha" in r]
    if not records:
        return None
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cells = list(records[0]["alpha"])
    cols = min(6, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), squeeze=False,
                             sharex=True, sharey=True)
    epochs = [r["epoch"] for r in records]
    for ax, cell in zip(axes.flat, cells):
        for op in records[0]["alpha"][cell]:
            ax.plot(epochs, [r["alpha"][cell][op] for r in records], marker="o", ms=2.5, label=op)
        ax.set_title(cell, fontsize=9)
        ax.legend(fontsize=6, loc="best", frameon=False)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.supxlabel("search epoch", fontsize=9)
    fig.supylabel("softmax(α)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path
