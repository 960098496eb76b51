"""Search spaces, one module each, installed as ``avsearch.spaces``.

A space is a function of typed options that declares a :class:`~avsearch.graph.SearchSpace`.
Registering it makes it available to every command (``--space NAME --set KEY=VALUE``)::

    from avsearch.spaces import Option, register_space

    @register_space("tiny", "a one-cell example", options={"d": Option(16, int, "width")})
    def tiny(d):
        ...
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace
from avsearch.options import Option, boolean, integers, modality_widths, resolve
from avsearch.registry import Registry

__all__ = ["Option", "register_space", "get_space", "list_spaces", "space_options", "boolean",
           "integers", "modality_widths", "SPACES"]


@dataclass(frozen=True)
class _Entry:
    name: str
    summary: str
    options: Mapping[str, Option]
    build: Callable[..., SearchSpace]


# the spaces by name (``--space``); the built-ins register themselves on first lookup
SPACES: Registry[_Entry] = Registry("space", error=SpaceError, builtins=[
    f"{__name__}.{m}" for m in ("av_nas", "vhmt", "tam", "lagnh", "sptch")])


def register_space(name: str, summary: str, options: Mapping[str, Option]):
    """Register ``build(**options) -> SearchSpace`` under ``name``; ``options`` describe its
    parameters (:class:`~avsearch.options.Option`: default, type, help, check)."""

    def deco(build: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
        params = set(inspect.signature(build).parameters)
        if params != set(options):
            raise TypeError(f"space {name!r}: build() parameters {sorted(params)} differ from its "
                            f"options {sorted(options)}")
        named = {k: dataclasses.replace(o, name=k) for k, o in options.items()}
        SPACES.register(name, _Entry(name, summary, named, build))
        return build

    return deco


def list_spaces() -> dict[str, str]:
    """Registered spaces and their one-line summaries."""
    return {n: e.summary for n, e in SPACES.items().items()}


def space_options(name: str) -> dict[str, Option]:
    """A space's options (``--set KEY=VALUE``): name, type, default, help."""
    return dict(SPACES.get(name).options)


def get_space(name: str, **options: Any) -> SearchSpace:
    """Build space ``name``; every option value (typed, JSON as an ``.arch`` records it, or a
    ``--set``-style string) is read and checked before the space is declared."""
    entry = SPACES.get(name)
    return entry.build(**resolve(entry.options, options, f"space {name!r}", "space_options",
                                 SpaceError))
