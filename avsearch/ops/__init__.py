"""The operation library: every candidate of AV-NAS Table 1, VHMT's and AutoSSVH's, registered
by name per cell kind.

The op modules register themselves when :data:`~avsearch.ops.registry.OPS` first looks a name
up; ``selective_scan`` is the one scan shared by SelfSSM, CrossSSM and the Mamba blocks, and
importing this package registers it as the ``avsearch::selective_scan`` custom op.
"""
from __future__ import annotations

from avsearch.ops.registry import OpConfig, OpSpec, get_op, has_op, list_ops, register_op
from avsearch.ops.scan import selective_scan

__all__ = ["OpConfig", "OpSpec", "get_op", "has_op", "list_ops", "register_op", "selective_scan"]
