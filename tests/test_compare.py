"""`avsearch compare` end to end at the smoke budget, on a narrow av_nas (d=16)."""
from __future__ import annotations

import json
import random
import re
import shlex

import numpy as np
import pytest

from avsearch import Architecture
from avsearch.cli import main
from avsearch.data import load_dataset
from avsearch.testing.helpers import reference_test_metrics

SMALL = ["--set", "d=16", "--set", "heads=2", "--set", "d_state=4"]
ARGS = ["compare", "--strategies", "csp", "--presets", "transformer", "--random-archs", "1",
        "--budget", "smoke", "--bits", "8", "--seeds", "0,1", "--recipe-set", "lr=2e-3",
        "--quiet", *SMALL]
METHODS = ["csp", "transformer", "random-1"]
AVDIGITS = load_dataset("avdigits")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs whole comparisons: one torch thread (conftest)."""


@pytest.fixture(scope="module")
def compared(tmp_path_factory, _one_thread):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def _result(out):
    return json.loads((out / "compare.json").read_text())


def _run_metrics(out, method, seed, bits=8):
    return json.loads((out / "runs" / f"{method}-{bits}b-s{seed}" / "metrics.json").read_text())


def _table_rows(md: str) -> dict[str, list[str]]:
    """The first Markdown table of compare.md: {first cell: all cells}, plus "header"."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    rows = {"header": [c.strip() for c in lines[0].strip("|").split("|")]}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(rows["header"]):
            break
        rows[cells[0]] = cells
    return rows


def test_one_row_per_method_with_the_runs_numbers(compared):
    result = _result(compared)
    assert [r["method"] for r in result["methods"]] == METHODS
    assert [r["kind"] for r in result["methods"]] == ["strategy", "preset", "random"]
    for row in result["methods"]:
        runs = row["bits"]["8"]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for rec in runs:
            metrics = _run_metrics(compared, row["method"], rec["seed"])
            # each row holds the test numbers of its run's saved weights, recomputed here
            expected = reference_test_metrics(
                compared / "runs" / f"{row['method']}-8b-s{rec['seed']}" / "best.arch", AVDIGITS)
            for key in ("map@5", "map@20", "map@100", "gmap"):
                assert rec[key] == pytest.approx(expected[key], abs=1e-9), key
            assert rec["params"] == metrics["params"] and rec["arch_id"] == metrics["arch_id"]
            t = metrics["time"]
            assert rec["finetune_s_per_epoch"] == pytest.approx(t["finetune_s"] / t["finetune_epochs"])
            assert rec["inference_ms_per_video"] > 0
            if row["kind"] == "strategy":
                supernet = t.get("supernet_s", t["search_s"])
                assert rec["supernet_s_per_epoch"] == pytest.approx(supernet / t["search_epochs"])
            else:  # trained from scratch: no supernet, no search
                assert rec["supernet_s_per_epoch"] is None and rec["search_s"] == 0
    rows = _table_rows((compared / "compare.md").read_text())
    assert rows["header"] == ["method", "mAP@5 8 bits", "mAP@100 8 bits", "GmAP 8 bits",
                              "supernet / epoch (s)",
                              "search (s)", "finetune / epoch (s)", "inference (ms / video)",
                              "params"]
    assert set(rows) - {"header"} == set(METHODS)
    assert rows["transformer"][4] == "–"   # a preset has no supernet


def test_two_seeds_give_mean_and_sample_std(compared):
    result = _result(compared)
    rows = _table_rows((compared / "compare.md").read_text())
    for row in result["methods"]:
        stats = row["bits"]["8"]
        for k in (5, 100):
            values = [_run_metrics(compared, row["method"], s)["test"][f"map@{k}"] for s in (0, 1)]
            assert stats["mean"][f"map@{k}"] == pytest.approx(np.mean(values))
            assert stats["std"][f"map@{k}"] == pytest.approx(np.std(values, ddof=1))
        cell = rows[row["method"]][2]   # mAP@100
        mean, std = map(float, re.fullmatch(r"(\S+) ± (\S+)", cell).groups())
        assert mean == pytest.approx(stats["mean"]["map@100"], abs=5e-5)
        assert std == pytest.approx(stats["std"]["map@100"], abs=5e-5)
    md = (compared / "compare.md").read_text()
    assert "mean ± sample standard deviation over 2 seeds" in md
    assert "divided by K" in md and "avsearch compare --space av_nas --strategies csp" in md


