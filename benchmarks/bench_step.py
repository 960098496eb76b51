"""The mixed av_nas supernet step against a hand-written PyTorch loop over the same space.

The reference (``Plain`` below) is the one-level all-ops supernet as a researcher would write it
without avsearch: plain ``nn`` modules, every candidate of every cell run and summed with its
softmax(α) weight, the selective scan as the usual sequential loop over time (``unbind`` of the
steps, as in mamba's reference code), torch's own attention, dropout and depthwise
``Conv1d``. Same space, widths and initial parameter count as avsearch's supernet at the same
settings (the script checks the counts agree within 1 %), same input, same loss (the InfoNCE
stand-in of ``bench_supernet``), same optimisers (SGD with momentum on W, Adam on α).

Timed, alternating within every round so that a machine's drift reaches all alike:

* ``reference``: the hand-written loop;
* ``mixed``: avsearch's supernet, every candidate (csp's Eq. 40 step, DARTS's W step);
* ``gumbel``: avsearch's straight-through Gumbel single path (csp ``policy=gumbel``, GDAS);
* ``single``: one path drawn from softmax(α), W step only (SPOS's and ProxylessNAS's W step).

``--precision bf16`` runs every side's forward under bf16 autocast (avsearch's ``--precision
bf16``; the reference gets the same, so it is compared at its best).

With ``--flops`` it also counts the mixed step's arithmetic (matmuls, convolutions and
attention by torch's ``FlopCounterMode``, which counts each op from its shapes; the selective
scan analytically, see ``scan_flops``), measures this machine's fp32 matmul rate at the same
thread count, and reports the step's achieved FLOP/s as a share of it, with the peak RSS of the
process (each configuration runs in its own process so that the peak is its own).

    python benchmarks/bench_step.py                          # d=64, batch 64, 2 threads
    python benchmarks/bench_step.py --d 768 --batch 32 --flops --sides mixed --repeats 2 --steps 1
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench_supernet import info_nce

LENGTH = 25
SIDES = ("reference", "mixed", "gumbel", "single")
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- the hand-written reference
def scan(u, delta, A, B, C, D):
    """Sequential selective scan over time. u, delta: (b, L, w); A: (w, N); B, C: (b, L, N)."""
    dA = torch.exp(delta.unsqueeze(-1) * A)                   # (b, L, w, N)
    dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(2)          # (b, L, w, N)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for a_t, bu_t, c_t in zip(dA.unbind(1), dBu.unbind(1), C.unbind(1)):
        h = a_t * h + bu_t
        ys.append((h * c_t.unsqueeze(1)).sum(-1))
    return torch.stack(ys, 1) + u * D


class SSM(nn.Module):
    """Mamba's S6: Δ, B, C from x, A = −exp(A_log)."""

    def __init__(self, w, n=16):
        super().__init__()
        self.n, self.r = n, math.ceil(w / 16)
        self.x_proj = nn.Linear(w, self.r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(self.r, w)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1.0)).repeat(w, 1))
        self.D = nn.Parameter(torch.ones(w))

    def forward(self, x, source=None, A_log=None, reverse=False):
        dt, B, C = self.x_proj(x if source is None else source).split([self.r, self.n, self.n], -1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log if A_log is None else A_log)
        if reverse:
            return scan(x.flip(1), delta.flip(1), A, B.flip(1), C.flip(1), 0).flip(1)
        return scan(x, delta, A, B, C, 0 if source is not None else self.D)


def causal_conv(w, k):
    return nn.Conv1d(w, w, k, groups=w, padding=k - 1)


def conv_over_time(conv, x):
    return conv(x.transpose(1, 2))[..., :x.shape[1]].transpose(1, 2)


