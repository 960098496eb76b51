"""Numba kernels of the exact binary index kinds (:mod:`avsearch.index`): a flat scan and
multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012 / TPAMI 2014), both over codes packed
into uint64 words, both ranking by (Hamming distance, database index).

**Top k.** Each query keeps a max-heap of at most k int64 keys ``distance << 40 | index``: one
integer comparison orders two items by (distance, index), so the heap holds exactly the k first
items by that key whatever order they are offered in, ties included (items < 2^40).

**Flat scan** (:func:`scan_rows`). Queries go in blocks of :data:`QUERY_BLOCK`, the database in
chunks of :data:`CHUNK` codes that stay in L1 while every query of the block scans them (memory
traffic / QUERY_BLOCK). A query scans items in index order, so an item tied with the heap's
largest key has a larger index and never enters: the filter is ``distance < heap's largest
distance``. For codes of one word, each run of :data:`RUN` items first takes the minimum of
its distances (a loop LLVM vectorises: SIMD popcount and min) and is skipped when that minimum
cannot enter, which is nearly always once the heap is full.

**Multi-index hashing** (:func:`mih_rows`). The code is cut into m disjoint substrings; table j
sorts the items by substring j (a stable sort: index order within a bucket) and keeps
``offsets`` (CSR: bucket s holds positions offsets[s]..offsets[s+1]), the items' indexes and a
copy of their codes in that order, so a bucket is read as one contiguous run. A query probes,
for r = 0, 1, 2 …, and within r substring j = 0 … m−1, every bucket at distance exactly r from
its substring j (Gosper's enumeration of r-bit masks). After substrings 0 … a−1 have been
probed at radius r and the others at r − 1, an item not yet found differs in at least r + 1
bits in each of the first a substrings and r in the others, so its distance is at least
``m·r + a`` (pigeonhole over the substrings, which partition the code). The search stops when
the heap holds k items whose largest distance is below that bound, or when the bound passes
the radius asked for: the result is then exactly the flat scan's. An item is seen in every
table where its substring lies within the probed radius; it is offered to the heap only at its
first sighting (radius r = the smallest of its substring distances, j = the first substring at
that distance), which the kernel decides from the item's code alone, with no per-query
``seen`` set to clear.

The queries of a call are searched together, one level (r, j) at a time for all those
still searching: their (bucket, query) pairs are sorted by bucket, so the table is read front
to back and a bucket that several queries probe is read from memory once (on 10M random
codes, about 8 queries share each bucket at r = 3). Within a bucket, one SIMD pass takes the
smallest distance, which rules out nearly every bucket; only items within the heap's limit
(or the cap) are checked one by one.

Probing costs grow as C(b_j, r) per substring: where the next level would cost more than a
scan (clustered codes, a large radius, a small database), the query is left to the flat scan,
which then runs for all such queries together (exact either way); with a cap on the flips
per table (``max_flips``) it never scans, stops at that radius, and is approximate.

:func:`expected_work` is the paper's cost analysis for uniformly random codes: the probes and
candidates a k-NN query needs with m substrings, which chooses m (:mod:`avsearch.index`)
and which the benchmark sets beside what it measures.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from avsearch.metrics import _popcount64

__all__ = ["KEY_SHIFT", "TO_SCAN", "scan_rows", "mih_rows", "build_tables", "decode",
           "substrings", "uniform_kth", "expected_work"]

_JIT = dict(cache=True, nogil=True)
KEY_SHIFT = 40                 # key = distance << 40 | index
_INDEX_MASK = (1 << KEY_SHIFT) - 1
QUERY_BLOCK = 32               # queries that share one pass over a database chunk
CHUNK = 2048                   # database codes per chunk (16 KiB of one-word codes: L1)
RUN = 256                      # items whose minimum distance is taken before any is offered
TO_SCAN = 1                    # mih_rows's status of a query left to the flat scan
PAIRS = 1 << 22                # (bucket, query) pairs mih_rows sorts at a time


# --------------------------------------------------------------------------------- the heap
@njit(**_JIT)
def _offer(heap, n, key):
    """Offer ``key`` to the max-heap ``heap[:n]`` (capacity ``len(heap)``); the new size."""
    k = heap.shape[0]
    if n < k:
        i = n
        while i > 0:
            parent = (i - 1) // 2
            if heap[parent] >= key:
                break
            heap[i] = heap[parent]
            i = parent
        heap[i] = key
        return n + 1
    if key >= heap[0]:
        return n
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and heap[child + 1] > heap[child]:
            child += 1
        if heap[child] <= key:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = key
    return n


@njit(**_JIT)
def _distance(q, codes, t):
    """Hamming distance of query words ``q`` (W,) and row ``t`` of ``codes`` (N, W)."""
    d = 0
    for w in range(q.shape[0]):
        d += _popcount64(q[w] ^ codes[t, w])
    return d


# ------------------------------------------------------------------------------- flat scan
@njit(**_JIT)
def _run_min(q0, run):
    """The smallest distance of one-word query ``q0`` to a run of one-word codes. A loop from
    0 over a slice, which LLVM vectorises (SIMD popcount and min); indexing from a variable
    start, numba's negative-index check keeps it scalar and several times slower."""
    low = 64
    for t in range(run.shape[0]):
        low = min(low, _popcount64(q0 ^ run[t]))
    return low


