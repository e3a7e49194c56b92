"""Timestamps for ``--since``/``--until``, read the way journalctl 252 reads them.

systemd.time(7), "PARSING TIMESTAMPS", describes the syntax; what is accepted in
the corner cases is decided by systemd's ``parse_timestamp()`` (src/basic/time-util.c)
and by glibc ``strptime()``/``mktime()``, which it calls. This module re-implements
that chain so that a spec means the same instant to ``hostlog query`` and to
``journalctl`` (the behaviours recorded in shared/corpora/journald/NOTES.md §4 are
pinned by tests/unit/query/test_timespec.py):

* ``YYYY-MM-DD HH:MM:SS[.ffffff]``, time optional (00:00:00), seconds optional
  (:00), date optional (today), 2-digit years (69-99 -> 19xx, 00-68 -> 20xx),
  an optional English weekday in front that must match the date;
* ``Nov 14 22:13:20[.ffffff]`` (journalctl's own ``-o short`` stamp, current year;
  accepted since systemd 251, PR #22719);
* ``now``, ``today``, ``yesterday``, ``tomorrow``; ``+SPAN``, ``-SPAN``,
  ``SPAN ago``, ``SPAN left``; ``@SPAN`` (seconds since the epoch);
* a ``" UTC"`` suffix (any case) or the local zone's own abbreviation
  (``time.tzname``, e.g. ``CET``/``CEST``); otherwise local time (``$TZ``).

What 252 rejects is rejected here too: the ISO ``T`` separator, a ``Z`` suffix and
numeric offsets came with systemd 255; IANA zone names (``Europe/Berlin``) were
rejected by the recorded 252 and are rejected here. Out-of-range fields are
normalised as mktime(3) does (``2023-02-29`` -> March 1st, ``23:59:60`` -> next
minute) because strptime(3) lets them through (seconds up to 61, days up to 31),
but ``24:00`` is refused by strptime (hours 0-23).

Everything is computed in microseconds, like systemd, and returned in
nanoseconds (the record model's unit): results are always multiples of 1000.
"""

from __future__ import annotations

import calendar
import datetime
import time

from hostlog.errors import TimeSpecError

__all__ = ["TimeSpecError", "USEC_INFINITY", "parse_timestamp"]

USEC_PER_SEC = 1_000_000
USEC_PER_MINUTE = 60 * USEC_PER_SEC
USEC_PER_HOUR = 60 * USEC_PER_MINUTE
USEC_PER_DAY = 24 * USEC_PER_HOUR
USEC_PER_WEEK = 7 * USEC_PER_DAY
USEC_PER_MONTH = 2_629_800 * USEC_PER_SEC  # 30.44 days, systemd.time(7)
USEC_PER_YEAR = 31_557_600 * USEC_PER_SEC  # 365.25 days, systemd.time(7)
#: systemd's "infinity" (UINT64_MAX µs): ``@infinity`` parses to it.
USEC_INFINITY = 2**64 - 1
#: 9999-12-30 23:59:59.999999 UTC: systemd refuses to produce later timestamps.
USEC_TIMESTAMP_FORMATTABLE_MAX = 253_402_214_399_999_999
_LLONG_MAX = 2**63 - 1

_WS = " \t\n\r"  # systemd's WHITESPACE
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale (glibc strptime, strtoll)
_DIGITS = "0123456789"

# extract_multiplier() in time-util.c: prefix matches tried in this order, so
# "ms" wins over "m" and "months" over "m", and the match is case-sensitive.
_UNITS: tuple[tuple[str, int], ...] = (
    ("seconds", USEC_PER_SEC), ("second", USEC_PER_SEC), ("sec", USEC_PER_SEC),
    ("s", USEC_PER_SEC), ("minutes", USEC_PER_MINUTE), ("minute", USEC_PER_MINUTE),
    ("min", USEC_PER_MINUTE), ("months", USEC_PER_MONTH), ("month", USEC_PER_MONTH),
    ("M", USEC_PER_MONTH), ("msec", 1000), ("ms", 1000), ("m", USEC_PER_MINUTE),
    ("hours", USEC_PER_HOUR), ("hour", USEC_PER_HOUR), ("hr", USEC_PER_HOUR),
    ("h", USEC_PER_HOUR), ("days", USEC_PER_DAY), ("day", USEC_PER_DAY),
    ("d", USEC_PER_DAY), ("weeks", USEC_PER_WEEK), ("week", USEC_PER_WEEK),
    ("w", USEC_PER_WEEK), ("years", USEC_PER_YEAR), ("year", USEC_PER_YEAR),
    ("y", USEC_PER_YEAR), ("usec", 1), ("us", 1),
    ("\u03bcs", 1),  # GREEK SMALL LETTER MU
    ("\u00b5s", 1),  # MICRO SIGN
)

