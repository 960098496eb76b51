"""One typed option description for spaces, strategies and objectives.

An :class:`Option` says what a setting is: its default, how a value is read (``type``: from a
command-line string such as ``"3,4,5"`` or from the value itself, a Python or JSON value), a
line of help, and what a valid value is (``check``). Every value is converted and checked
when the space, strategy or objective is built (:func:`resolve`), so a bad setting is refused
before a run writes anything, and the error names the option and, as its ``parameter``,
the setting it belongs to (``strategy_options``); :mod:`avsearch.cli` turns that into a flag.

Spaces give their options as a dict ``{name: Option(...)}``; strategies and objectives are
dataclasses whose options are fields declared with :func:`option`, gathered by
:class:`Configurable`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence

from avsearch.errors import AvsearchInputError

__all__ = ["Option", "Check", "option", "Configurable", "resolve", "check_names", "refuse",
           "boolean", "integers",
           "numbers", "names", "modality_widths", "one_of", "POSITIVE", "NON_NEGATIVE", "FRACTION",
           "PRIOR", "AT_LEAST_ONE", "COUNT"]


class Check(NamedTuple):
    """What a valid value is: a predicate, and the words for it (``"a finite number > 0"``)."""

    test: Callable[[Any], bool]
    expected: str


POSITIVE = Check(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Check(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
FRACTION = Check(lambda v: 0 < v < 1, "in (0, 1)")
PRIOR = Check(lambda v: 0 <= v < 1, "in [0, 1)")
AT_LEAST_ONE = Check(lambda v: v >= 1, "an integer >= 1")
COUNT = Check(lambda v: v >= 0, "an integer >= 0")


def one_of(*choices: Any) -> Check:
    """A check that the value is one of ``choices`` ("auto, yes or no")."""
    words = [str(c) for c in choices]
    return Check(lambda v: v in choices, " or ".join([", ".join(words[:-1]), words[-1]])
                 if len(words) > 1 else words[0])


def distinct_from(choices: Sequence[str], what: str) -> Check:
    """A check that a sequence holds distinct names, each one of ``choices``."""
    return Check(lambda v: set(v) <= set(choices) and len(set(v)) == len(v),
                 f"distinct {what} from {', '.join(choices)}")


# ---------------------------------------------------------------- readers ("type")
# Each takes a command-line string or the value itself (a JSON list for a tuple, a dict for
# modality widths) and returns the typed value, or raises ValueError saying what it expects.
def boolean(value: Any) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``) or a bool."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _items(value: Any) -> list[Any]:
    """The items of a comma-separated string or of a sequence, blanks dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() if isinstance(v, str) else v for v in items
            if not isinstance(v, str) or v.strip()]


def _sequence(kind: Callable[[Any], Any], what: str) -> Callable[[Any], tuple]:
    def read(value: Any) -> tuple:
        try:
            out = tuple(kind(v) for v in _items(value))
        except (TypeError, ValueError):
            raise ValueError(f"expected comma-separated {what}") from None
        if not out:
            raise ValueError(f"expected comma-separated {what}")
        return out

    read.__name__ = f"{what.replace(' ', '_')}"
    return read


integers = _sequence(int, "integers")
numbers = _sequence(float, "numbers")
names = _sequence(str, "names")


def modality_widths(value: Any) -> dict[str, int | None]:
    """``"visual:768,audio:128"`` or ``{"visual": 768}`` -> widths per modality; a bare name
    (or None) means "width d"."""
    if isinstance(value, Mapping):
        return {str(k): None if v is None else int(v) for k, v in value.items()}
    out: dict[str, int | None] = {}
    for item in str(value).split(","):
        name, _, width = item.strip().partition(":")
        if not name:
            raise ValueError("expected NAME[:WIDTH],...")
        out[name] = int(width) if width else None
    return out


_WORDS = {bool: "true or false", int: "an integer", float: "a number"}


def _reader(default: Any) -> Callable[[Any], Any]:
    """The reader an option gets from its default's type."""
    if isinstance(default, bool):
        return boolean
    if isinstance(default, tuple):
        kind = type(default[0]) if default else str
        return {int: integers, float: numbers}.get(kind, names)
    if isinstance(default, (int, float)):
        kind = type(default)

        def read(value: Any) -> Any:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError(f"expected {_WORDS[kind]}")
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"expected {_WORDS[kind]}") from None

        return read
    return lambda value: value


# a plain int, float or bool as an option's type reads as its default's type would
_BUILTIN_TYPES: dict[Any, Callable[[Any], Any]] = {int: _reader(0), float: _reader(0.0),
                                                   bool: boolean}