def test_random_architecture_is_a_seeded_draw_trained_from_scratch(compared):
    arch_file = Architecture.load(compared / "archs" / "random-1.arch")
    assert arch_file.choices == arch_file.build_space().sample(random.Random(0))
    for seed in (0, 1):
        trained = Architecture.load(compared / "runs" / f"random-1-8b-s{seed}" / "best.arch")
        assert trained.choices == arch_file.choices and trained.probabilities is None
    row = _result(compared)["methods"][2]
    assert row["choices"] == arch_file.choices


@pytest.mark.parametrize("args, message", [
    (["--strategies", "csp,nope"], "unknown strategy 'nope'"),
    (["--presets", "lstm"], "no preset 'lstm'"),
    (["--bits", "8,x"], "--bits '8,x': expected comma-separated integers"),
    (["--bits", "8,0"], "every value must be >= 1"),
    (["--seeds", "0,0"], "a value is repeated"),
    (["--random-archs", "-1"], "--random-archs must be >= 0"),
    (["--data", "no/such/file.json"], "no/such/file.json: no such file"),
    (["--budget", "huge"], "unknown budget 'huge'"),
    (["--objective", "nope"], "unknown objective 'nope'"),
    (["--strategies", "none", "--presets", "none", "--random-archs", "0"], "nothing to compare"),
    (["--verdict", "--references", "0"], "--references must be >= 2 for a verdict"),
    (["--verdict", "--references", "1"], "--references must be >= 2 for a verdict"),
    (["--references", "3"], "--references sets the references of --verdict; add --verdict"),
    (["--proxy-steps", "8"], "--proxy-steps sets the ranking proxy of --verdict; add --verdict"),
    (["--verdict", "--proxy-steps", "-1"], "--proxy-steps must be >= 0"),
    (["--verdict", "--strategies", "none"], "--verdict judges strategies"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--jobs", "100000"], "--jobs 100000: this machine gives avsearch"),
    (["--strategies", "csp+bogus=1"], "strategy 'csp' has no option 'bogus'"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["compare", "--budget", "smoke", "--strategies", "csp", *args,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_other_settings_on_the_same_out_are_refused(compared, capsys):
    before = {p: p.stat().st_mtime_ns for p in compared.rglob("*") if p.is_file()}
    assert main([*ARGS, "--epochs", "2", "--out", str(compared)]) == 2
    assert "different settings (epochs)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in compared.rglob("*") if p.is_file()} == before


def test_the_recorded_command_reruns_nothing_and_resumes_an_unfinished_run(compared, capsys):
    runs = sorted((compared / "runs").iterdir())
    assert len(runs) == 6
    weights = {r: (r / "best.safetensors").stat().st_mtime_ns for r in runs}
    first = _result(compared)
    # an unfinished run: run.json and checkpoint, no metrics.json (killed at the very end)
    unfinished = compared / "runs" / "transformer-8b-s1"
    (unfinished / "metrics.json").unlink()

    # the command compare.md records, every option explicit, continues the same comparison
    md = (compared / "compare.md").read_text()
    command = shlex.split(re.search(r"^avsearch compare .*$", md, re.M).group(0))
    assert "--recipe-set lr=2e-3" in " ".join(command)     # every run trained with it
    assert {json.loads((r / "run.json").read_text())["recipe_options"]["lr"] for r in runs} \
        == {"2e-3"}
    assert main([*command[1:], "--quiet"]) == 0
    log = capsys.readouterr().out
    assert log.count("finished earlier, kept") == 5
    assert "[4/6] resuming transformer, 8 bits, seed 1" in log
    for r in runs:
        assert ((r / "best.safetensors").stat().st_mtime_ns == weights[r]) == (r != unfinished)
    again = _result(compared)
    for a, b in zip(first["methods"], again["methods"]):
        assert [r["map@100"] for r in a["bits"]["8"]["runs"]] == \
            [r["map@100"] for r in b["bits"]["8"]["runs"]]
