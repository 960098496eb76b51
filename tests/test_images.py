"""Image data (one feature vector per item, no time axis) through run, eval, encode and export:
an image is a sequence of length 1 everywhere downstream of ``Split.take``."""
from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from avsearch.arch import Architecture
from avsearch.cli import main
from avsearch.export import load_program
from avsearch.testing.helpers import reference_map

C, D, A = 4, 12, 5


def write_image_folder(folder):
    """Labelled train images (the database) and test queries; features carry their classes."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(C, D)) * 2
    folder.mkdir()
    raw = {}
    for role, n in (("train", 48), ("test", 30)):
        y = np.eye(C, dtype=np.uint8)[np.arange(n) % C]
        y[::7, 0] = 1
        x = (y @ centres + rng.normal(size=(n, D))).astype(np.float32)
        with h5py.File(folder / f"{role}_feats.h5", "w") as f:
            f.create_dataset("feats", data=x)
        np.save(folder / f"{role}_labels.npy", y)
        scipy.io.savemat(folder / f"{role}_tags.mat", {"tags": (rng.random((n, A)) < .3) * 1.0})
        raw[role] = (x, y.astype(bool))
    return raw


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    raw = write_image_folder(root / "imgs")
    out = root / "run"
    assert main(["run", "--arch", "mamba", "--data", str(root / "imgs"), "--budget", "smoke",
                 "--out", str(out), "--quiet", "--no-baselines", "--bits", "16"]) == 0
    return root, out, raw


def _codes(net, x):
    """Codes from the raw (N, D) arrays, made sequences of length 1 here, not by avsearch."""
    with torch.no_grad():
        return np.where(net(torch.from_numpy(x[:, None, :])).numpy() >= 0, 1, -1)


def test_image_run_records_metrics_of_its_weights(image_run, capsys):
    root, out, raw = image_run
    arch = Architecture.load(out / "best.arch")
    assert arch.provenance["length"] == 1
    net = arch.network().eval()
    (xq, yq), (xd, yd) = raw["test"], raw["train"]
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    # test = the queries minus the carved val images; ids name their rows
    capsys.readouterr()
    assert main(["encode", str(out / "best.arch"), "--split", "test", "-o",
                 str(root / "q.npz")]) == 0
    enc = np.load(root / "q.npz")
    rows = [int(i.split(":")[1]) for i in enc["ids"]]
    assert len(rows) == 24 and set(rows) < set(range(30))
    q = _codes(net, xq[rows])
    np.testing.assert_array_equal(enc["codes"], q)
    np.testing.assert_array_equal(enc["labels"], yq[rows])
    d = _codes(net, xd)
    # images are evaluated as the image-hashing papers do: AP divided by the relevant items
    # retrieved, and a topK-precision curve
    assert (metrics["protocol"], metrics["normalisation"]) == ("image", "retrieved")
    assert metrics["map@20"] == pytest.approx(
        reference_map(q, yq[rows], d, yd, 20, normalisation="retrieved"), abs=1e-9)
    assert metrics["map@1000"] == pytest.approx(     # K past the 48 items: the whole ranking
        reference_map(q, yq[rows], d, yd, 1000, normalisation="retrieved"), abs=1e-9)
    relevant = (yq[rows].astype(int) @ yd.T.astype(int)) > 0
    dist = (q.shape[1] - q @ d.T) // 2
    order = np.stack([np.lexsort((np.arange(len(d)), row)) for row in dist])
    curve = metrics["topk_precision"]
    for k, p in zip(curve["k"], curve["precision"]):
        assert p == pytest.approx(np.take_along_axis(relevant, order[:, :k], 1).sum(1).mean() / k)
    capsys.readouterr()
    assert main(["eval", str(out / "best.arch"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["map@20"] == pytest.approx(metrics["map@20"], abs=1e-12)
    assert got["topk_precision"] == curve
    assert main(["eval", str(out / "best.arch"), "--normalisation", "k"]) == 0
    text = capsys.readouterr().out
    assert "image protocol, mAP normalised by k" in text and "@1000" in text
    assert f"topK precision: @1 {curve['precision'][0]:.4f}" in text


def test_image_codes_do_not_depend_on_the_batch_and_export_agrees(image_run):
    root, out, raw = image_run
    arch = Architecture.load(out / "best.arch")
    net = arch.network().eval()
    x = raw["test"][0]
    together = _codes(net, x)
    alone = np.concatenate([_codes(net, x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(alone, together)
    assert main(["export", str(out / "best.arch"), "-o", str(root / "best.pt2")]) == 0
    program = load_program(root / "best.pt2")
    with torch.no_grad():
        for batch in (x[:1], x):            # one image and several, each a length-1 sequence
            got = np.where(program(torch.from_numpy(batch[:, None, :])).numpy() >= 0, 1, -1)
            np.testing.assert_array_equal(got, _codes(net, batch))


def test_serve_takes_images_as_items_by_width(image_run):
    """``avsearch serve`` (a real server) takes an image model's features as (items, width),
    answers what it answers for (items, 1, width), and refuses other shapes with a 400."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from test_serve import Server

    root, out, raw = image_run
    assert main(["index", "build", str(out / "best.arch"), "-o", str(root / "db.index")]) == 0
    net = Architecture.load(out / "best.arch").network().eval()
    x = raw["test"][0][:3]
    server = Server(str(out / "best.arch"), "--index", str(root / "db.index"))
    try:
        status, flat = server.call("POST", "/search", {"features": {"visual": x.tolist()},
                                                       "k": 5})
        assert status == 200, flat
        np.testing.assert_array_equal([r["code"] for r in flat["results"]], _codes(net, x))
        status, seq = server.call("POST", "/search",
                                  {"features": {"visual": x[:, None, :].tolist()}, "k": 5})
        assert status == 200 and seq == flat
        buf = io.BytesIO()
        np.save(buf, x)                                  # an .npy body of (items, width)
        status, npy = server.call("POST", "/search?k=5", buf.getvalue(),
                                  {"Content-Type": "application/octet-stream"})
        assert status == 200 and npy == flat
        status, err = server.call("POST", "/search", {"features": {"visual": x[:, :5].tolist()}})
        width = x.shape[1]
        assert status == 400 and f"(items, {width}) or (items, 1, {width})" in err["error"]
    finally:
        server.stop()


