"""Mixed-mode av_nas supernet training step: videos/s and peak RSS.

One step is what csp's coarse search does per batch (Eq. 40): forward through every candidate
of every cell, an InfoNCE loss (τ = 0.1, cosine; each anchor's positive is its partner in the
other half of the batch, the rest of the batch are negatives — a stand-in for the sampled
1-positive/4-negative batches), backward, an SGD step on W and an Adam step on α.

Each configuration runs in its own process so that peak RSS (ru_maxrss) is its own.

    python benchmarks/bench_supernet.py                 # d=64 b=128, d=768 b=128, d=768 b=32
    python benchmarks/bench_supernet.py --one 64 128 10 # a single configuration
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [  # (d, batch, steps); few steps at d=768, where one step takes tens of seconds
    (64, 128, 6),
    (768, 32, 2),
    (768, 128, 1),
]
LENGTH = 25


def info_nce(f, tau: float = 0.1):
    import torch
    import torch.nn.functional as F

    f = F.normalize(f, dim=1)
    a, p = f.chunk(2)
    logits = a @ torch.cat([p, a]).T / tau
    logits[:, len(p):].fill_diagonal_(float("-inf"))  # an anchor is not its own negative
    return F.cross_entropy(logits, torch.arange(len(a)))


def one(d: int, batch: int, steps: int, threads: int) -> dict:
    import torch

    import avsearch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    heads = 12 if d >= 768 else 4
    widths = {"visual": d, "audio": d} if d >= 768 else {"visual": 64, "audio": 40}
    space = avsearch.get_space("av_nas", d=d, e=2, heads=heads, modalities=widths)
    net = avsearch.compile_space(space, "mixed").train()
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=1e-3, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3)
    xs = [torch.randn(batch, LENGTH, w) for w in widths.values()]

    def step():
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        loss = info_nce(net(*xs))
        loss.backward()
        w_opt.step()
        a_opt.step()

    step()  # warm-up: kernel compilation, allocator
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {"d": d, "e": 2, "batch": batch, "length": LENGTH, "steps": steps, "threads": threads,
            "step_s": round(median, 4), "videos_per_s": round(batch / median, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, type=int, metavar=("D", "BATCH", "STEPS"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/bench_supernet.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.threads)))
        return
    rows = []
    for d, batch, steps in CONFIGS:
        done = subprocess.run([sys.executable, __file__, "--one", str(d), str(batch), str(steps),
                               "--threads", str(args.threads)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"d={r['d']:>4} batch={r['batch']:>3}  {r['params_m']:>7} M params  "
              f"{r['step_s']:>7.3f} s/step  {r['videos_per_s']:>7.1f} videos/s  "
              f"peak RSS {r['peak_rss_mb']:>7.0f} MB", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
