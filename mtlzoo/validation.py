"""The checks on user-given numbers that every module shares, with one wording for their errors."""

from __future__ import annotations

import math
import numbers


def is_int(value) -> bool:
    """An integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number, and not a bool (YAML's .inf and .nan are floats, never a sane setting)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(owner: str, name: str, value) -> int:
    """``value`` as an int, or ``ValueError`` naming ``owner`` and ``name`` unless it is an integer >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}.")
    return int(value)


def number_at_least(name: str, value, low: float = 0.0, *, strict: bool = False) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a finite number >= ``low`` (> with ``strict``)."""
    if not is_number(value) or value < low or (strict and value == low):
        raise ValueError(f"{name} must be a number {'>' if strict else '>='} {low}, got {value!r}.")
    return float(value)
