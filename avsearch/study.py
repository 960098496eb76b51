"""Trials of one search shared by several ``avsearch run`` processes through an Optuna storage.

``avsearch run --storage URL --study NAME`` on one machine or many: the processes (workers)
share the search's trials (random search's candidates) through an Optuna study, so that each
is evaluated once, and one worker finetunes and writes the final artifacts. avsearch has no
scheduler of its own: the storage is Optuna's (PostgreSQL or MySQL through SQLAlchemy, or a
journal file on a shared file system; SQLite is refused, it is unsafe for parallel workers,
optuna #4002), and so is the queue:

* the worker that creates the study records the run's settings (a worker with others is
  refused) and enqueues one trial per task, then one *finalise* trial, in that order;
* every worker pops waiting trials (Optuna's pop is atomic: a trial goes to one worker) and
  evaluates its task inside ``study.optimize``, so a database storage records its heartbeat;
  a trial whose heartbeat stops (its worker died) is failed by the next worker that looks
  and enqueued again, up to :data:`MAX_RETRIES` times (Optuna's journal storage has no
  heartbeat: there a dead worker's trial stays running, so retries need a database);
* the worker that pops the finalise trial waits until every task is complete (evaluating
  any task requeued meanwhile) and is the one that finetunes; the others stop. A finaliser
  that is started again with ``--resume`` on its folder finalises, as its identity
  (host and folder) owns the finalise trial;
* a worker that joins late, or is started again, finds the study and takes what is left.

A task that raises fails the search on every worker with its message (it is not retried:
the same error would come again).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from avsearch.errors import AvsearchInputError

__all__ = ["open_storage", "SharedTrials", "LocalTrials", "FinalisedElsewhere", "study_progress",
           "check_study",
           "MAX_RETRIES", "HEARTBEAT_ENV"]

MAX_RETRIES = 3
HEARTBEAT_ENV = "AVSEARCH_STUDY_HEARTBEAT"   # seconds between heartbeats (default 10)


class FinalisedElsewhere(Exception):
    """Every trial is done and another worker finalises the run."""

    def __init__(self, study: str, worker: str):
        super().__init__(f"study {study!r}: every trial is done; worker {worker} finetunes and "
                         f"writes the final artifacts")
        self.worker = worker


def _heartbeat() -> int:
    text = os.environ.get(HEARTBEAT_ENV, "10")
    try:
        value = int(text)
        if value < 1:
            raise ValueError
    except ValueError:
        raise AvsearchInputError(f"{HEARTBEAT_ENV}={text!r}: expected whole seconds >= 1") from None
    return value


def _fail_stale(study) -> None:
    """Optuna's ``fail_stale_trials`` (which calls :func:`_retry`), without its warning that
    it is experimental (it has been since Optuna 2.9)."""
    import warnings

    import optuna
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def _retry(study, trial) -> None:
    """The heartbeat's stale-trial callback: enqueue a failed task again (bounded)."""
    attrs = dict(trial.user_attrs)
    retries = int(attrs.get("retries", 0)) + 1
    if retries <= MAX_RETRIES and ("task" in attrs or attrs.get("finalise")):
        attrs.update(retries=retries, retry_of=trial.number)
        attrs.pop("worker", None)
        study.enqueue_trial({}, user_attrs=attrs)


def open_storage(url: str):
    """An Optuna storage for ``url``: ``postgresql://``, ``mysql://`` (any SQLAlchemy URL but
    SQLite) with heartbeats and the retry of dead trials, or a path: a journal file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite"):
        raise AvsearchInputError(f"storage {url!r}: SQLite is unsafe for parallel workers "
                                 f"(optuna #4002); use PostgreSQL, MySQL or a journal file",
                                 "storage")
    if "://" in url:
        import warnings

        heartbeat = _heartbeat()
        for attempt in range(4):
            try:
                with warnings.catch_warnings():   # heartbeats are "experimental" since Optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                        heartbeat_stale_trial_callback=_retry)
            except ImportError as err:
                raise AvsearchInputError(f"storage {_safe(url)}: {err} (pip install "
                                         f"'avsearch[distributed]')", "storage") from None
            except Exception as err:   # SQLAlchemy's errors; workers starting together race
                last = err             # to create Optuna's tables: the loser tries again
                time.sleep(0.5 * (attempt + 1))
        first = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
        raise AvsearchInputError(f"storage {_safe(url)}: cannot open it ({first})", "storage")
    path = Path(url)
    if not path.parent.is_dir():
        raise AvsearchInputError(f"storage {url}: folder {path.parent} does not exist", "storage")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _safe(url: str) -> str:
    """``url`` without its password."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        return f"{head}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url
    return url


class LocalTrials:
    """A search's tasks in this process, one after the other (no storage)."""

    def evaluate(self, n: int, compute: Callable[[int], float]) -> list[float]:
        return [float(compute(i)) for i in range(n)]


