"""Binary indexes (avsearch.index) and `avsearch index build / query`; eval through an index.

Every exact kind must give the ranking of an independent numpy brute force, (Hamming distance,
database index), ties included; approximate kinds are measured, not trusted.
"""
from __future__ import annotations

import json
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch

import avsearch
from avsearch.cli import main
from avsearch.index import BinaryIndex, pack_codes, sidecar_path, unpack_codes
from avsearch.metrics import retrieval_metrics


def cli(*args):
    return subprocess.run([sys.executable, "-m", "avsearch.cli", *map(str, args)],
                          capture_output=True, text=True)


def pm1(rng, n, bits):
    return np.where(rng.random((n, bits)) < 0.5, -1, 1).astype(np.int8)


def brute_force(q, db, k, radius=None):
    """Top k by (Hamming distance, database index), written apart from avsearch."""
    dist = (q.shape[1] - q.astype(np.int64) @ db.T.astype(np.int64)) // 2
    k = min(k, len(db))
    index = np.empty((len(q), k), np.int64)
    distance = np.empty((len(q), k), np.int64)
    for i, row in enumerate(dist):
        top = np.lexsort((np.arange(len(db)), row))[:k]
        index[i], distance[i] = top, row[top]
    if radius is not None:
        far = distance > radius
        index[far], distance[far] = -1, -1
    return index, distance


def recall(found, truth):
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def databases():
    """(name, database, queries): random codes; codes drawn from 5 distinct codes (every
    query meets thousands of ties, more than the exact search fetches); a code length that is
    not a multiple of 8; codes of two 64-bit words, with a third of the items near the
    queries (multihash's substrings then cross the word boundary)."""
    rng = np.random.default_rng(0)
    few = pm1(rng, 5, 16)
    yield "random64", pm1(rng, 3000, 64), pm1(rng, 40, 64)
    yield "ties16", few[rng.integers(0, 5, 2500)], np.concatenate([few, pm1(rng, 20, 16)])
    near = pm1(rng, 30, 32)
    db = near[rng.integers(0, 30, 2000)] * np.where(rng.random((2000, 32)) < 0.05, -1, 1)
    yield "clustered32", db.astype(np.int8), near[:25]
    yield "odd12", pm1(rng, 800, 12), pm1(rng, 30, 12)
    q = pm1(rng, 30, 100)
    db = pm1(rng, 2000, 100)
    db[::3] = q[rng.integers(0, 30, 667)] * np.where(rng.random((667, 100)) < 0.1, -1, 1)
    yield "wide100", db, q


DATABASES = list(databases())
EXACT = [("flat", {}), ("multihash", {}), ("multihash", {"nhash": 5}),
         ("multihash", {"nhash": 7})]


@pytest.mark.parametrize("name, db, q", DATABASES, ids=[d[0] for d in DATABASES])
@pytest.mark.parametrize("kind, params", EXACT, ids=[f"{k}{p}" for k, p in EXACT])
def test_exact_kinds_equal_brute_force_with_ties(name, db, q, kind, params):
    index = BinaryIndex.build(db, kind, params)
    assert index.is_exact()
    for k in (1, 10, 100, len(db) + 5):
        result = index.search(q, k)
        want_i, want_d = brute_force(q, db, k)
        assert result.exact
        np.testing.assert_array_equal(result.distance, want_d)
        np.testing.assert_array_equal(result.index, want_i)
    for radius in (0, 2, 5):
        result = index.search(q, 50, radius=radius)
        want_i, want_d = brute_force(q, db, 50, radius)
        np.testing.assert_array_equal(result.index, want_i)
        np.testing.assert_array_equal(result.distance, want_d)


PURE_MIH = [("random64", 4), ("random64", 6), ("ties16", 1), ("ties16", 2), ("ties16", 4),
            ("clustered32", 4), ("odd12", 2), ("odd12", 5), ("wide100", 6), ("wide100", 9)]


