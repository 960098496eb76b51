"""`avsearch run / export / eval / encode` end to end on the built-in data at the smoke budget."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import avsearch
from avsearch import Architecture
from avsearch.cli import main
from avsearch.export import load_program


def avsearch_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "avsearch.cli", *args], capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "csp"
    assert main(["run", "--budget", "smoke", "--out", str(out), "--quiet", "--bits", "16"]) == 0
    return out


def test_run_writes_every_artifact(smoke_run):
    for name in ("best.arch", "best.safetensors", "metrics.json", "history.jsonl", "alpha.png",
                 "run.json", "checkpoint.pt"):
        assert (smoke_run / name).is_file(), name
    assert (smoke_run / "best.svg").is_file() or (smoke_run / "best.dot").is_file()
    arch = Architecture.load(smoke_run / "best.arch")
    assert arch.provenance["strategy"] == "csp" and arch.provenance["data"] == "avdigits"
    assert arch.space_config["bits"] == 16
    assert set(arch.probabilities) == set(arch.build_space().cells)
    # pruning is the argmax of softmax(α) (Eq. 43)
    assert all(arch.choices[c] == max(p, key=p.get) for c, p in arch.probabilities.items())
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"LSH", "ITQ", "MLP"}
    assert metrics["test"]["normalisation"] == "k" and "pr_curve" in metrics["test"]
    assert arch.metrics["test"]["map@100"] == pytest.approx(metrics["test"]["map@100"])


def test_history_records_alpha_per_epoch_and_stages(smoke_run):
    history = [json.loads(line) for line in (smoke_run / "history.jsonl").open()]
    stages = [r["stage"] for r in history]
    assert stages == ["search", "finetune", "baseline-mlp"]
    alpha = history[0]["alpha"]
    assert len(alpha) == 22 and all(abs(sum(p.values()) - 1) < 1e-5 for p in alpha.values())
    assert all("map@100" in r["val"] and r["loss"] > 0 for r in history)


def test_export_eval_encode_agree(smoke_run, tmp_path):
    arch_path = smoke_run / "best.arch"
    assert main(["export", str(arch_path), "-o", str(tmp_path / "best.pt2")]) == 0
    assert main(["encode", str(arch_path), "--split", "val", "-o", str(tmp_path / "codes.npz")]) == 0
    codes = np.load(tmp_path / "codes.npz")
    data = avsearch.data.load_dataset("avdigits")
    val = data.split("val")
    assert codes["codes"].shape == (len(val), 16) and codes["codes"].dtype == np.int8
    assert set(np.unique(codes["codes"])) <= {-1, 1}
    assert (codes["labels"] == val.labels).all() and list(codes["ids"]) == val.ids
    xs = [torch.from_numpy(x) for x in val.take(np.arange(50))]
    frozen = Architecture.load(arch_path).network()
    program = load_program(tmp_path / "best.pt2")
    sign = lambda f: torch.where(f >= 0, 1, -1).to(torch.int8).numpy()  # noqa: E731
    assert (sign(program(*xs)) == codes["codes"][:50]).all()
    assert (sign(frozen(*xs)) == codes["codes"][:50]).all()


def test_eval_json_reports_the_test_metrics_of_the_run(smoke_run, capsys):
    assert main(["eval", str(smoke_run / "best.arch"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    recorded = json.loads((smoke_run / "metrics.json").read_text())["test"]
    assert got["map@100"] == pytest.approx(recorded["map@100"])
    assert got["normalisation"] == "k" and got["split"] == "test"


def test_preset_trains_without_search(tmp_path):
    out = tmp_path / "mamba"
    assert main(["run", "--arch", "mamba", "--budget", "smoke", "--out", str(out), "--quiet",
                 "--no-baselines", "--bits", "8"]) == 0
    arch = Architecture.load(out / "best.arch")
    assert arch.choices == arch.build_space().presets["mamba"] and arch.probabilities is None
    assert [json.loads(r)["stage"] for r in (out / "history.jsonl").open()] == ["finetune"]


@pytest.mark.parametrize("args, message", [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--space", "nope"], "unknown space 'nope'"),
    (["--bits", "0"], "--bits must be >= 1"),
    (["--budget", "huge"], "unknown budget 'huge'"),
    (["--data", "no/such/file.json"], "no/such/file.json: no such file"),
    (["--arch", "lstm"], "no preset 'lstm'"),
    (["--set", "modalities=visual:64"], "space 'av_nas' expects inputs"),
    # every option of a strategy, objective or space is checked before anything is written
    (["--strategy", "darts", "--strategy-set", "order=3"],
     "strategy 'darts': option order=3 must be 1 or 2"),
    (["--strategy", "spos", "--strategy-set", "probes=0"], "option probes=0 must be"),
    (["--strategy", "enas", "--strategy-set", "baseline_decay=1"], "option baseline_decay=1.0"),
    (["--strategy", "proxyless", "--strategy-set", "held_out=1.5"], "option held_out=1.5"),
    (["--objective", "infonce", "--objective-set", "tau=0"], "objective 'infonce': option tau=0.0"),
    (["--space", "vhmt", "--data", "avdigits:visual", "--objective", "autossvh",
      "--objective-set", "warmup_epochs=-1"], "option warmup_epochs=-1 must be"),
    (["--space", "vhmt", "--data", "avdigits:visual", "--objective", "vhmt",
      "--objective-set", "select=labels"], "option select='labels' must be one of"),
    (["--set", "d=0"], "option d=0 must be >= 1"),
])
def test_bad_input_exits_2_before_writing(tmp_path, args, message):
    out = tmp_path / "out"
    done = avsearch_cli("run", "--budget", "smoke", "--out", str(out), *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_resume_after_kill_ends_with_the_same_architecture(tmp_path):
    args = ["run", "--budget", "smoke", "--epochs", "3", "--bits", "8", "--quiet",
            "--no-baselines", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "avsearch.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "best.arch").exists()
    assert main([*args, "--out", str(out), "--resume"]) == 0

    a = Architecture.load(tmp_path / "straight" / "best.arch")
    b = Architecture.load(out / "best.arch")
    assert a.choices == b.choices
    assert a.weights_sha256 == b.weights_sha256
    stages = [json.loads(r)["stage"] for r in (out / "history.jsonl").open()]
    assert stages == ["search"] * 3 + ["finetune"] * 3


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--budget", "smoke", "--bits", "8", "--quiet", "--no-baselines",
                 "--out", str(out)]) == 0
    done = avsearch_cli("run", "--budget", "smoke", "--bits", "16", "--quiet", "--no-baselines",
                        "--out", str(out), "--resume")
    assert done.returncode == 2 and "different settings (bits)" in done.stderr
    done = avsearch_cli("run", "--budget", "smoke", "--bits", "8", "--out", str(out))
    assert done.returncode == 2 and "exists and is not empty" in done.stderr


def test_a_setting_older_runs_did_not_record_counts_as_its_default(tmp_path):
    """A run folder from before a setting existed (its run.json lacks the key) still resumes
    when the setting has its default, and is refused when it does not."""
    from avsearch.run import RunSettings, recorded_identity

    older = RunSettings(objective="vhmt", bits=8).identity()
    older.pop("objective_options")
    (tmp_path / "run.json").write_text(json.dumps(older))
    assert recorded_identity(tmp_path / "run.json") == RunSettings(objective="vhmt", bits=8).identity()
    other = RunSettings(objective="vhmt", bits=8, objective_options={"beta": "2"}).identity()
    assert recorded_identity(tmp_path / "run.json") != other