class Attention(nn.Module):
    """Q/K/V projections and torch's scaled dot-product attention, no output projection."""

    def __init__(self, w, heads, p):
        super().__init__()
        self.heads, self.p = heads, p
        self.qkv = nn.ModuleList(nn.Linear(w, w) for _ in range(3))

    def forward(self, x):
        q, k, v = (f(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for f in self.qkv)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0)
        return out.transpose(1, 2).flatten(-2)


class Conv(nn.Module):
    def __init__(self, w, k):
        super().__init__()
        self.conv = causal_conv(w, k)

    def forward(self, x):
        return conv_over_time(self.conv, x)


class Mamba(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.norm, self.in_proj = nn.LayerNorm(w), nn.Linear(w, 4 * w, bias=False)
        self.conv, self.ssm = causal_conv(2 * w, 4), SSM(2 * w)
        self.out_proj = nn.Linear(2 * w, w, bias=False)

    def forward(self, x):
        xi, z = self.in_proj(self.norm(x)).chunk(2, -1)
        return x + self.out_proj(self.ssm(F.silu(conv_over_time(self.conv, xi))) * F.silu(z))


class Transformer(nn.Module):
    def __init__(self, w, heads, p):
        super().__init__()
        self.pos = nn.Parameter(0.02 * torch.randn(512, w))
        self.layer = nn.TransformerEncoderLayer(w, heads, 4 * w, p, batch_first=True,
                                                norm_first=True)
        self.norm = nn.LayerNorm(w)

    def forward(self, x):
        return self.norm(self.layer(x + self.pos[:x.shape[1]]))


class CrossAttention(nn.Module):
    def __init__(self, w, heads, p):
        super().__init__()
        self.mha, self.drop, self.norm = nn.MultiheadAttention(w, heads, p, batch_first=True), \
            nn.Dropout(p), nn.LayerNorm(w)

    def forward(self, x, y):
        return self.norm(x + self.drop(self.mha(x, y, y, need_weights=False)[0]))


class CrossSSM(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.norm_x, self.norm_y = nn.LayerNorm(w), nn.LayerNorm(w)
        self.lin_x, self.lin_y = nn.Linear(w, w, bias=False), nn.Linear(w, w, bias=False)
        self.conv_x, self.conv_y = causal_conv(w, 4), causal_conv(w, 4)
        self.ssm = SSM(w)
        self.A2_log = nn.Parameter(self.ssm.A_log.detach().clone())
        self.out = nn.Linear(w, w, bias=False)

    def forward(self, x, y):
        hx = self.lin_x(self.norm_x(x))
        cx, cy = conv_over_time(self.conv_x, hx), conv_over_time(self.conv_y, self.lin_y(self.norm_y(y)))
        z = self.ssm(cx, source=cy) + self.ssm(cx, source=cy, A_log=self.A2_log, reverse=True)
        return self.out((z + hx) * F.silu(F.silu(hx)))


class Gated(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.gate = nn.Linear(2 * w, 2)

    def forward(self, x, y):
        rho = torch.softmax(self.gate(torch.cat([x, y], -1)), -1)[..., :1]
        return rho * x + (1 - rho) * y


class Mixed(nn.Module):
    """One cell: the softmax(α)-weighted sum of every candidate."""

    def __init__(self, ops):
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(ops)))

    def forward(self, *xs):
        return sum(w * op(*xs) for w, op in zip(torch.softmax(self.alpha, 0), self.ops))


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *xs):
        return self.f(*xs)


