"""Binary indexes of hash codes: a flat scan, multi-index hashing and faiss's approximate
binary indexes behind one small interface.

Kinds, with the faiss index that holds (and saves) each one's codes:

* ``flat`` (``IndexBinaryFlat``): every code compared (XOR and popcount) by avsearch's own
  scan (:mod:`avsearch.index_kernels`: SIMD popcount over blocks of queries and codes).
  **Exact.**
* ``multihash`` (``IndexBinaryFlat`` for the codes): avsearch's multi-index hashing (Norouzi,
  Punjani & Fleet, CVPR 2012 / TPAMI 2014; :mod:`avsearch.index_kernels`): ``nhash``
  direct-address tables over disjoint substrings, rebuilt from the codes when the index is
  built or loaded. **Exact** by default: a query probes the substrings at radius 0, 1, 2 …
  until its k-th neighbour found is nearer than every item not yet found can be (pigeonhole),
  and scans instead where probing would cost more. With ``nflip`` (a cap on the flipped
  bits per table) it stops there: faster, approximate.
* ``hash`` (``IndexBinaryHash``): one table over the first ``b`` bits, probed with up to
  ``nflip`` flips. Approximate.
* ``ivf`` (``IndexBinaryIVF``): ``nlist`` clusters of a binary k-means, ``nprobe`` of them
  searched. Approximate.
* ``hnsw`` (``IndexBinaryHNSW``): a navigable small-world graph (``M``, ``efConstruction``,
  ``efSearch``). Approximate; built with several threads, two builds may differ.

**Ranking.** Results are ranked by (Hamming distance, database index), as in
:mod:`avsearch.metrics`: flat and multihash keep each query's top k as int64 keys
``distance << 40 | index``, so ties are ordered by index by construction. A query gives the
same list on every run and thread count, and the same list from every exact kind. Approximate
kinds fetch 2k candidates and keep the k first by (distance, index): deterministic, but they
may miss neighbours; their recall is measured (``benchmarks/bench_index.py``), never assumed.

**Files.** ``db.index`` is faiss's binary index format (what ``faiss.write_index_binary``
writes); ``db.index.json`` (the sidecar) records the kind and whether it is exact, the
parameters, the code length, the number of items, the ``.arch``'s ``arch_id`` and weights
sha256 (when the codes came from one), the data and split, and the sha256 of the index file
and of ``db.index.meta.npz`` (the items' ids and labels). Loading checks all of them. Every
file is written to a temporary name and renamed; the sidecar is written last, so an
interrupted write shows as a sha256 mismatch, never as a silently different index.

**Codes.** ±1 int8 codes (avsearch's convention, ``encode``'s output); bit j of a code is bit
j % 8 of byte j // 8, +1 ↦ 1. A code length that is not a multiple of 8 is padded with zero
bits, which add nothing to a distance.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import faiss
import numpy as np

from avsearch._files import atomic_write, sha256_file
from avsearch._version import __version__
from avsearch.errors import AvsearchInputError, DuplicateIdError, IndexFileError

__all__ = ["FORMAT", "KINDS", "BinaryIndex", "SearchResult", "pack_codes", "unpack_codes",
           "check_params", "sidecar_path", "arch_tie"]

FORMAT = "avsearch.index/1"

# kind -> {parameter: help}; the parameters marked (query) may also be set per query
KINDS: dict[str, dict[str, str]] = {
    "flat": {},
    "hash": {"b": "bits of the code prefix that is hashed (default: log2 of the items, 8-24)",
             "nflip": "(query) bits flipped when probing the table (default 2)"},
    "multihash": {"nhash": "tables, over disjoint substrings (default: bits / log2 of the "
                           "items, rounded)",
                  "nflip": "(query) at most this many flipped bits per table: faster, "
                           "approximate (default: none, the exact search)"},
    "ivf": {"nlist": "clusters (default: sqrt of the items)",
            "nprobe": "(query) clusters searched (default 16)"},
    "hnsw": {"M": "graph neighbours per node (default 16)",
             "efConstruction": "candidates kept while building (default 40)",
             "efSearch": "(query) candidates kept while searching (default 128; at least 2k)"},
}
QUERY_PARAMS = {"hash": {"nflip"}, "multihash": {"nflip"}, "ivf": {"nprobe"}, "hnsw": {"efSearch"}}


class SearchResult(NamedTuple):
    """``index`` and ``distance``: (N_q, min(k, N)) int64 ranked by (distance, database
    index), −1 where a query has fewer neighbours (an approximate kind, or ``radius``);
    ``exact``: whether the search was exact; ``stats``: multihash's work per query
    (``probes``, ``candidates``, ``checked``, ``scanned``: (N_q,) arrays), else None."""

    index: np.ndarray
    distance: np.ndarray
    exact: bool
    stats: dict[str, np.ndarray] | None = None


def _as_codes(codes: Any, name: str) -> np.ndarray:
    """The metrics' check of ±1 codes, imported on use: the CLI's parser reads :data:`KINDS`
    and should not pay for numba."""
    from avsearch.metrics import _as_codes as as_codes
    return as_codes(codes, name)


def sidecar_path(path: str | Path) -> Path:
    return Path(f"{path}.json")


def pack_codes(codes: Any, name: str = "codes") -> np.ndarray:
    """±1 codes (N, bits) -> faiss's binary layout (N, ceil(bits/8)) uint8 (module docstring)."""
    return np.packbits(_as_codes(codes, name) > 0, axis=1, bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: (N, bits) ±1 int8."""
    ones = np.unpackbits(packed, axis=1, count=bits, bitorder="little")
    return (ones.astype(np.int8) * 2 - 1).astype(np.int8)


def check_params(params: Mapping[str, str | int], kind: str, query: bool = False
                 ) -> dict[str, int]:
    """``{"nprobe": "32"}`` -> ``{"nprobe": 32}``, checked against ``kind``'s parameters (only
    its query parameters when ``query``)."""
    _check_kind(kind)
    allowed = QUERY_PARAMS.get(kind, set()) if query else set(KINDS[kind])
    out: dict[str, int] = {}
    for key, value in params.items():
        if key not in allowed:
            what = "query parameters" if query else "parameters"
            raise AvsearchInputError(f"index kind {kind!r} has no {'query ' if query else ''}"
                                     f"parameter {key!r} ({what}: "
                                     f"{', '.join(sorted(allowed)) or 'none'})")
        try:
            out[key] = int(value)
        except ValueError:
            raise AvsearchInputError(f"params {key}={value!r}: expected an integer",
                                     "params") from None
        if out[key] < (0 if key == "nflip" else 1):
            raise AvsearchInputError(f"params {key}={out[key]}: too small", "params")
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise AvsearchInputError(f"unknown index kind {kind!r} (kinds: {', '.join(KINDS)})")


def _log2(n: int) -> float:
    return math.log2(max(n, 2))


# multihash's direct-address tables: substrings of at most 32 bits, and at most
# max(2^20, 16·N) buckets per table (the default nhash gives about N)
_MAX_SUBSTRING, _MIN_BUCKETS = 32, 2 ** 20
# multihash's costs in items of the flat scan (index_kernels' SIMD scan of blocks of queries):
# a probe (pairing a bucket with a query, sorting the pairs by bucket, the bucket's offsets
# and the start of its SIMD pass) and an item of a probed bucket (in that pass, shared by the
# queries that probe the bucket). Fitted to timings of 10M random 64-bit codes with 4 and 5
# substrings against the flat scan, one thread (473 and 3.9 on the idle machine), so rough;
# they choose the default nhash and whether a query probes or scans; exactness does not
# depend on them.
_PROBE_COST, _CANDIDATE_COST = 500.0, 3.5


def _build_params(kind: str, bits: int, n: int, given: dict[str, int]) -> dict[str, int | None]:
    """``given`` completed with the defaults for ``n`` items of ``bits`` bits, and checked."""
    params: dict[str, int | None] = dict(given)
    if kind == "hash":
        params.setdefault("b", min(bits, 24, max(8, round(_log2(n)))))
        params.setdefault("nflip", 2)
        if params["b"] > bits:
            raise AvsearchInputError(f"hash: b={params['b']} is more than the {bits} code bits")
    elif kind == "multihash":
        params.setdefault("nhash", _default_nhash(bits, n))
        params.setdefault("nflip", None)
        m = params["nhash"]
        if m > bits:
            raise AvsearchInputError(f"multihash: nhash={m} tables need at least {m} bits, "
                                     f"codes have {bits}")
        if not _tables_fit(bits, m, n):
            fewest = next(t for t in range(m, bits + 1) if _tables_fit(bits, t, n))
            raise AvsearchInputError(
                f"multihash: nhash={m} makes substrings of {-(-bits // m)} bits, "
                f"direct-address tables of 2^{-(-bits // m)} buckets for {n} items; use "
                f"nhash >= {fewest}")
    elif kind == "ivf":
        params.setdefault("nlist", max(1, round(math.sqrt(n))))
        params.setdefault("nprobe", 16)
        if params["nlist"] > n:
            raise AvsearchInputError(f"ivf: nlist={params['nlist']} clusters for {n} items")
    elif kind == "hnsw":
        params.setdefault("M", 16)
        params.setdefault("efConstruction", 40)
        params.setdefault("efSearch", 128)
    return params


def _tables_fit(bits: int, m: int, n: int) -> bool:
    longest = -(-bits // m)
    return longest <= _MAX_SUBSTRING and 2 ** longest <= max(_MIN_BUCKETS, 16 * n)


def _default_nhash(bits: int, n: int) -> int:
    """Norouzi et al.'s m = b / log2(N) (substrings of about log2 N bits, about one item a
    bucket), or one or two more where the expected cost of a top-100 query on uniform codes
    (:func:`~avsearch.index_kernels.expected_work` at this machine's probe and candidate
    costs) is lower: probes that miss the caches cost far more here than a SIMD scan's item,
    which favours smaller tables than the paper's (its scan was scalar)."""
    from avsearch.index_kernels import expected_work

    base = max(1, min(bits, round(bits / _log2(n))))
    fitting = [m for m in range(base, bits + 1) if _tables_fit(bits, m, n)][:3]

    def cost(m: int) -> float:
        probes, candidates = expected_work(bits, n, m, min(100, n))
        return probes * _PROBE_COST + candidates * _CANDIDATE_COST

    return min(fitting, key=cost)


