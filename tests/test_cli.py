"""The command line: spaces, space, draw; bad input exits 2 with one line and no traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from avsearch import Architecture
from avsearch.cli import main
from avsearch.errors import AvsearchInputError


def run(*args):
    return subprocess.run([sys.executable, "-m", "avsearch.cli", *args], capture_output=True,
                          text=True)


def test_spaces(capsys):
    assert main(["spaces"]) == 0
    assert "av_nas" in capsys.readouterr().out


def test_space_json_counts_and_presets(capsys):
    assert main(["space", "av_nas", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["combinations"] == 2 * 78364164096      # T pools by the mean or the max
    assert set(info["presets"]) == {"transformer", "mamba"}
    assert {c["name"]: c["candidates"] for c in info["cells"]}["I1"] == ["CrossAttention", "CrossSSM"]
    assert main(["space", "av_nas", "--json", "--set", "conv_kernels=3,4,5", "--set",
                 "pools=mean"]) == 0
    assert json.loads(capsys.readouterr().out)["combinations"] == 440301256704


def test_space_text(capsys):
    assert main(["space", "av_nas", "--set", "modalities=visual"]) == 0
    out = capsys.readouterr().out
    assert "architectures" in out and "S " in out and "preset mamba" in out


def test_draw_space_and_arch_to_dot(tmp_path, tiny_av):
    assert main(["draw", "--space", "av_nas", "--set", "d=32", "-o", str(tmp_path / "s.dot")]) == 0
    assert "cluster_audio" in (tmp_path / "s.dot").read_text()
    Architecture.from_space(tiny_av, tiny_av.presets["transformer"]).save(tmp_path / "a.arch")
    assert main(["draw", str(tmp_path / "a.arch"), "-o", str(tmp_path / "a.dot")]) == 0
    assert "SelfAttention" in (tmp_path / "a.dot").read_text()


@pytest.mark.parametrize("args, message", [
    (["space", "nope"], "unknown space 'nope'"),
    (["space", "av_nas", "--set", "d"], "bad --set 'd'"),
    (["space", "av_nas", "--set", "heads=7"], "heads=7 must divide"),
    (["draw"], "either an .arch file or --space"),
    (["draw", "missing.arch"], "missing.arch: no such file"),
    (["space"], "the following arguments are required: name"),
    (["run", "--objective", "autossvh", "--objective-set", "beta=lots"],
     "objective 'autossvh': option beta='lots': expected a number"),
    (["run", "--strategy", "darts", "--strategy-set", "depth=3"],
     "strategy 'darts' has no option 'depth' (options: "),
    (["run", "--recipe-set", "lr=-1"],
     "recipe 'default': option lr=-1.0 must be a finite number > 0 (--recipe-set)"),
    (["compare", "--out", "never-written", "--recipe", "paper", "--recipe-set", "momentum=0.9"],
     "recipe 'paper' has no option 'momentum' (options: lr, weight_decay, schedule, warmup, "
     "clip) (--recipe-set)"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    done = run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_bad_arch_file_exits_2_and_writes_nothing(tmp_path, tiny_av):
    arch = Architecture.from_space(tiny_av, tiny_av.presets["mamba"])
    arch.save(tmp_path / "a.arch")
    raw = json.loads((tmp_path / "a.arch").read_text())
    raw["format"] = "other/1"
    (tmp_path / "a.arch").write_text(json.dumps(raw))
    done = run("draw", str(tmp_path / "a.arch"), "-o", str(tmp_path / "a.svg"))
    assert done.returncode == 2 and "format tag 'other/1'" in done.stderr
    assert not (tmp_path / "a.svg").exists()


def test_help_for_every_command():
    for cmd in ("spaces", "space", "draw"):
        done = run(cmd, "--help")
        assert done.returncode == 0 and "usage: avsearch" in done.stdout


def test_library_errors_name_parameters_and_the_command_line_names_flags():
    from avsearch.cli import in_flags
    from avsearch.strategies import get_strategy
    from avsearch.train import get_budget

    with pytest.raises(AvsearchInputError) as err:
        get_budget("quick", 0)
    assert (str(err.value), err.value.parameter) == ("epochs must be >= 1, got 0", "epochs")
    assert in_flags(err.value) == "--epochs must be >= 1, got 0"
    with pytest.raises(AvsearchInputError) as err:
        get_strategy("darts", order="3")
    assert str(err.value) == "strategy 'darts': option order=3 must be 1 or 2"
    assert in_flags(err.value) == "strategy 'darts': option order=3 must be 1 or 2 (--strategy-set)"


def test_no_library_message_names_a_flag():
    """Errors raised outside cli.py speak of parameters; only the command line names flags."""
    import ast
    import re

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*root.glob("avsearch/**/*.py"), *root.glob("spaces/*.py"),
                 *root.glob("strategies/*.py")]:
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                text = "".join(c.value for arg in node.exc.args for c in ast.walk(arg)
                               if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if re.search(r"(^|[\s(])--[a-z]", text):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {text}")
    assert found == []


def test_objectives_are_listed_with_their_options():
    done = run("objectives")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == \
        ["supcon", "infonce", "vhmt", "autossvh", "lagnh", "sptch"]
    assert "warmup_epochs=1, granularities=250,400,600" in done.stdout
