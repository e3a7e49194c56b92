"""``-o MODE``: one record as journalctl 252 prints one entry.

The layouts follow systemd's src/shared/logs-show.c and were checked byte for
byte against the real journalctl 252 output over the fixture in
shared/corpora/journald (tests/unit/query/test_output.py):

* ``short`` ``Nov 14 22:13:20 host ident[pid]: message``; ``short-precise`` adds
  ``.ffffff``; ``short-iso`` is ``2023-11-14T22:13:20+0000`` (252 prints the
  offset without a colon); ``short-iso-precise``; ``short-full``
  ``Tue 2023-11-14 22:13:20 UTC``; ``short-unix`` ``1700000000.123456``.
  The identifier is SYSLOG_IDENTIFIER, else _COMM, else ``unknown``; the pid is
  _PID, else SYSLOG_PID. Continuation lines of a multi-line message are
  indented to the message column (counted in bytes). Unless ``--all``: TABs
  become 8 spaces, ANSI colour sequences are removed, and a message that is
  still not printable UTF-8 is shown as ``[18B blob data]``. With ``--all`` the
  raw bytes are printed, each line up to its first NUL (journalctl uses
  ``%.*s``). The displayed time prefers _SOURCE_REALTIME_TIMESTAMP.
* ``json`` one object per line, every value a string; values that are not
  printable UTF-8 are arrays of byte numbers; a repeated field is an array;
  ``NAME=value`` of 4096 bytes or more is ``null`` unless ``--all``.
  ``json-pretty`` (TAB indentation, ``" : "``), ``json-sse`` (``data: …``),
  ``json-seq`` (RFC 7464: RS before, LF after each object).
* ``cat`` the raw MESSAGE bytes; ``verbose`` the full entry; ``export`` the
  Journal Export Format.

``__CURSOR``, ``__REALTIME_TIMESTAMP``, ``__MONOTONIC_TIMESTAMP`` and
``_BOOT_ID`` are printed by json/export whatever ``--output-fields`` says, as by
journalctl; ``--output-fields`` limits everything else in json, export, verbose
and cat. Not supported: ``short-monotonic``, ``short-delta``, ``with-unit``
(records from non-journal sources have no monotonic clock or unit).

Speed: the short layouts have a fast path for the common record (one
printable line, nothing raw in its journal view): :meth:`Formatter.fast_path`
for Records, and :meth:`Formatter.short_columns`, which prints straight from
a chunk's columns without building Records. Both give the same bytes as
:meth:`Formatter.format` (tests/unit/query/test_columns.py checks that).
"""

from __future__ import annotations

import json
import re
import time
from typing import Callable

from hostlog.query.journal_fields import (
    ABSENT_FIELD,
    HEADER_FIELDS,
    field_values,
    format_cursor,
    format_export_entry,
    is_printable,
    record_to_journal,
    to_entry,
)
from hostlog.query.modes import MODES
from hostlog.record import Record

__all__ = ["MODES", "Formatter", "format_bytes"]



# systemd terminal-util.h (v252) colours, applied by get_log_colors().
ANSI_HIGHLIGHT_RED = b"\x1b[0;1;31m"
ANSI_HIGHLIGHT_YELLOW = b"\x1b[0;1;38;5;185m"
ANSI_HIGHLIGHT = b"\x1b[0;1;39m"
ANSI_GREY = b"\x1b[0;38;5;245m"
ANSI_GREEN = b"\x1b[0;32m"
ANSI_BLUE = b"\x1b[0;34m"
ANSI_UNDERLINE = b"\x1b[0;4m"
ANSI_NORMAL = b"\x1b[0m"

PRINT_CHAR_THRESHOLD = 300  # logs-show.c: longer host/ident/pid are not shown
JSON_THRESHOLD = 4096  # logs-show.c: "NAME=value" this long is null in JSON
USEC_TIMESTAMP_FORMATTABLE_MAX = 253_402_214_399_999_999

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ANSI_SGR = re.compile(rb"\x1b\[[0-9;]*m")
_ALWAYS = frozenset(HEADER_FIELDS)
# Fields whose presence means the journal view of a record is not simply its
# attributes (a raw or missing core value): such records take the general path.
_RAW_CORE = frozenset({"_HOSTNAME", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "_PID",
                       "MESSAGE", "__REALTIME_TIMESTAMP", ABSENT_FIELD})
