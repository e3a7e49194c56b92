"""The short family of ``-o`` layouts (``short``, ``short-precise``,
``short-iso``, ``short-iso-precise``, ``short-full``, ``short-unix``) and the
timestamps and zones of every layout; mixed into
hostlog.query.output.Formatter, whose docstring describes the layouts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from hostlog.journal.fields import ABSENT_FIELD, is_printable
from hostlog.query.output.colors import ANSI_BLUE, ANSI_NORMAL, _priority, log_colors
from hostlog.query.output.common import _last, _multiline, _shall_print, format_bytes
from hostlog.record import Record

USEC_TIMESTAMP_FORMATTABLE_MAX = 253_402_214_399_999_999

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ANSI_SGR = re.compile(rb"\x1b\[[0-9;]*m")
# Fields whose presence means the journal view of a record is not simply its
# attributes (a raw or missing core value): such records take the general path.
_RAW_CORE = frozenset({"_HOSTNAME", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "_PID",
                       "MESSAGE", "__REALTIME_TIMESTAMP", ABSENT_FIELD})
# What makes a one-line text message need the general path in short output:
# a line break, TAB, ESC, or anything utf8_is_printable() refuses.
_SHORT_SLOW = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17)) + "]")
_STAMP_CACHE_MAX = 4096
_RAW_CORE_BYTES = frozenset(name.encode() for name in _RAW_CORE)
# the ASCII characters utf8_is_printable() refuses, and TAB and LF, which the
# short layouts change: an ASCII message without them prints as it is
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"


class ShortLayouts:
    """Timestamps and the short layouts of :class:`hostlog.query.output.Formatter`
    (which sets the attributes below)."""

    mode: str
    utc: bool
    all_fields: bool
    color: bool
    _stamps: dict[int, tuple[str | None, str]]
    _printable_cache: dict[str, bool]
    _who: dict[tuple[str, str], str]
    _second_stamps: dict[int, str]
    _precise: bool
    format: Callable[[Record], bytes]  # Formatter.format

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
        columns (hostlog.chunk.FrameColumns) without building Records
        for the plain ones; the others (a raw or missing core field, a
        message that is not one printable line, ...) are built and go through
        ``verify`` and :meth:`format`. ``verify`` may only refuse records with
        a raw or missing core field (Query.verify: PRIORITY, MESSAGE); the
        plain ones are not passed to it. Returns the lines, each record's boot
        (for the boot separator) and the indices kept, in ``idx`` order.

        Only for the short modes without colours (see :meth:`fast_path`).
        """
        from hostlog.chunk import APP, FIELDS, HOST, PID

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
        stamp: str | None
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


def _boot_text(raw: bytes) -> str | None:
    """A raw _BOOT_ID value as the boot separator takes it: text of 32
    characters (binary, or any other length: no boot)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) == 32 else None
