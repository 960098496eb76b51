"""Retrieval metrics for ±1 hash codes: Hamming ranking, mAP@K, P@K, R@K, GmAP, PR curve.

Conventions (reference-facts §3), stated once here and in every docstring that depends on them:

* Codes are ±1 (int8 arrays or tensors of shape (N, bits)); the Hamming distance is
  ``0.5 * (bits - q·b)``.
* **Ranking.** The database is ranked for each query by the key (distance, database index):
  nearer first, and among equal distances the lower database index first. Published code ranks
  with an unstable sort, so ties (frequent at 16-32 bits) are broken arbitrarily there; here the
  ranking, and so every number, is a deterministic function of the codes.
* **Relevance** = sharing at least one label (labels are (N, C) multi-hot; 1-D integer class
  ids are accepted as single labels). ``R_q`` is the number of database items relevant to
  query q (after self-exclusion, below).
* **AP@K normalisations** (``rel_r`` ∈ {0, 1} at rank r, ``P(r)`` the precision at rank r,
  ``S_K = Σ_{r≤K} rel_r·P(r)``):

  - ``"k"`` (default; the SSVH line of work): ``AP@K = S_K / K``;
  - ``"retrieved"`` (AV-NAS's code): ``AP@K = S_K / (relevant items within the top K)``, and 0
    when none is retrieved;
  - ``"min"`` (VHMT's paper): ``AP@K = S_K / min(K, R_q)``, and 0 when ``R_q = 0``.

  The three give different numbers; the result says which one it used.
* ``P@K`` = relevant within the top K / K; ``R@K`` = relevant within the top K / R_q.
* **K larger than the database** (or than what is left after self-exclusion): the ranking
  simply ends; the positions past its end count as non-relevant and the denominators keep the
  nominal K (what ``ranking[:K]`` followed by ``/ K`` gives in the published code).
* **Queries with no relevant item** (``R_q = 0``) get AP@K = P@K = R@K = 0 and stay in every
  mean (the means are over all queries); their number is reported as
  ``n_queries_without_relevant``.
* **PR curve** over Hamming radius r = 0..bits, **micro-averaged**: with all (query, database)
  pairs pooled, precision(r) = relevant pairs within radius r / pairs within radius r (0 where no
  pair is within r) and recall(r) = relevant pairs within r / all relevant pairs (0 where there
  is none). Micro-averaging is well defined at small radii, where most queries retrieve
  nothing and a per-query precision would be 0/0. The raw pair counts come with the curve.
* **GmAP** = sqrt(Σ_K mAP@K²) over the requested Ks (VHMT Eq. 29, AutoSSVH Eq. 21).
* **topK-precision curve** (the image-hashing papers' "precision w.r.t. top N" figures): P@K
  at every K of ``curve_ks``, same ranking and conventions as P@K.
* **Protocols** (:data:`PROTOCOLS`): the video-hashing one (mAP@5..100 normalised by K, the
  SSVH papers) and the image-hashing one (MAP@1000 as DPSH's and LAGNH's code compute it,
  normalised by the relevant items retrieved within the top K, with mAP@5..100 beside it, and
  the topK-precision curve up to 1000), picked by the kind of data (:func:`protocol_for`).

Everything is computed in blocks of queries; no (N_query × N_database) matrix is ever built.
See :func:`retrieval_metrics` for the block design.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from avsearch._threads import run_workers
from avsearch.errors import AvsearchInputError

__all__ = ["NORMALISATIONS", "DEFAULT_KS", "TOPK_CURVE_KS", "Protocol", "PROTOCOLS",
           "protocol_for", "hamming_distance", "rank", "retrieval_metrics"]

# AP@K's denominators (module docstring) and, for reports, what each divides by
NORMALISATIONS = {
    "k": "K (the SSVH papers' convention)",
    "retrieved": "the number of relevant items retrieved (the AV-NAS code's convention)",
    "min": "min(K, number of relevant items)",
}
DEFAULT_KS = (5, 20, 40, 60, 80, 100)
# the K of the image-hashing papers' topK-precision curves
TOPK_CURVE_KS = (1, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
DEFAULT_BLOCK_SIZE = 4096


@dataclass(frozen=True)
class Protocol:
    """How a kind of data is evaluated: the mAP cut-offs, AP@K's normalisation and the K of the
    topK-precision curve (empty: none)."""

    name: str
    ks: tuple[int, ...]
    normalisation: str
    curve_ks: tuple[int, ...] = ()
    summary: str = ""


PROTOCOLS = {
    "video": Protocol("video", DEFAULT_KS, "k", (),
                      "mAP@5..100 normalised by K (the SSVH papers)"),
    "image": Protocol("image", DEFAULT_KS + (1000,), "retrieved", TOPK_CURVE_KS,
                      "MAP@1000 normalised by the relevant items retrieved (DPSH's and LAGNH's "
                      "code), mAP@5..100 beside it, and the topK-precision curve to 1000"),
}


def protocol_for(images: bool) -> Protocol:
    """The protocol of image data (one feature vector per item) or of sequences."""
    return PROTOCOLS["image" if images else "video"]

ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequences
_JIT = dict(cache=True, nogil=True)


# ------------------------------------------------------------------------------------ inputs


def _as_codes(codes: ArrayLike, name: str) -> np.ndarray:
    """``codes`` as an int8 (N, bits) numpy array of ±1; raise on anything else."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise AvsearchInputError(f"{name} must have shape (N, bits), got {arr.shape}")
    if arr.shape[1] == 0:
        raise AvsearchInputError(f"{name} has 0 bits")
    if arr.dtype == np.bool_ or not np.all((arr == 1) | (arr == -1)):
        raise AvsearchInputError(f"{name} must hold only +1 and -1 (for 0/1 bits use 2*b-1)")
    return arr.astype(np.int8, copy=False)


