"""experiments/lagnh: the claims table from run folders, and the collapse statistics."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "lagnh" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "benchmarks"))   # lagnh.py imports bench_generality's runner
lagnh = _load("lagnh")
collapse = _load("no_aux_collapse")


def _run(folder: Path, test: float, val: float, finetune_s: float, baselines=None, history=()):
    folder.mkdir(parents=True)
    metrics = {"test": {"map@1000": test}, "val": {"map@1000": val}, "arch_id": "x",
               "time": {"search_s": 0.0, "halving_s": 0.0, "finetune_s": finetune_s},
               "baselines": {n: {"test": {"map@1000": t}, "val": {"map@1000": t}}
                             for n, t in (baselines or {}).items()}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def test_table_means_and_paired_differences_by_hand(tmp_path):
    runs = tmp_path / "runs"
    # paper: 0.8, 0.7, 0.9 (mean 0.8, std 0.1); no_aux 0.5, 0.6, 0.4; ITQ 0.6, 0.65, 0.7
    for seed, (p, n, itq) in enumerate([(0.8, 0.5, 0.6), (0.7, 0.6, 0.65), (0.9, 0.4, 0.7)]):
        _run(runs / f"paper-b64-s{seed}", p, p - 0.01, 40.0 + seed, {"ITQ": itq, "LSH": 0.5})
        _run(runs / f"no_aux-b64-s{seed}", n, n, 30.0)
    # seed 2's supcon run has not finished: MLP over two seeds, its training seconds summed
    for seed in (0, 1):
        _run(runs / f"supcon-b64-s{seed}", 0.9, 0.9, 50.0, {"MLP": 0.6 + seed / 10},
             [{"stage": "finetune", "train_seconds": 9}, {"stage": "baseline-mlp", "train_seconds": 2},
              {"stage": "baseline-mlp", "train_seconds": 3 + seed}])
    args = argparse.Namespace(configs=["paper", "no_aux", "supcon"], bits=[64], seeds=[0, 1, 2],
                              out=tmp_path)
    result = lagnh.table(args)
    rows = {r["method"]: r["bits"]["64"] for r in result["rows"]}
    assert rows["paper"]["mean"]["map@1000"] == pytest.approx(0.8)
    assert rows["paper"]["std"]["map@1000"] == pytest.approx(0.1)
    assert rows["paper"]["val"]["mean"]["map@1000"] == pytest.approx(0.79)
    # no history: the seconds the run books; with one: its epochs' seconds without validation
    assert rows["paper"]["train_s"]["mean"]["train_s"] == pytest.approx(41.0)
    assert rows["supcon"]["train_s"]["mean"]["train_s"] == pytest.approx(9.0)
    assert rows["ITQ"]["mean"]["map@1000"] == pytest.approx(0.65) and rows["ITQ"]["n"] == 3
    assert rows["MLP"]["n"] == 2 and rows["MLP"]["mean"]["map@1000"] == pytest.approx(0.65)
    assert rows["MLP"]["train_s"]["mean"]["train_s"] == pytest.approx((5 + 6) / 2)
    assert rows["CNN"]["n"] == 0 and rows["CNN"]["train_s"] is None
    pairs = {p["pair"]: p["bits"]["64"] for p in result["paired"]}
    ablation = pairs["paper − no_aux"]   # 0.3, 0.1, 0.5
    assert ablation["mean"] == pytest.approx(0.3) and ablation["std"] == pytest.approx(0.2)
    assert ablation["above"] == 3 and ablation["n"] == 3
    itq = pairs["paper − ITQ"]           # 0.2, 0.05, 0.2
    assert itq["mean"] == pytest.approx(0.15) and itq["per_seed"][1] == pytest.approx(0.05)
    assert "csp − ITQ" not in pairs      # csp was not asked for
    text = lagnh.markdown(result)
    assert "| paper | 0.8000 ± 0.1000 (3) |" in text
    assert "| paper − no_aux | +0.300 ± 0.200 (3/3) |" in text


def test_unfinished_run_is_left_out_and_resumed(tmp_path):
    folder = tmp_path / "runs" / "paper-b64-s0"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    assert lagnh._record(folder) is None
    cmd = lagnh.run_command("paper", 64, 0, folder, resume=True)
    assert cmd[-1] == "--resume" and cmd[cmd.index("--arch") + 1] == "paper"
    assert cmd[cmd.index("--objective") + 1] == "lagnh"


def test_code_stats_by_hand():
    codes = np.array([[1, 1, -1], [1, -1, -1], [1, 1, -1], [1, -1, -1]], np.int8)
    stats = collapse.code_stats(codes)
    # two distinct codes; bits 0 and 2 constant; |bit means| 1, 0, 1
    assert stats == {"distinct": 2, "constant_bits": pytest.approx(2 / 3),
                     "abs_bit_mean": pytest.approx(2 / 3)}
