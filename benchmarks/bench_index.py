"""Binary indexes (avsearch.index) on millions of codes: build time, queries/s, memory, recall.

For each database and index kind: the build time (``BinaryIndex.build`` from ±1 codes, packing
included; multihash's tables too), the index file's size (faiss's serialised bytes), its
memory (``BinaryIndex.memory_bytes``: the file's bytes and multihash's tables) and the
process's RSS growth while building, queries/s for ``--queries`` queries of top ``-k``
(``BinaryIndex.search``: what ``avsearch index query`` runs, ties by database index), and
recall@k against the flat index: by ids (the share of flat's (distance, index) list an
approximate kind returns) and tie-aware (the share of its k results no farther than flat's
k-th neighbour, which counts an item tied with flat's k-th as a hit).

multihash (avsearch's multi-index hashing) also reports what a query did: probes, candidates
(items in the buckets probed) and the share of queries that went to the flat scan because
probing would have cost more; and, on random codes, what Norouzi et al.'s analysis expects
for uniform codes (``index_kernels.expected_work``) and the speed-up over a linear scan it
predicts when a probe and a candidate cost one scanned item each (the paper's accounting:
its scan was scalar) and at this module's costs (``_PROBE_COST``, ``_CANDIDATE_COST``: SIMD
scan of blocks of queries). ``--multihash-nhash 3,5`` adds builds with other numbers of
substrings beside the default.

Databases (default):

* ``random-1M``, ``random-10M``: uniform random 64-bit codes, queries drawn alike;
* ``avdigits-1M``: codes of a network trained on avdigits, which are clustered, not uniform.
  avdigits has 3,000 database videos, so the million items are drawn from the network's own
  codes: per item a class, then that class's majority code (over its 3,000 real database
  codes) with each bit flipped at the rate it disagrees with it among the class's real codes.
  The queries are the real codes of the test and val videos. The network is ``--arch``, else
  the ``mamba`` preset trained at ``--budget`` (quick) with 64 bits, kept in
  benchmarks/results/bench_index_model-BUDGET/ for the next run.

The popcount limit: the rate of 64-bit XOR + POPCNT over a 16 KiB block that stays in L1,
each thread on its own block (a numba kernel with LLVM's ctpop, the instruction the metrics
kernel uses; so no memory traffic, no top-k), with ``--threads`` threads and LLVM's
vectorisers off, so one POPCNT instruction per comparison; the same kernel vectorised (SIMD
popcount, where the CPU has it) and numpy's ``np.bitwise_count`` are reported beside it. The
flat index's comparisons/s (queries × items / search time) is set against that limit, for
``BinaryIndex.search`` (avsearch's SIMD scan, exact ties) and for faiss's heap top-k.

hnsw is built only up to ``--hnsw-max`` items (1M): its build grows about as N log N and
took minutes per million on 2 cores, so a 10M build alone would outlast the benchmark.

    python benchmarks/bench_index.py                                   # the full run
    python benchmarks/bench_index.py --sizes 20000 --avdigits-size 20000 --queries 100 \\
        --budget smoke                                                 # a check that it runs

Writes benchmarks/results/bench_index.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# query-time settings swept for each kind (build-time parameters are the defaults)
SWEEP: dict[str, list[dict[str, int]]] = {
    "flat": [{}],
    "multihash": [{}, {"nflip": 1}, {"nflip": 2}, {"nflip": 3}],
    "hash": [{"nflip": 1}, {"nflip": 2}, {"nflip": 3}],
    "ivf": [{"nprobe": 4}, {"nprobe": 16}, {"nprobe": 64}],
    "hnsw": [{"efSearch": 128}, {"efSearch": 512}],
}


def rss_mb() -> float:
    """Resident memory of this process now (Linux), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------- the popcount limit
def popcount_rate(threads: int, seconds: float = 1.0) -> float:
    """Comparisons/s of XOR + POPCNT over an L1-resident block, ``threads`` threads (whether
    LLVM vectorises it follows NUMBA_LOOP_VECTORIZE / NUMBA_SLP_VECTORIZE)."""
    import numba

    from avsearch.metrics import _popcount64

    @numba.njit(parallel=True, nogil=True, cache=False)
    def kernel(blocks, queries, repeat):
        total = np.zeros(blocks.shape[0], dtype=np.int64)
        for t in numba.prange(blocks.shape[0]):
            acc = 0
            for r in range(repeat):
                q = queries[t, r % queries.shape[1]]
                for j in range(blocks.shape[1]):
                    acc += _popcount64(q ^ blocks[t, j])
            total[t] = acc
        return total

    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    words = 2048                                            # 16 KiB per thread: L1
    blocks = rng.integers(0, 2**63, (threads, words), dtype=np.uint64)
    queries = rng.integers(0, 2**63, (threads, 64), dtype=np.uint64)
    kernel(blocks, queries, 1)                              # compile
    repeat = 64
    while True:                                             # grow until it runs `seconds`
        t0 = time.perf_counter()
        kernel(blocks, queries, repeat)
        took = time.perf_counter() - t0
        if took > seconds:
            return threads * words * repeat / took
        repeat *= 2


