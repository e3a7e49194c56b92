"""journal-gatewayd's ``Range`` header and where ``/entries`` starts, without I/O.

``Range: entries=cursor[[:num_skip]:num_entries]`` (systemd 252,
``journal-gatewayd.c``, checked against the real daemon:
tests/unit/http/test_gatewayd_vs_systemd.py):

* ``entries=`` is followed by optional white space, then the cursor, which
  ends at its first white space; no cursor (``entries=:-10:10``) starts at
  the head, or at the tail when ``num_skip`` is negative;
* ``num_skip`` is a signed 64-bit integer, ``num_entries`` an unsigned one
  greater than 0, both read as systemd's ``safe_atoi64``/``safe_atou64`` read
  them (leading white space, a sign, ``0x``/``0o``/``0b`` prefixes and C's
  leading-``0`` octal); an empty ``num_entries`` (``entries=C:-1:``) means no
  limit; anything else is refused.

hostlog's cursors hold a colon themselves (``<origin>:<seq>``), which
gatewayd's syntax does not foresee: here a Range that does not start with
``:`` takes its first two ``:``-separated parts as the cursor, and what
follows as ``[num_skip:]num_entries``. (A journald cursor has no colon; none
names a place in a hostlog spool anyway.)

Where the output starts (:func:`start_index`) follows sd-journal's moves
as gatewayd makes them: seek to the cursor (or head, or tail), then one
``sd_journal_next_skip(num_skip + 1)`` or ``sd_journal_previous_skip(-num_skip
+ 1)``, which stops at the last (first) entry when there are fewer; so
``entries=:-3:2`` from the tail shows the 4th and 3rd newest, as gatewayd does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EntriesRange", "RangeError", "format_range", "parse_int64", "parse_range", "parse_uint64",
           "shown", "start_index"]

#: systemd's WHITESPACE (what ``strspn`` skips before a cursor or a number)
WHITESPACE = " \t\n\r"
#: C's isspace(), which strtoll() skips itself
_C_SPACE = " \t\n\v\f\r"
_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"), 16: frozenset("0123456789abcdefABCDEF"),
           2: frozenset("01")}
INT64_MIN, INT64_MAX, UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
#: the longest Range header taken (gatewayd: JOURNAL_SERVER_MEMORY_MAX)
MAX_RANGE = 128 * 1024
RANGE_SYNTAX = "entries=CURSOR[[:NUM_SKIP]:NUM_ENTRIES]"


class RangeError(ValueError):
    """A Range header that cannot be used; the text says why."""


@dataclass(frozen=True, slots=True)
class EntriesRange:
    """A parsed ``Range: entries=...``: ``cursor`` (None: none given),
    ``skip`` (num_skip), ``count`` (num_entries; None: no limit)."""

    cursor: str | None = None
    skip: int = 0
    count: int | None = None


# -- systemd's integer parsing ------------------------------------------------------------

def _strtol(text: str, base: int) -> tuple[int, int] | None:
    """C strtol()'s reading of ``text`` in ``base`` (0: by prefix): (value,
    index after the digits), or None when no digits were read. The value
    is not bounded."""
    i, n = 0, len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    if base == 0:
        if text[i:i + 1] == "0" and text[i + 1:i + 2] in ("x", "X") and text[i + 2:i + 3] != "" \
                and text[i + 2] in _DIGITS[16]:
            base, i = 16, i + 2
        elif text[i:i + 1] == "0":
            base = 8
        else:
            base = 10
    digits = _DIGITS[base]
    start = i
    while i < n and text[i] in digits:
        i += 1
    if i == start:
        return None
    value = int(text[start:i], base)
    return (-value if negative else value), i


def _mangle_base(text: str) -> tuple[str, int]:
    """systemd's mangle_base(): Python-style ``0b``/``0o`` prefixes."""
    if text[:2] in ("0b", "0B"):
        return text[2:], 2
    if text[:2] in ("0o", "0O"):
        return text[2:], 8
    return text, 0