# ---------------------------------------------------------------- the description
@dataclass(frozen=True)
class Option:
    """A typed option: ``default``, ``type`` (reads a value; None: from the default's type),
    ``help``, ``check`` (what a valid value is), ``name`` (filled in by its owner) and
    ``from_data``: for a space's option that follows the data (the width of its auxiliary
    semantics, say), the value a run takes from its data set when the user gives none;
    ``recorded_before``: for an option added after its owner was first released whose default
    differs from what came before, the value a configuration recorded without it means (an
    ``.arch`` written by an older avsearch; None: the default)."""

    default: Any
    type: Callable[[Any], Any] | None = None
    help: str = ""
    check: Check | None = None
    name: str = ""
    from_data: Callable[[Any], Any] | None = None
    recorded_before: Any = None

    def read(self, value: Any) -> Any:
        """``value`` as this option's type (ValueError when it cannot be)."""
        reader = _BUILTIN_TYPES.get(self.type, self.type) if self.type is not None else None
        return (reader or _reader(self.default))(value)

    def value(self, given: Any, owner: str, parameter: str | None = None,
              error: type[AvsearchInputError] = AvsearchInputError) -> Any:
        """``given`` read and checked; ``owner`` (``"strategy 'darts'"``) names the culprit and
        ``parameter`` the setting the option belongs to."""
        try:
            value = self.read(given)
        except (TypeError, ValueError) as err:
            raise error(f"{owner}: option {self.name}={given!r}: {err}", parameter) from None
        if self.check is not None and not self.check.test(value):
            refuse(owner, self.name, value, self.check.expected, parameter, error)
        return value


def refuse(owner: str, name: str, value: Any, expected: str, parameter: str | None = None,
           error: type[AvsearchInputError] = AvsearchInputError) -> None:
    """Raise the error for an option value that is not ``expected``."""
    raise error(f"{owner}: option {name}={value!r} must be {expected}", parameter)


def check_names(options: Mapping[str, Option], given: Sequence[str], owner: str,
                parameter: str | None = None,
                error: type[AvsearchInputError] = AvsearchInputError) -> None:
    """Refuse names in ``given`` that are not options, listing the options."""
    unknown = [k for k in given if k not in options]
    if unknown:
        raise error(f"{owner} has no option {', '.join(map(repr, unknown))} "
                    f"(options: {', '.join(options) or 'none'})", parameter)


def resolve(options: Mapping[str, Option], given: Mapping[str, Any], owner: str,
            parameter: str | None = None,
            error: type[AvsearchInputError] = AvsearchInputError) -> dict[str, Any]:
    """Every option's value: the given one read and checked, else the default (checked too)."""
    check_names(options, given, owner, parameter, error)
    return {k: o.value(given.get(k, o.default), owner, parameter, error)
            for k, o in options.items()}


def option(default: Any, help: str = "", check: Check | None = None,
           type: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field that is an option of a :class:`Configurable` (a strategy's or an
    objective's): ``alpha_lr: float = option(0.0, "α's learning rate", NON_NEGATIVE)``."""
    return dataclasses.field(default=default,
                             metadata={"option": Option(default, type, help, check)})


class Configurable:
    """A dataclass whose :func:`option` fields are its options, read and checked when an
    instance is built (``__post_init__``), so ``Darts(order="2")`` and
    ``Darts(order=2)`` are one strategy and ``Darts(order=3)`` is refused.

    ``name`` and ``kind`` (``"strategy"``) name it in errors."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "component"

    @classmethod
    def options(cls) -> dict[str, Option]:
        """The options, in declaration order, with their names."""
        if not dataclasses.is_dataclass(cls):
            return {}
        return {f.name: dataclasses.replace(f.metadata["option"], name=f.name)
                for f in dataclasses.fields(cls) if "option" in f.metadata}

    @classmethod
    def owner(cls) -> str:
        return f"{cls.kind} {cls.name!r}"

    @classmethod
    def parameter(cls) -> str:
        """The setting its options are given as (``strategy_options``)."""
        return f"{cls.kind}_options"

    @classmethod
    def build(cls, **given: Any):
        """An instance with the ``given`` options (command-line strings or typed values); an
        unknown name is refused with the list of options, not a TypeError."""
        check_names(cls.options(), given, cls.owner(), cls.parameter())
        return cls(**given)

    def refuse(self, name: str, expected: str) -> None:
        """Raise the error for this instance's option ``name``, which is not ``expected``
        (for checks that look at several options)."""
        refuse(self.owner(), name, getattr(self, name), expected, self.parameter())

    def __post_init__(self) -> None:
        for name, opt in self.options().items():
            setattr(self, name, opt.value(getattr(self, name), self.owner(), self.parameter()))