def popcount_limit(threads: int) -> dict[str, Any]:
    """The scalar limit (one POPCNT per comparison: LLVM's vectoriser off) and the SIMD one
    (vectorised), each in a child process since numba reads the switches when it starts;
    numpy's ``bitwise_count`` (one thread, temporaries and all) beside them."""
    rates = {}
    for name, flag in (("scalar", "0"), ("simd", "1")):
        env = {**os.environ, "NUMBA_LOOP_VECTORIZE": flag, "NUMBA_SLP_VECTORIZE": flag}
        done = subprocess.run([sys.executable, __file__, "--popcount-child", str(threads)],
                              env=env, check=True, capture_output=True, text=True)
        rates[name] = float(done.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    block, q = rng.integers(0, 2**63, 2048, dtype=np.uint64), rng.integers(0, 2**63, 64,
                                                                            dtype=np.uint64)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        np.bitwise_count(np.bitwise_xor(block, q[n % 64])).sum()
        n += 1
    return {"comparisons_per_s": rates["scalar"], "simd_comparisons_per_s": rates["simd"],
            "threads": threads,
            "numpy_bitwise_count_per_s_one_thread": n * 2048 / (time.perf_counter() - t0),
            "how": "numba kernel: 64-bit XOR + POPCNT (LLVM ctpop) summed over a 2048-word "
                   "(16 KiB, L1) block per thread; 'comparisons_per_s' with LLVM's vectorisers "
                   "off (one POPCNT per comparison), 'simd_comparisons_per_s' with them on"}


# ------------------------------------------------------------------------------- databases
def random_chunks(n: int, bits: int, seed: int, chunk: int = 1_000_000) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        yield np.where(rng.random((m, bits), dtype=np.float32) < 0.5, -1, 1).astype(np.int8)


def trained_codes(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(database codes, their class ids, query codes, where the model came from)."""
    import avsearch
    from avsearch.inference import encode_split, resolve_device

    arch_path = (Path(args.arch) if args.arch
                 else RESULTS / f"bench_index_model-{args.budget}" / "best.arch")
    if not arch_path.is_file():
        if args.arch:
            raise SystemExit(f"--arch {arch_path}: no such file")
        out = arch_path.parent
        shutil.rmtree(out, ignore_errors=True)
        print(f"training the mamba preset ({args.budget} budget, 64 bits) into {out}",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "avsearch.cli", "run", "--arch", "mamba",
                        "--budget", args.budget, "--bits", "64", "--no-baselines", "--quiet",
                        "--out", str(out)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    arch = avsearch.Architecture.load(arch_path)
    data = avsearch.data.load_dataset(arch.provenance.get("data", "avdigits"))
    net, device = arch.network(), resolve_device("cpu")
    db = data.split("retrieval")
    queries = np.concatenate([encode_split(net, data.split(s), device) for s in ("test", "val")])
    return (encode_split(net, db, device), db.labels.argmax(1), queries,
            f"{arch_path} ({arch.arch_id}, budget {arch.provenance.get('budget', {}).get('name')})")


def clustered_chunks(codes: np.ndarray, classes: np.ndarray, n: int, seed: int,
                     chunk: int = 1_000_000) -> Iterator[np.ndarray]:
    """Items drawn like the real codes: a class, its majority code, per-bit flips at the rate
    the class's real codes disagree with it."""
    ids = np.unique(classes)
    majority = np.stack([np.where(codes[classes == c].mean(0) >= 0, 1, -1) for c in ids])
    flip = np.stack([(codes[classes == c] != majority[i]).mean(0) for i, c in enumerate(ids)])
    weight = np.array([(classes == c).mean() for c in ids])
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cls = rng.choice(len(ids), size=m, p=weight)
        flips = rng.random((m, codes.shape[1]), dtype=np.float32) < flip[cls]
        yield np.where(flips, -majority[cls], majority[cls]).astype(np.int8)


def packed_database(chunks: Iterator[np.ndarray]) -> tuple[np.ndarray, int]:
    from avsearch.index import pack_codes
    parts, bits = [], 0
    for c in chunks:
        parts.append(pack_codes(c))
        bits = c.shape[1]
    return np.concatenate(parts), bits


def as_chunks(packed: np.ndarray, bits: int, chunk: int = 1_000_000) -> Iterator[np.ndarray]:
    from avsearch.index import unpack_codes
    for start in range(0, len(packed), chunk):
        yield unpack_codes(packed[start:start + chunk], bits)


# -------------------------------------------------------------------------------- measuring
def tie_recall(distance: np.ndarray, flat_distance: np.ndarray) -> float:
    """The share of the k results no farther than flat's k-th (a tie with it is a hit)."""
    kth = flat_distance[:, -1:]
    return float(((distance >= 0) & (distance <= kth)).sum(1).mean() / flat_distance.shape[1])


def id_recall(index: np.ndarray, flat_index: np.ndarray) -> float:
    hits = [len(np.intersect1d(a[a >= 0], b)) for a, b in zip(index, flat_index)]
    return float(np.mean(hits) / flat_index.shape[1])


def timed_search(index: Any, queries: np.ndarray, k: int, params: dict[str, int],
                 repeats: int = 1):
    """The search's result and its shortest time over ``repeats`` runs (a shared machine's
    noise only ever adds time)."""
    index.search(queries[:10], k, **params)                 # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = index.search(queries, k, **params)
        best = min(best, time.perf_counter() - t0)
    return result, best


def multihash_work(result: Any, index: Any, n: int, k: int, uniform: bool) -> dict[str, Any]:
    """What multihash's queries did, and for an exact search of uniform codes what the
    analysis expects."""
    from avsearch import index as index_module
    from avsearch.index_kernels import expected_work
    stats = result.stats
    out = {"probes_per_query": round(float(stats["probes"].mean()), 1),
           "candidates_per_query": round(float(stats["candidates"].mean()), 1),
           "checked_per_query": round(float(stats["checked"].mean()), 1),
           "scanned_share": round(float(stats["scanned"].mean()), 3)}
    if uniform:
        probes, candidates = expected_work(index.bits, n, index.params["nhash"], k)
        out["expected"] = {
            "probes_per_query": round(probes, 1), "candidates_per_query": round(candidates, 1),
            "speedup_unit_costs": round(n / (probes + candidates), 1),
            "speedup_at_our_costs": round(n / (probes * index_module._PROBE_COST + candidates
                                               * index_module._CANDIDATE_COST), 2)}
    return out


def bench_database(name: str, packed: np.ndarray, bits: int, queries: np.ndarray,
                   args: argparse.Namespace, limit: float, uniform: bool) -> dict[str, Any]:
    from avsearch.index import BinaryIndex
    n = len(packed)
    rows, flat_result, flat_qps = [], None, None
    print(f"{name}: {n:,} codes of {bits} bits, {len(queries)} queries", file=sys.stderr,
          flush=True)
    builds = [(kind, {}) for kind in args.kinds]
    if "multihash" in args.kinds:
        at = builds.index(("multihash", {})) + 1
        builds[at:at] = [("multihash", {"nhash": m}) for m in args.multihash_nhash]
    measured_nhash: set[int] = set()
    for kind, build_params in builds:
        if build_params and build_params["nhash"] in measured_nhash:
            continue                                  # the default's nhash: already measured
        if kind == "hnsw" and n > args.hnsw_max:
            rows.append({"kind": kind, "skipped": f"more than --hnsw-max {args.hnsw_max:,} "
                                                  f"items (build time)"})
            continue
        rss0 = rss_mb()
        t0 = time.perf_counter()
        try:
            index = BinaryIndex.build(as_chunks(packed, bits), kind, build_params)
        except ValueError as err:         # AvsearchInputError: e.g. tables too large
            rows.append({"kind": kind, "build_params": build_params, "skipped": str(err)})
            continue
        build_s = time.perf_counter() - t0
        rss_growth = rss_mb() - rss0
        if kind == "multihash":
            measured_nhash.add(index.params["nhash"])
        size_mb = len(faiss.serialize_index_binary(index.faiss_index)) / 1e6
        memory_mb = index.memory_bytes() / 1e6
        for params in SWEEP[kind]:
            result, took = timed_search(index, queries, args.k, params, args.repeats)
            row = {"kind": kind, "build_params": index.params, "query_params": params,
                   "exact": result.exact, "build_s": round(build_s, 2),
                   "index_mb": round(size_mb, 1), "memory_mb": round(memory_mb, 1),
                   "rss_growth_mb": round(rss_growth, 1),
                   "search_s": round(took, 3), "queries_per_s": round(len(queries) / took, 1)}
            if kind == "multihash":
                row["work"] = multihash_work(result, index, n, args.k,
                                             uniform and result.exact)
            if kind == "flat":
                flat_result, flat_qps = result, row["queries_per_s"]
                row["comparisons_per_s"] = len(queries) * n / took
                # faiss's heap top-k (no promise on ties), for comparison
                faiss_q = np.packbits(queries > 0, axis=1, bitorder="little")
                index.faiss_index.use_heap = True
                index.faiss_index.search(faiss_q[:10], args.k)
                t0 = time.perf_counter()
                index.faiss_index.search(faiss_q, args.k)
                row["faiss_comparisons_per_s"] = len(queries) * n / (time.perf_counter() - t0)
                row["share_of_popcount_limit"] = round(row["comparisons_per_s"] / limit, 3)
                row["faiss_share_of_popcount_limit"] = round(
                    row["faiss_comparisons_per_s"] / limit, 3)
            if flat_result is not None:
                row["recall@k"] = round(id_recall(result.index, flat_result.index), 4)
                row["recall@k_ties"] = round(tie_recall(result.distance, flat_result.distance), 4)
                row["speedup_vs_flat"] = round(row["queries_per_s"] / flat_qps, 2)
            rows.append(row)
            print(f"  {kind} {params}: {row['queries_per_s']:.0f} q/s, recall "
                  f"{row.get('recall@k', float('nan')):.3f}", file=sys.stderr, flush=True)
        del index
    return {"name": name, "n": n, "bits": bits, "queries": len(queries), "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    k = report["settings"]["k"]
    lines = [f"| data | kind | query setting | exact | build s | index MB | memory MB "
             f"| queries/s | × flat | recall@{k} | recall@{k} (ties) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for db in report["databases"]:
        for r in db["rows"]:
            kind = r["kind"] + "".join(f" {a}={b}" for a, b in r.get("build_params", {}).items()
                                       if a == "nhash")
            if "skipped" in r:
                lines.append(f"| {db['name']} | {kind} | skipped: {r['skipped']} "
                             f"| | | | | | | | |")
                continue
            setting = ", ".join(f"{a}={b}" for a, b in r["query_params"].items()) or (
                "exact" if r["exact"] else "default")
            lines.append(
                f"| {db['name']} | {kind} | {setting} | {'yes' if r['exact'] else 'no'} "
                f"| {r['build_s']:.1f} | {r['index_mb']:.0f} | {r['memory_mb']:.0f} "
                f"| {r['queries_per_s']:,.0f} "
                f"| {r.get('speedup_vs_flat', float('nan')):.2f} | {r.get('recall@k', 1):.3f} "
                f"| {r.get('recall@k_ties', 1):.3f} |")
    lines += ["", "multihash's work per query (measured; expected for uniform codes by "
                  "Norouzi et al.'s analysis, and the speed-up over a scan it predicts at unit "
                  "costs and at avsearch's probe and candidate costs):", "",
              "| data | nhash | setting | probes | candidates | checked | scanned | expected "
              "probes | expected candidates | predicted × scan (unit costs) | predicted × "
              "scan (our costs) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for db in report["databases"]:
        for r in db["rows"]:
            if "work" not in r:
                continue
            w, e = r["work"], r["work"].get("expected", {})
            setting = ", ".join(f"{a}={b}" for a, b in r["query_params"].items()) or "exact"
            lines.append(
                f"| {db['name']} | {r['build_params']['nhash']} | {setting} "
                f"| {w['probes_per_query']:,.0f} | {w['candidates_per_query']:,.0f} "
                f"| {w['checked_per_query']:,.0f} | {w['scanned_share']:.0%} "
                + (f"| {e['probes_per_query']:,.0f} | {e['candidates_per_query']:,.0f} "
                   f"| {e['speedup_unit_costs']:.1f} | {e['speedup_at_our_costs']:.2f} |"
                   if e else "| | | | |"))
    limit = report["popcount_limit"]
    lines += ["", f"Popcount limit: {limit['comparisons_per_s']:.3g} comparisons/s with one "
                  f"POPCNT per comparison ({limit['threads']} threads; vectorised: "
                  f"{limit['simd_comparisons_per_s']:.3g}/s; numpy's bitwise_count, one thread: "
                  f"{limit['numpy_bitwise_count_per_s_one_thread']:.3g}/s)."]
    for db in report["databases"]:
        for r in db["rows"]:
            if r.get("kind") == "flat" and "comparisons_per_s" in r:
                lines.append(f"- {db['name']}: flat {r['comparisons_per_s']:.3g} comparisons/s "
                             f"({r['share_of_popcount_limit']:.0%} of the limit; faiss's heap "
                             f"top-{k}, which does not promise the tie order, "
                             f"{r['faiss_comparisons_per_s']:.3g}/s, "
                             f"{r['faiss_share_of_popcount_limit']:.0%})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000",
                    help="random databases, comma-separated sizes (default 1M and 10M)")
    ap.add_argument("--avdigits-size", type=int, default=1_000_000,
                    help="items of the database drawn from the trained network's codes (0: none)")
    ap.add_argument("--bits", type=int, default=64, help="bits of the random codes")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each search this many times and keep the shortest (a shared "
                         "machine)")
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--kinds", default="flat,multihash,hash,ivf,hnsw")
    ap.add_argument("--hnsw-max", type=int, default=1_000_000)
    ap.add_argument("--multihash-nhash", default="",
                    help="more multihash builds with these numbers of substrings, e.g. 3,5")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--arch", help="the trained .arch for avdigits codes (default: train one)")
    ap.add_argument("--budget", default="quick", help="budget of the trained default model")
    ap.add_argument("--output", default=str(RESULTS / "bench_index.json"))
    ap.add_argument("--popcount-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.popcount_child:
        print(popcount_rate(args.popcount_child))
        return
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.multihash_nhash = [int(m) for m in args.multihash_nhash.split(",") if m.strip()]
    if args.kinds[0] != "flat":
        raise SystemExit("--kinds must start with flat: recall is measured against it")
    faiss.omp_set_num_threads(args.threads)
    import torch
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    limit = popcount_limit(args.threads)
    print(f"popcount limit {limit['comparisons_per_s']:.3g} comparisons/s", file=sys.stderr)
    databases = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        packed, bits = packed_database(random_chunks(n, args.bits, seed=0))
        queries = next(random_chunks(args.queries, args.bits, seed=1))
        databases.append(bench_database(f"random-{n:,}", packed, bits, queries, args,
                                        limit["comparisons_per_s"], uniform=True))
        del packed
    model = None
    if args.avdigits_size:
        codes, classes, queries, model = trained_codes(args)
        packed, bits = packed_database(clustered_chunks(codes, classes, args.avdigits_size, 2))
        databases.append(bench_database(f"avdigits-{args.avdigits_size:,}", packed, bits,
                                        queries[:args.queries], args, limit["comparisons_per_s"],
                                        uniform=False))
    report = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "faiss": faiss.__version__,
                    "numpy": np.__version__},
        "settings": {"k": args.k, "queries": args.queries, "threads": args.threads,
                     "kinds": args.kinds, "hnsw_max": args.hnsw_max, "avdigits_model": model,
                     "multihash_nhash": args.multihash_nhash, "repeats": args.repeats},
        "popcount_limit": limit, "databases": databases,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nwrote {out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