# What makes a one-line text message need the general path in short output:
# a line break, TAB, ESC, or anything utf8_is_printable() refuses.
_SHORT_SLOW = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17)) + "]")
_JSON_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17)) + "]")
_STAMP_CACHE_MAX = 4096
_RAW_CORE_BYTES = frozenset(name.encode() for name in _RAW_CORE)
# the ASCII characters utf8_is_printable() refuses, and TAB and LF, which the
# short layouts change: an ASCII message without them prints as it is
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"


def log_colors(priority: int) -> tuple[bytes, bytes, bytes]:
    """get_log_colors(): (on, off, highlight) for a syslog priority."""
    if priority <= 3:  # err and worse
        return ANSI_HIGHLIGHT_RED, ANSI_NORMAL, ANSI_HIGHLIGHT
    if priority <= 4:  # warning
        return ANSI_HIGHLIGHT_YELLOW, ANSI_NORMAL, ANSI_HIGHLIGHT
    if priority <= 5:  # notice
        return ANSI_HIGHLIGHT, ANSI_NORMAL, ANSI_HIGHLIGHT_RED
    if priority >= 7:  # debug
        return ANSI_GREY, ANSI_NORMAL, ANSI_HIGHLIGHT_RED
    return b"", b"", ANSI_HIGHLIGHT_RED


