"""Freezing a derived architecture: ``torch.export`` to a ``.pt2`` program.

The program keeps the selective scan as one ``avsearch::selective_scan`` node, so loading it
needs ``import avsearch`` before ``torch.export.load``. Batch and sequence length are dynamic.

``torch.export.load`` unpickles parts of the file, and unpickling can run arbitrary code: a
``.pt2`` from an untrusted source must not be loaded. ``export_arch`` therefore writes the
program's sha256 beside it (``best.pt2.sha256``, ``sha256sum`` format), and
:func:`load_program` refuses a program whose bytes do not match it, before unpickling
anything; that guards against a program altered or swapped after export, not against a
sidecar forged with it.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from avsearch._files import atomic_write, sha256_file
from avsearch.arch import Architecture
from avsearch.errors import AvsearchInputError

__all__ = ["export_arch", "export_towers", "tower_path", "load_program", "sidecar", "Tower"]


def sidecar(program: str | Path) -> Path:
    """Where the sha256 of ``program`` is kept: ``<program>.sha256``."""
    program = Path(program)
    return program.with_name(program.name + ".sha256")


def export_arch(arch: Architecture, output: Path) -> Path:
    """Export ``arch`` with its weights to ``output`` (``.pt2``) and its sha256 to
    :func:`sidecar` (``output`` + ``.sha256``); returns the program's path."""
    output = Path(output)
    net = arch.network()
    space = arch.build_space()
    length = int(arch.provenance.get("length", 25))
    max_len = space.op_config.max_len
    # traced at two steps at least: torch.export fixes a dimension whose example is 1, and a
    # program for images (sequences of length 1, ``Split.take``) must stay dynamic like any other;
    # except a network with an anchor bank (LAGNH), which holds images: one step, fixed
    images = space.op_config.anchors > 0
    length = 1 if images else min(max(length, 2), max_len)
    example = tuple(torch.randn(2, length, space.type_of(m).width) for m in space.modalities)
    batch = torch.export.Dim("batch", min=1)
    time = torch.export.Dim("time", min=1, max=max_len)
    dims = {0: batch} if images else {0: batch, 1: time}
    return _save(torch.export.export(net, example, dynamic_shapes=(tuple(dims for _ in example),)),
                 output)


class Tower(torch.nn.Module):
    """One tower of a cross-modal network (``space.towers``): ``forward(x)`` gives the codes
    tanh(...) of that modality's items from their input alone."""

    def __init__(self, net: torch.nn.Module, modality: str):
        super().__init__()
        self.net, self.modality = net, modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.tower(self.modality, x)


def tower_path(output: Path, modality: str) -> Path:
    """Where a tower's program goes: ``best.pt2`` → ``best.text.pt2``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.{modality}{output.suffix}")


def export_towers(arch: Architecture, output: Path) -> dict[str, Path]:
    """Export each tower of a cross-modal ``arch`` (``space.towers``) as a program of its own,
    :func:`tower_path` of ``output`` with its sidecar, so a caption is encoded without its
    video: frame features (B, T, D), or a text's token ids (B, L) int64 (its precomputed token
    features (B, L, D) when the run's provenance says the text was features)."""
    net = arch.network().eval()
    space = arch.build_space()
    lengths = arch.provenance.get("lengths") or {}
    tokens = arch.provenance.get("tokens", space.text_inputs)
    max_len = space.op_config.max_len
    batch = torch.export.Dim("batch", min=1)
    time = torch.export.Dim("time", min=1, max=max_len)
    out = {}
    for m in space.towers:
        length = min(max(int(lengths.get(m, 8)), 2), max_len)
        width = space.type_of(m).width
        example = (torch.randint(1, max(2, width), (2, length)) if m in tokens
                   else torch.randn(2, length, width))
        program = torch.export.export(Tower(net, m), (example,),
                                      dynamic_shapes=({0: batch, 1: time},))
        out[m] = _save(program, tower_path(output, m))
    return out


def _save(program, output: Path) -> Path:
    """Write an exported program and, first, its sha256 sidecar."""
    output = Path(output)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    # the hash first: a program without a matching sidecar is refused, never the reverse
    atomic_write(sidecar(output), f"{hashlib.sha256(data).hexdigest()}  {output.name}\n")
    atomic_write(output, data)
    return output


def load_program(path: str | Path, sha256: str | None = None) -> torch.nn.Module:
    """Load an exported program as a callable module: ``codes = sign(module(*features))``.

    The file's sha256 must match ``sha256`` or, by default, the one ``export_arch`` wrote
    beside it; otherwise :class:`AvsearchInputError` is raised before the file is unpickled.
    """
    import avsearch.ops.scan  # noqa: F401  (registers the scan op the program refers to)

    path = Path(path)
    if not path.is_file():
        raise AvsearchInputError(f"{path}: no such file")
    if sha256 is None:
        try:
            sha256 = sidecar(path).read_text().split()[0]
        except (OSError, IndexError):
            raise AvsearchInputError(f"{path}: no sha256 beside it ({sidecar(path).name}); "
                                     f"refusing to unpickle an unverified program (a .pt2 "
                                     f"from an untrusted source must not be loaded)") from None
    if sha256_file(path) != sha256.lower():
        raise AvsearchInputError(f"{path}: does not match its sha256 (altered or replaced "
                                 f"since export); not loaded")
    return torch.export.load(str(path)).module()