class Plain(nn.Module):
    """AV-NAS's supernet (spaces/av_nas.py) in plain PyTorch."""

    def __init__(self, widths, d, e, heads, bits, p=0.1):
        super().__init__()
        skip, add, mul = Lambda(lambda x: x), Lambda(torch.add), Lambda(torch.mul)

        def m(w):
            return Mixed([skip, nn.Sequential(nn.Linear(w, 4 * w), nn.ReLU(), nn.Dropout(p),
                                              nn.Linear(4 * w, w)),
                          nn.Sequential(nn.Linear(w, w), nn.Dropout(p)), Conv(w, 3),
                          Attention(w, heads, p), SSM(w)])

        def u(w):
            return Mixed([skip, nn.SiLU(), nn.LayerNorm(w)])

        self.enc = nn.ModuleList()
        for width in widths:
            self.enc.append(nn.ModuleDict(dict(
                proj=nn.Linear(width, d) if width != d else nn.Identity(),
                up1=nn.Linear(d, e * d), up2=nn.Linear(d, e * d), m1=m(e * d), u1=u(e * d),
                m2=m(e * d), u2=u(e * d), d1=Mixed([add, mul]), down=nn.Linear(e * d, d),
                u3=u(d), m3=m(d), d2=Mixed([add, mul]), u4=u(d))))
        self.i1 = Mixed([CrossAttention(d, heads, p), CrossSSM(d)])
        self.i2 = Mixed([CrossAttention(d, heads, p), CrossSSM(d)])
        self.f = Mixed([add, Gated(d)])
        self.t_blocks = nn.ModuleList([Transformer(d, heads, p), Mamba(d)])
        self.t_alpha = nn.Parameter(1e-3 * torch.randn(4))  # each block mean- and max-pooled
        self.hash = nn.Linear(d, bits)

    def encode(self, c, x):
        x = c["proj"](x)
        h = c["m2"](c["u1"](c["m1"](c["up1"](x))))
        x1 = c["u3"](c["down"](c["d1"](h, c["u2"](c["up2"](x)))))
        return c["u4"](c["d2"](c["m3"](x1), x1))

    def forward(self, *xs):
        v, a = (self.encode(c, x) for c, x in zip(self.enc, xs))
        fused = self.f(self.i1(v, a), self.i2(a, v))
        seqs = [block(fused) for block in self.t_blocks]
        pooled = [s.mean(1) for s in seqs] + [s.amax(1) for s in seqs]
        h = sum(w * x for w, x in zip(torch.softmax(self.t_alpha, 0), pooled))
        return torch.tanh(self.hash(h))

    def arch_parameters(self):
        return [p for n, p in self.named_parameters() if n.endswith("alpha")]

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if not n.endswith("alpha")]


# ---------------------------------------------------------------- FLOPs
def scan_flops(batch: int, width: int, length: int, d_state: int, backward: bool) -> int:
    """Floating-point operations of one selective scan, counting exp as one: per state update
    the forward does Δ·A, exp, the decay multiply-add and Δu·B (5) and C·h's multiply-add (2);
    the backward recomputes the forward (7) and runs the reverse recurrence (12: dC, dB, the
    state gradient's update, Δ's and A's terms)."""
    per_update = 7 + (19 if backward else 0)
    return batch * width * length * d_state * per_update


