"""The header of a log line: its own time, its level and its component.

Pure. ``split_header(line)`` recognises, with no per-format configuration,
the fields most programs write in front of a message, and says where the
message starts. The line itself is left as it is: the record keeps it whole,
the miner gets ``line[header.message_start:]``.

The shapes it knows, in the order they are tried::

    [<PRI>]TIMESTAMP |FIELD|FIELD|MESSAGE                      fields without spaces, up to 4
    [<PRI>]TIMESTAMP [COLUMNS] LEVEL [[THREAD]] [LOGGER:] [-|] MESSAGE
    [<PRI>]TIMESTAMP [HOST] TAG[PID][:] MESSAGE                 RFC 3164 style
    [<PRI>]TIMESTAMP HOST TAG: MESSAGE                          only after a syslog timestamp
    [<PRI>]TIMESTAMP MESSAGE
    LEAD [LEAD] TIMESTAMP [COLUMNS] LEVEL [[THREAD]] [LOGGER:] MESSAGE
    LEVEL [[THREAD]] [LOGGER:] MESSAGE                          no timestamp

* TIMESTAMP, at the very start of the line or inside ``[...]``, one of:

  - ISO 8601 / RFC 3339: ``2015-10-18 18:01:47,978``, ``2024-05-01T10:00:00.5+02:00``
    (``-``, ``/`` or ``.`` between the parts of the date); compact:
    ``20171223-22:15:29:606``, ``20240501T100000Z``;
  - BSD syslog, with no year: ``Jun 14 15:16:01``, ``Jul  1 09:00:55``;
  - ctime: ``Sun Dec 04 04:47:44 2005`` (Apache's error log puts it in brackets);
  - day month year: ``04 Dec 2005 04:47:44``, ``10/Oct/2000:13:55:36 -0700``;
  - ``081109 203615`` (yymmdd HHMMSS);
  - ``17/06/09 20:10:40`` (yy/mm/dd, log4j's ``yy/MM/dd``) and ``06/09/2017 20:10:40``
    (mm/dd/yyyy, or dd/mm/yyyy when the first number is over 12);
  - logcat's ``03-17 16:13:38.811`` (mm-dd, no year);
  - epoch seconds: ``1117838570``, ``1117838570.123`` (ten digits: 2001 to 2096).

  A fraction of a second may follow after ``.``, ``,`` or ``:``. A time without
  a zone is taken as UTC. A date without a year is in ``default_year``, by
  default the current year in UTC: a reader that knows better (a December
  line read in January) passes the year. Two-digit years follow POSIX ``%y``
  (69-99 are 19xx, 00-68 20xx). A timestamp with impossible values (month 13,
  25:00, Feb 30) is not one.

* LEVEL: one of the words of ``LEVELS``, in any case inside ``[]``, ``<>`` or ``()``
  or before a ``:`` (``[notice]``, ``<warn>``, ``error:``); bare in upper case
  (``INFO``); capitalised when two spaces or a tab follow (``Info  ``); and the
  single letters V D I W E F A only as a level column, that is before a
  ``tag:`` (logcat's ``D WindowManager:``). Mapped to a syslog severity.

* COLUMNS: up to six tokens without a lower-case letter (a pid, a thread id, a
  node name, an upper-case field) are header only when a LEVEL follows them.
  LEAD: one or two such tokens before the timestamp (a ``-`` placeholder, an
  upper-case label), on the same condition.

* After a level, a ``[thread]`` (without spaces, or with spaces when a logger
  follows it) and a ``logger:`` (``org.apache.Foo:``, ``dfs.DataNode$PacketResponder:``);
  the component is the logger, else the thread.

* HOST TAG: ``tag[pid]`` (with or without the colon, the host optional) or,
  after a BSD timestamp or an RFC 3339 one with its zone (what syslog daemons
  write), ``host tag:``. The component is the tag.

* Fields are separated by spaces, optionally with a ``-``, ``|`` or ``,``; a
  `` - `` or `` | `` between the header and the message is skipped.

Anything else is message: a line with no header gives ``Header(None, None,
None, 0)``. Nothing here raises, whatever the line.

Speed: one expression for the timestamp and one for what follows it; the
date and clock of a timestamp are converted once each and then cached.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final, NamedTuple

__all__ = ["LEVELS", "NO_HEADER", "Header", "split_header"]


class Header(NamedTuple):
    """What ``split_header`` found at the start of a line."""

    ts_ns: int | None  # the line's own time, ns since the epoch (UTC)
    severity: int | None  # the syslog severity of its level, 0 emerg .. 7 debug
    component: str | None  # the tag, logger or thread the header names
    message_start: int  # where the message starts in the line


NO_HEADER: Final = Header(None, None, None, 0)

#: Level words and their syslog severities.
LEVELS: Final[dict[str, int]] = {
    "EMERG": 0, "EMERGENCY": 0, "PANIC": 0,
    "ALERT": 1,
    "CRIT": 2, "CRITICAL": 2, "FATAL": 2,
    "ERR": 3, "ERROR": 3, "SEVERE": 3,
    "WARN": 4, "WARNING": 4,
    "NOTICE": 5,
    "INFO": 6, "INFORMATION": 6, "INFORMATIONAL": 6,
    "DEBUG": 7, "TRACE": 7, "FINE": 7, "FINER": 7, "FINEST": 7, "VERBOSE": 7,
}
#: The single letters of a level column (logcat, glog).
LETTER_LEVELS: Final[dict[str, int]] = {"V": 7, "D": 7, "I": 6, "W": 4, "E": 3, "F": 2, "A": 1}

# -- the expressions --------------------------------------------------------------

_MONTHS: Final = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_MON: Final = r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_WDAY: Final = r"(?i:mon|tue|wed|thu|fri|sat|sun)"
_ZONE: Final = r"(?P<{p}z>Z|[+-]\d{{2}}(?::?\d{{2}})?)?"


def _clock(p: str) -> str:
    """H:M:S as group ``{p}c`` and its fraction (after '.', ',' or ':') as ``{p}f``."""
    return rf"(?P<{p}c>\d{{1,2}}:\d{{1,2}}:\d{{1,2}})(?:[.,:](?P<{p}f>\d{{1,9}}))?"


# One named group per form around its parts: date ``<form>d``, clock ``<form>c``,
# fraction ``<form>f``, zone ``<form>z``; ``lastgroup`` is the form's name.
_TS: Final = (
    r"(?P<open>\[)?(?:"
    # 2015-10-18 18:01:47,978 / 2024-05-01T10:00:00.5+02:00 / 2015/10/18 18:01:47
    r"(?P<iso>(?P<isod>\d{4}(?P<isosep>[-/.])\d{1,2}(?P=isosep)\d{1,2})(?:[T ]| +)" + _clock("iso")
    + _ZONE.format(p="iso") + r")"
    # 20171223-22:15:29:606 / 20240501T100000Z
    r"|(?P<cpt>(?P<cptd>\d{8})[-T ]?(?:(?P<cptc>\d{1,2}:\d{1,2}:\d{1,2})|(?P<cptk>\d{6}))"
    r"(?:[.,:](?P<cptf>\d{1,9}))?" + _ZONE.format(p="cpt") + r")"
    # 04 Dec 2005 04:47:44 / 10/Oct/2000:13:55:36 -0700
    r"|(?P<dmy>(?:" + _WDAY + r",? +)?(?P<dmyd>\d{1,2}[ /-]" + _MON + r"[a-z]*[ /-]\d{4})[ :T]" + _clock("dmy")
    + r"(?: ?(?P<dmyz>[+-]\d{4}|Z|UTC|GMT))?)"
    # 081109 203615
    r"|(?P<six>(?P<sixd>\d{6}) (?P<sixk>\d{6}))"
    # 17/06/09 20:10:40
    r"|(?P<ymd>(?P<ymdd>\d{2}/\d{2}/\d{2}) +" + _clock("ymd") + r")"
    # 06/09/2017 20:10:40
    r"|(?P<mdy>(?P<mdyd>\d{1,2}/\d{1,2}/\d{4})[ ,T:]+" + _clock("mdy") + r")"
    # 03-17 16:13:38.811
    r"|(?P<lcat>(?P<lcatd>\d{2}-\d{2}) +" + _clock("lcat") + r")"
    # 1117838570[.123]
    r"|(?P<epoch>(?P<epochd>[1-3]\d{9})(?:\.(?P<epochf>\d{1,9}))?)"
    # last, as the only form that starts with a letter: [Sun] Dec 04 04:47:44 [2005] / Jun 14 15:16:01
    r"|(?P<bsd>(?:" + _WDAY + r",? +)?(?P<bsdd>" + _MON + r"[a-z]*\.? +\d{1,2}),? +(?:(?P<bsdy>\d{4}) +)?"
    + _clock("bsd") + r"(?: +(?P<bsdy2>\d{4})(?=[\s\]]|$))?)"
    r")(?(open)\]|(?=[\s|,;\]]|$))"
)
_FORMS: Final = ("iso", "cpt", "dmy", "six", "ymd", "mdy", "lcat", "epoch", "bsd")


def _trie(words: list[str]) -> str:
    """An expression for any of ``words``, as a trie: the engine rejects a
    non-word at its first letter instead of trying every word."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for c in word:
            node = node.setdefault(c, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [re.escape(c) + emit(sub) for c, sub in sorted(node.items()) if c]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return body + "?" if len(body) == 1 else "(?:" + body + ")?"
        return body

    return "(?:" + emit(tree) + ")"


def _absent(*groups: str) -> str:
    """Groups that never take part: every expression after a timestamp then
    has the same groups, and ``_header`` reads them all in one call."""
    return "".join(f"(?:(?P<{g}>)(?!))?" for g in groups)


_SEP: Final = r"[ \t]*(?:[-|,][ \t]+)?"  # between header fields: spaces, maybe a - | or ,
_UPPER: Final = _trie(list(LEVELS))
_TITLE: Final = _trie([w.title() for w in LEVELS])
_ANY_CASE: Final = "(?i:" + _UPPER + ")"
_WORD_LEVEL: Final = (
    r"[\[<(](?P<l1>" + _ANY_CASE + r")[\]>)]:?"  # [error] <warn> (info)
    r"|(?P<l2>" + _ANY_CASE + r"):"  # error: Warning: INFO:
    r"|(?P<l3>" + _UPPER + r")"  # INFO
    r"|(?P<l4>" + _TITLE + r")(?=  |\t)"  # "Info  "
)
_LETTER_LEVEL: Final = r"(?P<l5>[VDIWEFA])(?=[ \t]+[^\s:]{1,64}:(?:\s|$))"  # D Tag:
_END_OF_LEVEL: Final = r"(?=[\s|,]|$)"
_LOGGER: Final = _SEP + r"(?P<{g}>[A-Za-z_$][\w.$@#/<>-]{{0,127}}):(?=\s|$)"
_AFTER_LEVEL: Final = (
    r"(?:" + _SEP + r"\[(?:[^\[\]\n]|\[[^\[\]\n]*\]){1,256}\](?=\s|$)" + _LOGGER.format(g="g1")  # [thread] logger:
    + r"|" + _SEP + r"\[(?P<th>(?:[^\[\]\s]|\[[^\[\]\s]*\]){1,256})\](?=\s|$)"  # [thread-without-spaces]
    + r"|" + _LOGGER.format(g="g2")  # logger:
    + r")?"
)
# up to six column tokens, a level, and what may follow it
_LEVEL_PATH: Final = (r"(?:" + _SEP + r"[^\sa-z]{1,64}(?=\s)){0,6}?" + _SEP
                      + "(?:" + _WORD_LEVEL + "|" + _LETTER_LEVEL + ")" + _END_OF_LEVEL + _AFTER_LEVEL)
_TAG_PID: Final = r"[ \t]+(?:[\w.-]{1,255}[ \t]+)?(?P<t1>[^\s\[\]:]{1,64}?)\[\d+\]:?(?=\s|$)"  # [host] tag[pid][:]
_TAG_COLON: Final = r"[ \t]+[\w.-]{1,255}[ \t]+(?P<t2>[^\s\[\]:]{1,64}?):(?=\s|$)"  # host tag:
_PIPE: Final = r"(?P<pipe>(?:\|[^\s|]{0,64}(?=\|)){0,4})\|"
_MESSAGE: Final = r"(?:[ \t]+[-|][ \t]+|[ \t]*)"  # past a " - " or " | " and the spaces before the message

_TS_RE: Final = re.compile(r"(?:<\d{1,3}>)?" + _TS)
# what follows the timestamp of a syslog line (BSD, or RFC 3339 with its zone) ...
_AFTER_SYSLOG_TS_RE: Final = re.compile(
    r"(?:" + _PIPE + "|" + _LEVEL_PATH + "|" + _TAG_PID + "|" + _TAG_COLON + ")?" + _MESSAGE)
# ... and of another line
_AFTER_TS_RE: Final = re.compile(r"(?:" + _PIPE + "|" + _LEVEL_PATH + "|" + _TAG_PID + ")?" + _absent("t2") + _MESSAGE)
# one or two column tokens, a timestamp, columns and a level
_LEAD_RE: Final = re.compile(
    r"(?:[^\sa-z]{1,16}[ \t]+){1,2}?" + _TS + _LEVEL_PATH + _absent("pipe", "t1", "t2") + _MESSAGE)
# no timestamp: a level word at the start
_LEVEL_ONLY_RE: Final = re.compile(
    _SEP + "(?:" + _WORD_LEVEL + ")" + _END_OF_LEVEL + _AFTER_LEVEL + _absent("l5", "pipe", "t1", "t2") + _MESSAGE)
_REST_GROUPS: Final = ("pipe", "l1", "l2", "l3", "l4", "l5", "g1", "th", "g2", "t1", "t2")


def split_header(line: str, default_year: int | None = None) -> Header:
    """The header at the start of ``line`` and where its message starts (see the module's docstring)."""
    m = _TS_RE.match(line)
    if m is not None:
        form = m.lastgroup or ""
        ts_ns = _ts_ns(m, form, default_year)
        if ts_ns is None:
            return _level_only(line)
        syslog = form == "bsd" or form == "iso" and m.group("isoz") is not None
        rest = (_AFTER_SYSLOG_TS_RE if syslog else _AFTER_TS_RE).match(line, m.end())
        assert rest is not None  # everything in it is optional
        return _header(rest, ts_ns)
    m = _LEAD_RE.match(line)
    if m is not None:
        form = next(f for f, text in zip(_FORMS, m.group(*_FORMS)) if text is not None)
        ts_ns = _ts_ns(m, form, default_year)
        return NO_HEADER if ts_ns is None else _header(m, ts_ns)
    return _level_only(line)


def _level_only(line: str) -> Header:
    m = _LEVEL_ONLY_RE.match(line)
    return NO_HEADER if m is None else _header(m, None)


def _header(m: re.Match[str], ts_ns: int | None) -> Header:
    """The Header of a match of an expression for what follows a timestamp."""
    pipe, l1, l2, l3, l4, l5, g1, th, g2, t1, t2 = m.group(*_REST_GROUPS)
    if pipe is not None:
        severity: int | None = None
        component: str | None = None
        for field in pipe.split("|")[1:]:
            level = LEVELS.get(field.upper())
            if level is not None and severity is None:
                severity = level
            elif component is None and field and not field.isdigit():
                component = field
        return Header(ts_ns, severity, component, m.end())
    word = l1 or l2 or l3 or l4
    if word is not None:
        return Header(ts_ns, LEVELS[word.upper()], g1 or th or g2, m.end())
    if l5 is not None:
        return Header(ts_ns, LETTER_LEVELS[l5], g1 or th or g2, m.end())
    return Header(ts_ns, None, t1 or t2, m.end())


# -- the time of a timestamp ------------------------------------------------------

_days_cache: dict[tuple[str, str, int], int | None] = {}
_clock_cache: dict[str, int | None] = {}
_zone_cache: dict[str, int | None] = {}
_CACHE_LIMIT: Final = 65536


def _ts_ns(m: re.Match[str], form: str, default_year: int | None) -> int | None:
    """The match's time in ns since the epoch, or None if it is not a real time."""
    zone: str | None = None
    frac: str | None
    year = 0
    if form == "iso":
        date, clock, frac, zone = m.group("isod", "isoc", "isof", "isoz")
    elif form == "bsd":
        date, clock, frac, y1, y2 = m.group("bsdd", "bsdc", "bsdf", "bsdy", "bsdy2")
        year = int(y1 or y2 or 0)
    elif form == "epoch":
        seconds, frac = m.group("epochd", "epochf")
        return int(seconds) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    elif form == "cpt":
        date, clock, frac, zone, compact = m.group("cptd", "cptc", "cptf", "cptz", "cptk")
        clock = clock or compact
    elif form == "six":
        date, clock = m.group("sixd", "sixk")
        frac = None
    else:  # dmy ymd mdy lcat
        date, clock, frac = m.group(form + "d", form + "c", form + "f")
        if form == "dmy":
            zone = m.group("dmyz")
    if not year and (form == "bsd" or form == "lcat"):
        year = default_year or _current_year()
    key = (form, date, year)
    days = _days_cache.get(key, -1)
    if days == -1:
        if len(_days_cache) >= _CACHE_LIMIT:
            _days_cache.clear()
        days = _days_cache[key] = _days(form, date, year)
    seconds = _clock_cache.get(clock, -1)
    if seconds == -1:
        if len(_clock_cache) >= _CACHE_LIMIT:
            _clock_cache.clear()
        seconds = _clock_cache[clock] = _seconds_of_day(clock)
    if days is None or seconds is None:
        return None
    if zone:
        offset = _zone_cache.get(zone, -1)
        if offset == -1:
            offset = _zone_cache[zone] = _zone_seconds(zone)
        if offset is None:
            return None
        seconds -= offset
    ns = (days * 86400 + seconds) * 1_000_000_000
    return ns + int(frac.ljust(9, "0")[:9]) if frac else ns


_year_now: list[float] = [0, 0.0]  # the current UTC year and when it ends, epoch seconds


def _current_year() -> int:
    """The current year in UTC (worked out once a year, not once a line)."""
    now = time.time()
    if now >= _year_now[1] or now < _year_now[1] - 367 * 86400:
        year = time.gmtime(now).tm_year
        _year_now[:] = [year, (_days("iso", f"{year + 1}-01-01", 0) or 0) * 86400.0]
    return int(_year_now[0])


def _days(form: str, date: str, year: int) -> int | None:
    """Days since 1970-01-01 of a form's date text, or None if there is no such day."""
    if form == "iso":
        y, mo, d = (int(x) for x in re.split(r"[-/.]", date))
    elif form == "cpt":
        y, mo, d = int(date[:4]), int(date[4:6]), int(date[6:])
    elif form == "bsd":
        month, day = date.split()
        y, mo, d = year, _MONTHS[month[:3].lower()], int(day)
    elif form == "dmy":
        day, month, yyyy = re.split(r"[ /-]", date)
        y, mo, d = int(yyyy), _MONTHS[month[:3].lower()], int(day)
    elif form == "six":
        y, mo, d = _year2(int(date[:2])), int(date[2:4]), int(date[4:])
    elif form == "ymd":
        yy, mm, dd = date.split("/")
        y, mo, d = _year2(int(yy)), int(mm), int(dd)
    elif form == "mdy":
        mm, dd, yyyy = date.split("/")
        y, mo, d = int(yyyy), int(mm), int(dd)
        if mo > 12:
            mo, d = d, mo
    else:  # lcat
        mm, dd = date.split("-")
        y, mo, d = year, int(mm), int(dd)
    if not (1 <= mo <= 12 and 1 <= d <= _month_days(y, mo)):
        return None
    # Howard Hinnant's days_from_civil
    yy_ = y - (mo <= 2)
    era = yy_ // 400
    yoe = yy_ - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _seconds_of_day(clock: str) -> int | None:
    """Seconds since midnight of ``H:M:S`` or ``HHMMSS``; None if out of range (a leap second is kept)."""
    if ":" in clock:
        h, mi, s = (int(x) for x in clock.split(":"))
    else:
        h, mi, s = int(clock[:2]), int(clock[2:4]), int(clock[4:])
    if h > 23 or mi > 59 or s > 60:
        return None
    return h * 3600 + mi * 60 + s


def _month_days(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _zone_seconds(zone: str) -> int | None:
    """Seconds east of UTC of ``Z``/``UTC``/``+02``/``+0200``/``+02:00``; None if out of range."""
    if zone in ("Z", "UTC", "GMT"):
        return 0
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        return None
    seconds = hours * 3600 + minutes * 60
    return -seconds if zone[0] == "-" else seconds


def _year2(yy: int) -> int:
    return 1900 + yy if yy >= 69 else 2000 + yy
