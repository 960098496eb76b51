"""avsearch's ``darts`` against NNI 3.0's DARTS on the same av_nas supernet, data, loss and budget.

Both sides are first-order DARTS on the mixed av_nas supernet, built by avsearch (NNI's side
through :mod:`avsearch.bridges.nni`: one ``LayerChoice`` per cell over the same op modules,
searched by NNI's own ``nni.nas.strategy.DARTS`` run by NNI's sequential execution engine and
Lightning evaluator). They start from the same W and α (avsearch's initialisation, loaded into
NNI's supernet), train on the same held-out split of avdigits' training data (α on one half,
W on the other, ``Trainer.held_out``), see the same InfoNCE index batches in the same order,
and use the same optimizers (W: Adam 1e-3; α: Adam 3e-4, betas (0.5, 0.999), weight decay
1e-3 — NNI's DARTS defaults, which avsearch's darts also uses). Each side then goes through
``avsearch run``'s own finetune (the derived network inherits the side's W*) and evaluation,
so the mAP rows differ only by what the search found and trained.

NNI runs twice: on the bridged space with avsearch's own ops (``nni``: the same modules, so
this isolates the search loop), and with the ops a user writing this space for NNI in plain
PyTorch would have on a CPU (``nni-plain``: the sequential selective-scan loop, mamba-ssm's
only CPU path, and torch's dropout; everything else identical).

What counts: a *step* is one α step on a held-out batch and one W step on a training batch.
*Videos* are the entries of InfoNCE's index batches (anchor, positive and 4 negatives: 6 per
anchor), as avsearch's ``history.jsonl`` counts them. "W-step videos/s" counts the training
batch only; "total videos/s" counts both batches. Step times cover the α and W steps (for
NNI, Lightning's training step of DARTS's module); the epoch row uses the first round's wall
time of the whole search epoch (avsearch: ``history.jsonl``'s ``train_seconds``, which also
covers drawing the batches; NNI: Lightning's train epoch).

Each side runs in its own process, so peak RSS (``ru_maxrss``) is its own; "search" RSS is the
peak when the search stage ends (imports, data and supernet training), "run" the peak of the
whole process (finetune and evaluation included). On a shared machine other jobs slow single
steps by several times, so the speed is measured in ``--rounds`` rounds: one full run per side
(search, finetune, evaluation), then search-only runs alternating the two sides; every step
sees the same batches in every round, and the headline takes each step's fastest round
(steps after the first; the first pays one-time costs). Speed goal (measured, never
asserted): avsearch's darts ≥ 2.5× NNI's videos/s with no more peak memory.

    python benchmarks/bench_vs_nni.py                        # d=64, batch 64, 8 steps, 2 rounds
    python benchmarks/bench_vs_nni.py --steps 4 --d 32 --batch 32
    python benchmarks/bench_vs_nni.py --scratch              # also train both found archs from scratch

Needs the ``nni`` extra (``pip install -e '.[nni]'``). Writes benchmarks/results/bench_vs_nni.json
and the two runs' folders under benchmarks/results/bench_vs_nni/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("avsearch", "nni", "nni-plain")
LABEL = {"avsearch": "avsearch darts", "nni": "NNI 3.0 DARTS, avsearch's ops",
         "nni-plain": "NNI 3.0 DARTS, plain-PyTorch ops"}


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


# ------------------------------------------------------------------------------ one side
def child(args: argparse.Namespace) -> dict:
    """Run one side (``--side``) in this process; returns its measurements."""
    import torch

    torch.set_num_threads(args.threads)
    if args.side != "avsearch":
        _register_nni_darts()  # imports nni, Lightning, pandas: part of NNI's footprint
    if args.side == "nni-plain":
        _plain_pytorch_ops()
    import dataclasses

    from avsearch.run import RunSettings, run
    from avsearch.train import BUDGETS, Trainer

    BUDGETS["bench"] = dataclasses.replace(
        BUDGETS["quick"], name="bench", search_epochs=args.epochs, finetune_epochs=1,
        batch_size=args.batch, search_steps=args.steps, finetune_steps=args.finetune_steps,
        halving=0,   # NNI's DARTS has no successive-halving stage: compare the searches alone
        eval_limit=64 if args.search_only else None)  # per-epoch model selection only

    probe: dict = {"step_s": [], "w_videos": 0, "a_videos": 0}
    if args.side == "avsearch":
        original = Trainer.stage

        def stage(self, name, model, optimizers, step, epochs, *rest, **kw):
            if name != "search":
                return original(self, name, model, optimizers, step, epochs, *rest, **kw)

            def timed(*batch):
                t0 = time.perf_counter()
                loss = step(*batch)
                probe["step_s"].append(time.perf_counter() - t0)
                probe["w_videos"] += int(batch[0].size)
                probe["a_videos"] += int(sum(b.size for b in batch[1:]))
                return loss

            probe["rss_before_search_mb"] = _rss_mb()
            result = original(self, name, model, optimizers, timed, epochs, *rest, **kw)
            probe["rss_search_mb"] = _rss_mb()
            if args.search_only:
                raise _SearchDone
            return result

        Trainer.stage = stage
    else:
        _NNI_PROBE.update(probe, search_only=args.search_only)
        probe = _NNI_PROBE

    name = f"scratch-{Path(args.arch).parent.name}" if args.arch else args.side
    out = RESULTS / "bench_vs_nni" / (f"{name}-speed" if args.search_only else name)
    shutil.rmtree(out, ignore_errors=True)
    strategy = "darts" if args.side == "avsearch" else "nni-darts"
    # the paper recipe (InfoNCE, Adam at a constant rate) and DARTS's own α rate, finetuned
    # from the searched weights: what the NNI side does, so the two differ only in the engine
    settings = RunSettings(space="av_nas", strategy=strategy, arch=args.arch, data="avdigits",
                           recipe="paper", budget="bench", seed=args.seed, device="cpu", baselines=False,
                           space_options={"d": str(args.d)},
                           strategy_options={"alpha_lr": "3e-4", "inherit": "yes"}
                           if strategy == "darts" else {})
    t0 = time.perf_counter()
    try:
        summary = run(settings, out=out, progress=False)
    except _SearchDone:
        summary = None
    total_s = time.perf_counter() - t0

    if args.side == "avsearch" and not args.arch:
        search = [r for r in map(json.loads, (out / "history.jsonl").read_text().splitlines())
                  if r.get("stage") == "search"]
        probe["epoch_s"] = sum(r["train_seconds"] for r in search)
        probe["history_videos_per_second"] = [r["videos_per_second"] for r in search]
    res = {"side": args.side, "rss_run_mb": _rss_mb(), "run_s": round(total_s, 1)}
    if summary is not None:
        res.update({"arch_file": str(out / "best.arch"),
                    "choices": json.loads((out / "best.arch").read_text())["choices"],
                    "val_map@100": summary["val"]["map@100"],
                    "test_map@100": summary["test"]["map@100"], "params": summary["params"],
                    "finetune_s": summary["time"].get("finetune_s")})
    if not args.arch:
        steps = probe["step_s"]
        n = len(steps)
        w, a = probe["w_videos"], probe["a_videos"]
        steady = _median(steps[1:]) or _median(steps)
        best = min(steps[1:] or steps)
        res.update({
            "steps": n, "w_videos": w, "alpha_videos": a,
            "epoch_s": round(probe["epoch_s"], 3), "step_s": [round(s, 4) for s in steps],
            "step_median_s": round(steady, 4), "step_min_s": round(best, 4),
            "w_videos_per_s_epoch": round(w / probe["epoch_s"], 1),
            "total_videos_per_s_epoch": round((w + a) / probe["epoch_s"], 1),
            "w_videos_per_s_step": round(w / n / steady, 1),
            "total_videos_per_s_step": round((w + a) / n / steady, 1),
            "rss_before_search_mb": probe["rss_before_search_mb"],
            "rss_search_mb": probe["rss_search_mb"],
        })
        if "history_videos_per_second" in probe:
            res["history_videos_per_second"] = probe["history_videos_per_second"]
    return res


_NNI_PROBE: dict = {}


def _plain_pytorch_ops() -> None:
    """The ``nni-plain`` side: the same space with the ops a user writing av_nas for NNI in plain
    PyTorch would run on a CPU — the sequential selective-scan loop (mamba-ssm's own CPU path is
    its reference loop) and torch's dropout — in place of avsearch's scan kernel and dropout."""
    import torch.nn.functional as F

    import avsearch.ops.attention as attention
    import avsearch.ops.dropout as dropout
    import avsearch.ops.ssm as ssm
    from avsearch.ops.scan import selective_scan_ref

    def torch_dropout(x, p, training=True):
        return F.dropout(x, p, training)

    ssm.selective_scan = selective_scan_ref
    dropout.dropout = attention.dropout = torch_dropout


class _SearchDone(Exception):
    """Raised after the search stage of a search-only (speed) round."""


def _register_nni_darts() -> None:
    """Register strategy ``nni-darts`` (this benchmark only): NNI's DARTS on the bridged space."""
    import pytorch_lightning as pl
    import torch
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS

    from avsearch.bridges.nni import (from_nni, lightning_evaluator, load_avsearch_state,
                                      to_avsearch_state, to_nni)
    from avsearch.strategies import SearchOutcome, Strategy, held_out_split, register_strategy
    from avsearch.train import StageResult

    probe = _NNI_PROBE

    class Timer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            probe.setdefault("rss_before_search_mb", _rss_mb())
            self.epoch_t0 = time.perf_counter()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.t0 = time.perf_counter()
            probe["w_videos"] += int(batch["train"][1].numel())
            probe["a_videos"] += int(batch["val"][1].numel())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            probe["step_s"].append(time.perf_counter() - self.t0)

        def on_train_epoch_end(self, trainer, module):
            probe["epoch_s"] = probe.get("epoch_s", 0.0) + time.perf_counter() - self.epoch_t0

    @register_strategy("nni-darts", "NNI 3.0's DARTS on the bridged space (bench_vs_nni only)")
    class NNIDarts(Strategy):
        def search(self, ctx):
            init = ctx.network("mixed").state_dict()  # the W and α avsearch's darts starts from
            budget = ctx.budget
            streams = list(held_out_split(ctx.trainer.train_split, 0.5, ctx.seed))  # as darts
            objective = ctx.trainer.objective

            def batches(epoch):  # exactly what Trainer.stage draws for avsearch's darts
                return ctx.trainer.batches(streams, epoch, ctx.trainer.anchors("search"))

            class SameStart(DARTS):  # NNI's DARTS, starting from avsearch's initial W and α
                def mutate_model(self, model):
                    model = super().mutate_model(model)
                    load_avsearch_state(model, init)
                    return model

            evaluator = lightning_evaluator(
                streams, batches, objective, epochs=budget.search_epochs,
                optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), callbacks=[Timer()])
            strategy = SameStart(arc_learning_rate=3e-4)
            t0 = time.perf_counter()
            strategy(RawFormatModelSpace.from_model(to_nni(ctx.space, ctx.input_stats), evaluator),
                     SequentialExecutionEngine())
            seconds = time.perf_counter() - t0
            probe["rss_search_mb"] = _rss_mb()
            if probe["search_only"]:
                raise _SearchDone
            state = to_avsearch_state(strategy.supernet)
            choices = from_nni(ctx.space, strategy.oneshot_module.export())
            probabilities = strategy.oneshot_module.export_probs()
            inherited = {k: v for k, v in state.items() if not k.startswith("alpha.")}
            return SearchOutcome(choices, probabilities, inherited,
                                 StageResult(float("nan"), budget.search_epochs, seconds,
                                             budget.search_epochs))


# ------------------------------------------------------------------------------ driver
def _spawn(args: argparse.Namespace, side: str, arch: str | None = None,
           search_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--d", str(args.d),
           "--batch", str(args.batch), "--threads", str(args.threads), "--epochs", str(args.epochs),
           "--finetune-steps", str(args.finetune_steps), "--seed", str(args.seed)]
    cmd += ["--arch", arch] if arch else []
    cmd += ["--search-only"] if search_only else []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{side} side failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _speed(rounds: list[dict]) -> dict:
    """Speed over rounds: per step the fastest round (after the first step), and the median."""
    n = rounds[0]["steps"]
    per_step = (rounds[0]["w_videos"] + rounds[0]["alpha_videos"]) / n
    w_per_step = rounds[0]["w_videos"] / n
    later = range(1, n) if n > 1 else range(n)
    best = sum(min(r["step_s"][i] for r in rounds) for i in later)
    median = _median([r["step_s"][i] for r in rounds for i in later])
    return {"rounds": len(rounds), "best_steps_s": round(best, 3),
            "total_videos_per_s_best": round(per_step * len(later) / best, 1),
            "w_videos_per_s_best": round(w_per_step * len(later) / best, 1),
            "step_median_s": round(median, 4),
            "total_videos_per_s_median": round(per_step / median, 1),
            "step_s_by_round": [r["step_s"] for r in rounds]}


