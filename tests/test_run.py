"""`avsearch run / export / eval / encode` end to end on the built-in data at the smoke budget."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import avsearch
from avsearch import Architecture
from avsearch.cli import main
from avsearch.export import load_program
from avsearch.testing.helpers import reference_map, reference_test_metrics


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
    assert set(metrics["baselines"]) == {"LSH", "ITQ", "MLP", "CNN"}
    assert metrics["test"]["normalisation"] == "k" and "pr_curve" in metrics["test"]
    # best.arch and metrics.json record the test numbers of the saved weights: recomputed
    # from the weights file with an independent mAP
    expected = reference_test_metrics(smoke_run / "best.arch", avsearch.data.load_dataset("avdigits"))
    for key in ("map@5", "map@100", "gmap"):
        assert arch.metrics["test"][key] == pytest.approx(expected[key], abs=1e-9), key
        assert metrics["test"][key] == pytest.approx(expected[key], abs=1e-9), key


def test_reference_map_by_hand():
    """The independent mAP the tests compare runs with, on a case worked by hand: database
    distances 0, 1, 1, 2 to the query (ties by index), relevant items 1 and 3."""
    q = np.array([[1, 1]])
    db = np.array([[-1, 1], [1, 1], [1, -1], [-1, -1]])     # distances 1, 0, 1, 2
    labels = np.array([[True, False]])
    db_labels = np.array([[True, False], [False, True], [False, True], [True, False]])
    # ranking: 1 (no), 0 (yes), 2 (no), 3 (yes): AP@4 = (1/2 + 2/4) / 4, AP@2 = (1/2) / 2
    assert reference_map(q, labels, db, db_labels, 4) == pytest.approx(0.25)
    assert reference_map(q, labels, db, db_labels, 2) == pytest.approx(0.25)
    assert reference_map(q, labels, db, db_labels, 1) == 0.0


def test_history_records_alpha_per_epoch_and_stages(smoke_run):
    history = [json.loads(line) for line in (smoke_run / "history.jsonl").open()]
    stages = [r["stage"] for r in history]
    assert stages == ["search", "finetune", "baseline-mlp", "baseline-cnn"]
    arch = Architecture.load(smoke_run / "best.arch")
    # the α logged in the search epoch that was kept is the softmax(α) the architecture was
    # derived from
    search = [r for r in history if r["stage"] == "search"]
    alpha = next(r for r in search if r["epoch"] == search[-1]["best_epoch"])["alpha"]
    assert set(alpha) == set(arch.probabilities)
    for cell, probs in arch.probabilities.items():
        assert alpha[cell] == pytest.approx(probs, abs=1e-6), cell
    # the finetune's logged validation score is that of the weights it kept and saved: the
    # budget's capped validation (first eval_limit queries and database videos), recomputed
    from avsearch.train import BUDGETS
    finetune = [r for r in history if r["stage"] == "finetune"]
    kept = next(r for r in finetune if r["epoch"] == finetune[-1]["best_epoch"])
    limit = BUDGETS["smoke"].eval_limit
    data = avsearch.data.load_dataset("avdigits")
    net = arch.network()
    val, db = data.split("val"), data.split("retrieval")
    with torch.no_grad():
        q = np.where(net(*map(torch.from_numpy, val.take(np.arange(limit)))).numpy() >= 0, 1, -1)
        d = np.where(net(*map(torch.from_numpy, db.take(np.arange(limit)))).numpy() >= 0, 1, -1)
    assert kept["val"]["map@100"] == pytest.approx(
        reference_map(q, val.labels[:limit], d, db.labels[:limit], 100), abs=1e-9)


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


def test_eval_json_reports_the_test_metrics_of_the_weights(smoke_run, capsys):
    assert main(["eval", str(smoke_run / "best.arch"), "--json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    expected = reference_test_metrics(smoke_run / "best.arch", avsearch.data.load_dataset("avdigits"))
    for key in ("map@5", "map@100", "gmap"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    assert got["normalisation"] == "k" and got["split"] == "test"
    # it says which data it read, and where the name came from
    assert got["data_source"] == "avdigits"
    assert "data 'avdigits' from avdigits (named by" in captured.err and "provenance" in captured.err


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
      "--objective-set", "select=labels"], "option select='labels' must be auto, loss or map"),
    (["--set", "d=0"], "option d=0 must be an integer >= 1"),
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


def test_a_setting_older_runs_recorded_under_another_name_still_matches(tmp_path):
    """run.json files written before the space's options were called ``space_options``
    recorded them as ``sets``: they resume with the same settings, and only with them."""
    from avsearch.run import RunSettings, recorded_identity

    settings = RunSettings(bits=8, space_options={"d": "32"})
    older = {("sets" if k == "space_options" else k): v for k, v in settings.identity().items()}
    (tmp_path / "run.json").write_text(json.dumps(older))
    assert recorded_identity(tmp_path / "run.json") == settings.identity()
    assert recorded_identity(tmp_path / "run.json") != RunSettings(bits=8).identity()
