"""Supernet training on several processes (issue 16, item 1): 2 gloo processes on the CPU.

* every strategy's supernet, α and controller are bit-identical on both processes after an
  epoch (torch.multiprocessing, the library path ``avsearch run`` takes);
* they equal a 1-process run with the same global batch within a tolerance (below);
* a real ``torchrun ... avsearch run`` whose rank 1 is SIGKILLed fails in bounded time, and
  ``--resume`` under torchrun completes it to the same architecture and weights as an
  uninterrupted 2-process run.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from avsearch.data.sampler import shard_bounds

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TINY = dict(d=16, e=2, bits=16, heads=2, d_state=4, dropout=0.0)   # dropout off: see below
# (strategy, options, compared with one process): ENAS's controller learns from validation
# mAP, whose ties a last-bit difference of the weights can break either way, so only its
# replicas are compared with each other
STRATEGIES = [("csp", {}, True), ("csp", {"policy": "gumbel", "tau": "10,0.1"}, True),
              ("darts", {}, True), ("darts", {"order": "2"}, True), ("proxyless", {}, True),
              ("spos", {"trials": "4"}, True), ("enas", {"controller_steps": "2"}, False)]


def test_shards_partition_every_batch_like_array_split():
    for n in range(0, 40):
        for world in (1, 2, 3, 5):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))     # contiguous, in order
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1
            assert [len(x) for x in np.array_split(np.arange(n), world)] == sizes
    with pytest.raises(ValueError):
        shard_bounds(4, 2, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _search(replicas, out: Path) -> dict:
    """Each strategy's search (smoke budget: 1 epoch of 2 steps) on the tiny data set: the supernet's
    state (α included) and the controller's, the choices, and the losses."""
    from avsearch.data import load_dataset
    from avsearch.objectives import get_objective
    from avsearch.run import prepare_space
    from avsearch.strategies import RunContext, get_strategy
    from avsearch.testing.helpers import DATA_AV
    from avsearch.train import Trainer, get_budget

    torch.set_num_threads(1)
    data = load_dataset(DATA_AV)
    results = {}
    for i, (name, options, _) in enumerate(STRATEGIES):
        objective = get_objective("supcon", seed=0)
        space = prepare_space("av_nas", TINY, data, None, objective)
        folder = out / f"{name}-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(data, objective, get_budget("smoke"), torch.device("cpu"), folder,
                          progress=False, seed=0, replicas=replicas)
        torch.manual_seed(0)
        ctx = RunContext(space, trainer, torch.device("cpu"), 0, data.split("train").moments())
        outcome = get_strategy(name, **options).search(ctx)
        state = {k: v.clone() for k, v in outcome.supernet.state_dict().items()}
        results[f"{name}-{i}"] = {"state": state, "choices": outcome.choices,
                                  "losses": [r.get("loss") for r in trainer.history.read()]}
    return results


# a whole run, small enough to be killed after its first checkpoint and resumed: 4 epochs per
# stage of 2 steps, dropout off so that it can also be compared with one process
RUN = ["run", "--data", "avsearch-testing-av", "--strategy", "csp", "--budget", "smoke",
       "--epochs", "4", *[f"--set={k}={v}" for k, v in TINY.items() if k != "bits"],
       "--bits", "16", "--no-baselines", "--quiet"]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), AVSEARCH_DIST_TIMEOUT="60")
    from avsearch import distributed
    from avsearch.cli import main

    replicas, device = distributed.join(torch.device("cpu"))
    assert (replicas.rank, replicas.world, device.type) == (rank, world, "cpu")
    results = _search(replicas, Path(out) / f"runs{rank}")   # each its own folder
    torch.save(results, Path(out) / f"rank{rank}.pt")
    # the whole of `avsearch run` on both processes, uninterrupted (the process group stays)
    assert main([*RUN, "--out", str(Path(out) / "uninterrupted")]) == 0
    distributed.leave()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)], out


def test_replicas_are_bit_identical_after_each_epoch(two_processes):
    (rank0, rank1), out = two_processes
    assert set(rank0) == {f"{n}-{i}" for i, (n, _, _) in enumerate(STRATEGIES)}
    for key in rank0:
        a, b = rank0[key]["state"], rank1[key]["state"]
        assert a.keys() == b.keys()
        assert any(k.startswith("alpha.") for k in a) == key.startswith(("csp", "darts", "proxyless"))
        for k in a:
            assert torch.equal(a[k], b[k]), (key, k)
        assert rank0[key]["choices"] == rank1[key]["choices"]
        # rank 0 alone wrote; its history records both ranks' state digests, equal, per epoch
        history = [json.loads(line) for line in (out / "runs0" / key / "history.jsonl").open()]
        epochs = [r for r in history if "epoch" in r]
        assert len(epochs) >= 1
        for r in epochs:
            assert len(r["replicas"]) == 2 and r["replicas"][0] == r["replicas"][1]
        assert rank0[key]["losses"] and not any((out / "runs1" / key).iterdir())   # rank 1 wrote nothing


