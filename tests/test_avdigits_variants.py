"""avdigits variants: the builder at other shapes (`avsearch data build avdigits --variant`),
and `--data PATH.npz` loading what it wrote."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from avsearch.cli import main
from avsearch._files import sha256_file
from avsearch.data import avdigits, avdigits_builder, load_dataset
from avsearch.errors import AvsearchInputError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")

# A test-only variant that builds in seconds yet differs from avdigits in every dimension:
# 6 classes (shown 0-2 x spoken seven-eight), 12 steps, 6x6 frames (36-d), 24 mel bands.
TINY = replace(avdigits.DEFAULT, name="tinyvar", visual=(0, 1, 2), spoken=(7, 8),
               sizes=(60, 30, 30), voices=(3, 2, 2), prosodies=1, length=12, window=(3, 6),
               side=6, mels=24, summary="test-only")


def _build(out, seed=0, workers=2):
    """Build TINY through the command line, as a registered variant."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(avdigits.SHAPES, TINY.name, TINY)
        if workers == 2:
            assert main(["data", "build", "avdigits", "--variant", TINY.name, "--out", str(out),
                         "--seed", str(seed)]) == 0
        else:
            avdigits_builder.build_avdigits(out, seed, shape=TINY.name, workers=workers)
    return out / "avdigits-tinyvar.npz"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sklearn")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return _build(tmp_path_factory.mktemp("variant"), seed=5)


# ------------------------------------------------------------------ the registered variants
def test_registered_variants_have_the_asked_shapes():
    shapes = avdigits.SHAPES
    assert shapes["default"] is avdigits.DEFAULT
    v30, few, long = shapes["v30"], shapes["few"], shapes["long"]
    # issue 12's unshipped data set: 30 classes, 1,200 training videos, 450 val and test
    assert v30.num_class == 30 and v30.sizes == (1200, 450, 450)
    assert v30.sizes[0] // v30.num_class == 40
    assert few.num_class == 20 and few.sizes[0] // few.num_class == 15 and few.length == 16
    assert long.num_class == 25 and long.length == 40
    assert long.modalities != avdigits.DEFAULT.modalities
    assert long.modalities == {"visual": 144, "audio": 32}
    for shape in shapes.values():
        assert shape.file_name == ("avdigits.npz" if shape.name == "default"
                                   else f"avdigits-{shape.name}.npz")
        assert len(avdigits.class_names(shape)) == shape.num_class
    # the shipped shape is what the module's constants say
    assert avdigits.DEFAULT.split_sizes == avdigits.SIZES
    assert avdigits.DEFAULT.modalities == {"visual": 64, "audio": 40}


def test_variants_draw_from_their_own_streams():
    default = avdigits_builder._seed_sequence(0, avdigits.DEFAULT).generate_state(4)
    assert (default == np.random.SeedSequence(0).generate_state(4)).all()   # shipped file
    v30 = avdigits_builder._seed_sequence(0, avdigits.SHAPES["v30"]).generate_state(4)
    few = avdigits_builder._seed_sequence(0, avdigits.SHAPES["few"]).generate_state(4)
    assert not (v30 == default).all() and not (v30 == few).all()


@pytest.mark.parametrize("change, message", [
    (dict(sizes=(61, 30, 30)), "multiples of 6"),
    (dict(spoken=(7, 7)), "distinct digits"),
    (dict(voices=(90, 4, 4)), f"at most {len(avdigits.VARIANTS)} in all"),
    (dict(window=(3, 13)), "within 1..length 12"),
    (dict(p_distractor_word=1.5), "probabilities"),
    (dict(name="../x"), "names the file"),
])
def test_an_impossible_shape_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        replace(TINY, **change)


def test_only_the_shipped_shape_may_be_called_default(tmp_path):
    with pytest.raises(ValueError, match="name of its own"):
        avdigits_builder.build_avdigits(tmp_path, shape=replace(TINY, name="default"))
    assert not list(tmp_path.iterdir())


