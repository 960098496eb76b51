"""Search spaces, one module each, installed as ``avsearch.spaces``.

A space is a function of typed options that declares a :class:`~avsearch.graph.SearchSpace`.
Registering it makes it available to every command (``--space NAME --set KEY=VALUE``)::

    from avsearch.spaces import Option, register_space

    @register_space("tiny", "a one-cell example", options={"d": Option(16, int, "width")})
    def tiny(d):
        ...
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace

__all__ = ["Option", "register_space", "get_space", "list_spaces", "space_options", "parse_sets",
           "int_list", "boolean", "modality_widths"]

# Built-in space modules, imported on first lookup so that `import avsearch` stays light.
_BUILTIN = ("av_nas", "vhmt", "tam")


@dataclass(frozen=True)
class Option:
    """A space option: its default, a parser for ``--set KEY=VALUE`` strings, and help."""

    default: Any
    parse: Callable[[str], Any]
    help: str = ""


@dataclass(frozen=True)
class _Entry:
    name: str
    summary: str
    options: Mapping[str, Option]
    build: Callable[..., SearchSpace]


_SPACES: dict[str, _Entry] = {}


def register_space(name: str, summary: str, options: Mapping[str, Option]):
    """Register ``build(**options) -> SearchSpace`` under ``name``."""

    def deco(build: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
        params = set(inspect.signature(build).parameters)
        if params != set(options):
            raise TypeError(f"space {name!r}: build() parameters {sorted(params)} differ from its "
                            f"options {sorted(options)}")
        _SPACES[name] = _Entry(name, summary, dict(options), build)
        return build

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"{__name__}.{module}")


def list_spaces() -> dict[str, str]:
    """Registered spaces and their one-line summaries."""
    _load_builtins()
    return {n: e.summary for n, e in sorted(_SPACES.items())}


def _entry(name: str) -> _Entry:
    _load_builtins()
    if name not in _SPACES:
        raise SpaceError(f"unknown space {name!r} (available: {', '.join(sorted(_SPACES))})")
    return _SPACES[name]


def space_options(name: str) -> dict[str, Option]:
    return dict(_entry(name).options)


def get_space(name: str, **options: Any) -> SearchSpace:
    """Build space ``name``; option values may be typed or ``--set``-style strings."""
    entry = _entry(name)
    values = {k: o.default for k, o in entry.options.items()}
    for key, value in options.items():
        if key not in entry.options:
            raise SpaceError(f"space {name!r} has no option {key!r} "
                             f"(options: {', '.join(entry.options)})")
        if isinstance(value, str):
            try:
                value = entry.options[key].parse(value)
            except (ValueError, TypeError) as err:
                raise SpaceError(f"space {name!r}, option {key}={value!r}: {err}") from None
        values[key] = value
    return entry.build(**values)


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    """``["d=128", "e=2"]`` -> ``{"d": "128", "e": "2"}``; rejects malformed pairs."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpaceError(f"bad --set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------- option parsers
def boolean(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def int_list(text: str) -> tuple[int, ...]:
    """``"3,4,5"`` -> ``(3, 4, 5)``."""
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values:
        raise ValueError("expected comma-separated integers")
    return values


def modality_widths(text: str) -> dict[str, int | None]:
    """``"visual:768,audio:128"`` -> widths per modality; a bare name means "width d"."""
    out: dict[str, int | None] = {}
    for item in text.split(","):
        name, _, width = item.strip().partition(":")
        if not name:
            raise ValueError("expected NAME[:WIDTH],...")
        out[name] = int(width) if width else None
    return out