def matmul_rate(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate (FLOP/s) at ``threads``: best of ``repeats`` n³ products."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- the measurement
def build(side: str, d: int):
    import avsearch

    widths = {"visual": 64, "audio": 40} if d < 768 else {"visual": d, "audio": d}
    heads = 12 if d >= 768 else 4
    torch.manual_seed(0)
    if side == "reference":
        net = Plain(list(widths.values()), d, 2, heads, 64)
    else:
        space = avsearch.get_space("av_nas", d=d, e=2, heads=heads, modalities=widths)
        net = avsearch.compile_space(space, "mixed")
        net.set_policy({"mixed": "softmax"}.get(side, side))
    return net.train(), list(widths.values())


def child(args) -> dict:
    from avsearch._threads import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()   # as the avsearch program does; every side runs under it
    nets = {side: build(side, args.d) for side in args.sides}
    counts = {side: sum(p.numel() for p in net.parameters()) for side, (net, _) in nets.items()}
    if "reference" in counts and "mixed" in counts:  # the two must be the same space
        assert abs(counts["reference"] / counts["mixed"] - 1) < 0.01, counts
    widths = next(iter(nets.values()))[1]
    xs = [torch.randn(args.batch, LENGTH, w) for w in widths]
    steps = {}
    for side, (net, _) in nets.items():
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=1e-3, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3)

        def step(net=net, w_opt=w_opt, a_opt=a_opt, arch=side != "single"):
            w_opt.zero_grad(set_to_none=True)
            a_opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                codes = net(*xs)
            info_nce(codes.float()).backward()
            w_opt.step()
            if arch:
                a_opt.step()
        steps[side] = step
    for step in steps.values():  # warm-up: kernels compile, the allocator settles
        for _ in range(args.warmup):
            step()
    rounds = {side: [] for side in steps}
    for _ in range(args.repeats):
        for side, step in steps.items():
            t = _timed(lambda: [step() for _ in range(args.steps)]) / args.steps
            rounds[side].append(round(args.batch / t, 1))
    out = {"d": args.d, "batch": args.batch, "threads": args.threads, "precision": args.precision,
           "params": counts,
           "videos_per_s": {s: {"median": statistics.median(r), "rounds": r}
                            for s, r in rounds.items()}}
    if args.flops:
        out.update(flops(nets["mixed"][0], xs, args, args.batch / out["videos_per_s"]["mixed"]["median"]))
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def flops(net, xs, args, step_s: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from avsearch.ops.ssm import S6, CrossMamba

    counter = FlopCounterMode(display=False)
    with counter:
        info_nce(net(*xs)).backward()
    counted = counter.get_total_flops()
    scans = 0
    for mod in net.modules():  # S6: one scan at its width; CrossMamba: two
        if isinstance(mod, S6):
            scans += scan_flops(args.batch, mod.D.numel(), LENGTH, mod.A_log.shape[1], True)
        elif isinstance(mod, CrossMamba):
            scans += 2 * scan_flops(args.batch, mod.A1_log.shape[0], LENGTH,
                                    mod.A1_log.shape[1], True)
    total = counted + scans
    rate = matmul_rate(args.threads)
    return {"flops": {"matmul_conv_attention": counted, "scan": scans, "total": total},
            "step_s": round(step_s, 4), "achieved_flop_s": total / step_s,
            "matmul_flop_s": rate, "share_of_matmul_rate": round(total / step_s / rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds alternating the sides")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="every side's forward autocasts to this (bf16: avsearch's "
                             "--precision bf16, and the reference under the same autocast)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs of the mixed step")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.sides = args.sides.split(",")
    if args.child:
        print(json.dumps(child(args)))
        return
    done = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"av_nas supernet step, d={r['d']} batch={r['batch']} length {LENGTH}, "
          f"{r['threads']} threads, {r['precision']}; videos/s, median over rounds (rounds)")
    ref = r["videos_per_s"].get("reference", {}).get("median")
    for side, v in r["videos_per_s"].items():
        ratio = f"  {v['median'] / ref:5.2f}x reference" if ref else ""
        print(f"  {side:<10} {v['median']:8.1f}{ratio}   {v['rounds']}   "
              f"{r['params'][side] / 1e6:.2f} M params")
    if "flops" in r:
        f = r["flops"]
        print(f"mixed step: {f['total'] / 1e9:.1f} GFLOP ({f['matmul_conv_attention'] / 1e9:.1f} "
              f"matmuls, convolutions, attention; {f['scan'] / 1e9:.2f} scans) in "
              f"{r['step_s']:.3f} s = {r['achieved_flop_s'] / 1e9:.1f} GFLOP/s, "
              f"{100 * r['share_of_matmul_rate']:.0f} % of this machine's fp32 matmul rate "
              f"({r['matmul_flop_s'] / 1e9:.1f} GFLOP/s at {r['threads']} threads)")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB")
    out = Path(args.out or RESULTS / f"bench_step_d{args.d}_b{args.batch}_{args.precision}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "torch": torch.__version__, **r}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