def format_bytes(n: int) -> str:
    """systemd FORMAT_BYTES(): ``18B``, ``1.5K``, ``10.0M`` (powers of 1024)."""
    suffixes = ("E", "P", "T", "G", "M", "K")
    factors = [1024 ** (6 - i) for i in range(6)]
    for i, factor in enumerate(factors):
        if n >= factor:
            if i != 5:
                tenth = (n // factors[i + 1] * 10 // factors[5]) % 10
            else:
                tenth = (n * 10 // factor) % 10
            return f"{n // factor}.{tenth}{suffixes[i]}"
    return f"{n}B"


def _shall_print(value: bytes, all_fields: bool) -> bool:
    return all_fields or (len(value) < PRINT_CHAR_THRESHOLD and is_printable(value))


def _last(record: Record, name: str) -> bytes | None:
    values = field_values(record, name)
    return values[-1] if values else None


def _priority(value: bytes | None) -> int:
    # logs-show.c: exactly one digit 0-7, otherwise LOG_INFO.
    if value is not None and len(value) == 1 and 48 <= value[0] <= 55:
        return value[0] - 48
    return 6


def _multiline(message: bytes, prefix: int, on: bytes = b"", off: bytes = b"",
               hl_on: bytes = b"", highlight: tuple[int, int] | None = None) -> bytes:
    """print_multiline() with full width (journalctl's default): every line,
    continuation lines indented by ``prefix`` spaces, colours per line."""
    if not message:
        return b"\n"
    lines = message.split(b"\n")
    if not lines[-1]:
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        line = line.split(b"\0", 1)[0]  # printf("%.*s") stops at NUL
        indent = b" " * prefix if i else b""
        if i == 0 and highlight is not None and highlight[0] < len(line):
            start, end = highlight
            out.append(indent + on + line[:start] + hl_on + line[start:min(len(line), end)]
                       + (on + line[end:] if len(line) > end else b"") + off + b"\n")
        else:
            out.append(indent + on + line + off + b"\n")
    return b"".join(out)


class Formatter:
    """Formats records for one ``-o`` mode.

    ``utc``: times in UTC instead of local time (``--utc``). ``output_fields``:
    ``--output-fields``. ``all_fields``: ``--all``. ``color``: priority colours
    as on a terminal (err and worse red, warning yellow, notice bold, debug
    grey; the message only).
    """

    def __init__(self, mode: str, *, utc: bool = False, output_fields: list[str] | None = None,
                 all_fields: bool = False, color: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown output mode {mode!r}; one of: {', '.join(MODES)}")
        self.mode = mode
        self.utc = utc
        self.output_fields = frozenset(output_fields) if output_fields else None
        self._cat_fields = list(dict.fromkeys(output_fields)) if output_fields else ["MESSAGE"]
        self.all_fields = all_fields
        self.color = color
        self._stamps: dict[int, tuple[str | None, str]] = {}
        self._printable_cache: dict[str, bool] = {}
        self._who: dict[tuple[str, str], str] = {}
        self._second_stamps: dict[int, str] = {}
        # modes whose stamp shows the microseconds: not cached per second
        self._precise = mode in ("short-precise", "short-iso-precise", "short-unix")
        if mode.startswith("short"):
            self._format = self._short
        elif mode.startswith("json"):
            self._format = self._json
        else:
            self._format = {"cat": self._cat, "verbose": self._verbose,
                            "export": self._export}[mode]

    def fast_path(self):  # -> Callable[[Record], bytes | None] | None
        """A formatter for the common record that returns None for any other
        (for which :meth:`format` is then called), or None if this mode has
        none. The same bytes as :meth:`format`, with less work."""
        if self.mode.startswith("short") and not self.color and not self.all_fields:
            return self._short_plain
        return None

    def format(self, record: Record, *, highlight: tuple[int, int] | None = None) -> bytes:
        """The bytes journalctl would print for this record (may be empty).

        ``highlight``: a (start, end) byte span of the message to highlight
        (``-g``) when colours are on; honoured on the message's first line.
        """
        return self._format(record, highlight)

    # -- timestamps ---------------------------------------------------------------
    def _tm(self, sec: int) -> time.struct_time:
        return time.gmtime(sec) if self.utc else time.localtime(sec)

    def _zone(self, tm: time.struct_time) -> str:
        if self.utc:
            return " UTC"
        return f" {tm.tm_zone}" if tm.tm_zone else ""

    def _timestamp(self, usec: int) -> str:
        sec, frac = divmod(usec, 1_000_000)
        mode = self.mode
        if mode == "short-unix":
            return f"{sec:10d}.{frac:06d}"
        if usec > USEC_TIMESTAMP_FORMATTABLE_MAX and mode == "short-full":
            return "--- XXXX-XX-XX XX:XX:XX" + (" UTC" if self.utc else "")
        tm = self._tm(sec)
        hms = f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        if mode in ("short", "short-precise"):
            text = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:02d} {hms}"
            return text + (f".{frac:06d}" if mode == "short-precise" else "")
        date = f"{tm.tm_year}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
        if mode == "short-full":
            return f"{_WEEKDAYS[tm.tm_wday]} {date} {hms}{self._zone(tm)}"
        # short-iso[-precise]: strftime %z, i.e. +hhmm without a colon in 252.
        off = tm.tm_gmtoff or 0
        sign = "-" if off < 0 else "+"
        off = abs(off)
        zone = f"{sign}{off // 3600:02d}{off // 60 % 60:02d}"
        frac_text = f".{frac:06d}" if mode == "short-iso-precise" else ""
        return f"{date}T{hms}{frac_text}{zone}"

    def _cached_timestamp(self, usec: int) -> str:
        """_timestamp(), from a cached rendering of the minute: records come
        close together in time, and localtime() is most of the work."""
        mode = self.mode
        if mode == "short-unix":
            return self._timestamp(usec)
        sec, frac = divmod(usec, 1_000_000)
        minute, second = divmod(sec, 60)
        parts = self._stamps.get(minute)
        if parts is None:
            parts = self._minute_parts(minute * 60)
            if len(self._stamps) >= _STAMP_CACHE_MAX:
                self._stamps.clear()
            self._stamps[minute] = parts
        if parts[0] is None:  # a minute that is not a local minute (zone change in it)
            return self._timestamp(usec)
        if mode == "short-precise" or mode == "short-iso-precise":
            return f"{parts[0]}{second:02d}.{frac:06d}{parts[1]}"
        return f"{parts[0]}{second:02d}{parts[1]}"

    def _minute_parts(self, start: int) -> tuple[str | None, str]:
        """(text before the seconds, text after them) of the stamps of the
        minute from ``start``, or (None, "") if its local seconds are not
        0..59 of one local minute (an offset with seconds, a change inside)."""
        first, last = self._tm(start), self._tm(start + 59)
        if (first.tm_sec != 0 or last.tm_sec != 59 or last.tm_min != first.tm_min
                or first.tm_gmtoff != last.tm_gmtoff or first.tm_zone != last.tm_zone):
            return None, ""
        text = self._timestamp(start * 1_000_000)
        if self.mode in ("short", "short-precise"):
            prefix = text[:-2] if self.mode == "short" else text[:-9]
            return prefix, ""
        if self.mode in ("short-iso", "short-iso-precise"):
            cut = text.index("T") + 7  # "T" + "HH:MM:"
            return text[:cut], text[-5:]  # the zone, "+hhmm"
        # short-full: "Tue 2023-11-14 22:13:20 UTC"
        cut = text.index(":") + 4
        return text[:cut], text[cut + 2:]

    def _verbose_timestamp(self, usec: int) -> str:
        if usec > USEC_TIMESTAMP_FORMATTABLE_MAX:
            return "--- XXXX-XX-XX XX:XX:XX.XXXXXX" + (" UTC" if self.utc else "")
        sec, frac = divmod(usec, 1_000_000)
        tm = self._tm(sec)
        return (f"{_WEEKDAYS[tm.tm_wday]} {tm.tm_year}-{tm.tm_mon:02d}-{tm.tm_mday:02d} "
                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}.{frac:06d}{self._zone(tm)}")

    @staticmethod
    def _display_usec(record: Record) -> int:
        # The source's own time when it gave one (_SOURCE_REALTIME_TIMESTAMP,
        # valid: 0 < t < infinity), else the record's.
        src = _last(record, "_SOURCE_REALTIME_TIMESTAMP")
        if src is not None and src.isdigit() and len(src) < 21 and 0 < int(src) < 2**64 - 1:
            return int(src)
        return record.ts // 1000

    # -- short family ---------------------------------------------------------------
    def _printable_short(self, value: str) -> bool:
        """_shall_print() for a text value, remembered (hosts and apps repeat)."""
        ok = self._printable_cache.get(value)
        if ok is None:
            if len(self._printable_cache) > _STAMP_CACHE_MAX:
                self._printable_cache.clear()
            ok = _shall_print(value.encode("utf-8", "surrogateescape"), False)
            self._printable_cache[value] = ok
        return ok

    def _short_fast(self, record: Record) -> bytes | None:
        """The short line of a plain record (one printable line of text,
        nothing raw or missing in its journal view), or None for the general
        path. Same bytes as the general path, several times faster."""
        if self.color or self.all_fields:
            return None
        return self._short_plain(record)

    def _short_plain(self, record: Record) -> bytes | None:
        msg = record.msg
        # str.isprintable() refuses every control character, TAB, LF, ESC and
        # the non-characters: a quick yes; the exact class decides otherwise
        if msg.__class__ is not str or (not msg.isprintable() and _SHORT_SLOW.search(msg) is not None):
            return None
        fields = record.fields
        usec = record.ts // 1000
        fake = None
        if fields:
            if not _RAW_CORE.isdisjoint(fields):
                return None
            src = fields.get("_SOURCE_REALTIME_TIMESTAMP")
            if src is not None:
                if src.__class__ is not str:
                    return None
                if src.isascii() and src.isdigit() and len(src) < 21 and 0 < int(src) < 2**64 - 1:
                    usec = int(src)
            if record.pid is None:
                fake = fields.get("SYSLOG_PID")
        # " host ident" (or None: the general path knows about _COMM and
        # "unknown"), remembered per pair: there are few
        key = (record.host, record.app)
        who = self._who.get(key)
        if who is None:
            who = self._who_of(*key)
        if not who:
            return None
        sec, frac = divmod(usec, 1_000_000)
        minute, second = divmod(sec, 60)
        parts = self._stamps.get(minute)
        if parts is None or parts[0] is None or usec > USEC_TIMESTAMP_FORMATTABLE_MAX:
            stamp = self._cached_timestamp(usec)
        elif self._precise:
            stamp = f"{parts[0]}{second:02d}.{frac:06d}{parts[1]}"
        else:
            stamp = f"{parts[0]}{second:02d}{parts[1]}"
        if record.pid is not None:
            line = f"{stamp}{who}[{record.pid}]: {msg}\n"
        elif fake is None:
            line = f"{stamp}{who}: {msg}\n"
        elif fake.__class__ is str and self._printable_short(fake):
            line = f"{stamp}{who}[{fake}]: {msg}\n"
        elif fake.__class__ is str:
            line = f"{stamp}{who}: {msg}\n"
        else:
            return None
        try:
            return line.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: not text after all
            return None

    def short_columns(self, cols, idx: list[int], verify: Callable[[Record], bool],
                      identity: bool) -> tuple[list[bytes], list[str | None], list[int]]:
        """The short lines of the records ``idx`` of a chunk, read from its
        columns (hostlog.query.columns.FrameColumns) without building Records
        for the plain ones; the others (a raw or missing core field, a
        message that is not one printable line, ...) are built and go through
        ``verify`` and :meth:`format`. ``verify`` may only refuse records with
        a raw or missing core field (Query.verify: PRIORITY, MESSAGE); the
        plain ones are not passed to it. Returns the lines, each record's boot
        (for the boot separator) and the indices kept, in ``idx`` order.

        Only for the short modes without colours (see :meth:`fast_path`).
        """
        from hostlog.query.columns import APP, FIELDS, HOST, PID

        msgs, ts = cols.msgs(), cols.ts()
        hosts, apps, pids = cols.column(HOST), cols.column(APP), cols.column(PID)
        fields = cols.some(FIELDS, idx, raw=True)
        strings = cols.strings
        who_of: dict[int, str] = {}  # per chunk: host and app are indices into its strings
        boot_of: dict[bytes, str | None] = {}
        stamp_of = self._second_stamps
        if len(stamp_of) > _STAMP_CACHE_MAX:
            stamp_of.clear()
        precise = self._precise
        raw_core = _RAW_CORE_BYTES
        slow = _SHORT_SLOW.search
        lines: list[bytes | None] = []
        boots: list[str | None] = []
        add_line, add_boot = lines.append, boots.append
        later: list[int] = []  # positions in lines of the records done the long way
        # ASCII messages are checked for control characters all at once, after
        # the loop (str.isprintable() goes character by character)
        ascii_at: list[int] = []
        ascii_msgs: list[str] = []
        for k, i in enumerate(idx):
            f = fields[k]
            msg = msgs[i]
            if msg.__class__ is not str or (f and not raw_core.isdisjoint(f)):
                later.append(k)
                add_line(None)
                add_boot(None)
                continue
            if msg.isascii():
                ascii_at.append(k)
                ascii_msgs.append(msg)
            elif not msg.isprintable() and slow(msg) is not None:
                later.append(k)
                add_line(None)
                add_boot(None)
                continue
            usec = ts[i] // 1000
            pid = pids[i]
            boot = None
            if f:
                src = f.get(b"_SOURCE_REALTIME_TIMESTAMP")
                if src is not None:
                    if src.__class__ is not bytes:
                        later.append(k)
                        add_line(None)
                        add_boot(None)
                        continue
                    if src.isdigit() and len(src) < 21 and 0 < int(src) < 2**64 - 1:
                        usec = int(src)
                raw_boot = f.get(b"_BOOT_ID")
                if raw_boot.__class__ is bytes:  # (several values: no boot, as for records)
                    boot = boot_of.get(raw_boot, "")
                    if boot == "":
                        boot = boot_of[raw_boot] = _boot_text(raw_boot)
                if pid is None:
                    fake = f.get(b"SYSLOG_PID")
                    if fake is not None:
                        if fake.__class__ is not bytes or not fake.isascii():
                            later.append(k)
                            add_line(None)
                            add_boot(None)
                            continue
                        pid = fake.decode()
                        if not self._printable_short(pid):
                            pid = None
            key = (hosts[i] << 32) | apps[i]
            who = who_of.get(key)
            if who is None:
                who = who_of[key] = self._who.get((strings[hosts[i]], strings[apps[i]])) or \
                    self._who_of(strings[hosts[i]], strings[apps[i]])
            if not who or usec > USEC_TIMESTAMP_FORMATTABLE_MAX:
                later.append(k)
                add_line(None)
                add_boot(None)
                continue
            if precise:
                stamp = self._cached_timestamp(usec)
            else:
                sec = usec // 1_000_000
                stamp = stamp_of.get(sec)
                if stamp is None:
                    stamp = stamp_of[sec] = self._cached_timestamp(sec * 1_000_000)
            if pid is None:
                add_line(f"{stamp}{who}: {msg}\n".encode())
            else:
                add_line(f"{stamp}{who}[{pid}]: {msg}\n".encode())
            add_boot(boot)
        joined = "".join(ascii_msgs).encode("ascii")
        if len(joined.translate(None, _CONTROL_BYTES)) != len(joined):
            # some ASCII message has a control character: find them one by one
            for k, msg in zip(ascii_at, ascii_msgs):
                if not msg.isprintable() and lines[k] is not None:
                    later.append(k)
                    lines[k] = None
            later.sort()
        kept = idx
        if later:
            records = cols.records([idx[k] for k in later], identity=identity)
            dropped = set()
            for k, r in zip(later, records):
                if not verify(r):
                    dropped.add(k)
                    continue
                lines[k] = self._short_plain(r) or self.format(r)
                b = r.fields.get("_BOOT_ID") if r.fields else None
                boots[k] = b if isinstance(b, str) and len(b) == 32 else None
            if dropped:
                keep = [k for k in range(len(idx)) if k not in dropped]
                lines = [lines[k] for k in keep]
                boots = [boots[k] for k in keep]
                kept = [idx[k] for k in keep]
        return lines, boots, kept  # type: ignore[return-value]

    def _who_of(self, host: str, app: str) -> str:
        who = ""
        if app and self._printable_short(app):
            who = (f" {host}" if host and self._printable_short(host) else "") + f" {app}"
        if len(self._who) > _STAMP_CACHE_MAX:
            self._who.clear()
        self._who[(host, app)] = who
        return who

    def _short(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        if highlight is None:
            fast = self._short_fast(record)
            if fast is not None:
                return fast
        message = _last(record, "MESSAGE")
        if message is None:
            return b""  # journalctl skips entries without MESSAGE
        all_fields = self.all_fields
        head = self._cached_timestamp(self._display_usec(record)).encode()
        parts = [head]
        n = len(head)
        host = _last(record, "_HOSTNAME")
        if host is not None and _shall_print(host, all_fields):
            parts += (b" ", host)
            n += len(host) + 1
        ident = _last(record, "SYSLOG_IDENTIFIER")
        comm = _last(record, "_COMM")
        if ident is not None and _shall_print(ident, all_fields):
            parts += (b" ", ident)
            n += len(ident) + 1
        elif comm is not None and _shall_print(comm, all_fields):
            parts += (b" ", comm)
            n += len(comm) + 1
        else:
            parts.append(b" unknown")  # not counted in the indent: as logs-show.c
        pid = _last(record, "_PID")
        fake_pid = _last(record, "SYSLOG_PID")
        if pid is not None and _shall_print(pid, all_fields):
            parts += (b"[", pid, b"]")
            n += len(pid) + 2
        elif fake_pid is not None and _shall_print(fake_pid, all_fields):
            parts += (b"[", fake_pid, b"]")
            n += len(fake_pid) + 2
        parts.append(b": ")
        if not all_fields:
            if highlight is not None:
                head_text = message[:highlight[0]]
                shift = 7 * head_text.count(b"\t")
                span = message[highlight[0]:highlight[1]]
                highlight = (highlight[0] + shift, highlight[1] + shift + 7 * span.count(b"\t"))
            message = _ANSI_SGR.sub(b"", message).replace(b"\t", b" " * 8)
            if not is_printable(message):
                parts.append(f"[{format_bytes(len(message))} blob data]\n".encode())
                return b"".join(parts)
        on = off = hl_on = b""
        if self.color:
            on, off, hl_on = log_colors(_priority(_last(record, "PRIORITY")))
            if not on and _last(record, "_TRANSPORT") == b"audit":
                on, off = ANSI_BLUE, ANSI_NORMAL
        else:
            highlight = None
        parts.append(_multiline(message, n + 2, on, off, hl_on, highlight))
        return b"".join(parts)

    # -- cat --------------------------------------------------------------------------
    def _cat(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        on = off = hl_on = b""
        if self.color:
            # sd_journal_get_data() returns the first value of a field.
            prio = field_values(record, "PRIORITY")
            on, off, hl_on = log_colors(_priority(prio[0] if prio else None))
        out = []
        for name in self._cat_fields:
            values = field_values(record, name)
            if not values:
                continue
            data = values[0]
            if self.color and highlight is not None and name == "MESSAGE":
                start, end = highlight
                out.append(on + data[:start] + hl_on + data[start:end] + on + data[end:] + off)
            elif self.color:
                out.append(on + data + off)
            else:
                out.append(data)
            out.append(b"\n")
        return b"".join(out)

    # -- the full entry ---------------------------------------------------------------
    def _selected(self, record: Record, always: frozenset[str] = _ALWAYS) -> dict[str, list[bytes]]:
        entry = to_entry(record_to_journal(record))
        wanted = self.output_fields
        return {name: values for name, values in entry.items()
                if (name in _ALWAYS or not name.startswith("__"))
                and (wanted is None or name in always or name in wanted)}

    def _json(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        obj: dict[str, object] = {}
        wanted = self.output_fields
        for name, value in record_to_journal(record).items():
            if name.startswith("__") and name not in _ALWAYS:
                continue
            if wanted is not None and name not in _ALWAYS and name not in wanted:
                continue
            if isinstance(value, str):
                obj[name] = self._json_text(name, value)
            else:
                converted = [self._json_value(name, v) for v in to_entry({name: value})[name]]
                obj[name] = converted[0] if len(converted) == 1 else converted
        if self.mode == "json-pretty":
            return _pretty(obj).encode() + b"\n"
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        if self.mode == "json-seq":
            return b"\x1e" + text + b"\n"
        if self.mode == "json-sse":
            return b"data: " + text + b"\n\n"
        return text + b"\n"

    def _json_text(self, name: str, value: str) -> object:
        """_json_value() for a text value, without encoding it when it is short."""
        if not self.all_fields and len(name) + 1 + 4 * len(value) >= JSON_THRESHOLD:
            if len(name) + 1 + len(value.encode("utf-8", "surrogateescape")) >= JSON_THRESHOLD:
                return None
        if value.isascii():
            if value.isprintable() or _JSON_NOT_PRINTABLE.search(value) is None:
                return value
        elif _JSON_NOT_PRINTABLE.search(value) is None and _valid_utf8(value):
            return value
        return self._json_value(name, value.encode("utf-8", "surrogateescape"))

    def _json_value(self, name: str, value: bytes) -> object:
        if not self.all_fields and len(name) + 1 + len(value) >= JSON_THRESHOLD:
            return None
        if is_printable(value):
            return value.decode("utf-8")
        return list(value)

    def _export(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        selected = self._selected(record)
        return format_export_entry((name, v) for name, values in selected.items() for v in values)

    def _verbose(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        color = self.color
        stamp = self._verbose_timestamp(self._display_usec(record)).encode()
        cursor = format_cursor(record.origin, record.seq).encode()
        if color:
            out = [ANSI_UNDERLINE + stamp + ANSI_NORMAL + b" " + ANSI_GREY
                   + b"[" + cursor + b"]" + ANSI_NORMAL + b"\n"]
        else:
            out = [stamp + b" [" + cursor + b"]\n"]
        # verbose lists _BOOT_ID as an ordinary field: --output-fields applies.
        for name, values in self._selected(record, frozenset()).items():
            if name.startswith("__"):
                continue  # shown in the header line
            key = name.encode()
            on = off = b""
            if color and name == "MESSAGE":
                on, off = ANSI_HIGHLIGHT, ANSI_NORMAL
            elif color and name.startswith("_"):
                on, off = ANSI_GREEN, ANSI_NORMAL
            for value in values:
                if self.all_fields or is_printable(value):
                    out.append(b"    " + on + key + b"="
                               + _multiline(value, 4 + len(key) + 1) + off)
                else:
                    out.append(b"    " + on + key + b"=["
                               + format_bytes(len(value)).encode() + b" blob data]" + off + b"\n")
        return b"".join(out)


def _boot_text(raw: bytes) -> str | None:
    """A raw _BOOT_ID value as the boot separator takes it: text of 32
    characters (binary, or any other length: no boot)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) == 32 else None


def _valid_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


def _pretty(value: object, prefix: str = "") -> str:
    """systemd json_format() with JSON_FORMAT_PRETTY: TAB indentation."""
    inner = prefix + "\t"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)} : {_pretty(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + prefix + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [inner + _pretty(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + prefix + "]"
    return json.dumps(value, ensure_ascii=False)
