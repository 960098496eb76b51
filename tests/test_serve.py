"""`avsearch serve`: a real server process (uvicorn) and a real HTTP client (urllib)."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import avsearch  # noqa: E402
from avsearch.cli import main  # noqa: E402
from avsearch.index import BinaryIndex, sidecar_path  # noqa: E402

TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m avsearch.cli serve ...`` on a free loopback port, until stopped."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "avsearch.cli", "serve", *args,
                                      "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not start")

    def call(self, method: str, path: str, body: bytes | dict | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def features(split, rows) -> dict[str, list]:
    visual, audio = split.take(np.asarray(rows))
    return {"visual": visual.tolist(), "audio": audio.tolist()}


def file_state(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())
            if p.name.startswith(path.name)}


@pytest.fixture(scope="module")
def served(trained_arch, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    assert main(["index", "build", str(trained_arch), "-o", str(out / "db.index")]) == 0
    server = Server(str(trained_arch), "--index", str(out / "db.index"),
                    "--max-items", "4", "--max-request-mb", "0.5")
    yield server, out / "db.index"
    server.stop()


@pytest.fixture(scope="module")
def test_split():
    return avsearch.data.load_dataset("avdigits").split("test")


def test_health_and_describe(served, trained_arch):
    server, path = served
    status, health = server.call("GET", "/health")
    assert status == 200 and health == {"status": "ok", "count": 3000}
    status, info = server.call("GET", "/describe")
    arch = avsearch.Architecture.load(trained_arch)
    assert status == 200
    assert info["model"]["arch_id"] == arch.arch_id and info["model"]["bits"] == 16
    assert info["model"]["modalities"] == {"visual": 64, "audio": 40}
    assert info["model"]["steps"] == 25
    assert info["index"]["kind"] == "flat" and info["index"]["exact"] is True


def test_search_answers_what_index_query_answers(served, trained_arch, test_split, tmp_path):
    """JSON features and an .npz upload give the codes `encode` gives and the neighbours
    `index query` gives."""
    server, path = served
    rows = [0, 1, 7]
    status, got = server.call("POST", "/search", {"features": features(test_split, rows), "k": 20})
    assert status == 200, got
    assert main(["encode", str(trained_arch), "--split", "test",
                 "-o", str(tmp_path / "q.npz")]) == 0
    assert main(["index", "query", str(path), "--codes", str(tmp_path / "q.npz"), "-k", "20",
                 "-o", str(tmp_path / "r.npz")]) == 0
    codes, want = np.load(tmp_path / "q.npz")["codes"], np.load(tmp_path / "r.npz")
    assert got["exact"] is True and got["tie_break"] == "database index"
    for item, row in zip(got["results"], rows):
        assert item["code"] == codes[row].tolist()
        assert [n["index"] for n in item["neighbours"]] == want["index"][row].tolist()
        assert [n["distance"] for n in item["neighbours"]] == want["distance"][row].tolist()
        assert [n["id"] for n in item["neighbours"]] == want["ids"][row].tolist()
    visual, audio = test_split.take(np.asarray(rows))
    buffer = io.BytesIO()
    np.savez(buffer, visual=visual, audio=audio)
    status, uploaded = server.call("POST", "/search?k=20", buffer.getvalue(),
                                   {"Content-Type": "application/octet-stream"})
    assert status == 200 and uploaded["results"] == got["results"]
    status, near = server.call("POST", "/search", {"features": features(test_split, rows),
                                                   "k": 20, "radius": 0})
    assert status == 200
    for item, full in zip(near["results"], got["results"]):
        assert item["neighbours"] == [n for n in full["neighbours"] if n["distance"] == 0]


@pytest.mark.parametrize("case", ["width", "steps", "nan", "unknown", "missing", "ragged",
                                  "too-many", "bad-json", "k0", "k-huge", "radius",
                                  "npy-two-modalities", "not-features", "bad-npz",
                                  "ids-on-search"])
def test_bad_input_gets_a_4xx_with_a_message_and_leaves_the_index(served, test_split, case):
    server, path = served
    before = file_state(path)
    good = features(test_split, [0])
    body, headers = None, {}
    expect = 400
    if case == "width":
        good["visual"] = np.zeros((1, 25, 63)).tolist()
        needle = "expected (items, 25, 64)"
    elif case == "steps":
        good = {m: np.zeros((1, 24, w)).tolist() for m, w in (("visual", 64), ("audio", 40))}
        needle = "24 steps, the model was trained on 25"
    elif case == "nan":
        good["audio"][0][3][5] = float("nan")
        body = json.dumps({"features": good}).encode()   # json.dumps writes NaN
        needle = "NaN or infinity"
    elif case == "unknown":
        good["text"] = good["visual"]
        needle = "unknown modality 'text'"
    elif case == "missing":
        del good["audio"]
        needle = "modality 'audio' is missing"
    elif case == "ragged":
        good["visual"][0] = good["visual"][0][:3] + [[1.0]]
        needle = "not a numeric"
    elif case == "too-many":
        good = features(test_split, range(5))
        expect, needle = 413, "at most 4"
    elif case == "bad-json":
        body, needle = b'{"features": ', "not valid JSON"
    elif case == "k0":
        body, needle = {"features": good, "k": 0}, "k must be between 1 and 1000"
    elif case == "k-huge":
        body, needle = {"features": good, "k": 10**6}, "k must be between 1 and 1000"
    elif case == "radius":
        body, needle = {"features": good, "radius": "far"}, "radius must be an integer"
    elif case == "npy-two-modalities":
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((1, 25, 64), np.float32))
        body, needle = buffer.getvalue(), "send an .npz with one array each"
    elif case == "not-features":
        body, needle = {"features": [1, 2]}, "'features' must map each modality"
    elif case == "bad-npz":
        body, needle = b"PK\x03\x04garbage", "not a readable .npz"
    else:
        body, needle = {"features": good, "identifiers": ["x"]}, "unknown field(s)"
    if body is None:
        body = {"features": good}
    for endpoint in ("/search", "/add"):
        status, answer = server.call("POST", endpoint, body, headers)
        assert status == expect and needle in answer["error"], (endpoint, status, answer)
    assert file_state(path) == before
    assert server.call("GET", "/health")[1]["count"] == 3000


def test_an_oversized_body_gets_413_and_leaves_the_index(served):
    """A declared length over the limit is refused from the headers, before any body (sending
    the body after would race the answer); a chunked body is refused once it passes the
    limit (this one ends one byte past it, so the server has read it all)."""
    import http.client
    server, path = served
    before = file_state(path)
    for endpoint in ("/search", "/add"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.putrequest("POST", endpoint)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(64 << 20))
        conn.endheaders()
        answer = conn.getresponse()
        assert answer.status == 413 and "at most 524288" in json.loads(answer.read())["error"]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", endpoint, body=iter([b"{" + b" " * (512 << 10)]),
                     headers={"Content-Type": "application/json",
                              "Transfer-Encoding": "chunked"}, encode_chunked=True)
        answer = conn.getresponse()
        assert answer.status == 413 and "over 524288 bytes" in json.loads(answer.read())["error"]
        conn.close()
    assert file_state(path) == before


def test_add_persists_the_items_and_refuses_duplicates(trained_arch, test_split, tmp_path):
    assert main(["index", "build", str(trained_arch), "-o", str(tmp_path / "db.index"),
                 "--kind", "multihash"]) == 0
    path = tmp_path / "db.index"
    server = Server(str(trained_arch), "--index", str(path), "--max-k", "5000")
    try:
        body = {"features": features(test_split, [3, 4]), "ids": ["clip-a", "clip-b"],
                "labels": np.eye(25)[[1, 2]].tolist()}
        status, added = server.call("POST", "/add", body)
        assert status == 200, added
        assert added == {"added": 2, "count": 3002, "ids": ["clip-a", "clip-b"]}
        # on disk: the index, its ids and its sidecar, consistent and checked
        index = BinaryIndex.load(path)
        assert index.count == 3002 and index.ids[-2:].tolist() == ["clip-a", "clip-b"]
        assert index.labels[-2:].argmax(1).tolist() == [1, 2]
        assert json.loads(sidecar_path(path).read_text())["count"] == 3002
        # the new items are found at distance 0 from themselves
        status, found = server.call("POST", "/search", {"features": features(test_split, [3]),
                                                        "k": 3002})
        assert status == 200
        hits = {n["id"]: n["distance"] for n in found["results"][0]["neighbours"]}
        assert hits["clip-a"] == 0
        # a duplicate id: 409, nothing changes
        before = file_state(path)
        status, answer = server.call("POST", "/add", {"features": features(test_split, [5]),
                                                      "ids": ["clip-a"]})
        assert status == 409 and "'clip-a'" in answer["error"]
        assert file_state(path) == before
        assert server.call("GET", "/health")[1]["count"] == 3002
    finally:
        server.stop()


def test_a_token_guards_every_endpoint_but_health(served, trained_arch, test_split):
    _, path = served
    server = Server(str(trained_arch), "--index", str(path), "--token", TOKEN)
    try:
        assert server.call("GET", "/health")[0] == 200
        assert server.call("GET", "/describe")[0] == 401
        status, answer = server.call("POST", "/search", {"features": features(test_split, [0])},
                                     {"Authorization": "Bearer wrong"})
        assert status == 401 and "token" in answer["error"]
        authorised = {"Authorization": f"Bearer {TOKEN}"}
        assert server.call("GET", "/describe", headers=authorised)[0] == 200
    finally:
        server.stop()


def test_binding_beyond_loopback_needs_a_token(served, trained_arch):
    _, path = served
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", "serve", str(trained_arch),
                           "--index", str(path), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "AVSEARCH_TOKEN": ""})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--host 0.0.0.0 is not loopback" in done.stderr and "--token" in done.stderr


def test_serving_an_index_of_another_architecture_exits_2(trained_arch, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", codes=np.where(rng.random((20, 16)) < 0.5, -1, 1),
             arch_id=np.asarray("feedbeef"), weights_sha256=np.asarray("0" * 64))
    assert main(["index", "build", str(tmp_path / "c.npz"), "-o", str(tmp_path / "c.index")]) == 0
    done = subprocess.run([sys.executable, "-m", "avsearch.cli", "serve", str(trained_arch),
                           "--index", str(tmp_path / "c.index")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "built for architecture feedbeef" in done.stderr
    assert "Traceback" not in done.stderr


def test_avsearch_never_imports_the_web_framework():
    code = ("import sys, avsearch, avsearch.cli, avsearch.index, avsearch.serve; "
            "avsearch.cli.build_parser(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- a cross-modal model
@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    """A small sptch model (test_sptch's folder of avclips clips) served with one index per
    tower, each built by 'avsearch index build --modality'."""
    from test_sptch import RUN, SLICE, write_clips

    out = tmp_path_factory.mktemp("serve-sptch")
    folder = write_clips(out / "clips")
    assert main([*RUN, "--data", str(folder), "--epochs", "1", "--no-baselines",
                 "--out", str(out / "run")]) == 0
    arch = out / "run" / "best.arch"
    for m in ("visual", "text"):
        assert main(["index", "build", str(arch), "--data", str(folder), "--modality", m,
                     "-o", str(out / f"{m}.index")]) == 0
    server = Server(str(arch), "--index", str(out / "visual.index"),
                    "--index", str(out / "text.index"), "--max-items", "8")
    data = avsearch.data.load_dataset(str(folder))
    texts = [json.loads(line)["text"]
             for line in (folder / "test_captions.jsonl").read_text().splitlines()]
    captions = [t if isinstance(t, str) else " ".join(t) for t in texts]   # as read_captions
    assert len(captions) == SLICE["test"]
    yield server, arch, out, data, captions
    server.stop()


def _reference_neighbours(queries: np.ndarray, database: np.ndarray, k: int) -> list[list[int]]:
    """Top-k database rows by Hamming distance, ties by row (a stable sort in numpy)."""
    distance = (queries[:, None, :] != database[None, :, :]).sum(-1)
    return [np.argsort(d, kind="stable")[:k].tolist() for d in distance]


def test_cross_modal_search_encodes_each_tower_and_searches_the_other(cross, tmp_path):
    """A caption (as text, tokenized with the .arch's vocabulary, or as token ids) gets the
    text tower's code that 'avsearch encode' gives its row, and the nearest videos by a
    reference ranking over 'encode''s video codes of the database; a video likewise finds
    captions, or videos when it names that target."""
    server, arch, out, data, captions = cross
    folder = out / "clips"
    assert main(["encode", str(arch), "--data", str(folder), "-o", str(tmp_path / "q.npz")]) == 0
    assert main(["encode", str(arch), "--data", str(folder), "--split", "retrieval",
                 "-o", str(tmp_path / "db.npz")]) == 0
    query, db = np.load(tmp_path / "q.npz"), np.load(tmp_path / "db.npz")
    rows, k = [0, 3, 5], 10
    video, ids = data.split("test").take(np.asarray(rows))
    requests = {
        ("text", "visual"): {"captions": [captions[r] for r in rows], "k": k},
        ("text", "visual", "ids"): {"features": {"text": ids.tolist()}, "k": k},
        ("visual", "text"): {"features": {"visual": video.tolist()}, "k": k},
        ("visual", "visual"): {"features": {"visual": video.tolist()}, "k": k,
                               "target": "visual"},
    }
    for (m, target, *_), body in requests.items():
        status, got = server.call("POST", "/search", body)
        assert status == 200, got
        assert got["modality"] == m and got["target"] == target
        want = _reference_neighbours(query[f"codes_{m}"][rows], db[f"codes_{target}"], k)
        for item, row, near in zip(got["results"], rows, want):
            assert item["code"] == query[f"codes_{m}"][row].tolist(), (m, target)
            assert [n["index"] for n in item["neighbours"]] == near, (m, target)
    status, info = server.call("GET", "/describe")
    assert status == 200 and set(info["indexes"]) == {"visual", "text"}
    assert info["model"]["text"]["tokens"] is True
    assert info["model"]["text"]["vocabulary"] == data.modalities["text"]


@pytest.mark.parametrize("case", ["unknown-modality", "two-modalities", "wrong-width",
                                  "wrong-frames", "empty-caption", "no-words", "nan",
                                  "token-out-of-range", "padding-only", "unknown-target",
                                  "captions-and-features", "too-many"])
def test_cross_modal_bad_input_gets_a_4xx_and_leaves_the_indexes(cross, case):
    server, arch, out, data, captions = cross
    video, ids = data.split("test").take(np.asarray([0, 1]))
    width = video.shape[2]
    bodies = {
        "unknown-modality": {"features": {"audio": video.tolist()}},
        "two-modalities": {"features": {"visual": video.tolist(), "text": ids.tolist()}},
        "wrong-width": {"features": {"visual": video[:, :, :width - 1].tolist()}},
        "wrong-frames": {"features": {"visual": video[:, :3].tolist()}},
        "empty-caption": {"captions": ["a dog", ""]},
        "no-words": {"captions": ["?!"]},
        "nan": {"features": {"visual": np.where(video == video.max(), np.nan, video).tolist()}},
        "token-out-of-range": {"features": {"text": (ids + 10 ** 6).tolist()}},
        "padding-only": {"features": {"text": np.zeros_like(ids).tolist()}},
        "unknown-target": {"captions": ["a dog"], "target": "audio"},
        "captions-and-features": {"captions": ["a dog"], "features": {"visual": video.tolist()}},
        "too-many": {"captions": ["a dog"] * 9},
    }
    expected = {"unknown-modality": "unknown modality 'audio'", "two-modalities": "one modality",
                "wrong-width": f"expected (items, 10, {width})", "wrong-frames": "3 frames",
                "empty-caption": "caption 1 has no words", "no-words": "caption 0 has no words",
                "nan": "NaN", "token-out-of-range": "must be integers in [0,",
                "padding-only": "caption 0 of 'text' is empty", "unknown-target": "unknown target",
                "captions-and-features": "either 'captions' or 'features'",
                "too-many": "at most 8"}
    before = {m: file_state(out / f"{m}.index") for m in ("visual", "text")}
    for endpoint in ("/search", "/add"):
        status, got = server.call("POST", endpoint, bodies[case])
        assert 400 <= status < 500 and expected[case] in got["error"], (endpoint, got)
    assert server.call("GET", "/health")[1]["count"] == 2 * len(data.split("train"))
    assert {m: file_state(out / f"{m}.index") for m in ("visual", "text")} == before


def test_cross_modal_add_goes_into_its_own_towers_index(cross, tmp_path):
    """An added caption lands in the text index (persisted), where a search for it with the
    same caption finds it at distance 0; the video index is untouched."""
    server, arch, out, data, captions = cross
    video_before = file_state(out / "visual.index")
    status, added = server.call("POST", "/add", {"captions": [captions[7]], "ids": ["new-7"]})
    assert status == 200 and added["modality"] == "text" and added["ids"] == ["new-7"]
    status, got = server.call("POST", "/search", {"captions": [captions[7]], "target": "text",
                                                  "k": 50})
    assert status == 200
    assert {"id": "new-7", "distance": 0} in [{"id": n["id"], "distance": n["distance"]}
                                               for n in got["results"][0]["neighbours"]]
    assert BinaryIndex.load(out / "text.index").count == added["count"]
    assert file_state(out / "visual.index") == video_before
    status, wrong = server.call("POST", "/add", {"captions": ["a dog"], "target": "visual"})
    assert status == 400 and "own modality's index" in wrong["error"]


def test_cross_modal_model_needs_an_index_per_tower_that_says_its_tower(cross, tmp_path):
    server, arch, out, data, captions = cross
    rng = np.random.default_rng(0)
    loaded = avsearch.Architecture.load(arch)
    np.savez(tmp_path / "c.npz", codes=np.where(rng.random((20, 8)) < 0.5, -1, 1),
             arch_id=np.asarray(loaded.arch_id), weights_sha256=np.asarray(loaded.weights_sha256))
    assert main(["index", "build", str(tmp_path / "c.npz"), "-o", str(tmp_path / "c.index")]) == 0
    for indexes, message in (([tmp_path / "c.index"], "does not say which tower"),
                             ([out / "text.index", out / "text.index"], "a second index")):
        done = subprocess.run([sys.executable, "-m", "avsearch.cli", "serve", str(arch),
                               *(a for p in indexes for a in ("--index", str(p)))],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
