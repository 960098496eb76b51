"""Freezing a derived architecture: ``torch.export`` to a ``.pt2`` program.

The program keeps the selective scan as one ``avsearch::selective_scan`` node, so loading it
needs ``import avsearch`` before ``torch.export.load``. Batch and sequence length are dynamic.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from avsearch.arch import Architecture, atomic_write

__all__ = ["export_arch", "load_program"]


def export_arch(arch: Architecture, output: Path) -> Path:
    """Export ``arch`` with its weights to ``output`` (``.pt2``); returns the path."""
    net = arch.network()
    space = arch.build_space()
    length = int(arch.provenance.get("length", 25))
    max_len = space.op_config.max_len
    example = tuple(torch.randn(2, length, space.type_of(m).width) for m in space.modalities)
    batch = torch.export.Dim("batch", min=1)
    time = torch.export.Dim("time", min=1, max=max_len)
    program = torch.export.export(net, example,
                                  dynamic_shapes=(tuple({0: batch, 1: time} for _ in example),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write(output, buffer.getvalue())
    return output


def load_program(path: Path) -> torch.nn.Module:
    """Load an exported program as a callable module: ``codes = sign(module(*features))``."""
    import avsearch  # noqa: F401  (registers the scan op the program refers to)
    return torch.export.load(str(path)).module()