def _new_faiss(kind: str, d: int, params: dict[str, Any], packed: np.ndarray) -> Any:
    """An empty (trained, for ivf) faiss index of ``kind`` for codes of ``d`` bits."""
    if kind in ("flat", "multihash"):          # multihash's tables are built from the codes
        return faiss.IndexBinaryFlat(d)
    if kind == "hash":
        return faiss.IndexBinaryHash(d, params["b"])
    if kind == "ivf":
        quantizer = faiss.IndexBinaryFlat(d)
        index = faiss.IndexBinaryIVF(quantizer, d, params["nlist"])
        index.own_fields = True          # the index frees its quantizer, not Python
        quantizer.this.disown()
        index.train(packed)
        return index
    index = faiss.IndexBinaryHNSW(d, params["M"])
    index.hnsw.efConstruction = params["efConstruction"]
    return index


_FAISS_CLASS = {"flat": "IndexBinaryFlat", "hash": "IndexBinaryHash",
                "multihash": "IndexBinaryFlat", "ivf": "IndexBinaryIVF",
                "hnsw": "IndexBinaryHNSW"}


# ------------------------------------------------------------------------- ranking helpers
def _by_distance_then_index(index: np.ndarray,
                            distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row sorted by (distance, index), missing entries (−1) last."""
    index, distance = index.astype(np.int64), distance.astype(np.int64)
    big = np.iinfo(np.int64).max
    key = np.where(index < 0, big, distance * (1 << 40) + index)   # N < 2^40 items
    order = np.argsort(key, axis=1, kind="stable")
    index, distance = np.take_along_axis(index, order, 1), np.take_along_axis(distance, order, 1)
    distance[index < 0] = -1
    return index, distance


def _words(packed: np.ndarray) -> np.ndarray:
    """faiss's packed codes (N, bytes) as (N, W) uint64 words for the kernels: a view when
    the bytes are whole words, else a zero-padded copy (padding bits add no distance)."""
    if packed.shape[1] % 8 == 0:
        return np.ascontiguousarray(packed).view(np.uint64)
    out = np.zeros((len(packed), -(-packed.shape[1] // 8) * 8), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.view(np.uint64)


# ------------------------------------------------------------------------------- the index
@dataclass
class BinaryIndex:
    """A faiss binary index of ±1 codes, with the items' ids and labels and what the codes
    were made from (module docstring: kinds, ranking, files)."""

    faiss_index: Any
    kind: str
    bits: int
    params: dict[str, Any]
    ids: np.ndarray | None = None         # str per item; None: the ids are the positions
    labels: np.ndarray | None = None      # (N, C) bool multi-hot, or None
    arch: dict[str, Any] | None = None    # {"arch_id", "weights_sha256", "space"}
    data: dict[str, Any] | None = None    # {"name", "source", "split", "steps", "modalities"}
    path: Path | None = field(default=None, compare=False)
    # the codes as uint64 words and multihash's tables, made on first use from faiss_index
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------- build
    @classmethod
    def build(cls, codes: Any | Iterable[Any], kind: str = "flat",
              params: dict[str, int] | None = None, *, ids: Iterable[str] | None = None,
              labels: np.ndarray | None = None, arch: dict[str, Any] | None = None,
              data: dict[str, Any] | None = None) -> "BinaryIndex":
        """An index of ``codes``: one (N, bits) ±1 array, or an iterable of such chunks (a
        streamed encoding; only the packed codes are kept, bits/8 bytes per item)."""
        _check_kind(kind)
        one = isinstance(codes, (np.ndarray, list, tuple)) or hasattr(codes, "shape")
        chunks = [codes] if one else codes
        packed_chunks, bits = [], None
        for chunk in chunks:
            chunk = _as_codes(chunk, "codes")
            if bits is not None and chunk.shape[1] != bits:
                raise AvsearchInputError(f"code chunks of {bits} and {chunk.shape[1]} bits")
            bits = chunk.shape[1]
            packed_chunks.append(pack_codes(chunk))
        if bits is None or sum(len(p) for p in packed_chunks) == 0:
            raise AvsearchInputError("no codes to index")
        packed = np.concatenate(packed_chunks)
        unknown = set(params or {}) - set(KINDS[kind])
        if unknown:
            raise AvsearchInputError(f"index kind {kind!r} has no parameter(s) {sorted(unknown)}")
        full = _build_params(kind, bits, len(packed), dict(params or {}))
        ids, labels = _grow_meta(None, None, 0, ids, labels, len(packed))
        index = cls(_new_faiss(kind, packed.shape[1] * 8, full, packed), kind, bits, full,
                    ids, labels, arch, data)
        index.faiss_index.add(packed)
        index._prepare()
        return index

    def added(self, codes: Any, ids: Iterable[str] | None = None,
              labels: np.ndarray | None = None) -> "BinaryIndex":
        """A copy of this index with ``codes`` added: this one is left as it was, so a failed
        add or save changes nothing."""
        arr = _as_codes(codes, "codes")
        if arr.shape[1] != self.bits:
            raise AvsearchInputError(f"codes of {arr.shape[1]} bits for an index of "
                                     f"{self.bits}-bit codes")
        ids, labels = _grow_meta(self.ids, self.labels, self.count, ids, labels, len(arr))
        copy = faiss.deserialize_index_binary(faiss.serialize_index_binary(self.faiss_index))
        copy.add(pack_codes(arr))
        grown = BinaryIndex(copy, self.kind, self.bits, dict(self.params), ids, labels,
                            self.arch, self.data, self.path)
        grown._prepare()
        return grown

    # ---------------------------------------------------------------- facts
    @property
    def count(self) -> int:
        return int(self.faiss_index.ntotal)

    def is_exact(self, query_params: dict[str, int] | None = None) -> bool:
        """Whether a search (with ``query_params``) returns the exact top k."""
        params = {**self.params, **(query_params or {})}
        return self.kind == "flat" or (self.kind == "multihash" and params.get("nflip") is None)

    def method(self, query_params: dict[str, int] | None = None) -> str:
        """One line: the kind, its parameters, and exact or approximate."""
        params = {**self.params, **(query_params or {})}
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
        exact = self.is_exact(query_params)
        return (f"{self.kind}{f' ({shown})' if shown else ''}, "
                + ("exact" if exact else "APPROXIMATE: it may miss neighbours; measure its "
                                         "recall against flat"))

    def id_of(self, index: np.ndarray) -> np.ndarray:
        """The ids of database positions (an empty string for −1)."""
        index = np.asarray(index)
        ids = (self.ids[np.maximum(index, 0)] if self.ids is not None
               else np.maximum(index, 0).astype(str))
        return np.where(index < 0, "", ids)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "exact": self.is_exact(), "search": self.method(),
                "params": self.params, "bits": self.bits, "count": self.count,
                "labels": None if self.labels is None else int(self.labels.shape[1]),
                "arch": self.arch, "data": self.data}

    def codes(self) -> np.ndarray:
        """The indexed codes, (N, bits) ±1 (flat and multihash, which keep them)."""
        if self.kind not in ("flat", "multihash"):
            raise AvsearchInputError(f"a {self.kind} index does not give its codes back")
        packed = self.faiss_index.reconstruct_n(0, self.count)
        return unpack_codes(np.asarray(packed, dtype=np.uint8).reshape(self.count, -1), self.bits)

    # ---------------------------------------------------------------- search
    def search(self, codes: Any, k: int, radius: int | None = None,
               **query_params: int) -> SearchResult:
        """The k nearest items of each query, ranked by (Hamming distance, database index);
        with ``radius``, only those within that distance (inclusive). ``query_params``
        override the kind's query parameters for this call (e.g. ``nprobe=64``)."""
        q = self._queries(codes)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise AvsearchInputError(f"k must be a positive integer, got {k!r}")
        if radius is not None and (not isinstance(radius, (int, np.integer)) or radius < 0):
            raise AvsearchInputError(f"radius must be an integer >= 0, got {radius!r}")
        unknown = set(query_params) - QUERY_PARAMS.get(self.kind, set())
        if unknown:
            raise AvsearchInputError(f"a {self.kind} index has no query parameter(s) "
                                     f"{sorted(unknown)}")
        k = min(int(k), self.count)
        exact = self.is_exact(query_params)
        if k == 0:
            empty = np.zeros((len(q), 0), dtype=np.int64)
            return SearchResult(empty, empty.copy(), exact)
        params = {**self.params, **query_params}
        stats = None
        if self.kind in ("flat", "multihash"):
            ids, dist, stats = self._own_search(q, k, radius, params.get("nflip"))
        else:
            ids, dist = self._approximate(q, k, params)
        if radius is not None:
            far = dist > radius
            ids[far], dist[far] = -1, -1
        return SearchResult(ids, dist, exact, stats)

    def rank(self, codes: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(index, distance)`` of an exact search: the ``search`` hook of
        :func:`avsearch.metrics.retrieval_metrics`."""
        if not self.is_exact():
            raise AvsearchInputError(f"a {self.kind} index is approximate; metrics need an "
                                     f"exact ranking")
        result = self.search(codes, k)
        return result.index, result.distance

    def _queries(self, codes: Any) -> np.ndarray:
        arr = _as_codes(codes, "query codes")
        if arr.shape[1] != self.bits:
            where = f" ({self.path})" if self.path else ""
            raise AvsearchInputError(f"query codes have {arr.shape[1]} bits, the index"
                                     f"{where} holds {self.bits}-bit codes")
        return pack_codes(arr)

    def _prepare(self) -> dict[str, Any]:
        """The codes as uint64 words (flat, multihash) and multihash's tables, made once per
        faiss index (an index is never changed in place: ``added`` makes a new one)."""
        if self.kind not in ("flat", "multihash") or self._cache.get("n") == self.count:
            return self._cache
        index = self.faiss_index
        packed = faiss.rev_swig_ptr(index.xb.data(), self.count * index.code_size)
        self._cache.clear()
        self._cache["words"] = _words(packed.reshape(self.count, index.code_size))
        if self.kind == "multihash":
            from avsearch.index_kernels import build_tables
            self._cache["tables"] = build_tables(self._cache["words"], self.bits,
                                                 self.params["nhash"])
        self._cache["n"] = self.count
        return self._cache

    def memory_bytes(self) -> int:
        """Bytes the index holds in memory: the faiss index (its serialised size) and, for
        multihash, its tables."""
        size = len(faiss.serialize_index_binary(self.faiss_index))
        tables = self._prepare().get("tables", {})
        return size + sum(a.nbytes for a in tables.values())

    def _own_search(self, q: np.ndarray, k: int, radius: int | None, nflip: int | None
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
        """flat and multihash through :mod:`avsearch.index_kernels`, queries split over the
        kernels' threads (torch's setting, as the metrics' kernels); multihash's queries that
        probing would cost more for go to the flat scan together."""
        from avsearch import index_kernels as kernels
        from avsearch.metrics import _run_rows, _workers

        cache, workers = self._prepare(), _workers(None)
        words, queries = cache["words"], _words(q)
        cap = (self.bits if radius is None else min(radius, self.bits)) + 1

        def scan(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            heaps = np.zeros((len(rows), k), dtype=np.int64)
            sizes = np.zeros(len(rows), dtype=np.int64)
            _run_rows(kernels.scan_rows, (np.ascontiguousarray(rows), words, heaps, sizes, cap),
                      len(rows), workers)
            return heaps, sizes

        if self.kind == "flat":
            return *kernels.decode(*scan(queries)), None
        t = cache["tables"]
        heaps = np.zeros((len(q), k), dtype=np.int64)
        sizes, status = np.zeros(len(q), dtype=np.int64), np.zeros(len(q), dtype=np.int64)
        work = np.zeros((len(q), 3), dtype=np.int64)
        probes, candidates = kernels.expected_work(self.bits, self.count, self.params["nhash"],
                                                   k, radius)
        if nflip is None and probes * _PROBE_COST + candidates * _CANDIDATE_COST > self.count:
            # probing is expected to cost more than a scan (uniform codes): scan at once
            heaps, sizes = scan(queries)
            return *kernels.decode(heaps, sizes), {
                "probes": work[:, 0], "candidates": work[:, 1], "checked": work[:, 2],
                "scanned": np.ones(len(q), dtype=bool)}

        def probe(rows: np.ndarray, limit: int) -> None:
            """Multi-index hashing of the queries ``rows`` for items nearer than ``limit``."""
            h, n, st, w = heaps[rows], sizes[rows], status[rows], work[rows]
            _run_rows(kernels.mih_rows, (
                np.ascontiguousarray(queries[rows]), t["offsets"], t["obase"], t["ids"],
                t["tcodes"], t["starts"], t["lengths"], t["combs"], h, n, st, w, limit,
                -1 if nflip is None else nflip, _PROBE_COST, _CANDIDATE_COST), len(rows), workers)
            heaps[rows], sizes[rows], status[rows], work[rows] = h, n, st, w

        everyone = np.arange(len(q))
        # First only items within uniform codes' k-th neighbour distance count: without that
        # cap the heap lets far items in while it fills, which on uniform codes lasts nearly
        # to the end. A query with fewer than k such items is not decided: it searches again.
        guess = kernels.uniform_kth(self.bits, self.count, k) + 1
        if nflip is None and guess < cap:
            probe(everyone, guess)
            again = np.flatnonzero((sizes < k) & (status != kernels.TO_SCAN))
            if len(again):
                heaps[again], sizes[again] = 0, 0
                probe(again, cap)
        else:
            probe(everyone, cap)
        scanned = status == kernels.TO_SCAN
        if scanned.any():
            heaps[scanned], sizes[scanned] = scan(queries[scanned])
        stats = {"probes": work[:, 0], "candidates": work[:, 1], "checked": work[:, 2],
                 "scanned": scanned}
        return *kernels.decode(heaps, sizes), stats

    def _approximate(self, q: np.ndarray, k: int, params: dict[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """2k candidates from faiss's approximate search, the k first by (distance, index)."""
        index, fetch = self.faiss_index, min(self.count, 2 * k)
        if self.kind == "hash":
            index.nflip = params["nflip"]
        elif self.kind == "ivf":
            index.nprobe = min(params["nprobe"], params["nlist"])
        elif self.kind == "hnsw":
            index.hnsw.efSearch = max(params["efSearch"], fetch)
        distance, ids = index.search(q, fetch)
        ids, distance = _by_distance_then_index(ids, distance)
        return ids[:, :k], distance[:, :k]

    # ---------------------------------------------------------------- the files
    def save(self, path: str | Path) -> None:
        """Write ``path`` (faiss's format), ``path.meta.npz`` (ids, labels) and the sidecar
        ``path.json``, each atomically, the sidecar last."""
        path = Path(path)
        meta_name = f"{path.name}.meta.npz"
        buffer = io.BytesIO()
        arrays = {}
        if self.ids is not None:
            arrays["ids"] = self.ids
        if self.labels is not None:
            arrays["labels"] = self.labels
        np.savez_compressed(buffer, **arrays)
        meta = buffer.getvalue()
        # serialize_index_binary writes the bytes write_index_binary does, into memory, so that
        # the file goes through atomic_write and its sha256 needs no second read
        blob = faiss.serialize_index_binary(self.faiss_index).tobytes()
        sidecar = {
            "format": FORMAT, "kind": self.kind, "exact": self.is_exact(),
            "search": self.method(), "params": self.params, "bits": self.bits,
            "count": self.count, "index_sha256": _sha256(blob),
            "meta": {"file": meta_name, "sha256": _sha256(meta),
                     "ids": self.ids is not None,
                     "labels": None if self.labels is None else int(self.labels.shape[1])},
            "arch": self.arch, "data": self.data,
            "bit_order": "bit j of a code is bit j % 8 of byte j // 8; +1 -> 1",
            "faiss": faiss.__version__, "avsearch": __version__,
        }
        atomic_write(path.parent / meta_name, meta)
        atomic_write(path, blob)
        atomic_write(sidecar_path(path), json.dumps(sidecar, indent=2) + "\n")
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> "BinaryIndex":
        """Read an index and its sidecar, checking the format, the sha256 of the index and
        meta files, the kind, the code length and the number of items; an
        :class:`~avsearch.errors.IndexFileError` naming the file otherwise."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.is_file():
            raise IndexFileError(f"{path}: no such index file")
        if not side.is_file():
            raise IndexFileError(f"{path}: its sidecar {side.name} is missing (indexes are "
                                 f"built with 'avsearch index build')")
        try:
            raw = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise IndexFileError(f"{side}: not a readable JSON sidecar ({err})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else None
            raise IndexFileError(f"{side}: format tag {got!r} is not {FORMAT!r}")
        kind, bits, count = raw.get("kind"), raw.get("bits"), raw.get("count")
        if kind not in KINDS or not isinstance(bits, int) or bits < 1 \
                or not isinstance(count, int) or not isinstance(raw.get("params"), dict):
            raise IndexFileError(f"{side}: kind, bits, count or params missing or malformed")
        if sha256_file(path) != raw.get("index_sha256"):
            raise IndexFileError(f"{path}: does not match the sha256 in {side.name} (changed, "
                                 f"replaced, or an interrupted write); rebuild the index")
        try:
            index = faiss.read_index_binary(str(path))
        except RuntimeError:
            raise IndexFileError(f"{path}: not a faiss binary index") from None
        if type(index).__name__ != _FAISS_CLASS[kind]:     # read_index_binary downcasts
            earlier = (" (multihash indexes were faiss's before avsearch had its own; "
                       "rebuild it)" if type(index).__name__ == "IndexBinaryMultiHash" else "")
            raise IndexFileError(f"{path}: holds a {type(index).__name__}, its sidecar says "
                                 f"{kind!r}{earlier}")
        if index.d != (bits + 7) // 8 * 8 or index.ntotal != count:
            raise IndexFileError(f"{path}: {index.ntotal} codes of {index.d} bits, its sidecar "
                                 f"says {count} of {bits}")
        nhash = raw["params"].get("nhash")
        if kind == "multihash" and (not isinstance(nhash, int) or not 1 <= nhash <= bits):
            raise IndexFileError(f"{side}: multihash's nhash {nhash!r} is not 1 to {bits}")
        ids, labels = cls._load_meta(path, side, raw, count)
        loaded = cls(index, kind, bits, raw["params"], ids, labels, raw.get("arch"),
                     raw.get("data"), path)
        loaded._prepare()
        return loaded

    @staticmethod
    def _load_meta(path: Path, side: Path, raw: dict[str, Any],
                   count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        meta = raw.get("meta")
        name = meta.get("file") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise IndexFileError(f"{side}: meta.file must be a file name beside the index")
        meta_path = path.parent / name
        if not meta_path.is_file():
            raise IndexFileError(f"{path}: its ids and labels file {name} is missing")
        if sha256_file(meta_path) != meta.get("sha256"):
            raise IndexFileError(f"{meta_path}: does not match the sha256 in {side.name} "
                                 f"(changed, replaced, or an interrupted write)")
        try:
            with np.load(meta_path, allow_pickle=False) as arrays:
                ids = arrays["ids"] if "ids" in arrays else None
                labels = arrays["labels"] if "labels" in arrays else None
        except (OSError, ValueError) as err:
            raise IndexFileError(f"{meta_path}: not a readable .npz ({err})") from None
        for name, arr in (("ids", ids), ("labels", labels)):
            if arr is not None and len(arr) != count:
                raise IndexFileError(f"{meta_path}: {len(arr)} {name} for {count} items")
        return ids, labels

    def check_arch(self, arch: Any, where: str) -> None:
        """Refuse an ``.arch`` (``where`` names it) other than the one the codes came from:
        its ``arch_id``, weights sha256 and code length must match the sidecar's."""
        name = self.path or "the index"
        if self.arch is None:
            raise IndexFileError(f"{name} was built from codes not tied to an architecture; "
                                 f"query it with codes, or rebuild it from {where}", "codes")
        space = arch.build_space()
        bits = space.type_of(space.output_node).width
        mine = {"arch_id": arch.arch_id, "weights_sha256": arch.weights_sha256}
        if bits != self.bits:
            raise IndexFileError(f"{name} holds {self.bits}-bit codes, {where} makes "
                                 f"{bits}-bit codes")
        for key, value in mine.items():
            if self.arch.get(key) != value:
                raise IndexFileError(f"{name} was built for architecture "
                                     f"{self.arch.get('arch_id')} (weights sha256 "
                                     f"{str(self.arch.get('weights_sha256'))[:12]}…), not "
                                     f"{where} ({arch.arch_id}, weights sha256 "
                                     f"{str(arch.weights_sha256)[:12]}…); rebuild the index "
                                     f"with it")


def _grow_meta(old_ids: np.ndarray | None, old_labels: np.ndarray | None, n_old: int,
               ids: Iterable[str] | None, labels: Any, n: int
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The ids and labels after ``n`` items join ``n_old``, checked: one id per item, all
    unique (items without ids are named by position once any item has an id); labels
    (items, classes) with the index's classes (items without labels have none)."""
    if ids is not None:
        ids = np.asarray(list(ids), dtype=str)
        if ids.shape != (n,):
            raise AvsearchInputError(f"{len(ids)} ids for {n} items")
        if old_ids is None and n_old:
            old_ids = np.arange(n_old).astype(str)
    elif old_ids is not None:
        ids = np.arange(n_old, n_old + n).astype(str)
    all_ids = ids if old_ids is None else np.concatenate([old_ids, ids])
    if all_ids is not None:
        unique, counts = np.unique(all_ids, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdError(f"ids must be unique; {str(unique[counts > 1][0])!r} "
                                   f"is there {int(counts.max())} times")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 2 or len(labels) != n:
            raise AvsearchInputError(f"labels must be (items, classes), got shape "
                                     f"{labels.shape} for {n} items")
        if old_labels is None and n_old:
            raise AvsearchInputError("this index has no labels; add items without labels")
        if old_labels is not None and labels.shape[1] != old_labels.shape[1]:
            raise AvsearchInputError(f"labels have {labels.shape[1]} classes, the index "
                                     f"{old_labels.shape[1]}")
        labels = labels != 0
    elif old_labels is not None:
        labels = np.zeros((n, old_labels.shape[1]), dtype=bool)
    all_labels = labels if old_labels is None else np.concatenate([old_labels, labels])
    return all_ids, all_labels


def arch_tie(arch: Any) -> dict[str, Any]:
    """What a sidecar records of the ``.arch`` the codes came from."""
    return {"arch_id": arch.arch_id, "weights_sha256": arch.weights_sha256, "space": arch.space}


def _sha256(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()