@njit(**_JIT)
def _scan(q, codes, flat, lo, hi, heap, n, cap):
    """Offer items lo … hi−1 of ``codes`` (N, W), in index order, with distance < ``cap``, to
    the heap; ``flat``: the same codes as one (N,) array when W = 1 (else unused). The new
    heap size."""
    k = heap.shape[0]
    j = lo
    while j < hi and n < k:                      # the heap fills with the first items < cap
        d = _distance(q, codes, j)
        if d < cap:
            n = _offer(heap, n, (d << KEY_SHIFT) | j)
        j += 1
    if n < k:
        return n
    limit = min(cap, heap[0] >> KEY_SHIFT)       # later items enter only when nearer
    if codes.shape[1] == 1:
        q0 = q[0]
        while j < hi:
            end = min(j + RUN, hi)
            run = flat[j:end]
            if _run_min(q0, run) < limit:
                for t in range(run.shape[0]):
                    d = _popcount64(q0 ^ run[t])
                    if d < limit:
                        n = _offer(heap, n, (d << KEY_SHIFT) | (j + t))
                        limit = min(cap, heap[0] >> KEY_SHIFT)
            j = end
    else:
        while j < hi:
            d = _distance(q, codes, j)
            if d < limit:
                n = _offer(heap, n, (d << KEY_SHIFT) | j)
                limit = min(cap, heap[0] >> KEY_SHIFT)
            j += 1
    return n


@njit(**_JIT)
def scan_rows(queries, codes, heaps, sizes, cap, r0, r1):
    """The flat top k of queries r0 … r1−1 (``queries`` (Q, W), ``codes`` (N, W) uint64):
    ``heaps[i]`` (k,) keys and ``sizes[i]`` how many, for items with distance < ``cap``."""
    flat = codes.reshape(codes.shape[0] * codes.shape[1])
    n_items = codes.shape[0]
    for b0 in range(r0, r1, QUERY_BLOCK):
        b1 = min(b0 + QUERY_BLOCK, r1)
        for c0 in range(0, n_items, CHUNK):
            c1 = min(c0 + CHUNK, n_items)
            for i in range(b0, b1):
                sizes[i] = _scan(queries[i], codes, flat, c0, c1, heaps[i], sizes[i], cap)


# ----------------------------------------------------------------- multi-index hashing
@njit(**_JIT)
def _substring(words, start, length):
    """Bits start … start+length−1 (length ≤ 32) of a code given as uint64 words."""
    w = start // 64
    off = start % 64
    value = words[w] >> np.uint64(off)
    if off + length > 64:
        value |= words[w + 1] << np.uint64(64 - off)
    return np.int64(value & ((np.uint64(1) << np.uint64(length)) - np.uint64(1)))


