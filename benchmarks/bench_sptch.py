"""SPTCH's speed: training video-caption pairs per second at the paper's width, and encoding
time per video and per caption.

Training: the ``paper`` preset of the ``sptch`` space (four Transformer layers per tower) at
``--d`` (the paper: 256), the ``sptch`` objective's step (both phases, the views) on avclips
batches of ``--batch`` pairs (the paper: 128), Adam, after one warm-up step; and the same step
of the mixed supernet that csp searches (every candidate of every cell), with ``--mixed``.
Both also as CPU seconds per step (``time.process_time``: what a shared machine cannot
inflate). Encoding: each
tower alone (what ``encode`` and the exported programs run), eval mode, ``torch.no_grad``.

Usage::

    python benchmarks/bench_sptch.py [--d 256] [--batch 128] [--steps 3] [--threads 2]
        [--device cpu]

Writes ``benchmarks/results/bench_sptch.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import avsearch
from avsearch.data import load_dataset
from avsearch.inference import feature_encoder
from avsearch.objectives import get_objective
from avsearch.run import prepare_space

RESULTS = Path(__file__).resolve().parent / "results" / "bench_sptch.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=256, help="tower width (§4.1.3: 256)")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--batch", type=int, default=128, help="pairs per step (§4.1.3: 128)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mixed", action="store_true", help="also the mixed supernet's step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    data = load_dataset("avclips")
    train = data.split("train")
    objective = get_objective("sptch")
    space = prepare_space("sptch", {"d": args.d}, data, args.bits, objective)
    stats = {m: tuple(torch.as_tensor(v) for v in s) for m, s in train.moments().items()}
    batches = list(objective.batches(train, 1, args.batch))

    def train_step(net):
        """Median wall and CPU seconds of the objective's training step on ``net``."""
        net.set_input_stats(stats)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        encode = feature_encoder(net, train, device)
        times, cpu = [], []
        for step, batch in enumerate(batches[:args.steps + 1]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad()
            objective.loss(encode, batch).backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:                                  # the first step warms up
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        return statistics.median(times), statistics.median(cpu)

    mixed = None
    if args.mixed:
        mixed = train_step(avsearch.compile_space(space, "mixed").to(device).train())
    net = avsearch.compile_space(space, "fixed", space.presets["paper"]).to(device).train()
    step_s, step_cpu = train_step(net)
    pairs_per_s = args.batch / step_s

    net.eval()
    video, ids = (torch.from_numpy(x).to(device) for x in train.take(np.arange(args.batch)))
    encode_ms = {}
    with torch.no_grad():
        for modality, x in (("visual", video), ("text", ids)):
            net.tower(modality, x)
            t0 = time.perf_counter()
            for _ in range(3):
                net.tower(modality, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            encode_ms[modality] = 1e3 * (time.perf_counter() - t0) / 3 / len(x)
    result = {"config": vars(args), "train_pairs_per_s": round(pairs_per_s, 2),
              "train_step_cpu_s": round(step_cpu, 3),
              **({"mixed_pairs_per_s": round(args.batch / mixed[0], 2),
                  "mixed_step_cpu_s": round(mixed[1], 3)} if mixed else {}),
              "encode_ms_per_video": round(encode_ms["visual"], 3),
              "encode_ms_per_caption": round(encode_ms["text"], 3),
              "frames": int(video.shape[1]), "tokens": int(ids.shape[1]),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    print(f"sptch paper preset, d={args.d}, batch {args.batch}, {args.threads} threads, {device}: "
          f"{pairs_per_s:.1f} training pairs/s; encode {encode_ms['visual']:.3f} ms/video "
          f"({video.shape[1]} frames), {encode_ms['text']:.3f} ms/caption ({ids.shape[1]} tokens)"
          + (f"; mixed supernet {args.batch / mixed[0]:.1f} pairs/s, {mixed[1]:.3f} s CPU a step"
             if mixed else ""))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