@pytest.mark.parametrize("costs, scanned", [((0.0, 0.0), False), ((1e9, 1e9), True)],
                         ids=["probing-only", "scan-only"])
@pytest.mark.parametrize("name, nhash", PURE_MIH, ids=[f"{n}-nhash{m}" for n, m in PURE_MIH])
def test_multi_index_hashing_alone_and_its_scan_alone_are_exact(name, nhash, costs, scanned,
                                                                  monkeypatch):
    """multihash with probing costs of zero (it never switches to a scan, which small
    databases reach at once) and of infinity (every query scans at once): each path alone
    gives the brute force's lists, for k far beyond the items of the first radii and with a
    radius."""
    import avsearch.index as index_module
    monkeypatch.setattr(index_module, "_PROBE_COST", costs[0])
    monkeypatch.setattr(index_module, "_CANDIDATE_COST", costs[1])
    _, db, q = next(d for d in DATABASES if d[0] == name)
    index = BinaryIndex.build(db, "multihash", {"nhash": nhash})
    for k in (1, 10, 100, len(db) + 5):
        want_i, want_d = brute_force(q, db, k)
        result = index.search(q, k)
        np.testing.assert_array_equal(result.index, want_i)
        np.testing.assert_array_equal(result.distance, want_d)
        assert (result.stats["scanned"] == scanned).all()
    for radius in (0, 3):
        want_i, want_d = brute_force(q, db, 40, radius)
        result = index.search(q, 40, radius=radius)
        np.testing.assert_array_equal(result.index, want_i)
        np.testing.assert_array_equal(result.distance, want_d)


def test_multi_index_hashing_visits_a_small_share_of_the_database(monkeypatch):
    """On 60,000 random 32-bit codes with 2 substrings of 16 bits, the exact top 10 from
    probing alone (no switch to the scan) looks at about 1 % of the items, as Norouzi et
    al.'s analysis expects (``expected_work``), and is the brute force's list."""
    import avsearch.index as index_module
    from avsearch.index_kernels import expected_work
    monkeypatch.setattr(index_module, "_PROBE_COST", 0.0)
    monkeypatch.setattr(index_module, "_CANDIDATE_COST", 0.0)
    rng = np.random.default_rng(8)
    db, q = pm1(rng, 60_000, 32), pm1(rng, 40, 32)
    index = BinaryIndex.build(db, "multihash", {"nhash": 2})
    probes, candidates = expected_work(32, 60_000, 2, 10)
    assert candidates < 0.02 * len(db)
    result = index.search(q, 10)
    want_i, want_d = brute_force(q, db, 10)
    np.testing.assert_array_equal(result.index, want_i)
    np.testing.assert_array_equal(result.distance, want_d)
    assert not result.stats["scanned"].any()
    assert result.stats["candidates"].mean() < 2 * candidates, result.stats["candidates"]
    assert result.stats["probes"].mean() < 2 * probes, result.stats["probes"]


def test_multihash_searches_again_where_the_uniform_guess_is_too_near(monkeypatch):
    """The first pass counts only items within uniform codes' k-th neighbour (distance 6
    here). The database's bits are +1 with probability 0.85: queries drawn like it have
    their neighbours far nearer, queries drawn opposite it have no item that near, so they
    search again without that cap (exactly the queries whose 10th neighbour lies farther),
    and every list is the brute force's."""
    import avsearch.index as index_module
    from avsearch import index_kernels
    monkeypatch.setattr(index_module, "_PROBE_COST", 0.0)
    monkeypatch.setattr(index_module, "_CANDIDATE_COST", 0.0)
    rng = np.random.default_rng(10)
    biased = np.where(rng.random((60_020, 32)) < 0.85, 1, -1).astype(np.int8)
    db, near = biased[:60_000], biased[60_000:60_010]
    far = -biased[60_010:]
    q = np.concatenate([near, far])
    calls = []
    kernel = index_kernels.mih_rows

    def recording(queries, *args):
        calls.append((len(queries), args[11]))      # rows, cap
        return kernel(queries, *args)

    monkeypatch.setattr(index_kernels, "mih_rows", recording)
    index = BinaryIndex.build(db, "multihash", {"nhash": 2})
    assert index_kernels.uniform_kth(32, 60_000, 10) == 6
    result = index.search(q, 10)
    want_i, want_d = brute_force(q, db, 10)
    np.testing.assert_array_equal(result.index, want_i)
    np.testing.assert_array_equal(result.distance, want_d)
    farther = int((want_d[:, -1] > 6).sum())
    assert (want_d[10:, -1] > 6).all() and farther == 10
    assert calls == [(20, 7), (farther, 33)], calls
    assert not result.stats["scanned"].any()


