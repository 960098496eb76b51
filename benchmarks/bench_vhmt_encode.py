"""Encoding time per video of VHMT's student alone against teacher + student.

A derived ``vhmt`` network's ``forward`` (what ``encode``, ``eval`` and the exported program
run) computes only the student, the nodes the codes depend on; the teacher is trained beside
it and dropped at inference. This measures both: ``forward`` (student) and ``node_outputs``
(every branch: student, teacher and both decoders), in eval mode under ``torch.no_grad``,
on random frame features.

Usage::

    python benchmarks/bench_vhmt_encode.py [--preset exp3] [--d 256] [--d-dec 192] [--frames 25]
        [--width 2048] [--batch 64] [--threads 2] [--repeats 5]

VHMT reports 3.13 ms per video for Exp. III on a GPU; this runs on whatever device torch
picks with ``--device`` (default cpu). Writes ``benchmarks/results/bench_vhmt_encode.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import avsearch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_vhmt_encode.json"


def time_per_video(fn, x: torch.Tensor, repeats: int, device: torch.device) -> float:
    """Median over ``repeats`` of one batch's wall time, in ms per video (after a warm-up)."""
    fn(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="exp3", help="a preset of the vhmt space (Table 3 row)")
    p.add_argument("--d", type=int, default=256, help="model width (§4.3: 256)")
    p.add_argument("--d-dec", type=int, default=192, help="student decoder width (§4.3: 192)")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--width", type=int, default=2048, help="frame feature width D")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    space = avsearch.get_space("vhmt", d=args.d, d_dec=args.d_dec, bits=args.bits,
                               modalities={"frames": args.width})
    net = avsearch.compile_space(space, "fixed", space.presets[args.preset]).to(device).eval()
    x = torch.randn(args.batch, args.frames, args.width, device=device)
    with torch.no_grad():
        student = time_per_video(lambda v: net(v), x, args.repeats, device)
        both = time_per_video(lambda v: net.node_outputs(v), x, args.repeats, device)
    result = {"config": vars(args), "student_ms_per_video": round(student, 3),
              "teacher_and_student_ms_per_video": round(both, 3),
              "speedup": round(both / student, 2), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine()}
    print(f"vhmt {args.preset}, d={args.d}, {args.frames} frames of {args.width}, batch {args.batch}, "
          f"{args.threads} threads, {device}: student {student:.3f} ms/video, teacher + student "
          f"{both:.3f} ms/video ({both / student:.1f}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
