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

__all__ = ["export_arch", "load_program", "sidecar"]


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
    program = torch.export.export(net, example, dynamic_shapes=(tuple(dims for _ in example),))
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