def _as_labels(q_labels: ArrayLike, db_labels: ArrayLike, nq: int,
               nd: int) -> tuple[np.ndarray, np.ndarray]:
    """Both label sets as bool (N, C) multi-hot with the same C.

    1-D integer arrays are class ids (one label per item); 2-D arrays are multi-hot (any
    non-zero entry is a label).
    """
    q = np.asarray(q_labels.cpu() if isinstance(q_labels, torch.Tensor) else q_labels)
    d = np.asarray(db_labels.cpu() if isinstance(db_labels, torch.Tensor) else db_labels)
    if q.ndim != d.ndim or q.ndim not in (1, 2):
        raise AvsearchInputError("labels must both be (N, C) multi-hot or both 1-D class ids, "
                                 f"got shapes {q.shape} and {d.shape}")
    if len(q) != nq or len(d) != nd:
        raise AvsearchInputError(f"{len(q)} query labels for {nq} query codes or {len(d)} "
                                 f"database labels for {nd} database codes")
    if q.ndim == 1:
        if not (np.issubdtype(q.dtype, np.integer) and np.issubdtype(d.dtype, np.integer)):
            raise AvsearchInputError("1-D labels must be integer class ids")
        if q.min(initial=0) < 0 or d.min(initial=0) < 0:
            raise AvsearchInputError("class ids must be non-negative")
        c = int(max(q.max(initial=-1), d.max(initial=-1))) + 1
        qm = np.zeros((nq, c), dtype=bool)
        qm[np.arange(nq), q] = True
        dm = np.zeros((nd, c), dtype=bool)
        dm[np.arange(nd), d] = True
        return qm, dm
    if q.shape[1] != d.shape[1]:
        raise AvsearchInputError(f"query labels have {q.shape[1]} classes, database labels "
                                 f"{d.shape[1]}")
    return q != 0, d != 0


