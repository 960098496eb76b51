"""Training's arithmetic (``--precision``): bf16 autocast on CPUs that compute bf16 natively."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import avsearch
from avsearch import cli, inference
from avsearch.data import load_dataset
from avsearch.errors import AvsearchInputError
from avsearch.inference import resolve_precision

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not inference.cpu_has_native_bf16(),
                                reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")


def test_auto_is_bf16_on_cuda_and_float32_on_a_cpu():
    assert resolve_precision("auto", CPU) is None
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_precision("fp32", torch.device("cuda")) is None
    with pytest.raises(AvsearchInputError, match="expected auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo to read")
def test_native_bf16_is_what_the_cpu_flags_say():
    """Against the kernel's own list of the CPU's flags: an AVX-512 CPU without AVX-512 BF16
    or AMX has none (oneDNN's bf16 check says yes there)."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert inference.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)


def test_bf16_on_a_cpu_without_it_exits_2_before_writing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    out = tmp_path / "run"
    code = cli.main(["run", "--arch", "mamba", "--budget", "smoke", "--precision", "bf16",
                     "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 2
    assert "no native bf16" in capsys.readouterr().err
    assert not out.exists()


def _first_loss(run: str, precision: str, tmp_path) -> tuple[float, dict]:
    out = tmp_path / precision
    assert cli.main(["run", "--arch", "mamba", "--budget", "smoke", "--epochs", "1", "--seed", "3",
                     "--precision", precision, "--no-baselines", "--quiet", "--set", "d=16",
                     "--out", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    return next(x["loss"] for x in lines if "loss" in x), json.loads((out / "metrics.json").read_text())


@needs_bf16
def test_a_bf16_run_trains_in_bf16_and_says_so(tmp_path):
    """Same seed, same batches: the bf16 run's training loss differs from the float32 run's
    (its matmuls round to bf16) but stays close; metrics.json records what ran."""
    loss32, m32 = _first_loss("run", "fp32", tmp_path)
    loss16, m16 = _first_loss("run", "bf16", tmp_path)
    assert (m32["precision"], m16["precision"]) == ("float32", "bfloat16")
    assert loss16 != loss32
    assert abs(loss16 - loss32) < 0.05 * abs(loss32)


@needs_bf16
def test_training_forward_is_bf16_and_evaluation_float32():
    """Inside a bf16 trainer's loss the network's linear layers run in bf16; the encoder
    that evaluation uses (the device's default) runs them in float32, so codes do not depend
    on the training precision."""
    data = load_dataset("avdigits")
    space = avsearch.get_space("av_nas", d=16, heads=2, modalities={"visual": 64, "audio": 40})
    net = avsearch.compile_space(space, "fixed", choices=space.presets["mamba"]).train()
    seen = []
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    split = data.split("train")
    rows = np.arange(4)
    inference.Encoder(net, split, CPU, precision="bf16")(rows)
    inference.Encoder(net, split, CPU)(rows)
    assert seen == [torch.bfloat16, torch.float32]
