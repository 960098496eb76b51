"""The mixed supernet's training policies: videos/s of one search step under each.

One step is forward, backward and optimizer step on random avdigits-shaped input (visual 64,
audio 40, 25 steps) through the av_nas supernet, with bench_supernet's InfoNCE stand-in:

* ``softmax``: every candidate of every cell, W and α step together (csp's Eq. 40, DARTS);
* ``gumbel``: one straight-through Gumbel path, W and α step (csp policy=gumbel, GDAS);
* ``binary``: ProxylessNAS's α step: two candidates per cell behind binary gates, α's
  gradient only, Adam on α, the pair-mass rescaling;
* ``single``: one path drawn from softmax(α), W step only (ProxylessNAS's W step; SPOS's
  step but for how the path is drawn).

All policies share one process and one network and alternate, one block of ``--steps`` steps
each per round over ``--repeats`` rounds, after ``--warmup`` steps each, so a machine's drift
or load reaches them alike; the table gives each policy's median over rounds.

    python benchmarks/bench_policies.py                       # d=64, batch 64, 2 threads
    python benchmarks/bench_policies.py --repeats 1 --steps 1 # does it run
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from bench_supernet import info_nce

POLICIES = ("softmax", "gumbel", "binary", "single")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per policy and round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds alternating the policies")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per policy first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/bench_policies.json")
    args = parser.parse_args()

    import torch

    import avsearch
    from avsearch.data.avdigits import LENGTH

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = avsearch.get_space("av_nas", d=args.d)
    net = avsearch.compile_space(space, "mixed").train()
    alphas = list(net.arch_parameters())
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=1e-3)
    a_opt = torch.optim.Adam(alphas, lr=1e-3, betas=(0.0, 0.999))
    xs = [torch.randn(args.batch, LENGTH, space.type_of(m).width) for m in space.modalities]

    def step(policy: str) -> None:
        net.set_policy(policy)
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        if policy == "binary":      # as strategies/proxyless.py: α's gradient only
            grads = torch.autograd.grad(info_nce(net(*xs)), alphas, allow_unused=True)
            for a, g in zip(alphas, grads):
                a.grad = torch.zeros_like(a) if g is None else g
            a_opt.step()
            net.keep_drawn_mass()
            return
        info_nce(net(*xs)).backward()
        w_opt.step()
        if policy != "single":
            a_opt.step()

    for policy in POLICIES:
        for _ in range(args.warmup):
            step(policy)
    rounds: dict[str, list[float]] = {p: [] for p in POLICIES}
    for _ in range(args.repeats):
        for policy in POLICIES:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(policy)
            rounds[policy].append(args.batch * args.steps / (time.perf_counter() - t0))

    print(f"av_nas d={args.d}, batch {args.batch}, {args.threads} threads, "
          f"{args.repeats} rounds of {args.steps} steps per policy\n")
    print("| policy | videos/s (median) | min | max |\n|---|---:|---:|---:|")
    for policy, values in rounds.items():
        print(f"| {policy} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "d": args.d, "batch": args.batch, "length": LENGTH, "threads": args.threads,
        "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
        "videos_per_s": {p: {"median": round(statistics.median(v), 1), "rounds": [round(x, 1) for x in v]}
                         for p, v in rounds.items()}}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
