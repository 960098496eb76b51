"""Trials of one search shared by several ``avsearch run`` processes through an Optuna storage.

``avsearch run --storage URL --study NAME`` on one machine or many: the processes (workers)
share the search's tasks through an Optuna study, so that each is computed once, and one
worker finetunes and writes the final artifacts. avsearch has no scheduler of its own: the
storage is Optuna's (PostgreSQL or MySQL through SQLAlchemy, or a journal file on a shared
file system; SQLite is refused, it is unsafe for parallel workers, optuna #4002), and so is
the queue. Every worker runs the same search with the same seed; where the search has
independent tasks it hands them to :meth:`SharedTrials.evaluate` as a *batch* (random
search's candidates, spos's supernet, each generation of spos's evolution, each rung of the
successive-halving stage):

* the first worker to reach a batch queues one trial per task (workers that reach it together
  may queue it twice: a popped trial with a live copy of lower number is pruned, so the
  lowest copy is the one computed);
* every worker pops waiting trials (Optuna's pop is atomic: a trial goes to one worker) and
  computes its task inside ``study.optimize``, so a database storage records its heartbeat;
  a trial whose heartbeat stops (its worker died) is failed by the next worker that looks
  and queued again, up to :data:`MAX_RETRIES` times (Optuna's journal storage has no
  heartbeat: there a dead worker's trial stays running, so retries need a database);
* every worker waits until the whole batch is done and reads every task's result (a JSON
  value, the trial's ``result`` attribute) from the storage, so they all go on to the next
  batch with the same results: the search stays deterministic, and equals a run in one
  process. Weights that a later batch continues from (spos's supernet, halving's candidates)
  go through Optuna's artifact store, a folder every worker sees (``--artifacts``; by
  default beside a journal file);
* at the end, the first worker to claim the one-task batch ``finalise`` finetunes and writes
  the final artifacts; the others stop (:class:`FinalisedElsewhere`). A finaliser that is
  started again with ``--resume`` on its folder finalises, as its identity (host and folder)
  owns that task;
* a worker that joins late, or is started again, finds the study and its done batches and
  takes what is left.

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
           "check_study", "default_artifacts", "safe_url",
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
    if retries <= MAX_RETRIES and "task" in attrs:
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
                raise AvsearchInputError(f"storage {safe_url(url)}: {err} (pip install "
                                         f"'avsearch[distributed]')", "storage") from None
            except Exception as err:   # SQLAlchemy's errors; workers starting together race
                last = err             # to create Optuna's tables: the loser tries again
                time.sleep(0.5 * (attempt + 1))
        first = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
        raise AvsearchInputError(f"storage {safe_url(url)}: cannot open it ({first})", "storage")
    path = Path(url)
    if not path.parent.is_dir():
        raise AvsearchInputError(f"storage {url}: folder {path.parent} does not exist", "storage")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def safe_url(url: str) -> str:
    """``url`` without its password."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        return f"{head}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url
    return url


class LocalTrials:
    """A search's tasks in this process, one after the other (no storage)."""

    def evaluate(self, n: int, compute: Callable[[int], Any], batch: str = "tasks",
                 weights: bool = False) -> list[Any]:
        return [compute(i)[0] if weights else compute(i) for i in range(n)]

    def restore(self, batch: str, task: int, module) -> bool:
        """Nothing to load: this process computed every task."""
        return False

    def finalise(self) -> None:
        """This process finalises (there is no other)."""


def _value(result: Any) -> float:
    """A task's result as an Optuna trial's value (a float, a dict's ``score``, else 0)."""
    if isinstance(result, dict):
        result = result.get("score", 0.0)
    return float(result) if isinstance(result, (int, float)) else 0.0


