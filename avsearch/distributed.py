"""One run on several processes: ``torchrun --nproc-per-node N -m avsearch run ...``.

Every process (a *replica*) runs the whole run: the same seed, the same global batches, the
same paths, gates, Gumbel draws and controller samples (all drawn from torch's global
generator, which the training loop seeds per stage, so it is the same on every replica). What
is split is the work of a training step: each replica reads and encodes only its share of a
batch's videos (:func:`avsearch.data.sampler.shard_bounds`), the codes are gathered so that
every replica computes the loss of the whole global batch, and the gradients are summed.

Why an explicit all-reduce and not ``DistributedDataParallel``:

* a contrastive loss couples every video of a batch, so each replica needs every replica's
  codes: each computes the global loss from the gathered codes, of which only its own rows
  carry gradient, and the *sum* of the replicas' gradients is the gradient of the global loss
  (DDP averages, which is right only for a mean of per-video terms);
* DARTS and ProxylessNAS step α on gradients from ``torch.autograd.grad``, which DDP's reducer
  never sees (NNI #5013: DARTS under DDP gave every rank its own α);
* paths change from step to step, which DDP only takes with ``find_unused_parameters``;
  here a parameter has a gradient after the reduction when it had one on any replica, which
  is what one process computing the whole batch would give it.

α and W therefore get the same summed gradient on every replica and stay bit-identical; the
training loop checks that after every epoch (a SHA-256 of the state on each replica) and
fails the run if they ever differ. Randomness that belongs to a video (dropout, the frame
sampler's noise) is drawn per replica from a generator forked off the shared one, so the
shared stream is consumed the same way on every replica whatever its share.

Rank 0 alone writes (history, checkpoints, artifacts) and reads a checkpoint to resume, which
it sends to the others. Every collective has a timeout (``AVSEARCH_DIST_TIMEOUT`` seconds,
default 600), and a replica that dies makes the others fail with :class:`ReplicaLost` instead
of hanging (under torchrun, torchrun itself also stops the others at once).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import timedelta
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
import torch

from avsearch.data import Split
from avsearch.data.sampler import shard_bounds
from avsearch.errors import AvsearchInputError, ReplicaLost
from avsearch.inference import Encoder, feature_encoder

__all__ = ["Replicas", "SINGLE", "ReplicaLost", "ShardedEncoder", "join", "leave", "current",
           "TIMEOUT_ENV", "state_digest"]

TIMEOUT_ENV = "AVSEARCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
T = TypeVar("T")


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes), to compare replicas."""
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Replicas:
    """The processes of one run. ``Replicas(0, 1)`` (:data:`SINGLE`) is a run in one process,
    whose collectives do nothing; :func:`join` gives the group torchrun started."""

    def __init__(self, rank: int = 0, world: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.rank, self.world, self.timeout_s = int(rank), int(world), float(timeout_s)

    @property
    def active(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Rank 0 alone writes files and shows progress."""
        return self.rank == 0

    # ---------------------------------------------------------------- collectives
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ReplicaLost:
            raise
        except (RuntimeError, ConnectionError) as err:   # gloo/NCCL: a peer died or timed out
            raise ReplicaLost(f"process {self.rank} of {self.world} lost the others during "
                              f"{what}: one died or did not answer within {self.timeout_s:.0f} s "
                              f"({TIMEOUT_ENV}); {_first_sentence(err)}") from None

    def barrier(self) -> None:
        if self.active:
            self._call("a barrier", torch.distributed.barrier)

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every process (any picklable value, tensors too)."""
        if not self.active:
            return value
        box = [value]
        self._call("a broadcast", lambda: torch.distributed.broadcast_object_list(box, src=0))
        return box[0]

    def on_writer(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0 only, its result (or its :class:`AvsearchInputError`, raised
        again) on every process: checks of files that only rank 0 may see."""
        if not self.active:
            return fn()
        result: tuple[str, Any] = ("ok", None)
        if self.writer:
            try:
                result = ("ok", fn())
            except AvsearchInputError as err:
                result = ("input", (str(err), err.parameter))
        kind, value = self.broadcast(result)
        if kind == "input":
            raise AvsearchInputError(*value)
        return value

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, by rank."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        self._call("a gather", lambda: torch.distributed.all_gather_object(out, value))
        return out

    def reduce_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` over the processes, in one buffer. A parameter that
        has a gradient on any process gets the sum (zeros where it had none); one that has
        none anywhere keeps none, as in one process computing the whole batch."""
        if not self.active:
            return
        params = list(dict.fromkeys(params))   # an optimizer may list a tensor twice: once
        if not params:
            return
        device = params[0].device
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32,
                               device=device)
        self._call("a gradient reduction", lambda: torch.distributed.all_reduce(present))
        used = [p for p, n in zip(params, present.tolist()) if n > 0]
        summed = self.all_sum([p.grad if p.grad is not None else torch.zeros_like(p) for p in used])
        for p, g in zip(used, summed):
            p.grad = g

    def all_sum(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The sums over the processes of ``tensors`` (the same shapes on every process), as
        new tensors, through one buffer."""
        if not self.active or not tensors:
            return list(tensors)
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        self._call("a gradient reduction", lambda: torch.distributed.all_reduce(flat))
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset:offset + t.numel()].view_as(t).clone())
            offset += t.numel()
        return out

    def moments(self, split: Split) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``split.moments()``, each process reading only its part of the videos (the sums
        of the parts are summed over the processes: the same on every one)."""
        if not self.active:
            return split.moments()
        return split.moments(shard=(self.rank, self.world), reduce=lambda arrays: [
            t.numpy() for t in self.all_sum([torch.from_numpy(a) for a in arrays])])

    def database_codes(self, net: torch.nn.Module, split: Split, device: torch.device,
                       limit: int | None = None) -> np.ndarray | None:
        """The codes of the first ``limit`` videos of ``split`` (an evaluation's database),
        each process encoding and reading only its share, gathered in order on every one;
        None in one process (the evaluation encodes them itself)."""
        if not self.active:
            return None
        from avsearch.inference import encode_split

        a, b = shard_bounds(len(split) if limit is None else min(limit, len(split)),
                            self.rank, self.world)
        mine = encode_split(net, split.subset(np.arange(a, b)), device)
        parts = [p for p in self.gather(mine) if len(p)]
        return np.concatenate(parts) if parts else mine

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The ``n`` rows of a batch from every process's share (:func:`shard_bounds`): this
        process's rows are ``local`` itself (gradient flows through them), the others' are
        copies without gradient."""
        if not self.active:
            return local
        sizes = [b - a for a, b in (shard_bounds(n, r, self.world) for r in range(self.world))]
        width = max(sizes)
        padded = local.detach()
        if len(padded) < width:
            padded = torch.cat([padded, padded.new_zeros((width - len(padded), *padded.shape[1:]))])
        padded = padded.contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._call("a gather of codes", lambda: torch.distributed.all_gather(parts, padded))
        rows = [p[:s] for p, s in zip(parts, sizes)]
        rows[self.rank] = local
        return torch.cat(rows)

    def check_identical(self, module: torch.nn.Module, what: str) -> list[str]:
        """Each process's :func:`state_digest` of ``module``; raises when they differ."""
        digests = self.gather(state_digest(module)) if self.active else [state_digest(module)]
        if len(set(digests)) > 1:
            raise RuntimeError(f"{what}: the processes' weights differ after this epoch "
                               f"(state digests {', '.join(d[:12] for d in digests)}); the "
                               f"run cannot go on")
        return digests

    # ---------------------------------------------------------------- per-process randomness
    @contextlib.contextmanager
    def own_randomness(self, device: torch.device):
        """Inside: torch's generators draw this process's own stream, seeded from the shared
        one (without consuming it) and the rank; outside, the shared stream is as it was."""
        if not self.active:
            yield
            return
        h = hashlib.sha256(torch.get_rng_state().numpy().tobytes())
        if device.type == "cuda":
            h.update(torch.cuda.get_rng_state(device).numpy().tobytes())
        h.update(f"rank/{self.rank}".encode())
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int.from_bytes(h.digest()[:8], "little") & (2**63 - 1))
            yield

    def encoder(self, net: torch.nn.Module, split: Split, device: torch.device,
                precision: str = "auto") -> Encoder:
        """An encoder of ``net`` over ``split`` that computes this process's share of each
        batch (:class:`ShardedEncoder`), or the plain one in a single process."""
        if self.active:
            return ShardedEncoder(net, split, device, self, precision)
        return feature_encoder(net, split, device, precision=precision)


def _first_sentence(err: BaseException) -> str:
    """The gist of a gloo/NCCL error: its first line up to the first sentence's end, without
    the source location gloo puts in front."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0].rstrip(".")


SINGLE = Replicas(0, 1)
_current: Replicas = SINGLE


def current() -> Replicas:
    """The processes of the run in progress (:data:`SINGLE` outside torchrun)."""
    return _current


def join(device: torch.device) -> tuple[Replicas, torch.device]:
    """Join the process group torchrun started (``WORLD_SIZE`` > 1 in the environment): gloo
    on the CPU, NCCL on CUDA (each process on the GPU of its ``LOCAL_RANK``). Returns the
    group and the device this process trains on; outside torchrun, :data:`SINGLE` and
    ``device``."""
    global _current
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _current = SINGLE
        return SINGLE, device
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        if not timeout > 0:
            raise ValueError
    except ValueError:
        raise AvsearchInputError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: expected a number "
                                 f"of seconds > 0") from None
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    replicas = Replicas(rank, world, timeout)
    if not torch.distributed.is_initialized():
        replicas._call("joining the process group", lambda: torch.distributed.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
            timeout=timedelta(seconds=timeout)))
    _current = replicas
    return replicas, device


def leave(ok: bool = True) -> None:
    """Leave the process group after a run: with ``ok``, once every process is done (a
    barrier); after an error at once, so a failing process never waits for the others."""
    global _current
    replicas, _current = _current, SINGLE
    if replicas.active and torch.distributed.is_initialized():
        if ok:
            replicas.barrier()
        torch.distributed.destroy_process_group()


class ShardedEncoder(Encoder):
    """An :class:`~avsearch.inference.Encoder` for one process of several: of every batch of
    indices it reads and runs only this process's share (:func:`shard_bounds`), and returns
    the whole batch's outputs (:meth:`Replicas.gather_rows`), so an objective computes the
    global loss unchanged. A mixed network's draw is made before the share runs, from the
    shared generator; what the share draws (dropout) comes from the process's own."""

    def __init__(self, net: torch.nn.Module, split: Split, device: torch.device, replicas: Replicas,
                 precision: str = "auto"):
        super().__init__(net, split, device, precision=precision)
        self.replicas = replicas

    def _local(self, index: np.ndarray, run: Callable[[np.ndarray], Any]) -> tuple[Any, int, bool]:
        n = len(index)
        a, b = shard_bounds(n, self.replicas.rank, self.replicas.world)
        holds = hasattr(self.net, "one_draw")
        with (self.net.one_draw() if holds and not self.net.holding else contextlib.nullcontext()):
            if holds:
                self.net.hold_draw()
            if n < self.replicas.world:
                # fewer rows than processes: each runs all of them on the shared stream (the
                # same values everywhere) and keeps the gradient of its share only
                return run(np.asarray(index)), (a, b), True
            with self.replicas.own_randomness(self.device):
                return run(np.asarray(index)[a:b]), (a, b), False

    def _whole(self, value: torch.Tensor, n: int, bounds: tuple[int, int], full: bool) -> torch.Tensor:
        if full:
            a, b = bounds
            return torch.cat([value[:a].detach(), value[a:b], value[b:].detach()])
        return self.replicas.gather_rows(value, n)

    def __call__(self, index: np.ndarray) -> torch.Tensor:
        out, bounds, full = self._local(index, super().__call__)
        return self._whole(out, len(index), bounds, full)

    def nodes(self, index: np.ndarray, names: Iterable[str],
              given: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        names, n = list(names), len(index)
        a, b = shard_bounds(n, self.replicas.rank, self.replicas.world)
        local_given = given if given is None or n < self.replicas.world else {
            k: v[a:b] for k, v in given.items()}
        out, bounds, full = self._local(index, lambda idx: Encoder.nodes(self, idx, names, local_given))
        return {k: self._whole(v, n, bounds, full) for k, v in out.items()}