def _table(rows: dict[str, dict], speed: dict[str, dict], scratch: dict[str, dict]) -> str:
    sides = list(rows)
    peers = [side for side in sides if side != "avsearch"]
    vals = {side: {**rows[side], **speed[side]} for side in sides}
    r = vals["avsearch"]["rounds"]
    lines = ["| | " + " | ".join(LABEL[s] for s in sides) + " | "
             + " | ".join(f"avsearch / {LABEL[p]}" for p in peers) + " |",
             "|---|" + "---:|" * (len(sides) + len(peers))]
    for label, k, fmt in (
            (f"supernet training, total videos/s (each step's fastest of {r} rounds)",
             "total_videos_per_s_best", "{:.1f}"),
            ("supernet training, W-step videos/s (same)", "w_videos_per_s_best", "{:.1f}"),
            (f"supernet training, total videos/s (median step of {r} rounds)",
             "total_videos_per_s_median", "{:.1f}"),
            ("supernet training, total videos/s (first round's epoch wall time)",
             "total_videos_per_s_epoch", "{:.1f}"),
            ("median step (α + W), s", "step_median_s", "{:.3f}"),
            ("peak RSS at end of search, MB", "rss_search_mb", "{:.0f}"),
            ("peak RSS before search (imports, data), MB", "rss_before_search_mb", "{:.0f}"),
            ("peak RSS of the whole run, MB", "rss_run_mb", "{:.0f}"),
            ("val mAP@100 (derived, inherits W*, finetuned)", "val_map@100", "{:.4f}"),
            ("test mAP@100 (same network)", "test_map@100", "{:.4f}")):
        a = vals["avsearch"][k]
        ratios = [f"{a / vals[p][k]:.2f}×" if a and vals[p][k] else "" for p in peers]
        lines.append(f"| {label} | " + " | ".join(fmt.format(vals[s][k]) for s in sides) + " | "
                     + " | ".join(ratios) + " |")
    if scratch:
        lines.append("| val mAP@100, found arch trained from scratch (`--arch`) | "
                     + " | ".join(f"{scratch[s]['val_map@100']:.4f}" for s in sides) + " |" * (len(peers) + 1))
    for p in peers:
        a, n = vals["avsearch"]["choices"], vals[p]["choices"]
        lines.append(f"\navsearch and {LABEL[p]} found architectures agreeing on "
                     f"{sum(a[c] == n[c] for c in a)} of {len(a)} cells.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="search steps (α + W) per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="search epochs")
    parser.add_argument("--d", type=int, default=64, help="av_nas width d")
    parser.add_argument("--batch", type=int, default=64, help="anchors per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per side")
    parser.add_argument("--rounds", type=int, default=2,
                        help="speed rounds per side: one full run, then search-only runs")
    parser.add_argument("--finetune-steps", type=int, default=16,
                        help="finetune steps of the derived network (one epoch), both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", action="store_true",
                        help="also train each found .arch from scratch (avsearch run --arch)")
    parser.add_argument("--out", default=str(RESULTS / "bench_vs_nni.json"))
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--search-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(child(args)))
        return
    try:
        import nni
    except ImportError:
        sys.exit("bench_vs_nni needs NNI: pip install -e '.[nni]'")
    import torch

    load = [os.getloadavg()[0]]
    rows, rounds = {}, {side: [] for side in SIDES}
    for side in SIDES:
        rows[side] = _spawn(args, side)
        rounds[side].append(rows[side])
        r = rows[side]
        print(f"{LABEL[side]:>15}, full run: {r['total_videos_per_s_epoch']:7.1f} videos/s (epoch), "
              f"median step {r['step_median_s']:.2f} s, peak RSS {r['rss_search_mb']:.0f} MB (search), "
              f"val mAP@100 {r['val_map@100']:.4f}", flush=True)
    load.append(os.getloadavg()[0])
    for k in range(1, args.rounds):
        for side in (SIDES[::-1] if k % 2 else SIDES):  # alternate who goes first
            got = _spawn(args, side, search_only=True)
            rounds[side].append(got)
            print(f"{LABEL[side]:>15}, round {k + 1}: median step {got['step_median_s']:.2f} s", flush=True)
        load.append(os.getloadavg()[0])
    speed = {side: _speed(rounds[side]) for side in SIDES}
    scratch = {}
    if args.scratch:
        for side in SIDES:
            scratch[side] = _spawn(args, "avsearch", arch=rows[side]["arch_file"])
    load.append(os.getloadavg()[0])

    table = _table(rows, speed, scratch)
    verdicts, ratios = [], {}
    for peer in SIDES[1:]:
        ratio = speed["avsearch"]["total_videos_per_s_best"] / speed[peer]["total_videos_per_s_best"]
        memory_ok = rows["avsearch"]["rss_search_mb"] <= rows[peer]["rss_search_mb"]
        ratios[peer] = {"speedup_total_videos_per_s": round(ratio, 2), "memory_not_above": memory_ok}
        verdicts.append(f"goal vs {LABEL[peer]} (>= 2.5x videos/s, no more peak memory): {ratio:.2f}x "
                        f"videos/s (fastest rounds), peak RSS {'not above' if memory_ok else 'ABOVE'} "
                        f"-> {'met' if ratio >= 2.5 and memory_ok else 'NOT met'}")
    verdict = "\n".join(verdicts)
    print()
    print(f"av_nas d={args.d}, batch {args.batch} anchors ({6 * args.batch} videos per batch and "
          f"stream), {args.steps} steps x {args.epochs} epoch(s), {args.threads} torch threads, "
          f"{args.rounds} round(s), finetune {args.finetune_steps} steps; 1-min load average "
          f"{', '.join(f'{x:.2f}' for x in load)} (start, after each round, end)")
    print(table)
    print(verdict)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {k: v for k, v in vars(args).items() if k not in ("side", "arch", "out", "search_only")},
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average_1min": load},
        "versions": {"torch": torch.__version__, "nni": nni.__version__,
                     "python": platform.python_version()},
        "counting": "videos = entries of the InfoNCE index batches (6 per anchor); W-step counts "
                    "the training batch, total counts the α batch too; a step is one α and one W "
                    "step; 'best' sums each step's fastest round over steps 2..N",
        "results": rows, "speed": speed, "scratch": scratch,
        "against": ratios,
        "table": table, "verdict": verdict}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
