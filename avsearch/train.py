"""The one training loop every strategy uses: epochs, validation, best-state keeping, resume.

A strategy describes a *stage* (a network, its optimizers, its phase and, when it is not the
plain weight step, what one step does); the :class:`Trainer` runs it: progress bar,
validation mAP after every epoch (queries = val, database = retrieval split), the best
(W, α) kept by validation only (Eq. 41), one line per epoch in ``history.jsonl``, a
checkpoint after every epoch so a resumed run continues a killed one from its last completed
epoch and ends where the uninterrupted run would have, and the time of every phase. The
trainer knows no strategy: how a strategy splits its data, steps its architecture
parameters or spends its trials is the strategy's (``strategies/``).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from avsearch._files import atomic_write
from avsearch.data import Dataset, Split
from avsearch.distributed import SINGLE, Replicas
from avsearch.errors import AvsearchInputError
from avsearch.inference import evaluate
from avsearch.objectives import Objective
from avsearch.recipe import RECIPES, Recipe

__all__ = ["Budget", "BUDGETS", "get_budget", "History", "Checkpoint", "Trainer", "StageResult",
           "derive_seed"]


def derive_seed(seed: int, *parts: object) -> int:
    """A seed for one named part of a run (a stage, a candidate's initialisation): the same
    for the same (seed, parts) whatever ran before, so a resumed run matches an
    uninterrupted one however much of it was skipped."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class Budget:
    """How much training a run gets.

    ``search_steps`` and ``finetune_steps`` are the optimiser steps per epoch of a stage of
    the ``search`` phase and of every other stage (None: one pass over the training data); an
    epoch longer than a pass continues into the next pass, so small data sets get as many
    steps as large ones. A step is one batch of the recipe's objective (128 videos by default;
    under the ``paper`` recipe the budget's ``batch_size`` anchors of 6 videos each).
    ``eval_limit`` caps the queries and database of per-epoch model selection (the final
    val/test evaluation always uses all). ``search_trials`` is how many architectures a search
    may score on validation; each strategy says how it spends them. ``halving`` is how many
    candidates every strategy's successive-halving stage trains standalone before the
    finetune, unless the strategy's ``halving`` option says otherwise (0: no stage), and
    ``halving_steps`` the steps of each of its rounds (None: ``finetune_steps``). A space
    may replace fields of a named budget (``SearchSpace.budgets``; ``run`` applies them).
    """

    name: str
    search_epochs: int
    finetune_epochs: int
    batch_size: int
    search_steps: int | None = None
    finetune_steps: int | None = None
    eval_limit: int | None = None
    finetune_lr: float = 1e-4   # Adam; §4.3 uses 1e-4 over 300 epochs, short budgets need more
    search_trials: int = 24
    halving: int = 0
    halving_steps: int | None = None   # steps of a halving round (None: finetune_steps)

    def steps(self, phase: str) -> int | None:
        if phase == "halving" and self.halving_steps is not None:
            return self.halving_steps
        return self.search_steps if phase == "search" else self.finetune_steps


BUDGETS = {
    "smoke": Budget("smoke", 1, 1, 32, search_steps=2, finetune_steps=2, eval_limit=200,
                    finetune_lr=1e-3, search_trials=4),
    # the default: about 5 minutes on 2 CPU cores for csp on avdigits (README has numbers)
    # halving=8: at this budget no supernet ranks architectures (Kendall τ ≈ 0), one
    # standalone epoch does (τ ≈ 0.8); experiments/search_vs_random has the verdicts
    "quick": Budget("quick", 2, 6, 32, search_steps=32, finetune_steps=48, finetune_lr=1e-3,
                    halving=8),
    # §5.1: 300 epochs per stage, batch 128; 1000 trials (strategies/spos.py says how spos
    # spends them)
    "paper": Budget("paper", 300, 300, 128, search_trials=1000),
}


def get_budget(name: str, epochs: int | None = None) -> Budget:
    """A named budget; ``epochs`` overrides both stages' epoch counts."""
    if name not in BUDGETS:
        raise AvsearchInputError(f"unknown budget {name!r} (choose from {', '.join(BUDGETS)})")
    budget = BUDGETS[name]
    if epochs is not None:
        if epochs < 1:
            raise AvsearchInputError(f"epochs must be >= 1, got {epochs}", "epochs")
        budget = replace(budget, search_epochs=epochs, finetune_epochs=epochs)
    return budget


class History:
    """``history.jsonl``: one JSON object per completed epoch (written only when ``write``:
    by rank 0 alone in a distributed run)."""

    def __init__(self, path: Path, write: bool = True):
        self.path, self.write = path, write

    def lines(self) -> int:
        return sum(1 for _ in self.path.open()) if self.path.exists() else 0

    def truncate(self, n: int) -> None:
        """Drop lines written after the checkpoint (an epoch that did not finish saving)."""
        if self.write and self.path.exists():
            kept = self.path.read_text().splitlines(keepends=True)[:n]
            atomic_write(self.path, "".join(kept))

    def append(self, record: Mapping[str, Any]) -> None:
        if not self.write:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.open()] if self.path.exists() else []


class Checkpoint:
    """``checkpoint.pt``: per stage its progress, weights, optimizer state, best state and the
    RNG state, written atomically after every epoch and read back with ``weights_only=True``.
    In a distributed run rank 0 alone reads and writes it and sends what it read to the
    others (whose state is the same as rank 0's at every save)."""

    def __init__(self, path: Path, resume: bool, replicas: Replicas = SINGLE):
        self.path, self.replicas = path, replicas
        self.state: dict[str, Any] = {"stages": {}, "history_lines": 0}
        if resume:
            self.state = replicas.on_writer(self._read) or self.state

    def _read(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=True)
        except Exception as err:  # truncated or foreign file
            raise AvsearchInputError(f"{self.path}: cannot resume from this checkpoint ({err})") from None

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.state["stages"].get(name)

    def save(self) -> None:
        if not self.replicas.writer:
            return
        buffer = io.BytesIO()
        torch.save(self.state, buffer)
        atomic_write(self.path, buffer.getvalue())


def _norms(norms: list[float]) -> dict[str, Any]:
    """An epoch's weight-gradient norms (before clipping) for ``history.jsonl``: their
    median and maximum over the steps (nothing when no step noted one)."""
    if not norms:
        return {}
    return {"grad_norm": {"median": round(float(np.median(norms)), 4),
                          "max": round(max(norms), 4)}}


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class StageResult:
    best_score: float
    best_epoch: int
    seconds: float          # wall time of the stage's epochs in this process and earlier ones
    epochs: int


