"""Exceptions that mean "the user's input is wrong" (CLI exit code 2, one-line message), and
:class:`ReplicaLost`, a distributed run's lost process (exit code 1, one-line message)."""
from __future__ import annotations

__all__ = ["AvsearchInputError", "SpaceError", "ArchError", "IndexFileError", "ReplicaLost"]


class AvsearchInputError(ValueError):
    """Bad input from the user: a file, a setting, a declaration. The message is one line.

    ``parameter`` names the setting at fault when there is one (``"epochs"``,
    ``"strategy_options"``): the message speaks of it as the Python API does, and
    :mod:`avsearch.cli` says which command-line flag it is.
    """

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class SpaceError(AvsearchInputError):
    """A search-space declaration or option is invalid; the message names the node."""


class ArchError(AvsearchInputError):
    """An architecture does not fit its space (unknown op, missing cell, other space...)."""


class IndexFileError(AvsearchInputError):
    """An index file or its sidecar is missing, changed, or made for other codes."""


class DuplicateIdError(AvsearchInputError):
    """Items added to an index carry an id it already holds (the service answers 409)."""


class ReplicaLost(RuntimeError):
    """A process of a distributed run died or did not answer within the timeout
    (:mod:`avsearch.distributed`): not bad input, but said in one line all the same."""