def test_multihash_probes_where_the_analysis_expects_it_to_pay_and_scans_elsewhere():
    """With the default costs: 200,000 random 32-bit codes and k = 10 (about 800 candidates
    expected) are probed (most queries to the end); 3,000 random 64-bit codes and k = 100
    (more candidates than items) go straight to the scan; a radius of 2 makes the same small
    database worth probing. The lists are the brute force's in every case."""
    rng = np.random.default_rng(9)
    big, q32 = pm1(rng, 200_000, 32), pm1(rng, 30, 32)
    _, small, q64 = DATABASES[0]
    for db, q, k, radius, scanned in ((big, q32, 10, None, False), (small, q64, 100, None, True),
                                      (small, q64, 100, 2, False)):
        index = BinaryIndex.build(db, "multihash")
        result = index.search(q, k, radius=radius)
        want_i, want_d = brute_force(q, db, k, radius)
        np.testing.assert_array_equal(result.index, want_i)
        np.testing.assert_array_equal(result.distance, want_d)
        if scanned:                    # decided before any probe
            assert result.stats["scanned"].all() and not result.stats["probes"].any()
        else:                          # a query whose probes outgrow a scan's cost scans
            assert result.stats["scanned"].mean() < 0.5, result.stats["scanned"]


def test_a_cap_on_the_flips_is_approximate_and_a_high_cap_is_exact():
    """nflip caps the radius per table: fewer items found (recall below 1 at nflip 0 on
    random codes), each a true neighbour at its true distance, ranked; a cap at the longest
    substring's length probes everything and returns the exact lists."""
    name, db, q = DATABASES[0]
    index = BinaryIndex.build(db, "multihash", {"nhash": 4})
    want_i, want_d = brute_force(q, db, 20)
    capped = index.search(q, 20, nflip=0)
    assert not capped.exact and "APPROXIMATE" in index.method({"nflip": 0})
    assert recall(capped.index, want_i) < 0.5
    true_distance = (64 - q.astype(np.int64) @ db.T.astype(np.int64)) // 2
    for row, (ids, dist) in enumerate(zip(capped.index, capped.distance)):
        got = ids >= 0
        np.testing.assert_array_equal(dist[got], true_distance[row, ids[got]])
        np.testing.assert_array_equal(np.lexsort((ids[got], dist[got])), np.arange(got.sum()))
    full = index.search(q, 20, nflip=16)
    np.testing.assert_array_equal(full.index, want_i)
    np.testing.assert_array_equal(full.distance, want_d)


@pytest.mark.parametrize("params, needle", [
    ({"nhash": 1}, "nhash=1 makes substrings of 64 bits, direct-address tables of 2^64 "
                   "buckets for 3000 items; use nhash >= 4"),
    ({"nhash": 65}, "nhash=65 tables need at least 65 bits"),
])
def test_multihash_tables_too_large_or_too_many_are_refused(params, needle):
    with pytest.raises(avsearch.AvsearchInputError, match=needle.replace("^", r"\^")):
        BinaryIndex.build(DATABASES[0][1], "multihash", params)


