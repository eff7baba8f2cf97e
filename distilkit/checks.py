"""Argument checks shared by the public API: integers and finite numbers, numpy scalars included."""

from __future__ import annotations

import math
import operator

from distilkit.errors import DistilkitError


def as_int(value: object, what: str, minimum: int | None = None) -> int:
    """`value` as an int (Python or numpy integer; not bool, not float), at least `minimum` when given."""
    if isinstance(value, bool):
        raise DistilkitError(f"{what} must be an int, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DistilkitError(f"{what} must be an int, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise DistilkitError(f"{what} must be >= {minimum}, got {number}")
    return number


def as_number(value: object, what: str, minimum: float | None = None, above: float | None = None) -> float:
    """`value` as a finite float: any real number (numpy and 0-d torch ones included; not bool, not str),
    at least `minimum` / greater than `above` when given."""
    number = math.nan
    if not isinstance(value, (bool, str, bytes)):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    if not math.isfinite(number):
        raise DistilkitError(f"{what} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise DistilkitError(f"{what} must be >= {minimum:g}, got {number:g}")
    if above is not None and number <= above:
        raise DistilkitError(f"{what} must be > {above:g}, got {number:g}")
    return number


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty string of 0-9 only: `str.isdigit()` also accepts '²' or '٣', which `int()`
    refuses or reads as a number nobody typed."""
    return text.isascii() and text.isdigit()