@dataclass
class SharedTrials:
    """A search's tasks shared through study ``study`` of storage ``url`` (module docstring).

    ``identity`` (the run's settings) must be the same for every worker; ``worker`` names
    this one (default: host and run folder), ``poll`` is how often a waiting worker looks;
    ``artifacts`` is the folder (on a file system every worker sees) of Optuna's artifact
    store, through which workers pass weights (:meth:`evaluate`'s ``weights``)."""

    url: str
    study: str
    identity: dict[str, Any]
    worker: str = ""
    poll: float = 1.0
    storage: Any = field(default=None, repr=False)
    artifacts: str | None = None

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = open_storage(self.url)
        self._study = None
        self._mine: set[tuple[str, int]] = set()     # tasks this process computed
        self._done: dict[str, dict[int, Any]] = {}    # each batch's complete trials

    @staticmethod
    def worker_id(out: Path) -> str:
        return f"{socket.gethostname()}:{Path(out).resolve()}"

    def _open(self):
        import optuna

        if self._study is not None:
            return self._study
        sampler = optuna.samplers.RandomSampler(seed=0)   # trials carry no sampled parameters
        try:
            study = optuna.create_study(study_name=self.study, storage=self.storage,
                                        direction="maximize", sampler=sampler)
            study.set_user_attr("avsearch", {"identity": self.identity})
            study.set_user_attr("ready", True)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.study, storage=self.storage, sampler=sampler)
            for _ in range(600):             # the creator records the settings in milliseconds
                if study.user_attrs.get("ready"):
                    break
                time.sleep(0.1)
            else:
                raise AvsearchInputError(f"study {self.study!r}: its creator never finished "
                                         f"setting it up", "study")
            check_study(self.storage, self.study, self.identity)
        self._study = study
        return study

    def _tasks(self, study, batch: str) -> dict[int, list]:
        """Batch ``batch``'s trials by task; raises the error of a task that failed."""
        from optuna.trial import TrialState

        by_task: dict[int, list] = {}
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.FAIL and "error" in t.user_attrs:
                raise RuntimeError(f"study {self.study!r}: task {t.user_attrs.get('batch')} "
                                   f"{t.user_attrs.get('task')} failed on worker "
                                   f"{t.user_attrs.get('worker')}: {t.user_attrs['error']}")
            if t.user_attrs.get("batch") == batch:
                by_task.setdefault(t.user_attrs["task"], []).append(t)
        return by_task

    def _objective(self, study, batch: str, compute: Callable[[int], Any], weights: bool,
                   handed_back: list):
        import optuna
        from optuna.trial import TrialState

        live = (TrialState.RUNNING, TrialState.WAITING)

        def objective(trial) -> float:
            attrs = dict(trial.user_attrs)
            trial.set_user_attr("worker", self.worker)
            if "batch" not in attrs:          # a spare: another worker took the last task
                raise optuna.TrialPruned("no task left")
            for t in self._tasks(study, attrs["batch"]).get(attrs["task"], []):
                # two workers queued the batch at once: the lowest live copy is evaluated
                if t.number != trial.number and (t.state == TrialState.COMPLETE or (
                        t.state in live and t.number < trial.number)):
                    trial.set_user_attr("duplicate_of", t.number)
                    raise optuna.TrialPruned("a copy of another trial")
            if attrs["batch"] != batch:       # a later batch's task, queued by a worker ahead
                handed_back.append(attrs)     # of this one: queued again once this is pruned
                raise optuna.TrialPruned("another batch")
            task = int(attrs["task"])
            try:
                result = compute(task)
                if weights:
                    result, module = result
                    trial.set_user_attr("weights", self._upload(trial, module))
            except Exception as err:
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
                raise
            self._mine.add((batch, task))
            trial.set_user_attr("result", result)
            return _value(result)

        return objective

    def evaluate(self, n: int, compute: Callable[[int], Any], batch: str = "tasks",
                 weights: bool = False) -> list[Any]:
        """Every task's result (``compute(i)`` for ``i < n``, JSON-able: a float or a dict
        with a ``score``) once every task of ``batch`` is done, here or by another worker.
        With ``weights``, ``compute(i)`` returns the result and the module it trained, whose
        state goes to the artifact store, for :meth:`restore` on the other workers."""
        from optuna.trial import TrialState

        if n == 0:
            return []
        study = self._open()
        handed_back: list = []
        objective = self._objective(study, batch, compute, weights, handed_back)
        while True:
            _fail_stale(study)
            by_task = self._tasks(study, batch)
            done = {i: next((t for t in ts if t.state == TrialState.COMPLETE), None)
                    for i, ts in by_task.items()}
            done = {i: t for i, t in done.items() if t is not None}
            if len(done) == n:
                break
            waiting = False
            for i in range(n):
                trials = by_task.get(i, [])
                if any(t.state in (TrialState.RUNNING, TrialState.COMPLETE) for t in trials):
                    continue
                if any(t.state == TrialState.WAITING for t in trials):
                    waiting = True
                    continue
                failed = [t for t in trials if t.state == TrialState.FAIL]
                if any(int(t.user_attrs.get("retries", 0)) >= MAX_RETRIES for t in failed):
                    raise RuntimeError(f"study {self.study!r}: task {batch} {i} died with its "
                                       f"worker {MAX_RETRIES + 1} times")
                if not failed:        # not queued yet (or handed back): queue it
                    study.enqueue_trial({}, user_attrs={"batch": batch, "task": i, "of": n})
                    waiting = True
            if waiting:
                study.optimize(objective, n_trials=1, catch=())
                for attrs in handed_back:
                    study.enqueue_trial({}, user_attrs=attrs)
                handed_back.clear()
            else:
                time.sleep(self.poll)
        self._done[batch] = done
        return [done[i].user_attrs["result"] for i in range(n)]

    def restore(self, batch: str, task: int, module) -> bool:
        """Load into ``module`` the weights task ``task`` of ``batch`` (evaluated with
        ``weights``) trained on another worker; False when this process computed it."""
        if (batch, task) in self._mine:
            return False
        self._download(self._done[batch][task].user_attrs["weights"], module)
        return True

    def finalise(self) -> None:
        """Claim the finalisation (the first worker to get here); raises
        :class:`FinalisedElsewhere` on the others. A finaliser started again claims again."""
        owner = self.evaluate(1, lambda _: self.worker, batch="finalise")[0]
        if owner != self.worker:
            raise FinalisedElsewhere(self.study, owner)

    # ------------------------------------------------------------ weights between workers
    def _store(self):
        from optuna.artifacts import FileSystemArtifactStore

        if self.artifacts is None:
            raise AvsearchInputError(f"study {self.study!r}: passing weights between workers "
                                     f"needs an artifact folder every worker sees", "artifacts")
        Path(self.artifacts).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(self.artifacts)

    def _upload(self, trial, module) -> str:
        import tempfile

        import torch
        from optuna.artifacts import upload_artifact

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "state.pt"
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
            return upload_artifact(artifact_store=self._store(), file_path=str(path),
                                   study_or_trial=trial)

    def _download(self, artifact_id: str, module) -> None:
        import io

        import torch

        with self._store().open_reader(artifact_id) as reader:
            state = torch.load(io.BytesIO(reader.read()), map_location="cpu", weights_only=True)
        module.load_state_dict(state)