def test_unknown_variant_exits_2_listing_the_variants(tmp_path, capsys):
    assert main(["data", "build", "avdigits", "--variant", "v31", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'v31'" in err
    assert all(name in err for name in avdigits.SHAPES)
    assert not list(tmp_path.iterdir())


def test_build_help_names_every_variant(capsys):
    with pytest.raises(SystemExit):
        main(["data", "build", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in avdigits.SHAPES)


def test_data_refuses_an_npz_that_is_not_avdigits(tmp_path, capsys):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(AvsearchInputError, match="not an avdigits file") as err:
        load_dataset(path)
    assert str(path) in str(err.value)
    assert main(["run", "--data", str(path), "--budget", "smoke", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ a built variant
@needs_espeak
def test_variant_loads_with_its_shape(built):
    data = load_dataset(built)
    assert data.name == "avdigits-tinyvar" and data.source == str(built)
    assert data.num_class == 6 and data.length == 12
    assert dict(data.modalities) == {"visual": 36, "audio": 24}
    assert data.info["classes"] == ["v0-a7", "v0-a8", "v1-a7", "v1-a8", "v2-a7", "v2-a8"]
    assert data.info["variant"] == "tinyvar" and data.info["seed"] == 5
    assert data.info["shape"]["sizes"] == [60, 30, 30]
    assert data.info["sha256"] == sha256_file(built)        # recorded, not checked
    for name, n in TINY.split_sizes.items():
        split = data.split(name)
        assert len(split) == n and split.labels.shape == (n, 6)
        assert (split.labels.sum(axis=0) == n // 6).all()        # balanced
        assert [f.shape for f in split.features.values()] == [(n, 12, 36), (n, 12, 24)]
        assert split.ids[0] == f"avdigits-tinyvar-{name}-00000"
    assert len(data.split("retrieval")) == 60
    # a modality selector works on a path too
    joined = load_dataset(f"{built}:visual+audio")
    assert joined.modalities == {"visual_audio": 60} and joined.num_class == 6


@needs_espeak
def test_variant_classes_match_what_is_shown_and_spoken(built):
    """Class c = (visual[c // 2], spoken[c % 2]): the loud word is the spoken digit, and the
    only image of the shown digit sits in one run of window[0]..window[1] steps."""
    from sklearn.datasets import load_digits
    digit_of = load_digits().target
    data = load_dataset(built)
    utterances = data.info["utterances"]
    for name in ("train", "val", "test"):
        label = data.split(name).labels.argmax(axis=1)
        prov = data.info["provenance"][name]
        spoken = np.array([utterances[u][1] for u in prov["utterance"][:, 0]])
        assert (spoken == np.array(TINY.spoken)[label % 2]).all()
        for c, images in zip(label, prov["image"]):
            shown = TINY.visual[c // 2]
            steps = np.flatnonzero([i >= 0 and digit_of[i] == shown for i in images])
            assert len({int(images[t]) for t in steps}) == 1
            assert TINY.window[0] <= len(steps) <= TINY.window[1]
            assert (np.diff(steps) == 1).all()


@needs_espeak
def test_variant_splits_share_no_source_image_and_no_voice(built):
    data = load_dataset(built)
    prov, voices = data.info["provenance"], data.info["voices"]
    splits = ("train", "val", "test")
    images = {s: set(np.unique(prov[s]["image"])) - {-1} for s in splits}
    used = {s: {voices[v] for v in np.unique(prov[s]["voice"])} for s in splits}
    variants = {s: {v.split("+")[1] for v in used[s]} for s in splits}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not images[a] & images[b], (a, b)
        assert not used[a] & used[b], (a, b)
        assert not variants[a] & variants[b], (a, b)
    assert {s: len(v) for s, v in data.info["split_voices"].items()} == TINY.split_voices
    assert all(used[s] <= set(data.info["split_voices"][s]) for s in splits)


@needs_espeak
def test_same_seed_same_bytes(built, tmp_path):
    again = _build(tmp_path / "again", seed=5, workers=1)
    assert again.read_bytes() == built.read_bytes()
    other = _build(tmp_path / "other", seed=6)
    assert other.read_bytes() != built.read_bytes()


@needs_espeak
def test_run_on_a_built_variant(built, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(built), "--budget", "smoke", "--quiet", "--bits", "16",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "avdigits-tinyvar"
    test = metrics["test"]
    assert (test["n_queries"], test["n_database"]) == (30, 60)
    # at the largest radius every database video is retrieved: precision = the share of
    # relevant pairs = 1 / (the variant's 6 classes), not avdigits' 1/25
    assert test["pr_curve"]["precision"][-1] == pytest.approx(1 / 6)
    assert test["pr_curve"]["retrieved"][-1] == 30 * 60
    assert set(metrics["baselines"]) >= {"LSH", "ITQ", "MLP"}
    arch = json.loads((out / "best.arch").read_text())
    assert arch["provenance"]["data"] == str(built) and arch["provenance"]["length"] == 12
    # eval finds the variant from the .arch alone
    capsys.readouterr()
    assert main(["eval", str(out / "best.arch"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["data"] == "avdigits-tinyvar" and got["map@100"] == pytest.approx(test["map@100"])