def test_image_run_reports_pcah_and_sh_beside_lsh_and_itq(tmp_path, capsys):
    """A real run on image data reports the image-hashing baselines under the image protocol;
    PCAH's numbers are recomputed here from its definition (SVD of the centred training
    features, signs fixed, sign of the projection) and a reference MAP."""
    from avsearch.data import load_dataset

    write_image_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    assert main(["run", "--arch", "mamba", "--data", str(tmp_path / "imgs"), "--budget", "smoke",
                 "--out", str(out), "--quiet", "--bits", "8"]) == 0
    assert "mAP@1000" in capsys.readouterr().out            # the closing table's columns
    baselines = json.loads((out / "metrics.json").read_text())["baselines"]
    assert {"LSH", "ITQ", "PCAH", "SH"} <= set(baselines)
    for name in ("PCAH", "SH"):
        test = baselines[name]["test"]
        assert (test["protocol"], test["normalisation"]) == ("image", "retrieved")
        assert "map@1000" in test and len(test["topk_precision"]["k"]) > 5
    data = load_dataset(str(tmp_path / "imgs"))
    train, test, db = data.split("train"), data.split("test"), data.split("retrieval")
    x = train.features["visual"][:].astype(np.float64)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    top = vt[:8].T * np.sign(vt[:8][np.arange(8), np.abs(vt[:8]).argmax(1)])

    def codes(split):
        return np.where((split.features["visual"][:] - x.mean(0)) @ top >= 0, 1, -1)
    want = reference_map(codes(test), test.labels, codes(db), db.labels, 20,
                         normalisation="retrieved")
    assert baselines["PCAH"]["test"]["map@20"] == pytest.approx(want, abs=1e-9)
