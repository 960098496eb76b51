"""Options given as ``KEY=VALUE`` strings on the command line, converted to their defaults'
types (strategies' ``--strategy-set``, objectives' ``--objective-set``)."""
from __future__ import annotations

import math
from typing import Any, Mapping

from avsearch.errors import AvsearchInputError

__all__ = ["convert_options", "check_options"]


def _convert(owner: str, option: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, tuple):      # "250,400,600", items of the default's item type
            kind = type(default[0]) if default else str
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        return type(default)(value)
    except ValueError:
        expected = (f"comma-separated list of {type(default[0]).__name__}"
                    if isinstance(default, tuple) and default else type(default).__name__)
        raise AvsearchInputError(f"{owner}: option {option}={value!r} is not a {expected}") from None


def convert_options(owner: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                    flag: str) -> dict[str, Any]:
    """``options`` checked against ``defaults`` (names) and converted to their types.

    ``owner`` (e.g. ``"strategy 'darts'"``) and ``flag`` (``--strategy-set``) name the
    culprit in the error for an unknown option or a value that does not parse.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise AvsearchInputError(f"{owner} has no option {', '.join(unknown)} for {flag} "
                                 f"(options: {', '.join(defaults) or 'none'})")
    return {k: _convert(owner, k, v, defaults[k]) for k, v in options.items()}



# Checks shared by strategies and objectives: (predicate on the value, what a valid value is).
POSITIVE = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
FRACTION = (lambda v: 0 < v < 1, "in (0, 1)")
PRIOR = (lambda v: 0 <= v < 1, "in [0, 1)")
AT_LEAST_ONE = (lambda v: v >= 1, "an integer >= 1")
COUNT = (lambda v: v >= 0, "an integer >= 0")


def check_options(owner: str, flag: str, obj: Any, **checks: tuple[Any, str]) -> None:
    """Refuse the first of ``obj``'s options that fails its check, (predicate, what a valid
    value is) or (bool, what a valid value is). Called when a strategy or objective is built,
    so a bad ``KEY=VALUE`` is refused before a run writes anything."""
    for name, (test, expected) in checks.items():
        value = getattr(obj, name)
        if not (test(value) if callable(test) else test):
            raise AvsearchInputError(f"{owner}: option {name}={value!r} must be {expected} "
                                     f"({flag})")