def parse_int64(text: str, what: str = "number") -> int:
    """systemd's ``safe_atoi64()``."""
    body, base = _mangle_base(text.lstrip(WHITESPACE))
    parsed = _strtol(body, base)
    if parsed is None or parsed[1] != len(body):
        raise RangeError(f"{what} {text!r} is not an integer")
    value = parsed[0]
    if not INT64_MIN <= value <= INT64_MAX:
        raise RangeError(f"{what} {text!r} is out of range")
    return value


def parse_uint64(text: str, what: str = "number") -> int:
    """systemd's ``safe_atou64()``: as strtoull(), but a negative number is refused."""
    body, base = _mangle_base(text.lstrip(WHITESPACE))
    parsed = _strtol(body, base)
    if parsed is None or parsed[1] != len(body):
        raise RangeError(f"{what} {text!r} is not an unsigned integer")
    value = parsed[0]
    if abs(value) > UINT64_MAX:
        raise RangeError(f"{what} {text!r} is out of range")
    if value != 0 and body[:1] == "-":
        raise RangeError(f"{what} {text!r} is negative")
    if value < 0:  # strtoull() wraps "-N" read after white space the check above does not see
        value += 1 << 64
    return value


# -- the header --------------------------------------------------------------------------

def parse_range(header: str | None) -> EntriesRange:
    """The Range header of a request to ``/entries`` (None: no header)."""
    if header is None:
        return EntriesRange()
    if len(header) > MAX_RANGE:
        raise RangeError(f"Range: longer than {MAX_RANGE} bytes")
    if not header.startswith("entries="):
        raise RangeError(f"Range: {header[:80]!r} is not {RANGE_SYNTAX} "
                         "(journal-gatewayd's only range unit)")
    value = header[len("entries="):].lstrip(WHITESPACE)
    rest: str | None
    if value.startswith(":"):
        cursor_text, rest = "", value[1:]
    else:
        first = value.find(":")
        second = value.find(":", first + 1) if first >= 0 else -1
        if second < 0:
            cursor_text, rest = value, None
        else:
            cursor_text, rest = value[:second], value[second + 1:]
    for i, c in enumerate(cursor_text):
        if c in WHITESPACE:
            cursor_text = cursor_text[:i]
            break
    skip, count = 0, None
    if rest is not None:
        colon = rest.find(":")
        if colon >= 0:
            skip = parse_int64(rest[:colon], "Range: num_skip")
            rest = rest[colon + 1:]
        if rest:
            count = parse_uint64(rest, "Range: num_entries")
            if count == 0:
                raise RangeError("Range: num_entries must be greater than 0")
    return EntriesRange(cursor=cursor_text or None, skip=skip, count=count)


def format_range(value: EntriesRange) -> str:
    """The header that :func:`parse_range` reads as ``value``."""
    out = "entries=" + (value.cursor or "")
    if value.skip:
        return out + f":{value.skip}:" + ("" if value.count is None else str(value.count))
    if value.count is not None:
        return out + f":{value.count}"
    return out


# -- where the output starts ---------------------------------------------------------------

def start_index(selected: Sequence[int], position: int | None, skip: int) -> int | None:
    """The index in ``selected`` (the ascending spool positions a request's
    filter selects) of the first entry shown, or None for none.

    ``position``: the spool position the cursor names (None: no cursor).
    With a cursor the first move starts from the first selected entry at or
    after it (``skip >= 0``), or the last at or before it (``skip < 0``);
    without one, from the head or the tail; a skip past either end stops at
    the last (first) entry there is.
    """
    n = len(selected)
    if position is None:
        if n == 0:
            return None
        return min(skip, n - 1) if skip >= 0 else max(n - 1 + skip, 0)
    if skip >= 0:
        i = bisect_left(selected, position)
        return None if i >= n else min(i + skip, n - 1)
    j = bisect_right(selected, position) - 1
    return None if j < 0 else max(j + skip, 0)


def shown(selected: Sequence[int], position: int | None, value: EntriesRange, *,
          discrete: bool = False) -> list[int]:
    """The positions ``/entries`` shows (without ``?follow``): the model
    the spool-reading handler is held to."""
    start = start_index(selected, position, value.skip)
    if start is None:
        return []
    if discrete:
        return [selected[start]] if selected[start] == position else []
    end = None if value.count is None else start + value.count
    return list(selected[start:end])
