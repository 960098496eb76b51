"""Benchmark the selective scan, forward + backward, at the search's shapes.

Compares ``selective_scan_ref`` (sequential loop over time, autograd), ``avsearch``'s op (fused
numba kernels on CPU; mamba-ssm's CUDA kernel or the torch fallback on CUDA) and mambapy's
parallel scan (``mambapy.pscan``, if installed; the cost of building its (B, L, D, N) inputs is
included). Timings are medians over ``--repeats`` runs after warm-up; the implementations are
interleaved within each repeat so that background load hits them alike.

Usage::

    python benchmarks/bench_scan.py [--threads 2] [--repeats 10] [--device cpu|cuda]

Prints a table and writes ``benchmarks/results/bench_scan.json``.

Note: after every parallel op torch's OpenMP workers spin-wait for a while (libgomp's default),
which takes a core from the scan kernel's second thread when the scan follows torch ops, as
it does here and in a model. ``OMP_WAIT_POLICY=PASSIVE`` in the environment (it must be set
before Python starts) turns that off; the JSON records the setting.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import avsearch  # noqa: F401  (registers the op)
from avsearch.ops.scan import _mamba_scan_fn, selective_scan, selective_scan_ref

SHAPES = [(128, 128, 25, 16), (32, 1536, 25, 16)]  # (batch, dim, L, N)
RESULTS = Path(__file__).resolve().parent / "results" / "bench_scan.json"


def mambapy_scan_fn() -> Callable | None:
    """A selective scan built on mambapy's parallel scan, same signature as ours, or None."""
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        if delta_bias is not None:
            delta = delta + delta_bias[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        dt = delta.transpose(1, 2)                                    # (b, L, d)
        x = u.transpose(1, 2)
        decay = torch.exp(dt.unsqueeze(-1) * A)                       # (b, L, d, N)
        drive = (dt * x).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
        hs = pscan(decay, drive)                                      # (b, L, d, N)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1)        # (b, L, d)
        if D is not None:
            y = y + D * x
        y = y.transpose(1, 2)
        return y * F.silu(z) if z is not None else y

    return scan


def make_inputs(b: int, d: int, L: int, N: int, device: str) -> dict:
    """Mamba-like inputs: softplus Δ with a bias, S4D-real A, D skip, no gate."""
    g = torch.Generator().manual_seed(0)
    x = {
        "u": torch.randn(b, d, L, generator=g),
        "delta": 0.5 * torch.randn(b, d, L, generator=g),
        "A": -torch.arange(1, N + 1.0).repeat(d, 1),
        "B": torch.randn(b, N, L, generator=g),
        "C": torch.randn(b, N, L, generator=g),
        "D": torch.ones(d),
        "delta_bias": torch.log(torch.expm1(torch.empty(d).uniform_(1e-3, 0.1, generator=g))),
    }
    return {k: v.to(device).requires_grad_() for k, v in x.items()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_once(fn: Callable, x: dict, gout: torch.Tensor, device: str,
              backward: bool) -> float:
    for v in x.values():
        v.grad = None
    _sync(device)
    t = time.perf_counter()
    if backward:
        fn(**x, delta_softplus=True).backward(gout)
    else:
        with torch.no_grad():
            fn(**x, delta_softplus=True)
    _sync(device)
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch (and numba) CPU threads")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    torch.set_num_threads(args.threads)

    ours = "avsearch"
    if args.device == "cuda":
        ours += " (mamba-ssm)" if _mamba_scan_fn() is not None else " (torch fallback)"
    impls: dict[str, Callable] = {"ref (unbind loop)": selective_scan_ref, ours: selective_scan}
    if (mp := mambapy_scan_fn()) is not None:
        impls["mambapy pscan"] = mp

    rows = []
    load_before = os.getloadavg()
    for shape in SHAPES:
        x = make_inputs(*shape, device=args.device)
        gout = torch.randn(shape[:3], generator=torch.Generator().manual_seed(1))
        gout = gout.to(args.device)
        with torch.no_grad():  # sanity: every implementation computes the same thing
            ref = selective_scan_ref(**x, delta_softplus=True)
            errs = {n: (f(**x, delta_softplus=True) - ref).abs().max().item()
                    for n, f in impls.items()}
        times: dict[str, dict[str, list[float]]] = {n: {"fb": [], "f": []} for n in impls}
        for i in range(args.warmup + args.repeats):
            for name, fn in impls.items():  # interleaved: background load hits all alike
                fb = time_once(fn, x, gout, args.device, backward=True)
                f = time_once(fn, x, gout, args.device, backward=False)
                if i >= args.warmup:
                    times[name]["fb"].append(fb)
                    times[name]["f"].append(f)
        base = statistics.median(times["ref (unbind loop)"]["fb"])
        base_min = min(times["ref (unbind loop)"]["fb"])
        for name in impls:
            fb = statistics.median(times[name]["fb"])
            fb_min = min(times[name]["fb"])
            rows.append({"shape": dict(zip(("batch", "dim", "L", "N"), shape)), "impl": name,
                         "fwd_bwd_ms": round(fb, 2),
                         "fwd_ms": round(statistics.median(times[name]["f"]), 2),
                         "fwd_bwd_min_ms": round(fb_min, 2),
                         "speedup_vs_ref": round(base / fb, 2),
                         "speedup_vs_ref_min": round(base_min / fb_min, 2),
                         "max_abs_err_vs_ref": errs[name]})

    print(f"\nselective scan, float32, {args.device}, {args.threads} threads; medians (and "
          f"minima) of {args.repeats} runs; speedup of forward+backward over the reference")
    print(f"{'shape (b, d, L, N)':<20}{'implementation':<26}{'fwd+bwd ms':>11}{'(min)':>8}"
          f"{'fwd ms':>8}{'speedup':>9}{'(min)':>7}{'max|err|':>10}")
    for r in rows:
        s = tuple(r["shape"].values())
        print(f"{str(s):<20}{r['impl']:<26}{r['fwd_bwd_ms']:>11.1f}{r['fwd_bwd_min_ms']:>8.1f}"
              f"{r['fwd_ms']:>8.1f}{r['speedup_vs_ref']:>8.1f}x{r['speedup_vs_ref_min']:>6.1f}x"
              f"{r['max_abs_err_vs_ref']:>10.1e}")
    meta = {"device": args.device, "threads": args.threads, "repeats": args.repeats,
            "torch": torch.__version__, "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    try:
        import numba
        meta["numba"] = numba.__version__
    except ImportError:
        pass
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"load average before/after: {load_before} / {meta['loadavg_after']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