@njit(**_JIT)
def _first_sighting(q, codes, t, starts, lengths, r, j):
    """Is (radius r, substring j) where the search meets item ``t`` first? Yes iff r is the
    smallest of its substring distances and j the first substring at that distance."""
    row = codes[t]
    for s in range(starts.shape[0]):
        ds = _popcount64(np.uint64(_substring(q, starts[s], lengths[s])
                                   ^ _substring(row, starts[s], lengths[s])))
        if ds < r or (ds == r and s < j):
            return False
    return True


@njit(**_JIT)
def _probe_bucket(q, tcodes, ids, lo, hi, heap, n, cap, starts, lengths, r, j, work):
    """Offer the items of one bucket (positions lo … hi−1 of table j) met first here, for
    codes of several words (:func:`_offer_run` serves one-word codes); ``work[2]`` counts the
    items checked one by one. The new heap size."""
    k = heap.shape[0]
    work[2] += hi - lo
    for t in range(lo, hi):
        d = _distance(q, tcodes, t)
        if d >= cap:
            continue
        key = (d << KEY_SHIFT) | ids[t]
        if n == k and key >= heap[0]:
            continue
        if _first_sighting(q, tcodes, t, starts, lengths, r, j):
            n = _offer(heap, n, key)
    return n


@njit(**_JIT)
def _offer_run(q, tflat, tcodes, ids, lo, hi, heap, n, limit, starts, lengths, r, j, work):
    """:func:`_probe_bucket` for one-word codes, whose bucket's smallest distance is within
    ``limit`` (the heap's largest distance, or the cap's): only items within it are checked
    one by one (``work[2]``)."""
    k = heap.shape[0]
    q0 = q[0]
    for t in range(lo, hi):
        d = _popcount64(q0 ^ tflat[t])
        if d > limit:
            continue
        work[2] += 1
        key = (d << KEY_SHIFT) | ids[t]
        if n == k and key >= heap[0]:
            continue
        if _first_sighting(q, tcodes, t, starts, lengths, r, j):
            n = _offer(heap, n, key)
            if n == k:
                limit = min(limit, heap[0] >> KEY_SHIFT)
    return n


