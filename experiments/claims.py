"""Check a paper's orderings against an ``avsearch compare`` result.

    python experiments/claims.py experiments/table3/compare.json "exp2>exp1" "exp3>exp10" ...
    python experiments/claims.py --from adv=a/compare.json --from rnd=r/compare.json "adv/exp10>rnd/exp10"

Each claim ``a>b`` says method ``a`` scores higher than ``b`` (default metric GmAP; ``--metric
map@5`` for another). Prints a Markdown table: both means over seeds, the difference, whether
the ordering holds on the means, and whether the difference is beyond noise (more than twice
its standard error, sqrt(s_a²/n_a + s_b²/n_b), from the seeds' sample standard deviations).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _values(result: dict, method: str, metric: str) -> list[float]:
    for row in result["methods"]:
        if row["method"] == method:
            runs = next(iter(row["bits"].values()))["runs"]
            return [float(r[metric]) for r in runs]
    raise SystemExit(f"no method {method!r} in the comparison "
                     f"(it has {', '.join(r['method'] for r in result['methods'])})")


def check(result: dict, claims: list[str], metric: str) -> str:
    lines = [f"| claim ({metric}) | mean a | mean b | a − b | holds | beyond noise (> 2 SE) |",
             "|---|---:|---:|---:|---|---|"]
    for claim in claims:
        a, sep, b = claim.partition(">")
        if not sep:
            raise SystemExit(f"claim {claim!r}: write it as a>b")
        va, vb = _values(result, a.strip(), metric), _values(result, b.strip(), metric)
        ma, mb = sum(va) / len(va), sum(vb) / len(vb)
        var = lambda v, m: sum((x - m) ** 2 for x in v) / (len(v) - 1) if len(v) > 1 else math.nan  # noqa: E731
        se = math.sqrt(var(va, ma) / len(va) + var(vb, mb) / len(vb))
        beyond = "–" if math.isnan(se) else ("yes" if abs(ma - mb) > 2 * se else "no")
        lines.append(f"| {a.strip()} > {b.strip()} | {ma:.4f} | {mb:.4f} | {ma - mb:+.4f} | "
                     f"{'yes' if ma > mb else 'no'} | {beyond} |")
    return "\n".join(lines)


def merged(sources: dict[str, dict]) -> dict:
    """Several comparisons as one: method ``m`` of the one labelled ``L`` becomes ``L/m``."""
    return {"methods": [{**row, "method": f"{label}/{row['method']}"}
                        for label, result in sources.items() for row in result["methods"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_json", type=Path, nargs="?", help="one comparison")
    parser.add_argument("claims", nargs="+", help="a>b: method a scores higher than method b")
    parser.add_argument("--from", dest="sources", action="append", default=[],
                        metavar="LABEL=PATH", help="several comparisons, methods as LABEL/method")
    parser.add_argument("--metric", default="gmap", help="gmap (default), map@5, map@100, ...")
    args = parser.parse_args(argv)
    if args.sources:
        if args.compare_json is not None:
            args.claims.insert(0, str(args.compare_json))     # it was the first claim
        pairs = [s.partition("=") for s in args.sources]
        result = merged({label: json.loads(Path(path).read_text()) for label, _, path in pairs})
    elif args.compare_json is not None:
        result = json.loads(args.compare_json.read_text())
    else:
        parser.error("give a compare.json or --from LABEL=PATH")
    print(check(result, args.claims, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
