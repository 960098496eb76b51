"""Several ``avsearch run`` workers sharing random search's candidates through an Optuna
storage (issue 16, item 2): a real PostgreSQL server (Debian's ``postgresql``, started here in
a temporary folder on a Unix socket, installed first when missing and we are root) and a
journal file.

* 2 workers finish a study with no candidate evaluated twice, one of them finalises, and the
  architecture and weights equal a single-worker run's with the same seed;
* a SIGKILLed worker's trial is retried (PostgreSQL: heartbeats) by another worker;
* bad settings are refused before anything is written.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avsearch.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "tests" / "dist_cli.py")]
RUN = ["run", "--data", "avsearch-testing-av", "--strategy", "random", "--budget", "smoke",
       "--epochs", "3", "--set", "d=16", "--set", "heads=2", "--set", "d_state=4", "--bits", "16",
       "--no-baselines", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "AVSEARCH_STUDY_HEARTBEAT": "1"}


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own on a Unix socket in a temporary folder; its URL."""
    from avsearch.testing.helpers import NoPostgres, postgres_server

    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install -e '.[distributed]'")
    try:
        with postgres_server() as url:
            yield url
    except NoPostgres as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def single(tmp_path_factory, one_thread):
    """The same search in one worker without a storage."""
    import avsearch.testing.helpers  # noqa: F401  (the tiny data set)

    out = tmp_path_factory.mktemp("single") / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    return json.loads((out / "best.arch").read_text())


