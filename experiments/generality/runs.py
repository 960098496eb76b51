"""What the tables of this folder's diagnostic scripts share: a finished run's score, found by
the runs' naming (``DATA-CONFIG[TAG]-sSEED``; the temporal CNN is the one trained inside that
seed's ``mamba`` run), and mean ± sample std of paired differences."""
import json
import statistics
from pathlib import Path


def score(runs: Path, data: str, config: str, seed: int, split: str = "test",
          tag: str = "") -> float | None:
    """mAP@100 on ``split`` of the run ``DATA-CONFIG{tag}-sSEED`` in ``runs`` (config
    ``CNN``: the CNN of the ``mamba`` run), None if it has not finished."""
    name = f"{data}-{'mamba' if config == 'CNN' else config}{tag}-s{seed}"
    path = runs / name / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return (metrics["baselines"]["CNN"] if config == "CNN" else metrics)[split]["map@100"]


def spread(xs: list[float], digits: int = 4, signed: bool = True) -> str:
    """Mean ± sample std (the mean alone for one value, "–" for none)."""
    if not xs:
        return "–"
    mean = f"{statistics.mean(xs):{'+' if signed else ''}.{digits}f}"
    return mean + (f" ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else "")