def _self_positions(exclude_self_ids: tuple[Sequence[Hashable], Sequence[Hashable]] | None,
                    nq: int, nd: int) -> np.ndarray | None:
    """For each query, the database position holding the same id (or -1); None if unused."""
    if exclude_self_ids is None:
        return None
    try:
        query_ids, db_ids = exclude_self_ids
    except (TypeError, ValueError):
        raise AvsearchInputError("exclude_self_ids must be a pair (query_ids, db_ids)") from None
    query_ids = query_ids.tolist() if hasattr(query_ids, "tolist") else list(query_ids)
    db_ids = db_ids.tolist() if hasattr(db_ids, "tolist") else list(db_ids)
    if len(query_ids) != nq or len(db_ids) != nd:
        raise AvsearchInputError(f"exclude_self_ids: {len(query_ids)} query ids for {nq} "
                                 f"queries or {len(db_ids)} database ids for {nd} items")
    where = {i: j for j, i in enumerate(db_ids)}
    if len(where) != nd:
        raise AvsearchInputError("exclude_self_ids: database ids are not unique")
    return np.array([where.get(i, -1) for i in query_ids], dtype=np.int64)


# ------------------------------------------------------------------------------ bit packing


def _pack_bits(hot: np.ndarray) -> np.ndarray:
    """(N, C) bool as (N, max(1, ceil(C/64))) uint64 words, bit c of row n = hot[n, c].

    Codes: the Hamming distance is the popcount of the XOR of two rows (padding bits are 0 in
    both). Labels: two items share a label iff their rows have a common bit.
    """
    n, c = hot.shape
    words = max(1, (c + 63) // 64)
    packed = np.zeros((n, words * 8), dtype=np.uint8)
    if c:
        packed[:, :(c + 7) // 8] = np.packbits(hot, axis=1, bitorder="little")
    return packed.view(np.uint64).reshape(n, words)


# ------------------------------------------------------------------------- blocked ranking


@intrinsic
def _popcount64(typingctx, x):
    """Number of set bits of a uint64 as an int64 (LLVM's ctpop: one POPCNT on x86-64).

    Typed int64 so that distance arithmetic stays in signed integers (numba turns mixed
    uint64/int64 arithmetic into float64).
    """
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@njit(**_JIT)
def _shares(qmask, i, dmask, j, qwords, n_qwords):
    """Do query i and database item j share a label? (only the query's non-zero words)."""
    for t in range(n_qwords):
        w = qwords[t]
        if qmask[i, w] & dmask[j, w]:
            return 1
    return 0


@njit(**_JIT)
def _rank_rows(qbits, dbits, qmask, dmask, self_col, out_idx, out_dist, out_rel, hist, r0, r1):
    """Rank the database for queries [r0, r1) and count their pairs; no N_q × N_db data.

    Per query, two passes over the database:

    1. per item: distance = popcount(q XOR b) over the code words, kept in a row buffer of
       N_db int32; relevance = any common label bit; the pair counted into
       ``hist[i, 2·distance + relevant]`` (PR curve and R_q);
    2. a counting sort: with ``start[d]`` = number of items nearer than d (from the counts),
       the items are scanned in index order and each item at distance d goes to rank
       ``start[d]``, which then moves on by one; only ranks < kmax are written. This is the
       ranking by (distance, database index) exactly, ties by index by construction, in
       O(N_db) per query and without a comparison sort.

    A query's own item (``self_col[i]`` ≥ 0) is taken back out of the counts and given
    distance bits+1: never ranked. Ranks past the end of a short ranking hold index −1,
    distance −1, not relevant.
    """
    nd = dbits.shape[0]
    code_words = dbits.shape[1]
    kmax = out_idx.shape[1]
    bits = hist.shape[1] // 2 - 1
    drow = np.empty(nd, dtype=np.int32)
    start = np.empty(bits + 1, dtype=np.int64)
    qwords = np.empty(qmask.shape[1], dtype=np.int64)
    for i in range(r0, r1):
        n_qwords = 0
        for w in range(qmask.shape[1]):
            if qmask[i, w] != 0:
                qwords[n_qwords] = w
                n_qwords += 1
        h = hist[i]
        if code_words == 1 and n_qwords <= 1:   # ≤ 64 bits, labels in one word: the hot loop
            q0 = qbits[i, 0]
            w0 = qwords[0] if n_qwords else 0
            m0 = qmask[i, w0]
            for j in range(nd):
                d = _popcount64(q0 ^ dbits[j, 0])
                rel = 1 if m0 & dmask[j, w0] else 0
                drow[j] = d
                h[2 * d + rel] += 1
        else:
            for j in range(nd):
                d = 0
                for w in range(code_words):
                    d += _popcount64(qbits[i, w] ^ dbits[j, w])
                drow[j] = d
                h[2 * d + _shares(qmask, i, dmask, j, qwords, n_qwords)] += 1
        own = self_col[i]
        if own >= 0:
            h[2 * drow[own] + _shares(qmask, i, dmask, own, qwords, n_qwords)] -= 1
            drow[own] = bits + 1
        total = 0
        last = -1                        # the farthest distance that still reaches rank kmax
        for d in range(bits + 1):
            start[d] = total
            if total < kmax:
                last = d
            total += h[2 * d] + h[2 * d + 1]
        for r in range(kmax):
            out_idx[i, r] = -1
            out_dist[i, r] = -1
            out_rel[i, r] = False
        for j in range(nd):
            d = drow[j]
            if d > last:
                continue
            r = start[d]
            if r < kmax:
                start[d] = r + 1
                out_idx[i, r] = j
                out_dist[i, r] = d
                out_rel[i, r] = _shares(qmask, i, dmask, j, qwords, n_qwords) == 1




def _run_rows(kernel: Any, args: tuple, rows: int, workers: int) -> None:
    """Run ``kernel(*args, r0, r1)`` on ``workers`` contiguous row ranges."""
    workers = max(1, min(workers, rows))
    bounds = np.linspace(0, rows, workers + 1).astype(np.int64)
    run_workers(lambda t: kernel(*args, int(bounds[t]), int(bounds[t + 1])), workers)


def _workers(threads: int | None) -> int:
    """Threads for the kernels: ``threads``, else torch's intra-op setting."""
    if threads is None:
        return max(1, torch.get_num_threads())
    if threads < 1:
        raise AvsearchInputError(f"threads must be >= 1, got {threads}")
    return int(threads)


def _ranked_blocks(qc: np.ndarray, dc: np.ndarray, kmax: int, block_size: int,
                   self_pos: np.ndarray | None, ql: np.ndarray | None, dl: np.ndarray | None,
                   workers: int) -> Iterator[dict[str, Any]]:
    """Rank the database for each block of queries; yield per-block results.

    Codes and labels are packed into uint64 words once; each block of queries is split into
    one contiguous row range per thread and run through :func:`_rank_rows`. Memory per block:
    the outputs (block_size × kmax) and the per-row counts (block_size × (2·bits+2)), plus one
    N_db row buffer per thread.

    Yields dicts with ``start``, ``stop``, ``index`` and ``distance`` ((b, kmax) int64, −1
    past the end of a short ranking), ``rel_topk`` ((b, kmax) bool), ``n_relevant`` ((b,)
    int64) and ``hist`` ((2·bits+2,) int64: even slots count non-relevant pairs at distance
    slot//2, odd slots relevant ones).
    """
    nq, bits = qc.shape
    qbits, dbits = _pack_bits(qc > 0), _pack_bits(dc > 0)
    if ql is None:
        qmask = np.zeros((nq, 1), dtype=np.uint64)
        dmask = np.zeros((dc.shape[0], 1), dtype=np.uint64)
    else:
        qmask, dmask = _pack_bits(ql), _pack_bits(dl)
    self_col = self_pos if self_pos is not None else np.full(nq, -1, dtype=np.int64)
    bs = max(1, min(block_size, nq))
    for start in range(0, nq, bs):
        stop = min(start + bs, nq)
        b = stop - start
        idx = np.empty((b, kmax), dtype=np.int64)
        dist = np.empty((b, kmax), dtype=np.int64)
        rel = np.empty((b, kmax), dtype=np.bool_)
        hist = np.zeros((b, 2 * bits + 2), dtype=np.int64)
        _run_rows(_rank_rows, (qbits[start:stop], dbits, qmask[start:stop], dmask,
                               self_col[start:stop], idx, dist, rel, hist), b, workers)
        yield {"start": start, "stop": stop, "index": idx, "distance": dist, "rel_topk": rel,
               "n_relevant": hist[:, 1::2].sum(axis=1), "hist": hist.sum(axis=0)}


def _relevant_counts(qmask: np.ndarray, dmask: np.ndarray, pairs: int = 1 << 24) -> np.ndarray:
    """R_q from the packed labels alone: database items sharing a label with each query.

    Items with the same label set are counted once per set (``np.unique``), so the work is
    N_q × (distinct label sets), in chunks of at most ``pairs`` (query, set) pairs.
    """
    sets, counts = np.unique(dmask, axis=0, return_counts=True)
    out = np.empty(qmask.shape[0], dtype=np.int64)
    step = max(1, pairs // max(1, len(sets)))
    for s in range(0, qmask.shape[0], step):
        shares = ((qmask[s:s + step, None, :] & sets[None]) != 0).any(axis=2)
        out[s:s + step] = shares @ counts
    return out


def _searched_blocks(qc: np.ndarray, kmax: int, block_size: int, self_pos: np.ndarray | None,
                     ql: np.ndarray, dl: np.ndarray,
                     search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
                     ) -> Iterator[dict[str, Any]]:
    """:func:`_ranked_blocks` with the top ``kmax`` from an exact ``search`` (ranked by
    (distance, database index) like the kernel) and R_q from the labels; without pair counts
    (``hist`` stays 0), so no PR curve."""
    qmask, dmask = _pack_bits(ql), _pack_bits(dl)
    n_relevant = _relevant_counts(qmask, dmask)
    extra = 0 if self_pos is None else 1      # one more, for the query's own item dropped below
    bs = max(1, min(block_size, len(qc)))
    for start in range(0, len(qc), bs):
        stop = min(start + bs, len(qc))
        idx, dist = (np.asarray(a, dtype=np.int64) for a in search(qc[start:stop], kmax + extra))
        rows = np.arange(stop - start)[:, None]
        rq = n_relevant[start:stop].copy()
        if self_pos is not None:
            own = self_pos[start:stop]
            mine = own >= 0
            rq[mine] -= (qmask[start:stop][mine] & dmask[own[mine]]).any(axis=1)
            keep = (idx != own[:, None]) | (own[:, None] < 0)
            order = np.argsort(~keep, axis=1, kind="stable")    # kept items first, in rank order
            idx, dist, keep = idx[rows, order], dist[rows, order], keep[rows, order]
            idx[~keep], dist[~keep] = -1, -1
        if idx.shape[1] < kmax:                              # a short ranking: pad like the kernel
            pad = np.full((stop - start, kmax - idx.shape[1]), -1, dtype=np.int64)
            idx, dist = np.hstack([idx, pad]), np.hstack([dist, pad])
        idx, dist = idx[:, :kmax], dist[:, :kmax]
        valid = idx >= 0
        rel = valid & ((qmask[start:stop][:, None, :] & dmask[np.where(valid, idx, 0)]) != 0).any(2)
        yield {"start": start, "stop": stop, "index": idx, "distance": dist, "rel_topk": rel,
               "n_relevant": rq, "hist": np.zeros(2 * qc.shape[1] + 2, dtype=np.int64)}


# ------------------------------------------------------------------------------ public API


def hamming_distance(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Full (N_a, N_b) int64 Hamming distance matrix ``0.5·(bits − a·b)`` of ±1 codes.

    For small inputs (tests, inspection): it builds the whole matrix. Large evaluations go
    through :func:`rank` / :func:`retrieval_metrics`, which never do.
    """
    a_, b_ = _as_codes(a, "a"), _as_codes(b, "b")
    if a_.shape[1] != b_.shape[1]:
        raise AvsearchInputError(f"codes have {a_.shape[1]} and {b_.shape[1]} bits")
    ip = a_.astype(np.int64) @ b_.astype(np.int64).T
    return (a_.shape[1] - ip) // 2


def rank(query_codes: ArrayLike, db_codes: ArrayLike, k: int, *,
         block_size: int = DEFAULT_BLOCK_SIZE,
         exclude_self_ids: tuple[Sequence[Hashable], Sequence[Hashable]] | None = None,
         threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first k database items for each query, ranked by (Hamming distance, database index).

    Ties in distance are broken by the lower database index, so the result is deterministic.

    Args:
        query_codes: (N_q, bits) ±1 codes.
        db_codes: (N_db, bits) ±1 codes.
        k: how many to return; capped at N_db.
        block_size: queries per block (memory ≈ block_size · k · 17 bytes).
        exclude_self_ids: ``(query_ids, db_ids)``; a query's own id is removed from its ranking
            (the FCVID protocol, where every query is in the database).
        threads: threads for the call (None: torch's intra-op setting).

    Returns:
        ``(indices, distances)``, both int64 (N_q, min(k, N_db)). Where a ranking is shorter
        than that (self excluded and k ≥ N_db) the tail holds index −1 and distance −1.
    """
    qc, dc = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    _check_pair(qc, dc)
    if k < 1:
        raise AvsearchInputError(f"k must be >= 1, got {k}")
    kmax = min(int(k), dc.shape[0])
    self_pos = _self_positions(exclude_self_ids, qc.shape[0], dc.shape[0])
    indices = np.empty((qc.shape[0], kmax), dtype=np.int64)
    distances = np.empty((qc.shape[0], kmax), dtype=np.int64)
    if block_size < 1:
        raise AvsearchInputError(f"block_size must be >= 1, got {block_size}")
    for blk in _ranked_blocks(qc, dc, kmax, block_size, self_pos, None, None,
                              _workers(threads)):
        s, e = blk["start"], blk["stop"]
        indices[s:e] = blk["index"]
        distances[s:e] = blk["distance"]
    return indices, distances


def _check_pair(qc: np.ndarray, dc: np.ndarray) -> None:
    if qc.shape[1] != dc.shape[1]:
        raise AvsearchInputError(f"query codes have {qc.shape[1]} bits, database codes "
                                 f"{dc.shape[1]}")
    if qc.shape[0] == 0 or dc.shape[0] == 0:
        raise AvsearchInputError("no queries or an empty database")


def retrieval_metrics(query_codes: ArrayLike, query_labels: ArrayLike, db_codes: ArrayLike,
                      db_labels: ArrayLike, ks: Sequence[int] = DEFAULT_KS,
                      normalisation: str = "k", pr_curve: bool = True,
                      exclude_self_ids: tuple[Sequence[Hashable], Sequence[Hashable]]
                      | None = None, *, block_size: int = DEFAULT_BLOCK_SIZE,
                      threads: int | None = None, per_query: bool = False,
                      search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
                      | None = None, curve_ks: Sequence[int] = ()) -> dict[str, Any]:
    """mAP@K, P@K, R@K for every K, GmAP, a Hamming-radius PR curve and a topK-precision
    curve of ±1 codes.

    Conventions (module docstring): ranking by (distance, database index); relevance = sharing
    a label; AP@K normalised by ``normalisation`` ∈ {"k", "retrieved", "min"}; positions past the
    end of the database are non-relevant and K stays nominal; queries with R_q = 0 score 0 and
    stay in the means; the PR curve is micro-averaged over (query, database) pairs.

    Design: codes and labels are packed into uint64 bit words once. Queries are processed in
    blocks of ``block_size``, each block's rows split over ``threads`` by a numba kernel
    (:func:`_rank_rows`) that makes two passes over the database per query: pass 1 computes
    each distance (popcount of XOR) and relevance (a common label bit) and counts the pair into
    the query's distance histogram (PR curve, R_q); pass 2 is a counting sort: the histogram
    gives each distance's first rank, so scanning the database in index order puts every item
    within the first max(ks) at its exact rank under (distance, index) — ties by index by
    construction, O(N_db) per query, no comparison sort. Nothing of size N_q × N_db exists;
    per block the memory is block_size × (max(ks) + 2·bits) numbers.

    Args:
        query_codes: (N_q, bits) ±1 int8 array or tensor.
        query_labels: (N_q, C) multi-hot (bool or 0/1), or (N_q,) integer class ids.
        db_codes: (N_db, bits) ±1.
        db_labels: (N_db, C) multi-hot, or (N_db,) class ids.
        ks: cut-offs K.
        normalisation: which AP@K denominator (see module docstring).
        pr_curve: also return the precision–recall curve over radius 0..bits (its counts are
            a by-product of the fused pass, so leaving it out saves no time).
        exclude_self_ids: ``(query_ids, db_ids)`` to drop each query's own id from its ranking,
            from R_q and from the PR counts (FCVID protocol: queries are in the database).
        block_size: queries per block.
        threads: threads for this call (None: torch's intra-op setting).
        per_query: also return per-query arrays (AP, P, R per K; R_q).
        search: an exact top-k search over ``db_codes`` to rank with instead of the kernel:
            ``search(query_codes_block, k) -> (indices, distances)`` ranked by (distance,
            database index), −1 past the end (``avsearch.index``'s flat index for large
            databases). R_q then comes from the labels alone; a search gives no pair counts,
            so it needs ``pr_curve=False``.
        curve_ks: the K of the topK-precision curve (P@K at each, from the same ranking);
            empty: no curve.

    Returns:
        A dict: ``normalisation``, ``ks``, ``map`` / ``precision`` / ``recall`` (K -> float),
        ``gmap``, ``pr_curve`` (or None), ``topk_precision`` (``{"k": [...], "precision":
        [...]}``, or None without ``curve_ks``), ``n_queries``, ``n_database``, ``bits``,
        ``n_queries_without_relevant``, ``tie_break``, ``self_excluded``, and ``per_query``
        when asked.
    """
    if normalisation not in NORMALISATIONS:
        raise AvsearchInputError(f"normalisation must be one of {tuple(NORMALISATIONS)}, "
                                 f"got {normalisation!r}")
    ks_list = list(dict.fromkeys(int(k) for k in ks))
    if not ks_list or min(ks_list) < 1:
        raise AvsearchInputError(f"ks must be positive integers, got {list(ks)}")
    curve_list = sorted(set(int(k) for k in curve_ks))
    if curve_list and curve_list[0] < 1:
        raise AvsearchInputError(f"curve_ks must be positive integers, got {list(curve_ks)}")
    if block_size < 1:
        raise AvsearchInputError(f"block_size must be >= 1, got {block_size}")
    qc, dc = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    _check_pair(qc, dc)
    nq, bits = qc.shape
    nd = dc.shape[0]
    ql, dl = _as_labels(query_labels, db_labels, nq, nd)
    self_pos = _self_positions(exclude_self_ids, nq, nd)
    kmax = min(max(ks_list + curve_list), nd)

    ap = np.zeros((nq, len(ks_list)))
    prec = np.zeros((nq, len(ks_list)))
    rec = np.zeros((nq, len(ks_list)))
    n_rel = np.zeros(nq, dtype=np.int64)
    hist = np.zeros(2 * bits + 2, dtype=np.int64)
    cols = [min(k, kmax) - 1 for k in ks_list]
    k_arr = np.array(ks_list, dtype=np.float64)
    curve_cols = [min(k, kmax) - 1 for k in curve_list]
    curve_hits = np.zeros(len(curve_list))
    ranks = np.arange(1, kmax + 1, dtype=np.float64)

    if search is not None and pr_curve:
        raise AvsearchInputError("the PR curve counts every (query, database) pair, which a "
                                 "top-k search does not see: pass pr_curve=False with search")
    blocks = (_ranked_blocks(qc, dc, kmax, block_size, self_pos, ql, dl, _workers(threads))
              if search is None else
              _searched_blocks(qc, kmax, block_size, self_pos, ql, dl, search))
    for blk in blocks:
        s, e = blk["start"], blk["stop"]
        relk = blk["rel_topk"].astype(np.float64)                    # (b, kmax)
        hits_r = np.cumsum(relk, axis=1)                             # relevant within rank r
        s_r = np.cumsum(relk * hits_r / ranks, axis=1)               # Σ_{r'≤r} rel·P(r')
        hits = hits_r[:, cols]                                       # (b, nK)
        curve_hits += hits_r[:, curve_cols].sum(axis=0)
        sums = s_r[:, cols]
        rq = blk["n_relevant"]
        n_rel[s:e] = rq
        rq_col = rq[:, None].astype(np.float64)
        if normalisation == "k":
            ap[s:e] = sums / k_arr
        elif normalisation == "retrieved":
            ap[s:e] = np.divide(sums, hits, out=np.zeros_like(sums), where=hits > 0)
        else:
            denom = np.minimum(k_arr, rq_col)
            ap[s:e] = np.divide(sums, denom, out=np.zeros_like(sums), where=denom > 0)
        prec[s:e] = hits / k_arr
        rec[s:e] = np.divide(hits, rq_col, out=np.zeros_like(hits), where=rq_col > 0)
        hist += blk["hist"]

    maps = {k: float(v) for k, v in zip(ks_list, ap.mean(0))}
    result: dict[str, Any] = {
        "normalisation": normalisation,
        "ks": ks_list,
        "map": maps,
        "precision": {k: float(v) for k, v in zip(ks_list, prec.mean(0))},
        "recall": {k: float(v) for k, v in zip(ks_list, rec.mean(0))},
        "gmap": math.sqrt(sum(v * v for v in maps.values())),
        "pr_curve": _pr_curve(hist, bits) if pr_curve else None,
        "topk_precision": ({"k": curve_list,
                            "precision": (curve_hits / nq / np.array(curve_list)).tolist()}
                           if curve_list else None),
        "n_queries": nq,
        "n_database": nd,
        "bits": bits,
        "n_queries_without_relevant": int(np.count_nonzero(n_rel == 0)),
        "tie_break": "database index",
        "self_excluded": self_pos is not None,
    }
    if per_query:
        result["per_query"] = {"ap": ap, "precision": prec, "recall": rec, "n_relevant": n_rel}
    return result


def _pr_curve(hist: np.ndarray, bits: int) -> dict[str, Any]:
    """Micro-averaged precision and recall at every Hamming radius 0..bits from pair counts."""
    relevant_at = hist[1::2]                          # relevant pairs at distance d
    all_at = hist[0::2] + relevant_at
    retrieved = np.cumsum(all_at)
    relevant_retrieved = np.cumsum(relevant_at)
    total_relevant = int(relevant_at.sum())
    precision = np.divide(relevant_retrieved, retrieved, out=np.zeros(bits + 1),
                          where=retrieved > 0)
    recall = (relevant_retrieved / total_relevant if total_relevant
              else np.zeros(bits + 1))
    return {
        "averaging": "micro",
        "radius": list(range(bits + 1)),
        "precision": precision.tolist(),
        "recall": np.asarray(recall, dtype=np.float64).tolist(),
        "retrieved": retrieved.tolist(),
        "relevant_retrieved": relevant_retrieved.tolist(),
        "relevant_total": total_relevant,
    }
