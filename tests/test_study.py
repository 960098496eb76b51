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
