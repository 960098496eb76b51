"""LAGNH's speed (issue 15): training images per second and encoding images per second.

The ``paper`` preset of the ``lagnh`` space at ``--bits`` (64), built as ``avsearch run`` builds
it (the data's features and tags, the seed's anchor bank, the training statistics), trained
by the run's own step (``Trainer.weight_step``: the lagnh objective, the recipe's optimiser,
then the discriminator's step) on batches of the run's default size, and encoding the
retrieval split as ``avsearch encode``/``eval`` do (``encode_split``, eval mode).

Each figure is the median of ``--repeats`` timings, given both as wall time and as this
process's CPU time, with ``--threads`` torch threads (1 by default). Every training step also
runs the anchor bank (512 training images, the graph's nodes) forward and backward; the
images per second count only the batch's images, as the paper's "5,000 images × 300 epochs
in 466 s" (3,219 images/s on a GTX 1080 Ti) does. The machine's load average is recorded
before and after: on a shared machine the wall figures are slower than the machine can do,
the CPU figures less so; neither is a speed-up claim.

Usage::

    python benchmarks/bench_lagnh.py [--data fashion4] [--bits 64] [--steps 20]
        [--repeats 3] [--threads 1] [--seed 0]

Writes ``benchmarks/results/bench_lagnh.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_lagnh.json"
PAPER_IMAGES_PER_S = 5000 * 300 / 466.3686   # §4.5, Table 4: MS COCO, 32 bits, GTX 1080 Ti


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn()`` over ``repeats`` calls (after one
    untimed call: a warm-up)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion4")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="training steps per timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from avsearch.data import load_dataset
    from avsearch.inference import anchor_inputs, encode_split, resolve_device
    from avsearch.objectives import get_objective
    from avsearch.recipe import get_recipe
    from avsearch.run import prepare_space
    from avsearch.strategies import RunContext
    from avsearch.train import Trainer, get_budget

    load_before = os.getloadavg()
    data = load_dataset(args.data)
    objective = get_objective("lagnh", seed=args.seed)
    space = prepare_space("lagnh", {}, data, args.bits, objective)
    device = resolve_device("cpu")
    train, db = data.split("train"), data.split("retrieval")
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(data, objective, get_budget("quick"), device, Path(out),
                          progress=False, seed=args.seed, recipe=get_recipe("default"))
        ctx = RunContext(space, trainer, device, args.seed, train.moments(),
                         anchors=anchor_inputs(space, train, args.seed))
        net = ctx.network("fixed", space.presets["paper"])
        opt = trainer.weight_optimizer(net.parameters())
        objective.begin_stage("bench", "finetune")
        batches = list(objective.batches(train, 1, trainer.batch_size))
        batches = [b for b in batches if len(b) == trainer.batch_size][:args.steps]
        if len(batches) < args.steps:
            raise SystemExit(f"{args.data}: {len(batches)} full batches, fewer than --steps")
        net.train()

        def steps() -> None:
            for b in batches:
                trainer.weight_step(net, [opt], b)

        train_wall, train_cpu = timed(steps, args.repeats)
        net.eval()
        with torch.no_grad():
            encode_wall, encode_cpu = timed(lambda: encode_split(net, db, device), args.repeats)
    load_after = os.getloadavg()
    images = args.steps * trainer.batch_size
    result = {
        "config": vars(args), "batch": trainer.batch_size, "anchors": space.op_config.anchors,
        "params": sum(p.numel() for p in net.parameters()),
        "train": {"images": images, "wall_s": round(train_wall, 3), "cpu_s": round(train_cpu, 3),
                  "images_per_s_wall": round(images / train_wall, 1),
                  "images_per_s_cpu": round(images / train_cpu, 1)},
        "encode": {"images": len(db), "wall_s": round(encode_wall, 3), "cpu_s": round(encode_cpu, 3),
                   "images_per_s_wall": round(len(db) / encode_wall, 1),
                   "images_per_s_cpu": round(len(db) / encode_cpu, 1)},
        "paper_train_images_per_s": round(PAPER_IMAGES_PER_S, 1),
        "load_1_5_15min_before": [round(x, 2) for x in load_before],
        "load_1_5_15min_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
        "machine": platform.processor() or platform.machine()}
    t, e = result["train"], result["encode"]
    print(f"lagnh paper preset, {args.bits} bits, batch {trainer.batch_size} (+ {result['anchors']} "
          f"anchors), {args.threads} thread(s), load {load_before[0]:.2f} -> {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs:\n"
          f"  train  {t['images_per_s_wall']:>9.1f} images/s wall, {t['images_per_s_cpu']:>9.1f} "
          f"images/s of process CPU ({images} images, median of {args.repeats})\n"
          f"  encode {e['images_per_s_wall']:>9.1f} images/s wall, {e['images_per_s_cpu']:>9.1f} "
          f"images/s of process CPU ({len(db)} images)\n"
          f"  (paper: {PAPER_IMAGES_PER_S:.0f} training images/s on a GTX 1080 Ti)")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