def _worker(out: Path, storage: str, study: str, run: list[str] = RUN) -> subprocess.Popen:
    """A worker; a database's workers pass weights through a folder beside their run folders
    (a journal's default to one beside the journal file)."""
    artifacts = ["--artifacts", str(out.parent / "artifacts")] if "://" in storage else []
    return subprocess.Popen([*CLI, *run, "--storage", storage, "--study", study, *artifacts,
                             "--out", str(out)],
                            env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _trials(storage: str, study: str):
    import optuna

    from avsearch.study import open_storage
    return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials()


def _check_shared(storage, study, outs, outputs, single) -> None:
    from optuna.trial import TrialState

    trials = _trials(storage, study)
    complete = [t.user_attrs["task"] for t in trials
                if t.state == TrialState.COMPLETE and t.user_attrs.get("batch") == "search/candidates"]
    assert sorted(complete) == [0, 1, 2, 3]                   # each candidate evaluated once
    finalisers = [o for o in outs if (o / "best.arch").exists()]
    assert len(finalisers) == 1                               # exactly one wrote the artifacts
    others = [text for o, text in zip(outs, outputs) if o not in finalisers and text is not None]
    assert all("finetunes and writes the final artifacts" in text for text in others)
    shared = json.loads((finalisers[0] / "best.arch").read_text())
    assert shared["choices"] == single["choices"]
    assert shared["weights_sha256"] == single["weights_sha256"]


@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_two_workers_share_the_candidates_once_and_one_finalises(kind, request, tmp_path, single,
                                                                capsys):
    storage = request.getfixturevalue("postgres") if kind == "postgres" else str(tmp_path / "j.log")
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [_worker(o, storage, "two") for o in outs]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    _check_shared(storage, "two", outs, outputs, single)
    assert main(["study", storage, "two"]) == 0
    printed = capsys.readouterr().out
    assert "search/candidates: 4 of 4 done" in printed and "finalising worker" in printed
    # a worker started again finds the study done and finalised by the other
    again = _worker(tmp_path / "w3", storage, "two")
    text = again.communicate(timeout=300)[0]
    assert again.returncode == 0 and "finetunes and writes" in text
    assert not (tmp_path / "w3" / "best.arch").exists()


def test_a_killed_workers_trial_is_retried(postgres, tmp_path, single):
    from optuna.trial import TrialState

    first = _worker(tmp_path / "w1", postgres, "kill")
    victim = None
    while victim is None:                    # kill it inside a candidate's training
        assert first.poll() is None, first.communicate()[0]
        try:
            running = [t for t in _trials(postgres, "kill")
                       if t.state == TrialState.RUNNING and "task" in t.user_attrs]
        except KeyError:                      # the study is not created yet
            running = []
        victim = running[0] if running else None
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    second = _worker(tmp_path / "w2", postgres, "kill")
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    trials = _trials(postgres, "kill")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [victim.number]           # failed by its heartbeat
    retried = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs["task"] == victim.user_attrs["task"]
    _check_shared(postgres, "kill", [tmp_path / "w1", tmp_path / "w2"], [None, output], single)   # w1 was killed


def test_bad_storage_settings_are_refused_before_anything_is_written(tmp_path, capsys):
    import avsearch.testing.helpers  # noqa: F401

    out = tmp_path / "run"
    cases = [(["--storage", "sqlite:///x.db", "--study", "s"], "SQLite is unsafe"),
             (["--storage", str(tmp_path / "j.log")], "storage and study go together"),
             (["--storage", str(tmp_path / "nowhere" / "j.log"), "--study", "s"], "does not exist")]
    for extra, message in cases:
        assert main([*RUN, *extra, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert main([*[a if a != "random" else "csp" for a in RUN], "--storage", str(tmp_path / "j.log"),
                 "--study", "s", "--out", str(out)]) == 2
    assert "does not share trials" in capsys.readouterr().err
    # a study that holds another search (here: another seed) is refused
    from avsearch.study import SharedTrials
    SharedTrials(str(tmp_path / "j.log"), "s", {"seed": 1})._open()
    assert main([*RUN, "--storage", str(tmp_path / "j.log"), "--study", "s", "--out", str(out)]) == 2
    assert "holds a search with other settings" in capsys.readouterr().err
    assert not out.exists()


def test_a_database_needs_an_artifact_folder(postgres, tmp_path, capsys):
    import avsearch.testing.helpers  # noqa: F401

    out = tmp_path / "run"
    assert main([*RUN, "--storage", postgres, "--study", "s", "--out", str(out)]) == 2
    assert "needs an artifact folder every worker sees" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- spos and successive halving
SPOS = [*[a if a != "random" else "spos" for a in RUN[:-1]], "--strategy-set", "trials=8",
        "--strategy-set", "population=4", "--strategy-set", "halving=4", "--epochs", "2", "--quiet"]
HALVING = [*RUN, "--strategy-set", "halving=4"]


def _single(tmp_path: Path, run: list[str]) -> tuple[dict, list[dict]]:
    import avsearch.testing.helpers  # noqa: F401

    out = tmp_path / "single"
    assert main([*run, "--out", str(out)]) == 0
    return json.loads((out / "best.arch").read_text()), _history(out)


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def _done_once(storage: str, study: str) -> dict[str, list[int]]:
    """Each batch's complete tasks, sorted (a task computed twice shows twice)."""
    from optuna.trial import TrialState

    batches: dict[str, list[int]] = {}
    for t in _trials(storage, study):
        if t.state == TrialState.COMPLETE:
            batches.setdefault(t.user_attrs["batch"], []).append(t.user_attrs["task"])
    return {b: sorted(tasks) for b, tasks in batches.items()}


def test_two_workers_share_spos_supernet_evolution_and_halving_rungs(postgres, tmp_path):
    """spos on PostgreSQL: one worker trains the supernet, the other loads it; the
    evolution's two generations and the halving stage's rungs are shared, each task computed
    once; the result and every trial's score equal a one-process run's."""
    single, history = _single(tmp_path, SPOS)
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [_worker(o, postgres, "spos", SPOS) for o in outs]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = _done_once(postgres, "spos")
    assert done["search/supernet"] == [0] and done["finalise"] == [0]
    evolution = sorted(b for b in done if b.startswith("search/evolution/"))
    assert evolution == ["search/evolution/0", "search/evolution/1"]     # 8 trials, 4 a generation
    assert all(done[b] == list(range(len(done[b]))) for b in evolution)   # each task once
    assert done["halving/0"] == [0, 1, 2, 3] and done["halving/1"] == [0, 1]
    # the supernet's epochs ran in one worker only
    trained = [o for o in outs if any(r["stage"] == "search" for r in _history(o))]
    assert len(trained) == 1
    finaliser = [o for o in outs if (o / "best.arch").exists()]
    assert len(finaliser) == 1
    shared = json.loads((finaliser[0] / "best.arch").read_text())
    assert shared["choices"] == single["choices"]
    assert shared["weights_sha256"] == single["weights_sha256"]
    # every worker told NSGA-II the scores the one-process run did, trial by trial
    def trials(records):
        return [(r["trial"], r["choices"], r["score"]) for r in records
                if r["stage"].startswith("search/evolution/")]
    assert all(trials(_history(o)) == trials(history) for o in outs)
    assert len(trials(history)) == 8


def test_two_workers_share_the_halving_rungs_on_a_journal(tmp_path):
    """random search with a halving stage on a journal file: the rungs' candidates are
    trained once each, across the workers, and the winner equals a one-process run's."""
    single, _ = _single(tmp_path, HALVING)
    storage = str(tmp_path / "j.log")
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [_worker(o, storage, "halving", HALVING) for o in outs]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = _done_once(storage, "halving")
    assert done["search/candidates"] == [0, 1, 2, 3]
    assert done["halving/0"] == [0, 1, 2, 3] and done["halving/1"] == [0, 1]
    finaliser = [o for o in outs if (o / "best.arch").exists()]
    assert len(finaliser) == 1
    shared = json.loads((finaliser[0] / "best.arch").read_text())
    assert shared["choices"] == single["choices"]
    assert shared["weights_sha256"] == single["weights_sha256"]
    summary = shared["metrics"]
    assert summary["val"] == json.loads((tmp_path / "single" / "best.arch").read_text())["metrics"]["val"]


def test_a_batch_queued_twice_is_computed_once_and_weights_pass_between_workers(tmp_path):
    """Two workers reaching a batch together both queue it: the lowest copy of each task is
    computed, the others pruned; a later batch's task popped early is queued again; the
    finalise claim goes to one worker (and to it again when it restarts); a task's weights
    reach the other worker through the artifact store."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from avsearch.study import FinalisedElsewhere, SharedTrials

    journal = str(tmp_path / "j.log")
    a, b = (SharedTrials(journal, "unit", {"seed": 0}, worker=w, poll=0.01,
                         artifacts=str(tmp_path / "art")) for w in "ab")
    study = a._open()
    for _ in range(2):                         # both queued batch b0
        for i in range(3):
            study.enqueue_trial({}, user_attrs={"batch": "b0", "task": i, "of": 3})
    study.enqueue_trial({}, user_attrs={"batch": "b2", "task": 0, "of": 1})   # a worker ahead
    calls = []
    assert a.evaluate(3, lambda i: calls.append(("a", i)) or 10.0 * i, batch="b0") == [0, 10, 20]
    assert b.evaluate(3, lambda i: calls.append(("b", i)) or -1.0, batch="b0") == [0, 10, 20]
    assert calls == [("a", 0), ("a", 1), ("a", 2)]
    # a pops b0's copies (pruned) and b2's task (queued again) before its own b1 task
    nets = {w: torch.nn.Linear(3, 2) for w in "ab"}
    assert not torch.equal(nets["a"].weight, nets["b"].weight)
    assert a.evaluate(1, lambda i: (1.5, nets["a"]), batch="b1", weights=True) == [1.5]
    pruned = [t for t in study.get_trials() if t.user_attrs.get("batch") == "b0"
              and t.state == TrialState.PRUNED]
    assert sorted(t.user_attrs["duplicate_of"] for t in pruned) == [0, 1, 2]
    assert b.evaluate(1, lambda i: (-1.0, nets["b"]), batch="b1", weights=True) == [1.5]
    assert not a.restore("b1", 0, nets["a"]) and b.restore("b1", 0, nets["b"])
    assert torch.equal(nets["a"].weight, nets["b"].weight)
    # b2's task was popped by a and queued again; b computes it, once
    assert b.evaluate(1, lambda i: calls.append(("b", i)) or 2.0, batch="b2") == [2.0]
    b2 = [t for t in optuna.load_study(study_name="unit", storage=a.storage).get_trials()
          if t.user_attrs.get("batch") == "b2"]
    assert [t.state for t in b2] == [TrialState.PRUNED, TrialState.COMPLETE]
    a.finalise()
    with pytest.raises(FinalisedElsewhere) as err:
        b.finalise()
    assert err.value.worker == "a"
    SharedTrials(journal, "unit", {"seed": 0}, worker="a", poll=0.01).finalise()   # restarted