class Trainer:
    """Runs training stages for a strategy; see the module docstring.

    Every stage and remembered value belongs to a *phase*, given explicitly: ``search``
    (``search``, ``search/candidate-2`` and ``search/evolution/3`` all are), ``halving``,
    ``finetune`` or ``baseline``. The phase picks the budget's steps per epoch and books the
    time, which the checkpoint keeps, so a resumed run reports the time of all its processes.
    """

    def __init__(self, data: Dataset, objective: Objective, budget: Budget, device: torch.device,
                 out: Path, resume: bool = False, progress: bool = True,
                 select: str | None = None, seed: int = 0, recipe: Recipe | None = None,
                 replicas: Replicas = SINGLE, precision: str = "auto"):
        self.data, self.objective, self.budget, self.device = data, objective, budget, device
        # what training's forward passes autocast to (inference.resolve_precision); evaluation
        # runs at the device's own default (float32 on a CPU), so codes do not depend on it
        self.precision = precision
        # the processes of a distributed run (avsearch.distributed): each computes its share of
        # every batch, the gradients are summed, rank 0 alone writes
        self.replicas = replicas
        # what selects models: validation mAP@100, or the objective's own (label-free) criterion
        select = select or objective.criterion(data)
        self.recipe = recipe or RECIPES["default"]
        self.batch_size = self.recipe.batch_size or budget.batch_size
        self.progress, self.select, self.seed = progress and replicas.writer, select, seed
        self.history = History(out / "history.jsonl", write=replicas.writer)
        self.checkpoint = Checkpoint(out / "checkpoint.pt", resume, replicas)
        self.checkpoint.state.setdefault("memo", {})
        self.checkpoint.state.setdefault("seconds", {})
        self.history.truncate(self.checkpoint.state["history_lines"])
        self.train_split = data.split("train")
        self._grad_norms: list[float] = []   # the weights' gradient norms of this epoch's steps

    # ---------------------------------------------------------------- helpers for strategies
    def weight_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        """The recipe's optimiser for network weights (the one ``stage`` schedules when it is
        passed under the key ``"w"``); ``lr`` overrides the recipe's peak rate."""
        return self.recipe.optimizer(params, lr)

    def loss(self, net: torch.nn.Module, batch: np.ndarray, split: Split | None = None) -> torch.Tensor:
        """The objective's loss of ``batch`` (indices into ``split``, default the train split)
        under ``net`` (autocast to the trainer's precision). In a distributed run this process computes its
        share of the batch and the loss is the whole batch's (:mod:`avsearch.distributed`):
        call :meth:`reduce_gradients` after its backward."""
        encoder = self.replicas.encoder(net, split or self.train_split, self.device, self.precision)
        return self.objective.loss(encoder, batch)

    def reduce_gradients(self, params) -> None:
        """Sum ``params``' gradients over the processes of a distributed run (nothing in one
        process): a step that computes gradients without :meth:`weight_step` (an α step by
        ``torch.autograd.grad``) calls this before its optimizer steps."""
        self.replicas.reduce_gradients(params)

    def weight_step(self, net: torch.nn.Module, optimizers: list[torch.optim.Optimizer],
                    batch: np.ndarray, split: Split | None = None,
                    passes: Sequence[Callable[[], None]] | None = None) -> float:
        """The one training step: every optimizer steps on the loss of ``batch`` (of ``split``,
        default the train split) under ``net`` as it is now (its path, gates or mixture, which
        the strategy sets), then the objective's own parameters (:meth:`Objective.update`);
        returns the loss.

        ``passes``: the gradient is accumulated over several passes on the batch, each
        preceded by its callable (which sets the network's path, say), and the step takes the
        mean loss of the passes (FairNAS's strict fairness: one update from several paths)."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if passes:
            loss = 0.0
            for prepare in passes:
                prepare()
                part = self.loss(net, batch, split) / len(passes)
                part.backward()
                loss = loss + part.detach()
        else:
            loss = self.loss(net, batch, split)
            loss.backward()
        self.reduce_gradients(p for opt in optimizers for g in opt.param_groups for p in g["params"])
        self._clip(optimizers)
        for opt in optimizers:
            opt.step()
        self.objective.update()     # the objective's own parameters (a discriminator), if any
        return loss.item()

    def _clip(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Clip the gradient of the weights of the recipe's optimisers (``max_grad_norm``,
        :meth:`Recipe.optimizer`) to the recipe's global norm, and note the norm it had for
        the epoch's line of ``history.jsonl``."""
        for opt in optimizers:
            limit = getattr(opt, "max_grad_norm", None)
            if limit is None:
                continue
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if params:
                norm = torch.nn.utils.clip_grad_norm_(params, limit)
                self._grad_norms.append(float(norm))

    def validate(self, net: torch.nn.Module, limit: int | None = None) -> dict[str, Any]:
        """Validation metrics (queries = val, database = retrieval), capped by the budget. In
        a distributed run every process computes them (so none waits) and rank 0's are
        returned everywhere: every decision taken on them is the same on every process."""
        limit = self.budget.eval_limit if limit is None else limit
        if self.select in self.objective.criteria:    # label-free selection
            metrics = self.objective.score(net, self.data.split("val"), self.device, limit)
        else:
            metrics = evaluate(net, self.data, "val", self.device, limit=limit,
                               db_codes=self.replicas.database_codes(
                                   net, self.data.database("val"), self.device, limit))
        return self.replicas.broadcast(metrics)

    def remember(self, name: str, compute: Callable[[], Any], *, phase: str,
                 log: Callable[[Any], Mapping[str, Any]] | None = None) -> Any:
        """``compute()`` once per run: its value is checkpointed under ``name``, so a resumed run
        gets it back instead of computing it again (a trial of an evolutionary search, say),
        its time is booked to ``phase``, and ``log(value)`` becomes a line of
        ``history.jsonl``. Values must be plain data (numbers, strings, lists, dicts) or
        tensors. In a distributed run every process computes it and rank 0's value is kept."""
        memo = self.checkpoint.state["memo"]
        if name not in memo:
            t0 = time.perf_counter()
            value = self.replicas.broadcast(compute())
            seconds = time.perf_counter() - t0
            memo[name] = value
            self._book(phase, seconds)
            if log is not None:
                self.history.append({"stage": name, **log(value), "seconds": round(seconds, 3)})
                self.checkpoint.state["history_lines"] = self.history.lines()
            self.checkpoint.save()
        return memo[name]

    def remembered(self, prefix: str) -> list[Any]:
        """The values :meth:`remember` keeps under names starting with ``prefix``, in the
        order they were computed (e.g. an evolution's trials)."""
        return [v for k, v in self.checkpoint.state["memo"].items() if k.startswith(prefix)]

    def seconds(self, phase: str) -> float:
        """Wall time booked to ``phase`` (e.g. ``search``) in this run, resumed parts included."""
        return self.checkpoint.state["seconds"].get(phase, 0.0)

    def _book(self, phase: str, seconds: float) -> None:
        ledger = self.checkpoint.state["seconds"]
        ledger[phase] = ledger.get(phase, 0.0) + seconds

    def anchors(self, phase: str) -> int | None:
        """Anchors per epoch of a stage of ``phase`` under the budget (None: one pass)."""
        steps = self.budget.steps(phase)
        return None if steps is None else steps * self.batch_size

    def batches(self, streams: list[Split], epoch: int, anchors: int | None) -> list[tuple[np.ndarray, ...]]:
        """An epoch's steps: one index batch per stream each, ``anchors`` anchors in all.

        When ``anchors`` exceeds a pass over the first stream, the epoch takes several
        passes, numbered on from ``(epoch − 1) · passes + 1`` (a pass is the objective's
        ``batches`` for that number), joined and cut into full batches again (a training
        split smaller than a batch still gives full batches), so every epoch's batches are
        fixed by the seed."""
        def passes(first: int, count: int):
            per_stream = []
            for split in streams:
                drawn = [b for k in range(first, first + count)
                         for b in self.objective.batches(split, k, self.batch_size)]
                if count > 1:
                    rows = np.concatenate(drawn)
                    drawn = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
                per_stream.append(drawn)
            return list(zip(*per_stream))

        steps = passes(epoch, 1)
        if anchors is None:
            return steps
        size = sum(len(step[0]) for step in steps)
        count = max(1, math.ceil(anchors / max(1, size)))
        if count > 1:
            steps = passes((epoch - 1) * count + 1, count)
        kept, left = [], anchors      # exactly ``anchors`` anchors: the last batch may be cut
        for step in steps:
            if left <= 0:
                break
            kept.append(tuple(b[:left] for b in step))
            left -= len(step[0])
        return kept

    # ---------------------------------------------------------------- the loop
    def stage(self, name: str, model: torch.nn.Module,
              optimizers: Mapping[str, torch.optim.Optimizer], epochs: int, *, phase: str,
              step: Callable[..., float] | None = None, streams: list[Split] | None = None,
              anchors: int | None | str = "budget",
              score: Callable[[], Mapping[str, Any]] | None = None,
              after_epoch: Callable[[int], Mapping[str, Any] | None] | None = None) -> StageResult:
        """Train for ``epochs`` epochs of ``step(batch, ...) -> loss``, then leave ``model``
        holding the state with the best validation score (Eq. 41), which is also what a resumed
        run restores when this stage finished before the interruption.

        Args:
            model: everything the stage trains and checkpoints (a network, or a module holding
                a supernet and a controller).
            optimizers: checkpointed with the stage; the one under ``"w"`` (the weights)
                follows the recipe's learning-rate schedule over the stage's steps.
            phase: what the stage is part of (``search``, ``halving``, ``finetune``,
                ``baseline``): the budget's steps per epoch and the time ledger follow it.
            step: one training step on one index batch per stream, returning the loss;
                default :meth:`weight_step` of ``model`` with every optimizer.
            streams: the training data, one batch from each per step (default: the train
                split).
            anchors: anchors per epoch of the first stream; default the budget's for the
                phase, None for all.
            score: validation metrics of the current state (default: ``validate(model)``).
            after_epoch: called with the epoch number after its training steps, before
                validation (e.g. ENAS's controller phase, or what a strategy logs of α);
                what it returns goes into the epoch's line of ``history.jsonl``.
        """
        self.objective.begin_stage(name, phase)   # state tied to this stage's network
        saved = self.checkpoint.stage(name)
        if saved is not None and saved["done"]:
            model.load_state_dict(saved["best"])
            torch.set_rng_state(saved["rng"])
            return StageResult(saved["best_score"], saved["best_epoch"], saved["seconds"], epochs)
        streams = streams or [self.train_split]
        anchors = self.anchors(phase) if anchors == "budget" else anchors
        score = score or (lambda: self.validate(model))
        step = step or (lambda batch: self.weight_step(model, list(optimizers.values()), batch))
        start, best, best_score, best_epoch, seconds = 0, None, -math.inf, 0, 0.0
        torch.manual_seed(derive_seed(self.seed, "stage", name))
        if saved is not None:  # resume inside this stage
            model.load_state_dict(saved["net"])
            for key, opt in optimizers.items():
                opt.load_state_dict(saved["optim"][key])
            self.objective.load_state_dict(saved.get("objective"))
            start, best, best_score = saved["epoch"], saved["best"], saved["best_score"]
            best_epoch, seconds = saved["best_epoch"], saved["seconds"]
            torch.set_rng_state(saved["rng"])
        scheduled = optimizers.get("w")
        if scheduled is not None:
            for group in scheduled.param_groups:
                group.setdefault("initial_lr", group["lr"])
        per_epoch = len(self.batches(streams, 1, anchors))
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            losses = []
            self._grad_norms = []
            batches = self.batches(streams, epoch, anchors)
            bar = tqdm(batches, desc=f"{name} {epoch}/{epochs}", leave=False, unit="batch",
                       disable=not self.progress, dynamic_ncols=True)
            for i, batch in enumerate(bar):
                if scheduled is not None:
                    factor = self.recipe.factor((epoch - 1) * per_epoch + i, epochs * per_epoch)
                    for group in scheduled.param_groups:
                        group["lr"] = group["initial_lr"] * factor
                losses.append(float(step(*batch)))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            extra = after_epoch(epoch) if after_epoch is not None else None
            train_seconds = time.perf_counter() - t0
            metrics = score()
            value = self.replicas.broadcast(float(metrics[self.select]))   # rank 0's decides
            if best is None or value > best_score:
                best, best_score, best_epoch = _cpu_state(model), value, epoch
            elapsed = time.perf_counter() - t0
            seconds += elapsed
            record = {"stage": name, "epoch": epoch, "loss": float(np.mean(losses)),
                      "val": {self.select: value}, "train_seconds": round(train_seconds, 3),
                      "anchors": int(sum(len(b[0]) for b in batches)),
                      "videos_per_second": round(sum(x.size for b in batches for x in b)
                                                 / train_seconds, 1),
                      "best_epoch": best_epoch, **_norms(self._grad_norms), **(extra or {})}
            if self.replicas.active:   # fails the run if the processes' states ever differ
                record["replicas"] = [d[:16] for d in self.replicas.check_identical(model, name)]
            self.history.append(record)
            if self.progress:
                tqdm.write(f"{name} epoch {epoch}/{epochs}: loss {record['loss']:.4f}  "
                           f"val {self.select} {value:.4f}  ({train_seconds:.1f} s)")
            done = epoch == epochs
            self._book(phase, elapsed)
            self.checkpoint.state["stages"][name] = {
                "done": done, "epoch": epoch, "best": best, "best_score": best_score,
                "best_epoch": best_epoch, "seconds": seconds, "rng": torch.get_rng_state(),
                "net": None if done else _cpu_state(model),
                "optim": None if done else {k: o.state_dict() for k, o in optimizers.items()},
                "objective": None if done else self.objective.state_dict()}
            self.checkpoint.state["history_lines"] = self.history.lines()
            self.checkpoint.save()
        model.load_state_dict(best)
        return StageResult(best_score, best_epoch, seconds, epochs)