def test_two_processes_equal_one_with_the_same_global_batch(two_processes, tmp_path):
    """Tolerance: with dropout off the two runs draw the same paths and see the same global
    batches, so they differ only in float rounding: a process encodes half the batch (other
    matmul blocking) and the gradient is summed in another order, ~1e-7 relative per step.
    Adam normalises each step to about its learning rate whatever the gradient's size, so a
    rounding difference moves a parameter by a tiny fraction of lr unless its gradient is
    near zero, where it may flip the step's sign (measured: up to 2.3e-3 for a few weights,
    gumbel csp, when the runs took 4 steps). So over these steps of lr 1e-3 the weights must
    agree to 1e-4 (a tenth of one step) for 99.9 % of them, and none may differ by more than
    two full steps per step taken. α's rate here is alpha_travel / steps = 2 a step, which
    turns a rounding difference of ~1e-6 into up to ~1e-3 of a logit (measured 7e-4, gumbel
    csp; 1.3e-3 since the scan's kernels sum in another order): softmax(α) must agree within
    2e-3, the choices exactly, the losses to 1e-5."""
    from avsearch import distributed

    (rank0, _), _ = two_processes
    single = _search(distributed.SINGLE, tmp_path)
    steps = 2 + 2    # the smoke budget's 2 search steps, and up to 2 α or warm-up steps more
    for i, (name, _, compared) in enumerate(STRATEGIES):
        key = f"{name}-{i}"
        if not compared:
            continue
        assert single[key]["choices"] == rank0[key]["choices"], key
        a, b = single[key]["state"], rank0[key]["state"]
        diffs = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a
                           if a[k].is_floating_point()])
        assert float((diffs <= 1e-4).float().mean()) >= 0.999, (key, float(diffs.max()))
        assert float(diffs.max()) <= 2 * 1e-3 * steps, key       # no step went further astray
        for k in (k for k in a if k.startswith("alpha.")):
            assert torch.allclose(a[k].softmax(0), b[k].softmax(0), atol=2e-3), key
        assert np.allclose([x for x in single[key]["losses"] if x is not None],
                           [x for x in rank0[key]["losses"] if x is not None], rtol=1e-5), key


def _child(parent: int, rank: int) -> int | None:
    """The pid of ``parent``'s child process of torchrun rank ``rank``."""
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and f"RANK={rank}".encode() in (d / "environ").read_bytes().split(b"\0"):
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.skipif(not TORCHRUN.exists() or not Path("/proc/self/environ").exists(),
                    reason="needs torchrun beside python and Linux's /proc")
def test_a_killed_rank_fails_the_run_in_bounded_time_and_resume_completes_it(two_processes, tmp_path):
    _, shared = two_processes
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVSEARCH_DIST_TIMEOUT": "60"}

    def torchrun(*extra):
        return subprocess.Popen([str(TORCHRUN), "--nproc-per-node", "2", "--master-port",
                                 str(_free_port()), str(ROOT / "tests" / "dist_cli.py"), *RUN,
                                 "--out", str(out), *extra], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    proc = torchrun()
    while not (out / "checkpoint.pt").exists():        # the first epoch is saved
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    victim = _child(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    output = proc.communicate(timeout=120)[0]
    # bounded: gloo sees the reset connection at once and torchrun stops the others (the
    # 60 s timeout is the bound for a process that hangs instead of dying)
    assert proc.returncode != 0 and time.monotonic() - killed < 60
    assert "lost the others" in output or "SIGKILL" in output, output[-2000:]
    assert not (out / "best.arch").exists()
    done = [json.loads(line) for line in (out / "history.jsonl").open()]
    assert 1 <= len(done) < 8                        # killed part-way through its 8 epochs

    proc = torchrun("--resume")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
    history = [json.loads(line) for line in (out / "history.jsonl").open()]
    assert [(r["stage"], r["epoch"]) for r in history] == \
        [(s, e) for s in ("search", "finetune") for e in range(1, 5)]
    # the same architecture and weights, bit for bit, as the uninterrupted 2-process run
    resumed, whole = (json.loads((d / "best.arch").read_text()) for d in (out, shared / "uninterrupted"))
    assert resumed["choices"] == whole["choices"]
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2