@dataclass
class SharedTrials:
    """A search's tasks shared through study ``study`` of storage ``url`` (module docstring).

    ``identity`` (the run's settings) must be the same for every worker; ``worker`` names
    this one (default: host and run folder), ``poll`` is how often a waiting worker looks."""

    url: str
    study: str
    identity: dict[str, Any]
    worker: str = ""
    poll: float = 1.0
    storage: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = open_storage(self.url)

    @staticmethod
    def worker_id(out: Path) -> str:
        return f"{socket.gethostname()}:{Path(out).resolve()}"

    def _open(self, n: int):
        import optuna

        sampler = optuna.samplers.RandomSampler(seed=0)   # trials carry no sampled parameters
        try:
            study = optuna.create_study(study_name=self.study, storage=self.storage,
                                        direction="maximize", sampler=sampler)
            study.set_user_attr("avsearch", {"identity": self.identity, "tasks": n})
            for i in range(n):
                study.enqueue_trial({}, user_attrs={"task": i})
            study.enqueue_trial({}, user_attrs={"finalise": True})
            study.set_user_attr("ready", True)
            return study
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.study, storage=self.storage, sampler=sampler)
        for _ in range(600):             # the creator enqueues in milliseconds
            if study.user_attrs.get("ready"):
                break
            time.sleep(0.1)
        else:
            raise AvsearchInputError(f"study {self.study!r}: its creator never finished "
                                     f"setting it up", "study")
        check_study(self.storage, self.study, self.identity, n)
        return study

    def _state(self, study, n: int) -> dict[str, Any]:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        done = {t.user_attrs["task"]: t.value for t in trials
                if t.state == TrialState.COMPLETE and "task" in t.user_attrs}
        errors = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
        if errors:
            t = errors[0]
            raise RuntimeError(f"study {self.study!r}: task {t.user_attrs.get('task')} failed on "
                               f"worker {t.user_attrs.get('worker')}: {t.user_attrs['error']}")
        finalised = [t for t in trials if t.user_attrs.get("finalise")
                     and t.state == TrialState.COMPLETE]
        return {"done": done, "all_done": len(done) == n,
                "waiting": any(t.state == TrialState.WAITING for t in trials),
                "owner": finalised[0].user_attrs.get("worker") if finalised else None}

    def _objective(self, study, n: int, compute: Callable[[int], float]):
        import optuna

        def objective(trial) -> float:
            attrs = dict(trial.user_attrs)
            trial.set_user_attr("worker", self.worker)
            if "task" in attrs:
                try:
                    return float(compute(int(attrs["task"])))
                except Exception as err:
                    trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
                    raise
            if not attrs.get("finalise"):     # a spare: another worker took the last task
                raise optuna.TrialPruned("no task left")
            while not self._state(study, n)["all_done"]:   # this trial's heartbeat runs on
                _fail_stale(study)
                if not self._inline(study, compute):
                    time.sleep(self.poll)
            return float(len(self._state(study, n)["done"]))

        return objective

    def _inline(self, study, compute: Callable[[int], float]) -> bool:
        """Evaluate one requeued task while finalising (no other worker may be left)."""
        from optuna.trial import TrialState

        if not any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            return False
        trial = study.ask()
        if "task" not in trial.user_attrs:
            study.tell(trial, state=TrialState.PRUNED)
            return True
        trial.set_user_attr("worker", self.worker)
        study.tell(trial, float(compute(int(trial.user_attrs["task"]))))
        return True

    def evaluate(self, n: int, compute: Callable[[int], float]) -> list[float]:
        """Every task's value, once every worker is done, on the finalising worker; raises
        :class:`FinalisedElsewhere` on the others."""
        study = self._open(n)
        objective = self._objective(study, n, compute)
        while True:
            _fail_stale(study)
            state = self._state(study, n)
            if state["owner"] is not None and state["all_done"]:
                if state["owner"] == self.worker:
                    return [state["done"][i] for i in range(n)]
                raise FinalisedElsewhere(self.study, state["owner"])
            if state["waiting"]:
                study.optimize(objective, n_trials=1, catch=())
            else:
                time.sleep(self.poll)


def check_study(storage, study: str, identity: dict[str, Any], tasks: int | None = None) -> None:
    """Refuse to join study ``study`` of ``storage`` when it holds a search with other
    settings (nothing to check when it does not exist yet)."""
    import optuna

    try:
        loaded = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return
    for _ in range(100):     # a worker that has just created it records its settings next
        recorded = loaded.user_attrs.get("avsearch")
        if recorded is not None:
            break
        time.sleep(0.1)
    else:
        raise AvsearchInputError(f"study {study!r} exists and is not an avsearch search", "study")
    diff = sorted(k for k in set(recorded["identity"]) | set(identity)
                  if recorded["identity"].get(k) != identity.get(k))
    if tasks is not None and recorded["tasks"] != tasks:
        diff.append("tasks")
    if diff:
        raise AvsearchInputError(f"study {study!r} holds a search with other settings "
                                 f"({', '.join(diff)})", "study")


def study_progress(url: str, study: str) -> dict[str, Any]:
    """What ``avsearch study URL NAME`` shows: trials by state, tasks done, the best so far,
    the finalising worker."""
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(url)
    try:
        loaded = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise AvsearchInputError(f"storage {_safe(url)} has no study {study!r}", "study") from None
    trials = loaded.get_trials(deepcopy=False)
    tasks = loaded.user_attrs.get("avsearch", {}).get("tasks")
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    done = [t for t in trials if t.state == TrialState.COMPLETE and "task" in t.user_attrs]
    best = max(done, key=lambda t: t.value, default=None)
    finaliser = [t for t in trials if t.user_attrs.get("finalise")
                 and t.state in (TrialState.RUNNING, TrialState.COMPLETE)]
    return {"study": study, "tasks": tasks, "tasks_done": len({t.user_attrs["task"] for t in done}),
            "trials": counts, "retried": sum("retry_of" in t.user_attrs for t in trials),
            "best": None if best is None else {"task": best.user_attrs["task"], "value": best.value,
                                                "worker": best.user_attrs.get("worker")},
            "finaliser": finaliser[0].user_attrs.get("worker") if finaliser else None,
            "settings": loaded.user_attrs.get("avsearch", {}).get("identity")}