# parse_timestamp_impl(): full names before their abbreviations, case ignored.
_WEEKDAYS: tuple[tuple[str, int], ...] = (
    ("sunday", 6), ("sun", 6), ("monday", 0), ("mon", 0), ("tuesday", 1),
    ("tue", 1), ("wednesday", 2), ("wed", 2), ("thursday", 3), ("thu", 3),
    ("friday", 4), ("fri", 4), ("saturday", 5), ("sat", 5),
)  # numbered as datetime.date.weekday(): Monday = 0

_MONTHS = ("january", "february", "march", "april", "may", "june", "july",
           "august", "september", "october", "november", "december")

# The strptime() formats parse_timestamp_impl() tries, in its order. True: a
# trailing ".fraction" may follow. Formats without seconds must end the string.
_FORMATS: tuple[tuple[str, bool], ...] = (
    ("%y-%m-%d %H:%M:%S", True),
    ("%Y-%m-%d %H:%M:%S", True),
    ("%b %d %H:%M:%S", True),
    ("%y-%m-%d %H:%M", False),
    ("%Y-%m-%d %H:%M", False),
    ("%y-%m-%d", False),
    ("%Y-%m-%d", False),
    ("%H:%M:%S", True),
    ("%H:%M", False),
)

# glibc strptime get_number(from, to, max digits) for each numeric conversion.
_NUMBERS = {"y": (0, 99, 2), "Y": (0, 9999, 4), "m": (1, 12, 2), "d": (1, 31, 2),
            "H": (0, 23, 2), "M": (0, 59, 2), "S": (0, 61, 2)}

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def parse_timestamp(spec: str, *, now_ns: int, utc: bool = False) -> int:
    """The instant ``spec`` names, in ns since the epoch (UTC).

    ``now_ns`` is "now" for ``now``, relative specs and the implicit date.
    ``utc=True`` reads zone-less times as UTC instead of local time (as if
    ``" UTC"`` were appended; the local zone's abbreviation still selects local
    time). journalctl 252 itself always reads them as local time.

    ``@infinity`` gives ``USEC_INFINITY * 1000``: later than any record.
    """
    usec = _parse_usec(spec, now_ns // 1000, utc)
    if usec is None:
        raise TimeSpecError(spec)
    return usec * 1000


def _parse_usec(t: str, now_us: int, force_utc: bool) -> int | None:
    if "\0" in t:  # a C string ends there: nothing journalctl could be given
        return None
    if t.startswith("@"):
        # "@" takes a time span (units allowed, seconds by default) and skips
        # every range check below, exactly like parse_timestamp_impl().
        return _parse_sec(t[1:])
    if t == "now":
        return _finish(now_us, 0, 0)
    if t.startswith("+"):
        span = _parse_sec(t[1:])
        return None if span is None else _finish(now_us, span, 0)
    if t.startswith("-"):
        span = _parse_sec(t[1:])
        return None if span is None else _finish(now_us, 0, span)
    if t.endswith(" ago"):
        span = _parse_sec(t[:-4])
        return None if span is None else _finish(now_us, 0, span)
    if t.endswith(" left"):
        span = _parse_sec(t[:-5])
        return None if span is None else _finish(now_us, span, 0)

    utc, isdst = force_utc, -1
    if _endswith_no_case(t, " UTC"):
        t, utc = t[:-4], True
    else:
        # Only the local zone's own names are understood: tzname[0] (standard
        # time) and tzname[1] (daylight time), which also fixes tm_isdst.
        for j, name in enumerate(time.tzname[:2]):
            if name and len(t) > len(name) and _endswith_no_case(t, name) \
                    and t[-len(name) - 1] == " ":
                t, utc, isdst = t[: -len(name) - 1], False, j
                break

    sec = now_us // USEC_PER_SEC
    now_tm = time.gmtime(sec) if utc else time.localtime(sec)
    base = [now_tm.tm_year, now_tm.tm_mon, now_tm.tm_mday,
            now_tm.tm_hour, now_tm.tm_min, now_tm.tm_sec, now_tm.tm_wday]

    day_shift = {"today": 0, "yesterday": -1, "tomorrow": 1}.get(t)
    if day_shift is not None:
        base[2] += day_shift
        base[3] = base[4] = base[5] = 0
        return _from_tm(base, 0, utc, isdst, weekday=-1)

    weekday = -1
    low = t.translate(_ASCII_LOWER)
    for name, nr in _WEEKDAYS:
        if low.startswith(name) and t[len(name):len(name) + 1] == " ":
            weekday, t = nr, t[len(name) + 1:]
            break

    for fmt, fraction_ok in _FORMATS:
        parsed = _strptime(t, fmt, base)
        if parsed is None:
            continue
        tm, end = parsed
        if end == len(t):
            if fmt.endswith("%M"):
                tm[5] = 0
            elif not fmt.endswith("%S"):
                tm[3] = tm[4] = tm[5] = 0
            return _from_tm(tm, 0, utc, isdst, weekday)
        if fraction_ok and t[end] == ".":
            frac = _fraction(t, end + 1)
            return None if frac is None else _from_tm(tm, frac, utc, isdst, weekday)
    return None


def _finish(usec: int, plus: int, minus: int) -> int | None:
    usec += plus
    if usec > USEC_TIMESTAMP_FORMATTABLE_MAX or usec < minus:
        return None
    return usec - minus


def _from_tm(tm: list[int], frac_us: int, utc: bool, isdst: int, weekday: int) -> int | None:
    year, mon, mday, hour, minute, second, wday = tm
    if weekday >= 0 and wday != weekday:
        return None
    try:
        if utc:
            x = calendar.timegm((year, mon, mday, hour, minute, second, 0, 0, 0))
        else:
            x = int(time.mktime((year, mon, mday, hour, minute, second, 0, 0, isdst)))
    except (OverflowError, ValueError):
        return None
    if x < 0:  # mktime's error value, and any time before the epoch
        return None
    usec = x * USEC_PER_SEC + frac_us
    if usec > USEC_TIMESTAMP_FORMATTABLE_MAX:
        return None
    return _finish(usec, 0, 0)


def _fraction(t: str, i: int) -> int | None:
    """parse_fractional_part_u(…, 6 digits): pad to µs, round on the 7th digit,
    ignore further digits; the spec must end after them."""
    digits = ""
    while i < len(t) and t[i] in _DIGITS and len(digits) < 6:
        digits += t[i]
        i += 1
    if not digits:
        return None
    val = int(digits.ljust(6, "0"))
    if i < len(t) and "5" <= t[i] <= "9":
        val += 1
    while i < len(t) and t[i] in _DIGITS:
        i += 1
    return val if i == len(t) else None


def _strptime(t: str, fmt: str, base: list[int]) -> tuple[list[int], int] | None:
    """glibc strptime() for the handful of conversions used above.

    A space in the format skips any run of input white space (even none);
    numbers skip leading white space, then read at most N digits and stop early
    when one more digit would exceed the maximum. ``base`` supplies what the
    format does not set (today's date and time). Returns the new fields with
    the weekday recomputed when a date was parsed, and where parsing stopped.
    """
    tm = list(base)
    i, j, n = 0, 0, len(t)
    want_wday = False
    while j < len(fmt):
        c = fmt[j]
        if c == " ":
            while i < n and t[i] in _C_SPACE:
                i += 1
            j += 1
            continue
        if c != "%":
            if i >= n or t[i] != c:
                return None
            i, j = i + 1, j + 1
            continue
        conv = fmt[j + 1]
        j += 2
        if conv == "b":
            found = _month_name(t, i)
            if found is None:
                return None
            tm[1], i = found
            want_wday = True
            continue
        lo, hi, width = _NUMBERS[conv]
        while i < n and t[i] in _C_SPACE:
            i += 1
        if i >= n or t[i] not in _DIGITS:
            return None
        val = 0
        while True:
            val = val * 10 + ord(t[i]) - 48
            i += 1
            width -= 1
            if not (width > 0 and val * 10 <= hi and i < n and t[i] in _DIGITS):
                break
        if not lo <= val <= hi:
            return None
        if conv == "y":
            tm[0], want_wday = (1900 + val if val >= 69 else 2000 + val), True
        elif conv == "Y":
            tm[0], want_wday = val, True
        elif conv == "m":
            tm[1], want_wday = val, True
        elif conv == "d":
            tm[2], want_wday = val, True
        else:
            tm["HMS".index(conv) + 3] = val
    if want_wday:
        tm[6] = _weekday(tm[0], tm[1], tm[2])
    return tm, i


def _month_name(t: str, i: int) -> tuple[int, int] | None:
    # %b: an English month name, full or abbreviated, any case; the longest
    # match wins ("June" over "Jun").
    low = t[i:i + 9].translate(_ASCII_LOWER)
    best: tuple[int, int] | None = None
    for nr, name in enumerate(_MONTHS, start=1):
        for cand in (name, name[:3]):
            if low.startswith(cand) and (best is None or len(cand) > best[1] - i):
                best = (nr, i + len(cand))
    return best


def _weekday(year: int, mon: int, mday: int) -> int:
    # glibc day_of_the_week() is plain arithmetic, so "Feb 30" has the
    # weekday of March 2nd; the same holds for proleptic ordinals.
    if year < 1:
        return -1
    ordinal = datetime.date(year, mon, 1).toordinal() + mday - 1
    return (ordinal + 6) % 7  # date.fromordinal(1) is a Monday


def _endswith_no_case(t: str, suffix: str) -> bool:
    return len(t) >= len(suffix) and \
        t[len(t) - len(suffix):].translate(_ASCII_LOWER) == suffix.translate(_ASCII_LOWER)


# --- time spans: parse_time(…, USEC_PER_SEC) from time-util.c ---------------------

def _parse_sec(t: str) -> int | None:
    """A span such as ``5min 3s``, ``1.5h`` or ``infinity``, in µs; None if invalid."""
    default_unit = USEC_PER_SEC
    p = _skip(t, 0, _WS)
    if t.startswith("infinity", p):
        return USEC_INFINITY if _skip(t, p + 8, _WS) == len(t) else None
    usec, something, n = 0, False, len(t)
    while True:
        p = _skip(t, p, _WS)
        if p == n:
            return usec if something else None
        if t[p] == "-":  # no negative spans, not even "-0"
            return None
        conv = _strtoll(t, p)
        if conv is None:
            return None
        value, e = conv
        if value < 0:
            return None
        has_dot = e < n and t[e] == "."
        if has_dot:
            p = _skip(t, e + 1, _DIGITS)
        elif e == p:
            return None
        else:
            p = e
        multiplier, s = default_unit, _skip(t, p, _WS)
        for suffix, mult in _UNITS:
            if t.startswith(suffix, s):
                multiplier, s = mult, s + len(suffix)
                break
        if s == p and s < n:  # "12.34.56": neither white space nor a unit
            return None
        p = s
        if value >= USEC_INFINITY // multiplier:
            return None
        k = value * multiplier
        if k >= USEC_INFINITY - usec:
            return None
        usec += k
        something = True
        if has_dot:
            m, b = multiplier // 10, e + 1
            while b < n and t[b] in _DIGITS:
                k = (ord(t[b]) - 48) * m
                if k >= USEC_INFINITY - usec:
                    return None
                usec += k
                b, m = b + 1, m // 10
            if b == e + 1:  # "3.", "3.s", "3. 1"
                return None


def _skip(t: str, i: int, chars: str) -> int:
    while i < len(t) and t[i] in chars:
        i += 1
    return i


def _strtoll(t: str, i: int) -> tuple[int, int] | None:
    """C strtoll(base 10): (value, end); end == i when nothing converts; None
    on overflow (ERANGE)."""
    j = _skip(t, i, _C_SPACE)
    sign = 1
    if j < len(t) and t[j] in "+-":
        sign = -1 if t[j] == "-" else 1
        j += 1
    k = _skip(t, j, _DIGITS)
    if k == j:
        return 0, i
    digits = t[j:k].lstrip("0")
    if len(digits) > 19 or (digits and int(digits) > _LLONG_MAX + (sign < 0)):
        return None
    return sign * int(digits or "0"), k
