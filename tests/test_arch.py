"""``.arch`` files: round trip, validation errors that name the file, weights hash."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import avsearch
from avsearch import Architecture, ArchError, compile_space
from avsearch._files import sha256_file


@pytest.fixture
def saved(tmp_path, tiny_av):
    net = compile_space(tiny_av, "fixed", tiny_av.presets["mamba"])
    save_file(net.state_dict(), tmp_path / "best.safetensors")
    arch = Architecture.from_space(tiny_av, tiny_av.presets["mamba"], weights="best.safetensors",
                                   weights_sha256=sha256_file(tmp_path / "best.safetensors"),
                                   provenance={"strategy": "preset"})
    arch.save(tmp_path / "best.arch")
    return tmp_path / "best.arch", net


def test_round_trip_with_weights(saved, tiny_av):
    path, net = saved
    arch = Architecture.load(path)
    assert arch.choices == tiny_av.presets["mamba"] and arch.space == "av_nas"
    assert arch.arch_id == tiny_av.arch_id(arch.choices)
    loaded = arch.network()
    x = [torch.randn(2, 5, w) for w in (12, 16)]
    torch.testing.assert_close(loaded(*x), net.eval()(*x))
    assert json.loads(path.read_text())["format"] == "avsearch.arch/1"


def edit(path, **changes):
    raw = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("change, message", [
    (dict(format="avsearch.arch/0"), "format tag 'avsearch.arch/0'"),
    (dict(space="vhmt_nope"), "unknown space 'vhmt_nope'"),
    (dict(choices=None), "field 'choices' missing"),
    (dict(arch_id="0" * 16), "does not match its choices"),
])
def test_malformed_files_name_the_file(saved, change, message):
    path, _ = saved
    edit(path, **change)
    with pytest.raises(ArchError, match=message) as info:
        Architecture.load(path)
    assert str(path) in str(info.value)


def test_unknown_op_and_missing_cell(saved):
    path, _ = saved
    raw = json.loads(path.read_text())
    edit(path, choices={**raw["choices"], "T": "Conv_k"}, arch_id=None)
    with pytest.raises(ArchError, match=r"cell 'T': 'Conv_k' is not a candidate"):
        Architecture.load(path)
    choices = dict(raw["choices"])
    del choices["audio.U4"]
    edit(path, choices=choices)
    with pytest.raises(ArchError, match=r"no choice for cell\(s\) audio.U4"):
        Architecture.load(path)


def test_arch_of_another_space_config(saved):
    path, _ = saved
    raw = json.loads(path.read_text())
    edit(path, space_config={**raw["space_config"], "modalities": {"visual": 12}}, arch_id=None)
    with pytest.raises(ArchError, match=r"no choice for cell\(s\) S; unknown cell\(s\) audio.M1"):
        Architecture.load(path)


def test_not_json_and_missing(tmp_path):
    (tmp_path / "x.arch").write_text("{not json")
    with pytest.raises(ArchError, match=r"x.arch: not valid JSON"):
        Architecture.load(tmp_path / "x.arch")
    with pytest.raises(ArchError, match=r"nope.arch: no such file"):
        Architecture.load(tmp_path / "nope.arch")


def test_weights_hash_is_checked(saved):
    path, net = saved
    state = {k: v + 1 for k, v in net.state_dict().items()}
    save_file(state, path.parent / "best.safetensors")
    with pytest.raises(ArchError, match="does not match its sha256"):
        Architecture.load(path).network()
    (path.parent / "best.safetensors").unlink()
    with pytest.raises(ArchError, match="is missing"):
        Architecture.load(path).network()


def test_probabilities_are_validated(saved):
    path, _ = saved
    edit(path, probabilities={"T": {"Conv_k": 1.0}})
    with pytest.raises(ArchError, match=r"cell 'T': unknown op"):
        Architecture.load(path)


def test_save_is_atomic(tmp_path, tiny_av, monkeypatch):
    arch = Architecture.from_space(tiny_av, tiny_av.presets["mamba"])
    monkeypatch.setattr(avsearch.arch.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        arch.save(tmp_path / "a.arch")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary is left


def test_atomic_write_gives_files_the_usual_permissions(tmp_path):
    import os

    from avsearch._files import atomic_write

    umask = os.umask(0)
    os.umask(umask)
    atomic_write(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_written_before_an_option_existed_still_loads(tmp_path):
    """An avsearch that did not know the vhmt space's `samplers` and `drop_ratio` options
    recorded a config without them and hashed that; the file loads (the options take their
    defaults), and an edit of its choices is still caught."""
    from avsearch.graph import arch_id_of

    space = avsearch.get_space("vhmt", d=8, d_dec=8, bits=8, heads=2, d_state=4)
    config = {k: v for k, v in space.config.items() if k not in ("samplers", "drop_ratio")}
    choices = space.presets["exp3"]
    path = tmp_path / "old.arch"
    Architecture("vhmt", config, choices, arch_id=arch_id_of("vhmt", config, choices)).save(path)
    arch = Architecture.load(path)
    assert arch.arch_id == space.arch_id(choices) and arch.build_space().config == space.config
    edit(path, choices={**choices, "student.encoder": "Mamba_3"})
    with pytest.raises(ArchError, match="does not match its choices"):
        Architecture.load(path)


def test_an_av_nas_file_from_before_searched_pooling_builds_the_mean_pooled_space(tmp_path):
    """av_nas's T cell searched the mean alone before the `pools` option existed; a config
    recorded then (no `pools`) builds that space, not today's default with max-pooled T
    candidates, so its supernets and weights load."""
    from avsearch.graph import arch_id_of

    old = avsearch.get_space("av_nas", d=8, heads=2, pools="mean")
    config = {k: v for k, v in old.config.items() if k != "pools"}
    choices = old.presets["mamba"]
    path = tmp_path / "old.arch"
    Architecture("av_nas", config, choices, arch_id=arch_id_of("av_nas", config, choices)).save(path)
    space = Architecture.load(path).build_space()
    assert list(space.candidates("T")) == list(old.candidates("T")) == ["SelfAttention", "SelfSSM"]
    assert "SelfSSM/max" in avsearch.get_space("av_nas", d=8, heads=2).candidates("T")


@pytest.mark.parametrize("weights", ["/etc/hostname", "../other/best.safetensors",
                                     "sub/../../best.safetensors"])
def test_weights_outside_the_arch_folder_are_refused(saved, weights):
    """A crafted .arch must not make avsearch read files elsewhere: absolute paths and ``..``
    are refused at load, before any weights are read, whatever the hash says."""
    path, _ = saved
    other = path.parent / "other"
    other.mkdir()
    (other / "best.safetensors").write_bytes((path.parent / "best.safetensors").read_bytes())
    edit(path, weights=weights)
    with pytest.raises(ArchError, match="leaves the .arch's folder") as info:
        Architecture.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_link_leading_out_of_the_folder_is_refused(saved, tmp_path_factory):
    path, _ = saved
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "w.safetensors"
    elsewhere.write_bytes((path.parent / "best.safetensors").read_bytes())
    (path.parent / "link.safetensors").symlink_to(elsewhere)
    edit(path, weights="link.safetensors")
    with pytest.raises(ArchError, match="leaves the .arch's folder"):
        Architecture.load(path)
    (path.parent / "inside").mkdir()
    (path.parent / "inside" / "w.safetensors").write_bytes(elsewhere.read_bytes())
    edit(path, weights="inside/w.safetensors")               # a sub-folder is inside
    assert Architecture.load(path).load_weights().keys()


@pytest.mark.parametrize("sha", [None, "", "abc", "Z" * 64])
def test_weights_without_a_valid_sha256_are_refused(saved, sha):
    path, _ = saved
    raw = json.loads(path.read_text())
    raw["weights_sha256"] = sha
    path.write_text(json.dumps(raw))
    with pytest.raises(ArchError, match="without a sha256") as info:
        Architecture.load(path)
    assert str(path) in str(info.value)


def test_eval_and_encode_say_which_data_and_refuse_a_missing_path(saved, capsys, tmp_path):
    """An .arch names its data in provenance.data: eval/encode say which data they read, and a
    path that does not exist exits with 2 naming the .arch, before anything is written."""
    from avsearch.cli import main

    path, _ = saved
    edit(path, provenance={"data": str(tmp_path / "no" / "such" / "data")})
    out = tmp_path / "codes.npz"
    for argv in (["eval", str(path)], ["encode", str(path), "-o", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert str(path) in err and "provenance.data" in err and "no such file" in err
    assert not out.exists()


def test_export_records_the_programs_sha256_and_the_loader_checks_it(saved, monkeypatch):
    """load_program unpickles nothing whose bytes differ from what export wrote, or that has
    no sha256 beside it; the sidecar is the file's real sha256 in sha256sum's format."""
    import hashlib

    from avsearch.errors import AvsearchInputError
    from avsearch.export import export_arch, load_program

    path, net = saved
    program = export_arch(Architecture.load(path), path.parent / "best.pt2")
    digest = hashlib.sha256(program.read_bytes()).hexdigest()
    assert (path.parent / "best.pt2.sha256").read_text() == f"{digest}  best.pt2\n"
    x = [torch.randn(2, 5, w) for w in (12, 16)]
    torch.testing.assert_close(load_program(program)(*x), net.eval()(*x))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.export.load was called")

    monkeypatch.setattr(torch.export, "load", no_unpickling)
    program.write_bytes(program.read_bytes() + b"\0")           # altered after export
    with pytest.raises(AvsearchInputError, match="does not match its sha256"):
        load_program(program)
    (path.parent / "best.pt2.sha256").unlink()
    with pytest.raises(AvsearchInputError, match="no sha256 beside it"):
        load_program(program)
    with pytest.raises(AvsearchInputError, match="does not match"):
        load_program(program, sha256=digest)
