"""experiments/claims.py: a paper's orderings checked against a comparison's numbers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "claims", Path(__file__).parents[1] / "experiments" / "claims.py")
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)


def _result(**methods):
    return {"methods": [{"method": m, "bits": {"64": {"runs": [{"gmap": v} for v in values]}}}
                        for m, values in methods.items()]}


def test_holds_and_noise_by_hand():
    # a: mean 0.2, s² = 0.01; b: mean 0.1, s² = 0; SE = sqrt(0.01 / 3) = 0.0577 → 0.1 < 2 SE
    # c: mean 0.5, s² = 0.0001; SE(c, b) = 0.00577 → 0.4 > 2 SE
    result = _result(a=[0.1, 0.2, 0.3], b=[0.1, 0.1, 0.1], c=[0.49, 0.5, 0.51])
    rows = claims.check(result, ["a>b", "b>c", "c>b"], "gmap").splitlines()[2:]
    assert rows[0] == "| a > b | 0.2000 | 0.1000 | +0.1000 | yes | no |"
    assert rows[1] == "| b > c | 0.1000 | 0.5000 | -0.4000 | no | yes |"
    assert rows[2].endswith("| yes | yes |")


def test_one_seed_has_no_noise_estimate():
    row = claims.check(_result(a=[0.3], b=[0.2]), ["a>b"], "gmap").splitlines()[2]
    assert row.endswith("| yes | – |")


def test_several_comparisons_are_merged_under_labels():
    result = claims.merged({"adv": _result(exp10=[0.1, 0.1]), "rnd": _result(exp10=[0.3, 0.3])})
    row = claims.check(result, ["rnd/exp10>adv/exp10"], "gmap").splitlines()[2]
    assert row.startswith("| rnd/exp10 > adv/exp10 | 0.3000 | 0.1000 | +0.2000 | yes |")
