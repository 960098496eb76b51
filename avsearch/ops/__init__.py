"""The operation library: every candidate of AV-NAS Table 1, registered by name per cell kind.

Importing this package registers the ops; ``selective_scan`` is the one scan shared by
SelfSSM, CrossSSM and the Mamba blocks.
"""
from __future__ import annotations

from avsearch.ops import attention, basic, frame_sampler, ssm, vhmt  # noqa: F401  (registration side effects)
from avsearch.ops.registry import OpConfig, OpSpec, get_op, has_op, list_ops, register_op
from avsearch.ops.scan import selective_scan

__all__ = ["OpConfig", "OpSpec", "get_op", "has_op", "list_ops", "register_op", "selective_scan"]
