"""journal-gatewayd's formats, without I/O: the ``Accept`` header's modes,
the lines of ``/fields/NAME``, the object of ``/machine``, and the one
change the export stream needs for ``systemd-journal-remote``.

The entries themselves are the query's own layouts
(:class:`hostlog.query.output.Formatter`), so ``/entries`` gives the bytes
``hostlog query -o MODE`` prints.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping

from hostlog.journal.fields import ABSENT_FIELD, is_printable
from hostlog.record import FieldValue, Record

__all__ = ["INVALID_PREFIX", "MEDIA_TYPES", "entries_mode", "field_line", "for_journal_remote",
           "machine_json", "os_pretty_name"]

#: the ``-o`` mode of each media type gatewayd serves, and back
MEDIA_TYPES = {"short": "text/plain", "json": "application/json", "json-sse": "text/event-stream",
               "json-seq": "application/json-seq", "export": "application/vnd.fdo.journal"}
_MODES = {media: mode for mode, media in MEDIA_TYPES.items()}
JSON_THRESHOLD = 4096  # logs-show.c: a longer value is null in JSON


def entries_mode(accept: str | None) -> str:
    """The ``-o`` mode an ``Accept`` header asks for: gatewayd compares the
    whole header with its media types and serves ``text/plain`` for anything
    else; hostlog also reads a list (``application/json, */*;q=0.1``): its
    first media type that is one of those decides."""
    if accept is None:
        return "short"
    mode = _MODES.get(accept)
    if mode is not None:
        return mode
    for item in accept.split(","):
        mode = _MODES.get(item.partition(";")[0].strip().lower())
        if mode is not None:
            return mode
    return "short"


def _json_escape(value: bytes) -> bytes:
    """logs-show.c json_escape() without OUTPUT_SHOW_ALL: null from 4096
    bytes on, an array of byte values when not printable UTF-8, else a
    string with ``"``, ``\\`` and control characters escaped (bytes above
    0x7f as they are)."""
    if len(value) >= JSON_THRESHOLD:
        return b"null"
    if not is_printable(value):
        return b"[ " + b", ".join(str(b).encode() for b in value) + b" ]"
    out = bytearray(b'"')
    for b in value:
        if b in (0x22, 0x5C):
            out += b"\\" + bytes([b])
        elif b == 0x0A:
            out += b"\\n"
        elif b < 0x20:
            out += b"\\u%04x" % b
        else:
            out.append(b)
    out += b'"'
    return bytes(out)


def field_line(name: str, value: bytes, as_json: bool) -> bytes:
    """One line of ``/fields/NAME``: the value, or ``{ "NAME" : value }`` in JSON."""
    if as_json:
        return b'{ "' + name.encode() + b'" : ' + _json_escape(value) + b" }\n"
    return value + b"\n"


def os_pretty_name(os_release: str) -> str:
    """PRETTY_NAME of an os-release file, else NAME, else ``Linux``
    (systemd's os_release_pretty_name())."""
    values: dict[str, str] = {}
    for line in os_release.splitlines():
        name, sep, value = line.strip().partition("=")
        if not sep or name.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[name.strip()] = value
    return values.get("PRETTY_NAME") or values.get("NAME") or "Linux"


def machine_json(*, machine_id: str, boot_id: str, hostname: str, os_pretty_name: str,
                 virtualization: str, usage: int, cutoff_from_realtime: int,
                 cutoff_to_realtime: int) -> bytes:
    """The body of ``/machine``, laid out as gatewayd lays it out (numbers as strings)."""
    items = [("machine_id", machine_id), ("boot_id", boot_id), ("hostname", hostname),
             ("os_pretty_name", os_pretty_name), ("virtualization", virtualization),
             ("usage", str(usage)), ("cutoff_from_realtime", str(cutoff_from_realtime)),
             ("cutoff_to_realtime", str(cutoff_to_realtime))]
    body = ",".join(f'"{name}" : {json.dumps(value, ensure_ascii=False)}' for name, value in items)
    return ("{ " + body + " }\n").encode()


# -- what systemd-journal-remote takes --------------------------------------------------------

#: a field value journal-remote would refuse is kept under this prefix + its name
INVALID_PREFIX = "HOSTLOG_INVALID"
#: VALID_REALTIME()/VALID_MONOTONIC(): below 2^55 µs
_USEC_LIMIT = 1 << 55
_CANONICAL = re.compile(rb"0|[1-9][0-9]{0,17}")
_ID128 = re.compile(rb"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CHECKED = ("__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID")


def _values(value: FieldValue) -> list[bytes]:
    items = value if isinstance(value, list) else [value]
    return [v if isinstance(v, bytes) else v.encode("utf-8", "surrogateescape") for v in items]


def _valid(name: str, value: bytes) -> bool:
    if name == "_BOOT_ID":
        return _ID128.fullmatch(value) is not None
    if _CANONICAL.fullmatch(value) is None:
        return False
    number = int(value)
    return number < _USEC_LIMIT and (number > 0 or name != "__REALTIME_TIMESTAMP")


def _absent(fields: Mapping[str, FieldValue], name: str) -> bool:
    marker = fields.get(ABSENT_FIELD)
    return isinstance(marker, str) and name in marker.split()


def for_journal_remote(record: Record) -> Record:
    """``record``, or a copy that systemd-journal-remote takes.

    journal-remote stops reading a stream at the first entry whose
    ``__REALTIME_TIMESTAMP`` is not in 1..2^55-1 µs, whose
    ``__MONOTONIC_TIMESTAMP`` is not below 2^55 or whose ``_BOOT_ID`` is not
    a 128-bit id: every entry after it would be lost. Such a value (a field
    kept raw from the source) moves to ``HOSTLOG_INVALID<NAME>``; a record
    time outside the range is shown as its nearest end, its own value kept
    as ``HOSTLOG_INVALID__REALTIME_TIMESTAMP``. Every other record is
    returned as it is.
    """
    fields = record.fields or {}
    ts_us = record.ts // 1000
    ts_ok = 0 < ts_us < _USEC_LIMIT
    if ts_ok and (not fields or not any(name in fields for name in _CHECKED)):
        return record
    moved: dict[str, FieldValue] = {}
    for name in _CHECKED:
        value = fields.get(name)
        if value is not None and not all(_valid(name, v) for v in _values(value)):
            moved[name] = value
    raw_time = "__REALTIME_TIMESTAMP" in fields and "__REALTIME_TIMESTAMP" not in moved
    fix_ts = not ts_ok and not raw_time and not _absent(fields, "__REALTIME_TIMESTAMP")
    if not moved and not fix_ts:
        return record
    new: dict[str, FieldValue] = {name: value for name, value in fields.items() if name not in moved}
    for name, value in moved.items():
        new[INVALID_PREFIX + name] = value
    ts = record.ts
    if fix_ts:
        new.setdefault(INVALID_PREFIX + "__REALTIME_TIMESTAMP", str(ts_us))
        ts = 1000 if ts_us <= 0 else (_USEC_LIMIT - 1) * 1000
    return dataclasses.replace(record, ts=ts, fields=new)