@njit(**_JIT)
def _masks(b, r, count):
    """The ``count`` = C(b, r) masks of b bits with r bits set, increasing (Gosper)."""
    masks = np.empty(count, dtype=np.int64)
    mask = (1 << r) - 1
    for p in range(count):
        masks[p] = mask
        if mask == 0:
            break
        low_bit = mask & -mask
        ripple = mask + low_bit
        mask = (((ripple ^ mask) >> 2) // low_bit) | ripple
    return masks


@njit(**_JIT)
def _by_bucket(bucket, who, b):
    """The pairs (``bucket``, ``who``) sorted by bucket (values < 2^b), as two new arrays
    read front to back after: a counting sort when the buckets are few beside the pairs,
    else a sort."""
    npairs = bucket.shape[0]
    if (1 << b) > 4 * npairs:
        order = np.argsort(bucket)
        return bucket[order], who[order]
    first = np.zeros((1 << b) + 1, dtype=np.int64)
    for t in range(npairs):
        first[bucket[t] + 1] += 1
    for s in range(1 << b):
        first[s + 1] += first[s]
    sorted_bucket = np.empty(npairs, dtype=np.int64)
    sorted_who = np.empty(npairs, dtype=np.int64)
    for t in range(npairs):
        at = first[bucket[t]]
        sorted_bucket[at] = bucket[t]
        sorted_who[at] = who[t]
        first[bucket[t]] = at + 1
    return sorted_bucket, sorted_who


@njit(**_JIT)
def _probe_level(queries, r0, group, keys, masks, offsets, base, row, b, ids, tcodes, tflat,
                 starts, lengths, r, j, heaps, sizes, status, work, spent, active, cap,
                 n_items, max_flips, probe_cost, candidate_cost):
    """Substring j at radius r for the batch positions ``group`` (query row r0 + i): every
    (bucket, query) pair, taken in bucket order, so a bucket several queries probe is read
    once and the table front to back."""
    probes = masks.shape[0]
    bucket = np.empty(group.shape[0] * probes, dtype=np.int64)
    who = np.empty(group.shape[0] * probes, dtype=np.int64)
    t = 0
    for i in group:
        for p in range(probes):
            bucket[t] = keys[i, j] ^ masks[p]
            who[t] = i
            t += 1
    k = heaps.shape[1]
    one_word = tcodes.shape[1] == 1
    bucket, who = _by_bucket(bucket, who, b)
    for t in range(bucket.shape[0]):
        i = who[t]
        if not active[i]:
            continue
        g = r0 + i
        lo = row + offsets[base + bucket[t]]
        hi = row + offsets[base + bucket[t] + 1]
        work[g, 0] += 1
        work[g, 1] += hi - lo
        spent[i] += probe_cost + candidate_cost * (hi - lo)
        if hi > lo:
            n = sizes[g]
            if one_word:
                # the bucket's smallest distance in one SIMD pass rules out nearly every
                # bucket (kept here, not in a call: the pairs are many and the work small)
                limit = cap - 1 if n < k else min(cap - 1, heaps[g, 0] >> KEY_SHIFT)
                if _run_min(queries[g, 0], tflat[lo:hi]) <= limit:
                    sizes[g] = _offer_run(queries[g], tflat, tcodes, ids, lo, hi, heaps[g], n,
                                          limit, starts, lengths, r, j, work[g])
            else:
                sizes[g] = _probe_bucket(queries[g], tcodes, ids, lo, hi, heaps[g], n, cap,
                                         starts, lengths, r, j, work[g])
        if max_flips < 0 and spent[i] > n_items:     # buckets far fuller than the mean
            active[i] = False
            status[g] = TO_SCAN
            sizes[g] = 0


@njit(**_JIT)
def mih_rows(queries, offsets, obase, ids, tcodes, starts, lengths, combs, heaps, sizes,
             status, work, cap, max_flips, probe_cost, candidate_cost, r0, r1):
    """Multi-index hashing for queries r0 … r1−1 (module docstring), together: each level
    (r, j) is probed for every query still searching before the next. ``heaps``, ``sizes``
    as :func:`scan_rows`; ``status[i]`` 0, or :data:`TO_SCAN` where probing would cost more
    than a scan (``probe_cost`` and ``candidate_cost`` in scanned items; heap left empty);
    ``work[i]``: probes, candidates (the items of the buckets probed) and candidates checked
    one by one."""
    m = starts.shape[0]
    n_items = ids.shape[0] // m
    tflat = tcodes.reshape(tcodes.shape[0] * tcodes.shape[1])
    nq = r1 - r0
    k = heaps.shape[1]
    keys = np.empty((nq, m), dtype=np.int64)
    for i in range(nq):
        for j in range(m):
            keys[i, j] = _substring(queries[r0 + i], starts[j], lengths[j])
    active = np.ones(nq, dtype=np.bool_)
    spent = np.zeros(nq)                               # in scanned items
    longest = 0
    for j in range(m):
        longest = max(longest, lengths[j])
    for r in range(longest + 1):
        if max_flips >= 0 and r > max_flips:
            return
        for j in range(m):
            b = lengths[j]
            if r <= b:
                probes = combs[b, r]
                level = probes * (probe_cost + candidate_cost * n_items / 2.0 ** b)
                group = np.empty(nq, dtype=np.int64)
                count = 0
                for i in range(nq):
                    if not active[i]:
                        continue
                    if max_flips < 0 and spent[i] + level > n_items:
                        active[i] = False
                        status[r0 + i] = TO_SCAN
                        sizes[r0 + i] = 0
                    else:
                        group[count] = i
                        count += 1
                masks = _masks(b, r, probes)
                per = max(1, PAIRS // probes)          # bounds the pairs' memory
                for g0 in range(0, count, per):
                    _probe_level(queries, r0, group[g0:min(count, g0 + per)], keys, masks,
                                 offsets, obase[j], j * n_items, b, ids, tcodes, tflat, starts,
                                 lengths, r, j, heaps, sizes, status, work, spent, active, cap,
                                 n_items, max_flips, probe_cost, candidate_cost)
            bound = m * r + j + 1                      # every item not found is this far
            left = 0
            for i in range(nq):
                if active[i]:
                    g = r0 + i
                    if bound >= cap or (sizes[g] == k and (heaps[g, 0] >> KEY_SHIFT) < bound):
                        active[i] = False
                    else:
                        left += 1
            if left == 0:
                return


# ------------------------------------------------------------------------------- building
def substrings(bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of m disjoint substrings covering ``bits``: the first bits % m are
    one bit longer."""
    lengths = np.array([bits // m + (1 if j < bits % m else 0) for j in range(m)], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, lengths


def _substring_keys(codes: np.ndarray, start: int, length: int) -> np.ndarray:
    """Substring (start, length) of every code (N, W) uint64, as int64 (numpy)."""
    w, off = divmod(start, 64)
    value = codes[:, w] >> np.uint64(off)
    if off + length > 64:
        value = value | (codes[:, w + 1] << np.uint64(64 - off))
    return (value & np.uint64((1 << length) - 1)).astype(np.int64)


def build_tables(codes: np.ndarray, bits: int, m: int) -> dict[str, np.ndarray]:
    """The m direct-address tables of ``codes`` (N, W) uint64 (module docstring): numpy only,
    one stable sort per substring (a progress bar from a million items on: seconds each)."""
    from tqdm.auto import tqdm

    n = len(codes)
    starts, lengths = substrings(bits, m)
    index_type = np.int32 if n < 2 ** 31 else np.int64
    offsets, obase, ids, tcodes = [], [0], np.empty(m * n, index_type), np.empty(
        (m * n, codes.shape[1]), np.uint64)
    for j in tqdm(range(m), desc="multihash tables", unit="table", leave=False,
                  disable=n < 1_000_000):
        keys = _substring_keys(codes, int(starts[j]), int(lengths[j]))
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << int(lengths[j]))
        offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(index_type))
        obase.append(obase[-1] + len(offsets[-1]))
        ids[j * n:(j + 1) * n] = order
        tcodes[j * n:(j + 1) * n] = codes[order]
    longest = int(lengths.max())
    combs = np.zeros((longest + 1, longest + 1), dtype=np.int64)
    for b in range(longest + 1):
        for r in range(b + 1):
            combs[b, r] = math.comb(b, r)
    return {"offsets": np.concatenate(offsets), "obase": np.array(obase[:-1], np.int64),
            "ids": ids, "tcodes": tcodes, "starts": starts, "lengths": lengths,
            "combs": combs}


def decode(heaps: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, distance) (Q, k) ranked by (distance, index) from the heaps, −1 past a heap's
    size."""
    k = heaps.shape[1]
    valid = np.arange(k)[None, :] < sizes[:, None]
    keys = np.sort(np.where(valid, heaps, np.iinfo(np.int64).max), axis=1)
    index = np.where(valid, keys & _INDEX_MASK, -1)
    distance = np.where(valid, keys >> KEY_SHIFT, -1)
    return index, distance


def uniform_kth(bits: int, n: int, k: int) -> int:
    """The distance of the k-th neighbour among ``n`` uniformly random ``bits``-bit codes, in
    expectation: the smallest d with n·P(Binomial(bits, ½) ≤ d) ≥ k."""
    within = 0
    for d in range(bits + 1):
        within += math.comb(bits, d)
        if n * within >= k * 2 ** bits:
            return d
    return bits


def expected_work(bits: int, n: int, m: int, k: int,
                  radius: int | None = None) -> tuple[float, float]:
    """(probes, candidates) one exact k-NN query of multi-index hashing needs on ``n``
    uniformly random ``bits``-bit codes with m substrings, in expectation: the k-th neighbour
    lies at :func:`uniform_kth`, and the search probes radius
    r of substring j, C(b_j, r) buckets of n / 2^b_j items each, until ``m·r + j + 1 > d``
    (the bound of the module docstring), or > ``radius``."""
    kth = uniform_kth(bits, n, k)
    if radius is not None:
        kth = min(kth, radius)
    _, lengths = substrings(bits, m)
    probes = candidates = 0.0
    for r in range(int(lengths.max()) + 1):
        for j, b in enumerate(lengths.tolist()):
            if r <= b:
                probes += math.comb(b, r)
                candidates += math.comb(b, r) * n / 2 ** b
            if m * r + j + 1 > kth:
                return probes, candidates
    return probes, candidates