def default_artifacts(url: str) -> str | None:
    """The artifact folder of a storage without one given: beside a journal file (a
    database has none: its workers may share no file system)."""
    return None if "://" in url else f"{url}.artifacts"


def check_study(storage, study: str, identity: dict[str, Any]) -> None:
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
    if diff:
        raise AvsearchInputError(f"study {study!r} holds a search with other settings "
                                 f"({', '.join(diff)})", "study")


def study_progress(url: str, study: str) -> dict[str, Any]:
    """What ``avsearch study URL NAME`` shows: trials by state, each batch's tasks done and
    best so far (in the order the search reached them), the finalising worker."""
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(url)
    try:
        loaded = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise AvsearchInputError(f"storage {safe_url(url)} has no study {study!r}", "study") from None
    trials = loaded.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    batches: dict[str, dict[str, Any]] = {}
    for t in trials:
        name = t.user_attrs.get("batch")
        if name is None or name == "finalise":
            continue
        entry = batches.setdefault(name, {"tasks": t.user_attrs.get("of"), "done": set(),
                                          "best": None})
        if t.state == TrialState.COMPLETE:
            entry["done"].add(t.user_attrs["task"])
            if entry["best"] is None or t.value > entry["best"]["value"]:
                entry["best"] = {"task": t.user_attrs["task"], "value": t.value,
                                 "worker": t.user_attrs.get("worker")}
    for entry in batches.values():
        entry["done"] = len(entry["done"])
    finaliser = [t for t in trials if t.user_attrs.get("batch") == "finalise"
                 and t.state == TrialState.COMPLETE]
    return {"study": study, "batches": batches,
            "tasks": sum(b["tasks"] or 0 for b in batches.values()),
            "tasks_done": sum(b["done"] for b in batches.values()),
            "trials": counts, "retried": sum("retry_of" in t.user_attrs for t in trials),
            "finaliser": finaliser[0].user_attrs.get("result") if finaliser else None,
            "settings": loaded.user_attrs.get("avsearch", {}).get("identity")}