@pytest.mark.parametrize("kind", ["flat", "multihash"])
def test_ties_are_ranked_by_database_index_with_any_thread_count(kind):
    """3000 copies of one code and k = 10: faiss's heap top-10 is any 10 of the 3000; the
    index gives the first 10 positions, for every query and thread count."""
    rng = np.random.default_rng(1)
    code = pm1(rng, 1, 32)
    db = np.concatenate([pm1(rng, 50, 32), np.repeat(code, 3000, axis=0)])
    index = BinaryIndex.build(db, kind)
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            result = index.search(np.repeat(code, 3, axis=0), 10)
            np.testing.assert_array_equal(result.index, np.tile(np.arange(50, 60), (3, 1)))
    finally:
        torch.set_num_threads(threads)


def test_repeated_queries_and_a_reloaded_index_give_the_same_lists(tmp_path):
    name, db, q = DATABASES[1]
    for kind in ("flat", "multihash", "hash", "ivf", "hnsw"):
        index = BinaryIndex.build(db, kind)
        first = index.search(q, 30)
        for _ in range(3):
            again = index.search(q, 30)
            np.testing.assert_array_equal(again.index, first.index)
            np.testing.assert_array_equal(again.distance, first.distance)
        index.save(tmp_path / f"{kind}.index")
        loaded = BinaryIndex.load(tmp_path / f"{kind}.index")
        np.testing.assert_array_equal(loaded.search(q, 30).index, first.index)


@pytest.mark.parametrize("kind, params", [("hash", {}), ("hash", {"nflip": 4}),
                                          ("multihash", {"nflip": 0}), ("ivf", {}),
                                          ("ivf", {"nprobe": 1}), ("hnsw", {})])
def test_approximate_kinds_say_so_and_their_recall_is_measured(kind, params):
    """Recall is reported, not assumed; what they return must be true neighbours ranked by
    (distance, index) with their true distances."""
    name, db, q = DATABASES[0]
    index = BinaryIndex.build(db, kind, params)
    result = index.search(q, 20)
    assert not result.exact and not index.is_exact()
    assert "APPROXIMATE" in index.method()
    truth_i, _ = brute_force(q, db, 20)
    r = recall(result.index, truth_i)
    print(f"{kind} {params}: recall@20 {r:.3f}")
    assert 0.0 <= r <= 1.0
    true_distance = (64 - q.astype(np.int64) @ db.T.astype(np.int64)) // 2
    for row, (ids, dist) in enumerate(zip(result.index, result.distance)):
        got = ids >= 0
        assert len(set(ids[got])) == got.sum()                        # no item twice
        np.testing.assert_array_equal(dist[got], true_distance[row, ids[got]])
        order = np.lexsort((ids[got], dist[got]))
        np.testing.assert_array_equal(order, np.arange(got.sum()))    # (distance, index)
        if not got.all():                                              # misses come last
            assert not got[np.argmin(got):].any() and (dist[~got] == -1).all()


def test_exhaustive_approximate_settings_find_the_exact_distances():
    """ivf searching every cluster and hash probing every flip see every item: the
    distances (not necessarily the ids among ties) are the exact ones."""
    name, db, q = DATABASES[2]
    _, want_d = brute_force(q, db, 20)
    ivf = BinaryIndex.build(db, "ivf", {"nlist": 8, "nprobe": 8})
    np.testing.assert_array_equal(ivf.search(q, 20).distance, want_d)
    hashed = BinaryIndex.build(db, "hash", {"b": 8, "nflip": 8})
    np.testing.assert_array_equal(hashed.search(q, 20).distance, want_d)


