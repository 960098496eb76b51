"""One registry shape for everything avsearch looks up by name: ops, spaces, strategies,
objectives and data sets.

A :class:`Registry` maps names to entries. ``register`` adds one (as a call or a decorator),
``get`` returns one or raises an error that lists the known names, ``names`` lists them
(optionally filtered by a shell-style pattern, ``names("*ssm*")``). Built-in entries live in
modules that register themselves when imported; a registry imports them on its first lookup,
so ``import avsearch`` stays light and a user's own entry, registered before or after, sits
beside them.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Callable, Generic, Iterable, TypeVar

from avsearch.errors import AvsearchInputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name.

    Args:
        kind: what an entry is, for messages (``"space"``, ``"strategy"``).
        builtins: modules that register the built-in entries, imported on the first lookup.
        error: the exception an unknown name raises (an :class:`AvsearchInputError`).
    """

    def __init__(self, kind: str, builtins: Iterable[str] = (),
                 error: type[Exception] = AvsearchInputError):
        self.kind, self.error = kind, error
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """Add ``entry`` under ``name`` (a later registration of a name replaces it); without
        ``entry``, a decorator that registers what it decorates."""
        if entry is None:
            return lambda e: self.register(name, e)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises ``error`` listing the known ones."""
        self.load()
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]

    def unknown(self, name: str) -> Exception:
        """The error for an unknown ``name``, listing the known names."""
        return self.error(f"unknown {self.kind} {name!r} (available: "
                          f"{', '.join(self.names()) or 'none'})")

    def registered(self, name: str) -> T | None:
        """The entry ``name`` if it is registered yet, without loading the built-ins (what a
        registration checks itself against)."""
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def names(self, pattern: str | None = None, *, sort: bool = True) -> list[str]:
        """The registered names, sorted (or in registration order); ``pattern`` keeps those it
        matches (shell-style, ``fnmatch``)."""
        self.load()
        found = [n for n in self._entries if pattern is None or fnmatch.fnmatchcase(n, pattern)]
        return sorted(found) if sort else found

    def items(self, pattern: str | None = None, *, sort: bool = True) -> dict[str, T]:
        """``{name: entry}`` for :meth:`names`."""
        return {n: self._entries[n] for n in self.names(pattern, sort=sort)}

    def load(self) -> None:
        """Import the built-in modules (once); each registers its entries."""
        if self._loaded:
            return
        self._loaded = True     # before importing: the modules register through this registry
        try:
            for module in self._builtins:
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise
