"""Syslog timestamps to epoch ns: cached bases, no datetime per message.

Shared by :mod:`hostlog.collectors.syslog.parse` (one message at a time) and
:mod:`hostlog.collectors.syslog.parse_batch` (whole batches), through one
:class:`SyslogClock` (:data:`CLOCK`). A timestamp becomes epoch ns by
arithmetic on a cached base per second (UTC) or per minute (local time).

The clock's caches map the text of a timestamp prefix to epoch seconds
(None: no such time). Hits cost one dict lookup; a miss costs a few µs, once
per second (UTC) or minute (local) of traffic. Each is cleared when it grows
too big, and all of them by :meth:`SyslogClock.clear` (after the process time
zone changed).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from datetime import date
from enum import Enum
from typing import Final

from hostlog.collectors.syslog.grammar import YEAR_MAX, YEAR_MIN

__all__ = ["CLOCK", "MISS", "NS", "Miss", "SyslogClock", "clear_time_caches", "utc_second"]

NS = 1_000_000_000
CACHE_MAX = 4096  # entries per time cache; a busy stream needs a few per minute


class Miss(Enum):
    # the type of MISS alone: a checker then narrows "x is MISS" (an object() it cannot)
    MISS = 0


MISS: Final = Miss.MISS  # not in a cache (None in a cache means "no such time")

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_FRAC_SCALE = tuple(10 ** (9 - n) for n in range(10))  # "003" -> 3 * 10**6 ns


def _cached(cache: dict[str, int | None], key: str,
            compute: Callable[[str], int | None]) -> int | None:
    if len(cache) >= CACHE_MAX:
        cache.clear()
    value = cache[key] = compute(key)
    return value


def _valid_date(y: int, m: int, d: int) -> bool:
    # (why these years: grammar.py, YEAR_MIN)
    return (YEAR_MIN <= y <= YEAR_MAX and 1 <= m <= 12
            and 1 <= d <= calendar.monthrange(y, m)[1])


def utc_second(key: str) -> int | None:
    """Epoch seconds of "YYYY-MM-DDThh:mm:ss" read as UTC; None if no such time."""
    y, mo, d = int(key[0:4]), int(key[5:7]), int(key[8:10])
    h, mi, s = int(key[11:13]), int(key[14:16]), int(key[17:19])
    # RFC 5424 6.2.3: RFC 3339 ranges, and "leap seconds MUST NOT be used".
    if not _valid_date(y, mo, d) or h > 23 or mi > 59 or s > 59:
        return None
    return calendar.timegm((y, mo, d, h, mi, s))


def _offset_seconds(text: str) -> int | None:
    """"+hh:mm" -> seconds east of UTC (RFC 3339 TIME-NUMOFFSET)."""
    h, mi = int(text[1:3]), int(text[-2:])
    if h > 23 or mi > 59:
        return None
    return (h * 3600 + mi * 60) * (-1 if text[0] == "-" else 1)


class SyslogClock:
    """The time caches of the syslog parsers, and the conversions that use them."""

    def __init__(self) -> None:
        self.utc_seconds: dict[str, int | None] = {}   # "YYYY-MM-DDThh:mm:ss" (UTC wall clock)
        self.offsets: dict[str, int | None] = {}       # "+hh:mm" -> seconds east of UTC
        self.local_minutes: dict[str, int | None] = {}  # 3164 keys; valid for one receive day
        self.local_day = (0, 0)  # [start, end) ns of the local receive day local_minutes is for

    def clear(self) -> None:
        """Forget cached time bases; call after the process time zone changed (tzset)."""
        self.utc_seconds.clear()
        self.offsets.clear()
        self.local_minutes.clear()
        self.local_day = (0, 0)

    def utc_base(self, key: str) -> int | None:
        """:func:`utc_second` of ``key``, cached."""
        base = self.utc_seconds.get(key, MISS)
        return _cached(self.utc_seconds, key, utc_second) if base is MISS else base

    def offset(self, text: str) -> int | None:
        off = self.offsets.get(text, MISS)
        return _cached(self.offsets, text, _offset_seconds) if off is MISS else off

    def rfc3339_ns(self, ts: str) -> int | None:
        """RFC 5424 TIMESTAMP (already shape-checked by the regex) -> epoch ns."""
        base = self.utc_base(ts[:19])
        if base is None:
            return None
        off: int | None
        if ts[-1] == "Z":
            off, frac = 0, ts[20:-1]
        else:
            off, frac = self.offset(ts[-6:]), ts[20:-6]
            if off is None:
                return None
        ns = (base - off) * NS
        return ns + int(frac) * _FRAC_SCALE[len(frac)] if frac else ns

    def iso_ns(self, m: re.Match[str]) -> int | None:
        """RFC 3339-like TIMESTAMP in the RFC 3164 position; no zone = local time."""
        day, hhmm, sec, frac, zone = m.groups()
        if zone is None:
            base = self.local_minute(day + "T" + hhmm, 0)
        else:
            if zone in "Zz":
                off: int | None = 0
            else:
                off = self.offset(zone if len(zone) == 6 else zone[:3] + ":" + zone[3:])
            b = utc_second(day + "T" + hhmm + ":00")
            base = None if b is None or off is None else b - off
        if base is None or int(sec) > 59:
            return None
        ns = (base + int(sec)) * NS
        return ns + int(frac) * _FRAC_SCALE[len(frac)] if frac else ns

    def bsd_ns(self, key: str, sec: str, frac: str | None, received_ns: int) -> int | None:
        """RFC 3164 TIMESTAMP (local time, maybe no year) -> epoch ns, or None if invalid."""
        self.receive_day(received_ns)
        base = self.local_minute(key, received_ns)
        s = int(sec)
        if base is None or s > 59:
            return None
        ns = (base + s) * NS
        return ns + int(frac) * _FRAC_SCALE[len(frac)] if frac else ns

    def receive_day(self, received_ns: int) -> None:
        """The year of "Mmm dd" depends on the local receive date: new day, new bases."""
        start, end = self.local_day
        if start <= received_ns < end:
            return
        self.local_minutes.clear()
        t = time.localtime(received_ns // NS)
        start, end = (int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday + k, 0, 0, 0, 0, 0, -1))) * NS
                      for k in (0, 1))
        self.local_day = (start, end)

    def local_minute(self, key: str, received_ns: int) -> int | None:
        """Epoch seconds of a local wall-clock minute; cached, also when invalid."""
        base = self.local_minutes.get(key, MISS)
        if base is MISS:
            base = _cached(self.local_minutes, key, lambda k: _local_minute_uncached(k, received_ns))
        return base


#: the clock of every syslog parser in this process
CLOCK = SyslogClock()


def clear_time_caches() -> None:
    """Forget cached time bases; call after the process time zone changed (tzset)."""
    CLOCK.clear()


def _local_minute_uncached(key: str, received_ns: int) -> int | None:
    if "-" in key:  # "YYYY-MM-DDThh:mm"
        y, mo, d = int(key[0:4]), int(key[5:7]), int(key[8:10])
    else:  # "Mmm dd [yyyy] hh:mm"
        parts = key.split()
        mo, d = _MONTHS.get(parts[0].lower(), 0), int(parts[1])
        if len(parts) == 4:
            y = int(parts[2])
        else:
            y = _infer_year(mo, d, received_ns) if mo else 0
    h, mi = int(key[-5:-3]), int(key[-2:])
    if not (_valid_date(y, mo, d) and h <= 23 and mi <= 59 and 1900 <= y):
        return None
    try:
        return int(time.mktime((y, mo, d, h, mi, 0, 0, 0, -1)))
    except (OverflowError, ValueError):
        return None


def _infer_year(month: int, day: int, received_ns: int) -> int:
    """The year of an RFC 3164 date, which has none: the receive year, unless
    that puts the date more than 31 days after the local receive date (then
    last year, as rsyslog does) or more than 334 days before it (a sender
    whose clock already passed New Year: next year)."""
    now = time.localtime(received_ns // NS)
    y = now.tm_year
    ahead = date(y, month, 1).toordinal() + day - 1 - date(y, now.tm_mon, now.tm_mday).toordinal()
    if ahead > 31:
        return y - 1
    if ahead < -334:
        return y + 1
    return y