def test_pack_and_unpack_are_inverse():
    rng = np.random.default_rng(2)
    for bits in (8, 12, 64, 100):
        codes = pm1(rng, 7, bits)
        assert pack_codes(codes).shape == (7, (bits + 7) // 8)
        np.testing.assert_array_equal(unpack_codes(pack_codes(codes), bits), codes)


def test_added_leaves_the_original_and_checks_ids():
    rng = np.random.default_rng(3)
    db = pm1(rng, 100, 16)
    index = BinaryIndex.build(db, "flat", ids=[f"v{i}" for i in range(100)],
                              labels=np.eye(4, dtype=bool)[np.arange(100) % 4])
    grown = index.added(db[:3], ids=["new0", "new1", "new2"])
    assert index.count == 100 and grown.count == 103
    assert grown.id_of(np.array([102, -1])).tolist() == ["new2", ""]
    assert not grown.labels[100:].any()                         # added without labels
    with pytest.raises(avsearch.AvsearchInputError, match="unique; 'v5'"):
        index.added(db[:1], ids=["v5"])
    with pytest.raises(avsearch.AvsearchInputError, match="bits"):
        index.added(pm1(rng, 1, 32))
    assert index.count == 100


# ---------------------------------------------------------------- eval through an index
@pytest.mark.parametrize("normalisation", ["k", "retrieved", "min"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_metrics_through_the_flat_index_equal_the_kernel(normalisation, exclude_self):
    """The same numbers from the kernel's ranking and from the flat index's: codes with many
    ties, multi-label items, and the FCVID protocol (each query's own item excluded)."""
    rng = np.random.default_rng(4)
    few = pm1(rng, 40, 16)
    db = few[rng.integers(0, 40, 1500)]
    labels = np.zeros((1500, 7), dtype=bool)
    labels[np.arange(1500), rng.integers(0, 7, 1500)] = True
    labels[rng.random(1500) < 0.2, 3] = True
    if exclude_self:
        q, q_labels, ids = db[:300], labels[:300], (np.arange(300), np.arange(1500))
    else:
        q, q_labels, ids = pm1(rng, 300, 16), labels[rng.integers(0, 1500, 300)], None
    ks = (1, 5, 100, 1500)
    kernel = retrieval_metrics(q, q_labels, db, labels, ks=ks, normalisation=normalisation,
                               pr_curve=False, exclude_self_ids=ids, per_query=True)
    index = BinaryIndex.build(db, "flat")
    searched = retrieval_metrics(q, q_labels, db, labels, ks=ks, normalisation=normalisation,
                                 pr_curve=False, exclude_self_ids=ids, per_query=True,
                                 search=index.rank, block_size=128)
    for key in ("map", "precision", "recall", "gmap", "n_queries_without_relevant"):
        assert searched[key] == kernel[key], key
    for key, value in kernel["per_query"].items():
        np.testing.assert_array_equal(searched["per_query"][key], value, err_msg=key)


def test_eval_through_the_index_equals_eval_without(trained_arch, capsys):
    """`eval --index-threshold 1` ranks the 3000-item database through the flat index; the
    printed numbers are those of the kernel (`--index-threshold 0`)."""
    from avsearch.inference import evaluate, resolve_device
    data = avsearch.data.load_dataset("avdigits")
    net = avsearch.Architecture.load(trained_arch).network()
    device = resolve_device("cpu")
    for split in ("test", "val"):
        assert evaluate(net, data, split, device, index_threshold=1) == \
            evaluate(net, data, split, device, index_threshold=0)
    outputs = []
    for threshold in ("1", "0"):
        assert main(["eval", str(trained_arch), "--index-threshold", threshold]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "mAP" in outputs[0]


def test_search_with_a_pr_curve_is_refused():
    rng = np.random.default_rng(5)
    db = pm1(rng, 20, 8)
    with pytest.raises(avsearch.AvsearchInputError, match="PR curve"):
        retrieval_metrics(db, np.arange(20) % 2, db, np.arange(20) % 2, pr_curve=True,
                          search=BinaryIndex.build(db).rank)


# ---------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def built(trained_arch, tmp_path_factory):
    """`index build` from the .arch, and `encode` of the same split and of the test split."""
    out = tmp_path_factory.mktemp("index")
    assert main(["index", "build", str(trained_arch), "-o", str(out / "db.index")]) == 0
    assert main(["encode", str(trained_arch), "--split", "retrieval",
                 "-o", str(out / "db.npz")]) == 0
    assert main(["encode", str(trained_arch), "--split", "test", "-o", str(out / "q.npz")]) == 0
    return out


def test_index_build_from_the_arch_holds_the_codes_encode_writes(built, trained_arch):
    index = BinaryIndex.load(built / "db.index")
    encoded = np.load(built / "db.npz")
    np.testing.assert_array_equal(index.codes(), encoded["codes"])
    assert index.ids.tolist() == encoded["ids"].tolist()
    np.testing.assert_array_equal(index.labels, encoded["labels"])
    arch = avsearch.Architecture.load(trained_arch)
    assert index.arch == {"arch_id": arch.arch_id, "weights_sha256": arch.weights_sha256,
                          "space": "av_nas"}
    sidecar = json.loads(sidecar_path(built / "db.index").read_text())
    assert sidecar["kind"] == "flat" and sidecar["exact"] and sidecar["bits"] == 16
    assert sidecar["data"]["split"] == "retrieval" and sidecar["data"]["steps"] == 25
    # the same index from encode's .npz: the same faiss file, byte for byte
    assert main(["index", "build", str(built / "db.npz"), "-o", str(built / "fromnpz.index")]) == 0
    assert (built / "fromnpz.index").read_bytes() == (built / "db.index").read_bytes()
    assert BinaryIndex.load(built / "fromnpz.index").arch == index.arch


def test_index_query_by_arch_and_by_codes_agree_with_brute_force(built, trained_arch, capsys):
    assert main(["index", "query", str(built / "db.index"), "--arch", str(trained_arch),
                 "-k", "100", "--json"]) == 0
    by_arch = json.loads(capsys.readouterr().out)
    assert main(["index", "query", str(built / "db.index"), "--codes", str(built / "q.npz"),
                 "-k", "100", "-o", str(built / "res.npz")]) == 0
    by_codes = np.load(built / "res.npz")
    q, db = np.load(built / "q.npz"), np.load(built / "db.npz")
    want_i, want_d = brute_force(q["codes"], db["codes"], 100)
    np.testing.assert_array_equal(by_codes["index"], want_i)
    np.testing.assert_array_equal(by_codes["distance"], want_d)
    assert by_codes["query_ids"].tolist() == q["ids"].tolist()
    np.testing.assert_array_equal(by_codes["ids"], db["ids"][want_i])
    assert by_arch["exact"] and by_arch["tie_break"] == "database index"
    assert [[n["index"] for n in r["neighbours"]] for r in by_arch["queries"]] == want_i.tolist()
    assert by_arch["queries"][0]["neighbours"][0]["id"] == db["ids"][want_i[0, 0]]


def test_multihash_built_and_queried_on_the_command_line_is_the_brute_force(built, tmp_path):
    """`index build --kind multihash` then `index query`: faiss's flat format holds the codes,
    the sidecar says multihash and exact, and the lists (also within a radius) are the brute
    force's; a reloaded index rebuilds its tables from the codes."""
    assert main(["index", "build", str(built / "db.npz"), "-o", str(tmp_path / "mih.index"),
                 "--kind", "multihash", "--param", "nhash=3"]) == 0
    sidecar = json.loads(sidecar_path(tmp_path / "mih.index").read_text())
    assert sidecar["kind"] == "multihash" and sidecar["exact"]
    assert sidecar["params"] == {"nhash": 3, "nflip": None}
    assert type(faiss.read_index_binary(str(tmp_path / "mih.index"))).__name__ == \
        "IndexBinaryFlat"
    q, db = np.load(built / "q.npz"), np.load(built / "db.npz")
    for extra, radius in (([], None), (["--radius", "3"], 3)):
        assert main(["index", "query", str(tmp_path / "mih.index"), "--codes",
                     str(built / "q.npz"), "-k", "60", "-o", str(tmp_path / "r.npz"),
                     *extra]) == 0
        got = np.load(tmp_path / "r.npz")
        want_i, want_d = brute_force(q["codes"], db["codes"], 60, radius)
        np.testing.assert_array_equal(got["index"], want_i)
        np.testing.assert_array_equal(got["distance"], want_d)


def test_a_multihash_index_of_faiss_is_refused_with_a_hint_to_rebuild(built, tmp_path):
    """multihash indexes written before avsearch had its own held faiss's
    IndexBinaryMultiHash: such a file, with a sidecar that matches it, exits 2 and says to
    rebuild."""
    import hashlib
    for name in ("db.index", "db.index.json", "db.index.meta.npz"):
        (tmp_path / name).write_bytes((built / name).read_bytes())
    codes = np.load(built / "db.npz")["codes"]
    old = faiss.IndexBinaryMultiHash(16, 2, 8)
    old.add(pack_codes(codes))
    blob = faiss.serialize_index_binary(old).tobytes()
    (tmp_path / "db.index").write_bytes(blob)
    side = sidecar_path(tmp_path / "db.index")
    raw = json.loads(side.read_text())
    raw.update(kind="multihash", index_sha256=hashlib.sha256(blob).hexdigest(),
               params={"nhash": 2, "nflip": None, "b": 8})
    side.write_text(json.dumps(raw))
    _one_line_exit_2(cli("index", "query", tmp_path / "db.index", "--codes", built / "q.npz"),
                     "db.index", "IndexBinaryMultiHash", "rebuild it")


def test_an_approximate_index_says_so_on_the_command_line(built):
    assert main(["index", "build", str(built / "db.npz"), "-o", str(built / "hnsw.index"),
                 "--kind", "hnsw", "--param", "M=8"]) == 0
    done = cli("index", "query", built / "hnsw.index", "--codes", built / "q.npz", "-k", "5",
               "--param", "efSearch=16", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["exact"] is False and "APPROXIMATE" in out["search"]
    sidecar = json.loads(sidecar_path(built / "hnsw.index").read_text())
    assert sidecar["exact"] is False and "APPROXIMATE" in sidecar["search"]


def _one_line_exit_2(done, *needles):
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and all(n in lines[-1] for n in needles), done.stderr


def test_an_index_for_other_codes_is_refused_with_exit_2(built, trained_arch, tmp_path):
    # the same architecture with other weights: refused for --arch queries
    from safetensors.torch import load_file, save_file
    arch = avsearch.Architecture.load(trained_arch)
    state = load_file(str(arch.weights_path()))
    name = next(iter(state))
    state[name] = state[name] + 1
    save_file(state, str(tmp_path / "other.safetensors"))
    arch.weights = "other.safetensors"
    arch.weights_sha256 = avsearch.arch.sha256_file(tmp_path / "other.safetensors")
    arch.save(tmp_path / "other.arch")
    _one_line_exit_2(cli("index", "query", built / "db.index", "--arch", tmp_path / "other.arch"),
                     "db.index was built for architecture", "other.arch", "rebuild the index")
    # query codes of another length
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "q32.npz", codes=pm1(rng, 3, 32))
    _one_line_exit_2(cli("index", "query", built / "db.index", "--codes", tmp_path / "q32.npz"),
                     "q32.npz", "32 bits", "16-bit codes")
    # an index of codes from another architecture is refused for this .arch
    np.savez(tmp_path / "foreign.npz", codes=pm1(rng, 50, 16), arch_id=np.asarray("feedbeef"),
             weights_sha256=np.asarray("0" * 64))
    assert main(["index", "build", str(tmp_path / "foreign.npz"),
                 "-o", str(tmp_path / "foreign.index")]) == 0
    _one_line_exit_2(cli("index", "query", tmp_path / "foreign.index", "--arch", trained_arch),
                     "foreign.index", "built for architecture feedbeef", str(trained_arch))
    _one_line_exit_2(cli("index", "query", tmp_path / "foreign.index", "--codes",
                         built / "q.npz"), "feedbeef")
    # codes not tied to any architecture cannot be served or queried by an .arch
    np.savez(tmp_path / "plain.npz", codes=pm1(rng, 50, 16))
    assert main(["index", "build", str(tmp_path / "plain.npz"),
                 "-o", str(tmp_path / "plain.index")]) == 0
    _one_line_exit_2(cli("index", "query", tmp_path / "plain.index", "--arch", trained_arch),
                     "not tied to an architecture")


@pytest.mark.parametrize("damage, needles", [
    ("index", ("db.index", "does not match the sha256")),
    ("meta", ("db.index.meta.npz", "does not match the sha256")),
    ("sidecar", ("db.index.json", "not a readable JSON sidecar")),
    ("no-sidecar", ("db.index", "sidecar db.index.json is missing")),
    ("bits", ("db.index", "sidecar says")),
])
def test_a_damaged_index_is_refused_with_exit_2(built, tmp_path, damage, needles):
    for name in ("db.index", "db.index.json", "db.index.meta.npz"):
        (tmp_path / name).write_bytes((built / name).read_bytes())
    path = tmp_path / "db.index"
    side = sidecar_path(path)
    if damage == "index":
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 1
        path.write_bytes(bytes(blob))
    elif damage == "meta":
        meta = (built / "db.index.meta.npz").read_bytes()
        (tmp_path / "db.index.meta.npz").write_bytes(b"x" + meta)
    elif damage == "sidecar":
        side.write_text("{")
    elif damage == "no-sidecar":
        side.unlink()
    else:
        raw = json.loads(side.read_text())
        raw["bits"] = 32
        side.write_text(json.dumps(raw))
    _one_line_exit_2(cli("index", "query", path, "--codes", built / "q.npz"), *needles)


@pytest.mark.parametrize("args, needles", [
    (["--kind", "annoy"], ("invalid choice: 'annoy'",)),
    (["--kind", "ivf", "--param", "M=3"], ("kind 'ivf' has no parameter 'M'",)),
    (["--kind", "ivf", "--param", "nlist=lots"], ("nlist='lots': expected an integer",)),
    (["--kind", "ivf", "--param", "nlist=99999"], ("nlist=99999 clusters for 3000 items",)),
    (["--kind", "multihash", "--param", "nhash=17"], ("nhash=17 tables need at least 17 bits",)),
    (["--split", "test"], ("--data and --split choose what an .arch encodes",)),
])
def test_bad_build_options_exit_2_and_write_nothing(built, tmp_path, args, needles):
    _one_line_exit_2(cli("index", "build", built / "db.npz", "-o", tmp_path / "x.index", *args),
                     *needles)
    assert not list(tmp_path.iterdir())


def test_an_interrupted_save_leaves_no_half_written_file(tmp_path, monkeypatch):
    """The index file's write fails: no temporary file stays, and no index file appears."""
    import avsearch.index as index_module
    rng = np.random.default_rng(7)
    index = BinaryIndex.build(pm1(rng, 100, 16))
    real = index_module.atomic_write

    def failing(path, data):
        if str(path).endswith("x.index"):
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(index_module, "atomic_write", failing)
    with pytest.raises(OSError):
        index.save(tmp_path / "x.index")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.index.meta.npz"]
    _one_line_exit_2(cli("index", "query", tmp_path / "x.index", "--codes", tmp_path / "q.npz"),
                     "no such index file")


@pytest.mark.parametrize("args, needles", [
    (["-k", "0"], ("-k must be at least 1",)),
    (["--radius", "-1"], ("--radius at least 0",)),
    (["--param", "nprobe=4"], ("kind 'flat' has no query parameter 'nprobe'",)),
    (["--arch", "x.arch"], ("either --arch", "or --codes")),
    (["--split", "val"], ("--codes already holds codes",)),
])
def test_bad_query_options_exit_2(built, args, needles):
    _one_line_exit_2(cli("index", "query", built / "db.index", "--codes", built / "q.npz", *args),
                     *needles)
