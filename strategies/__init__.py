"""Search strategies, one module each, installed as ``avsearch.strategies``.

Strategies arrive with the end-to-end and strategies issues; this package holds their registry.
"""
from __future__ import annotations

__all__ = ["list_strategies"]

_STRATEGIES: dict[str, str] = {}


def list_strategies() -> dict[str, str]:
    """Registered strategies and their one-line summaries."""
    return dict(sorted(_STRATEGIES.items()))
