"""Sizes ("64MiB") and durations ("1h30min"): parsing and rendering."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

# --------------------------------------------------------------------------
# Sizes and durations
# --------------------------------------------------------------------------

# Binary units are what people mean for buffers and files; the SI units are
# accepted because "10GB" is common and has one standard meaning (10**9).
_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE_FORMS = (
    "a whole number of bytes, or a number with a unit: B, KiB, MiB, GiB, TiB (1024-based) "
    'or KB, MB, GB, TB (1000-based), e.g. "64MiB"'
)
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", re.ASCII)


def parse_size(value: str | int) -> int:
    """Return a size in bytes.

    Accepts a non-negative int (bytes) or a string: ``"100"`` / ``"100B"`` bytes,
    ``"512KiB"``, ``"64MiB"``, ``"10GiB"``, ``"1TiB"`` (powers of 1024) and
    ``"10KB"``, ``"10MB"``, ``"10GB"``, ``"1TB"`` (powers of 1000). Units are
    case-insensitive, a space may separate number and unit, and a decimal number
    (``"1.5GiB"``) is rounded down to whole bytes. A bare ``K``/``M``/``G`` is
    refused because it is ambiguous between the two.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid size {value!r}: expected {_SIZE_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid size {value!r}: expected {_SIZE_FORMS}")
    number, unit = match.groups()
    unit = unit.lower()
    if unit in ("k", "m", "g", "t"):
        upper = unit.upper()
        raise ValueError(
            f"invalid size {value!r}: the unit {unit!r} is ambiguous; "
            f"write {upper}iB (1024-based) or {upper}B (1000-based)"
        )
    if unit and unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: unknown unit {unit!r}; expected {_SIZE_FORMS}")
    if not unit and "." in number:
        raise ValueError(f"invalid size {value!r}: a size without a unit is a whole number of bytes")
    return int(Fraction(Decimal(number)) * _SIZE_UNITS[unit or "b"])


def format_size(n: int) -> str:
    """Render a byte count in the largest binary unit that divides it exactly."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _SIZE_UNITS[unit.lower()]
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


# systemd.time(7) spellings; "m" is deliberately absent because it reads as
# minutes to some and as milliseconds/months to others. The error says so.
_DURATION_UNITS: dict[str, Fraction] = {}
for _names, _factor in (
    (("us", "usec", "µs"), Fraction(1, 10**6)),
    (("ms", "msec"), Fraction(1, 1000)),
    (("s", "sec", "secs", "second", "seconds"), Fraction(1)),
    (("min", "mins", "minute", "minutes"), Fraction(60)),
    (("h", "hr", "hour", "hours"), Fraction(3600)),
    (("d", "day", "days"), Fraction(86400)),
    (("w", "week", "weeks"), Fraction(7 * 86400)),
):
    for _name in _names:
        _DURATION_UNITS[_name] = _factor
_DURATION_FORMS = (
    'a number of seconds, or numbers with units us, ms, s, min, h, d, w, e.g. "50ms", "30s", '
    '"5min", "1h30min", "30d"'
)
_DURATION_TOKEN_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s.]*)", re.ASCII)


def parse_duration(value: str | int | float) -> float:
    """Return a duration in seconds.

    Accepts a non-negative number (seconds) or a string: ``"30"`` (seconds),
    ``"50ms"``, ``"30s"``, ``"5min"``, ``"2h"``, ``"30d"``, and compounds whose
    parts add up: ``"1h30min"``, ``"1h 30min 10s"``. Units follow systemd.time(7):
    ``us``, ``ms``, ``s``, ``min``, ``h``, ``d``, ``w`` and their long spellings
    (``sec``, ``minutes``, ``hours``, ...). ``"m"`` is refused as ambiguous.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid duration {value!r}: expected {_DURATION_FORMS}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative number of seconds")
        return float(value)
    text = value.strip()
    if not text:
        raise ValueError(f"invalid duration {value!r}: expected {_DURATION_FORMS}")
    total = Fraction(0)
    pos = 0
    tokens = 0
    unitless = False
    while pos < len(text):
        match = _DURATION_TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"invalid duration {value!r}: expected {_DURATION_FORMS}")
        number, unit = match.groups()
        pos = match.end()
        tokens += 1
        key = unit.lower()
        if unit == "":
            unitless = True
            factor = Fraction(1)
        elif key == "m":
            raise ValueError(f"invalid duration {value!r}: write 'min' for minutes or 'ms' for milliseconds")
        elif key in _DURATION_UNITS:
            factor = _DURATION_UNITS[key]
        else:
            raise ValueError(f"invalid duration {value!r}: unknown unit {unit!r}; expected {_DURATION_FORMS}")
        total += Fraction(Decimal(number)) * factor
    if unitless and tokens > 1:
        raise ValueError(f"invalid duration {value!r}: in a compound duration every number needs a unit")
    return float(total)


def format_duration(seconds: float) -> str:
    """Render seconds in the largest unit that holds them as a whole number."""
    for unit, factor in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1), ("ms", 0.001)):
        count = round(seconds / factor)
        if count and math.isclose(count * factor, seconds, rel_tol=1e-12, abs_tol=0.0):
            return f"{count}{unit}"
    return f"{seconds!r}s"
