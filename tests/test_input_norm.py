"""Per-video input normalisation (av_nas ``input_norm=video``): each video's standardised
frames less their mean over time and divided by their std over time, per feature.

References: numpy's mean and std over time; a property (a per-video, per-feature affine
change of the raw features leaves the codes as they were); a real ``avsearch run`` with the
option, its exported program and its CNN baseline.
"""
from __future__ import annotations

import json

import numpy as np
import torch

import avsearch
import avsearch.baselines
from avsearch.arch import Architecture
from avsearch.baselines import TemporalCNN
from avsearch.cli import main
from avsearch.export import load_program
from avsearch.supernet import Standardize


def test_per_video_normalisation_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(4, 9, 5)).astype(np.float32)
    mean, std = rng.normal(size=5), rng.uniform(0.5, 2.0, size=5)
    x[1, :, 2] = 7.0          # a feature constant over one video: its std is clamped
    norm = Standardize(5, per_video=True)
    norm.set(torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
    z = (x.astype(np.float64) - mean) / std
    over_time = z.std(axis=1, ddof=1, keepdims=True)
    expected = (z - z.mean(axis=1, keepdims=True)) / np.maximum(over_time, 1e-3)
    got = norm(torch.from_numpy(x)).numpy()
    varying = np.ones(x.shape, dtype=bool)
    varying[1, :, 2] = False
    np.testing.assert_allclose(got[varying], expected[varying], rtol=1e-4, atol=1e-4)
    # the constant feature: float32's rounding residue over the clamped std, near 0
    assert np.abs(got[1, :, 2]).max() < 2e-3
    # one step has no spread over time: standardised only
    one = torch.from_numpy(x[:, :1])
    np.testing.assert_allclose(norm(one).numpy(), z[:, :1], rtol=1e-5, atol=1e-5)
    # off (the default): the training set's standardisation alone
    plain = Standardize(5)
    plain.set(torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
    np.testing.assert_allclose(plain(torch.from_numpy(x)).numpy(), z, rtol=1e-5, atol=1e-5)


def _affine_per_video(xs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """Each video's raw features, per feature, scaled by a positive factor and shifted."""
    g = torch.Generator().manual_seed(seed)
    return [x * (0.5 + 2 * torch.rand(x.shape[0], 1, x.shape[2], generator=g))
            + 3 * torch.randn(x.shape[0], 1, x.shape[2], generator=g) for x in xs]


def test_a_run_normalises_per_video_in_its_network_export_and_cnn(tmp_path, monkeypatch):
    built = []   # how the run built its CNN baseline

    class Recorded(TemporalCNN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(all(norm.per_video for norm in self.inputs))

    monkeypatch.setattr(avsearch.baselines, "TemporalCNN", Recorded)
    out = tmp_path / "run"
    assert main(["run", "--space", "av_nas", "--arch", "mamba", "--set", "input_norm=video",
                 "--budget", "smoke", "--bits", "16", "--quiet", "--out", str(out)]) == 0
    arch = json.loads((out / "best.arch").read_text())
    assert arch["space_config"]["input_norm"] == "video"
    assert "CNN" in json.loads((out / "metrics.json").read_text())["baselines"]
    assert built == [True]

    data = avsearch.data.load_dataset("avdigits")
    xs = [torch.from_numpy(x) for x in data.split("test").take(np.arange(24))]
    moved = _affine_per_video(xs, seed=1)
    net = Architecture.load(out / "best.arch").network().eval()
    assert main(["export", str(out / "best.arch"), "-o", str(tmp_path / "best.pt2")]) == 0
    program = load_program(tmp_path / "best.pt2")
    with torch.no_grad():
        for model in (net, program):
            torch.testing.assert_close(model(*moved), model(*xs), rtol=1e-3, atol=1e-3)

    # the control: the same network normalising by the training set only is not invariant
    space = avsearch.get_space("av_nas")
    assert space.op_config.input_norm == "train"
    plain = avsearch.compile_space(space, "fixed", arch["choices"]).eval()
    with torch.no_grad():
        assert (plain(*moved) - plain(*xs)).abs().max() > 0.1

    # and what per_video does to the CNN (its own class, checked directly)
    torch.manual_seed(0)
    cnn = TemporalCNN(dict(data.modalities), 16, per_video=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(cnn(*moved), cnn(*xs), rtol=1e-3, atol=1e-3)


def test_an_unknown_input_norm_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--space", "av_nas", "--arch", "mamba", "--set", "input_norm=frame",
                 "--budget", "smoke", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "input_norm" in err and "Traceback" not in err
    assert not out.exists()


def test_a_searched_input_cell_computes_the_per_video_option():
    """``input_norm=search``: an N cell per modality chooses Skip or VideoNorm; VideoNorm on
    every modality is, weight for weight, the network of ``input_norm=video``; Skip on every
    modality the one of ``input_norm=train``; the presets take Skip."""
    searched = avsearch.get_space("av_nas", input_norm="search")
    assert [c for c in searched.cells if c.endswith(".N")] == ["visual.N", "audio.N"]
    assert searched.candidates("visual.N") == ("Skip", "VideoNorm")
    assert all(searched.presets[p]["visual.N"] == "Skip" for p in ("mamba", "transformer"))
    base = {c: op for c, op in searched.presets["mamba"].items() if not c.endswith(".N")}
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 12, 64, generator=g), torch.randn(3, 12, 40, generator=g)]
    for op, option in (("VideoNorm", "video"), ("Skip", "train")):
        torch.manual_seed(0)
        net = avsearch.compile_space(searched, "fixed",
                                     {**base, "visual.N": op, "audio.N": op}).eval()
        other = avsearch.compile_space(avsearch.get_space("av_nas", input_norm=option), "fixed",
                                       base).eval()
        other.load_state_dict(net.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(net(*xs), other(*xs), rtol=1e-5, atol=1e-5)
    # per modality: VideoNorm on the visual stream only makes the codes blind to a per-video
    # affine change of the visual features, not of the audio ones
    net = avsearch.compile_space(searched, "fixed",
                                 {**base, "visual.N": "VideoNorm", "audio.N": "Skip"}).eval()
    moved = _affine_per_video(xs, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(net(moved[0], xs[1]), net(*xs), rtol=1e-3, atol=1e-3)
        assert (net(xs[0], moved[1]) - net(*xs)).abs().max() > 0.1


def test_a_run_searches_the_input_normalisation(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--space", "av_nas", "--strategy", "csp", "--set", "input_norm=search",
                 "--budget", "smoke", "--bits", "16", "--no-baselines", "--quiet",
                 "--out", str(out)]) == 0
    arch = Architecture.load(out / "best.arch")
    for m in ("visual", "audio"):
        assert arch.choices[f"{m}.N"] in ("Skip", "VideoNorm")
        assert set(arch.probabilities[f"{m}.N"]) == {"Skip", "VideoNorm"}
    assert main(["export", str(out / "best.arch"), "-o", str(tmp_path / "best.pt2")]) == 0
    data = avsearch.data.load_dataset("avdigits")
    xs = [torch.from_numpy(x) for x in data.split("test").take(np.arange(8))]
    with torch.no_grad():
        torch.testing.assert_close(load_program(tmp_path / "best.pt2")(*xs),
                                   arch.network().eval()(*xs), rtol=1e-4, atol=1e-4)
