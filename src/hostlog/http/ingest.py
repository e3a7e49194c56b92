"""The lines of ``POST /api/v1/logs``: one JSON object, one record
(docs/http.md, "POST /api/v1/logs"). Pure: bytes and the clock's value in, records out.

:func:`parse_body` reads a body of JSON lines; :func:`line_record` one
object (``message``/``msg``/``log``, ``ts`` as RFC 3339 or an epoch number,
``level``/``priority``, ``host``, ``app``, ``pid``, ``source``, ``fields``;
any other key a field, named by :func:`field_name`). A line that cannot be
read becomes a record of its raw text with a ``parse_error`` field, never a
refusal of the rest.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from hostlog.collectors.fluent.collector import LEVELS
from hostlog.http.server import AUDIT_SOURCE
from hostlog.record import Fields, FieldValue, Record

__all__ = ["DEFAULT_SOURCE", "KEY_FIELD", "MAX_ERRORS_SHOWN", "MAX_TS", "MIN_TS", "PARSE_ERROR", "ParsedBody",
           "field_name", "line_record", "parse_body", "parse_level", "parse_time"]


# -- POST: one line, one record -------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: times a record may carry: years 1900 to 2190, as the syslog parser takes
#: (a chunk keeps times and their differences as signed 64-bit ns)
MIN_TS = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1) * 1000
MAX_TS = (dt.datetime(2191, 1, 1, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1) * 1000 - 1


def _in_range(ns: int, text: object) -> int:
    if not MIN_TS <= ns <= MAX_TS:
        raise ValueError(f"time {text!r} is outside the years 1900 to 2190")
    return ns


def _number_ns(value: Decimal, text: object) -> int:
    """Seconds, milliseconds, microseconds or nanoseconds since the epoch, told
    apart by size (below 1e11 seconds, 1e14 ms, 1e17 µs, else ns)."""
    if value.is_nan() or (value and value.adjusted() >= 20):  # before any arithmetic on a huge exponent
        raise ValueError(f"time {text!r} is outside the years 1900 to 2190")
    size = value.copy_abs()
    scale = 10**9 if size < Decimal(10) ** 11 else 10**6 if size < Decimal(10) ** 14 \
        else 10**3 if size < Decimal(10) ** 17 else 1
    return _in_range(int(value * scale), text)


def parse_time(value: object) -> int:
    """A record's time (ns since the epoch) from what a client sent: an RFC 3339
    timestamp (``2026-12-03T13:19:26.123456789Z``, an offset ``+01:00``, up to
    9 fraction digits, a space for the ``T`` allowed), or a number (JSON or
    text) of seconds, ms, µs or ns since the epoch (:func:`_number_ns`).
    ValueError says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"a time is an RFC 3339 text or a number, not {_kind(value)}")
    if isinstance(value, int):
        return _number_ns(Decimal(value), value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"time {value!r} is not a number")
        return _number_ns(Decimal(repr(value)), value)
    text = value.strip()
    if _NUMBER.fullmatch(text):
        try:
            return _number_ns(Decimal(text), value)
        except InvalidOperation:
            raise ValueError(f"time {value!r} is not a number") from None
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"time {value!r} is not RFC 3339 (2026-12-03T13:19:26.5Z) nor a number")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not 1900 <= year <= 2190:
        raise ValueError(f"time {value!r} is outside the years 1900 to 2190")
    try:
        stamp = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError as exc:
        raise ValueError(f"time {value!r}: {exc}") from None
    offset = 0
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"time {value!r} has a bad offset")
        offset = (oh * 60 + om) * 60 * (-1 if m.group(9) == "-" else 1)
    seconds = (stamp - _EPOCH) // dt.timedelta(seconds=1) - offset
    fraction = m.group(7) or ""
    return _in_range(seconds * 10**9 + int(fraction.ljust(9, "0")), value)


def parse_level(value: object) -> int:
    """A syslog severity 0..7 from a number or a name (``err``, ``error``,
    ``warn``, ``WARNING``, ``fatal``, ... as the Fluent input reads them)."""
    if isinstance(value, bool):
        raise ValueError(f"a level is a name or a number 0 to 7, not {value!r}")
    if isinstance(value, int):
        if 0 <= value <= 7:
            return value
        raise ValueError(f"level {value} is not 0 to 7")
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isascii() and text.isdigit() and int(text) <= 7:
            return int(text)
        if text in LEVELS:
            return LEVELS[text]
        raise ValueError(f"unknown level {value!r}")
    raise ValueError(f"a level is a name or a number 0 to 7, not {_kind(value)}")


#: names the journal view takes from a record's own attributes: a field of
#: that name would stand in for the attribute there, so a sent one is renamed
_CORE_NAMES = frozenset({"MESSAGE", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER"})
_NAME_JUNK = re.compile(r"[^A-Z0-9_]")
MAX_NAME = 64


def field_name(key: str) -> str:
    """The field a sent key becomes: upper case, every character other than
    A-Z, 0-9 and ``_`` made ``_``, leading ``_`` dropped (names with a leading
    ``_`` are the agent's own, as journald's trusted fields), at most 64
    characters; ``FIELD_`` before a name that would start with a digit, be
    empty, or be one the journal view takes from the record itself
    (``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER``, ``SYSLOG_FACILITY``).
    ``user-id`` -> ``USER_ID``, ``_SYSTEMD_UNIT`` -> ``SYSTEMD_UNIT``."""
    name = _NAME_JUNK.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit() or name[:MAX_NAME] in _CORE_NAMES:
        name = "FIELD_" + name
    return name[:MAX_NAME]


#: the keys a line's object may use for the record's own attributes; of
#: several present for one attribute, the first listed is taken, the others
#: are kept as fields when they say something else. Compared in lower case.
_ALIASES: dict[str, tuple[str, ...]] = {
    "msg": ("message", "msg", "log"),
    "ts": ("ts_ns", "ts", "time", "timestamp"),
    "severity": ("level", "priority", "severity"),
    "host": ("host", "hostname"),
    "app": ("app", "identifier", "syslog_identifier", "unit"),
    "pid": ("pid",),
    "source": ("source",),
    "fields": ("fields",),
}
_ATTRIBUTE = {alias: attribute for attribute, aliases in _ALIASES.items() for alias in aliases}
_RANK = {alias: rank for aliases in _ALIASES.values() for rank, alias in enumerate(aliases)}
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: sources the agent's own records carry: a client may not pass for it
RESERVED_SOURCES = frozenset({AUDIT_SOURCE, "hostlog"})
DEFAULT_SOURCE = "http"
KEY_FIELD = "_HTTP_KEY"  # who sent a record: the key's name (a trusted field, as _-names are)
PARSE_ERROR = "parse_error"
MAX_ERRORS_SHOWN = 10


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a text", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text_or_bytes(value: object, what: str) -> str | bytes:
    """A message or field value: text as it is, ``{"base64": "..."}`` as its
    bytes (the form the API writes bytes that are not UTF-8 in), anything
    else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("base64"), str):
        try:
            raw = base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what}: bad base64") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return _compact(value)


def _field_value(value: object, what: str) -> FieldValue | None:
    if isinstance(value, list) and value and all(
            isinstance(v, str) or (isinstance(v, dict) and "base64" in v) for v in value):
        return [_text_or_bytes(v, what) for v in value]
    if isinstance(value, list) and not value:
        return None  # no values: nothing to keep
    return _text_or_bytes(value, what)


def _add_field(fields: Fields, key: str, value: object) -> None:
    converted = _field_value(value, f"field {key!r}")
    if converted is None:
        return
    name = field_name(key)
    old = fields.get(name)
    if old is None:
        fields[name] = converted
        return
    merged = (old if isinstance(old, list) else [old]) + (converted if isinstance(converted, list) else [converted])
    fields[name] = merged


def line_record(obj: object, *, hostname: str, now_ns: int) -> Record:
    """The record of one line's JSON value; ValueError says why there is none.

    The record's attributes come from these keys (in lower case; the first of
    each group present is taken, the others are kept as fields unless they
    say the same): ``message`` /
    ``msg`` / ``log`` (required; text, ``{"base64": ...}``, or any JSON value,
    kept as compact JSON), ``ts_ns`` / ``ts`` / ``time`` / ``timestamp``
    (:func:`parse_time`; default: when it arrived), ``level`` / ``priority`` /
    ``severity`` (:func:`parse_level`; default info), ``host`` / ``hostname``
    (default: this agent's host name), ``app`` / ``identifier`` /
    ``syslog_identifier`` / ``unit``, ``pid``, ``source`` (default ``http``;
    not ``audit`` nor ``hostlog``), ``fields`` (an object: more fields). Every
    other key is a field named by :func:`field_name`, its value as text
    (other JSON values as compact JSON; a list of texts is a field with
    several values)."""
    if not isinstance(obj, dict):
        raise ValueError(f"a line is a JSON object, not {_kind(obj)}")
    chosen: dict[str, tuple[int, str]] = {}
    for key in obj:
        if not isinstance(key, str):
            continue
        attribute = _ATTRIBUTE.get(key.lower())
        if attribute is None or (attribute == "msg" and obj[key] is None):
            continue
        rank = _RANK[key.lower()]
        if attribute not in chosen or rank < chosen[attribute][0]:
            chosen[attribute] = (rank, key)
    if "msg" not in chosen:
        raise ValueError("no message (a key 'message', 'msg' or 'log')")
    taken = {key for _, key in chosen.values()}

    def value(attribute: str) -> Any:
        return obj[chosen[attribute][1]] if attribute in chosen else None

    msg = _text_or_bytes(value("msg"), "message")
    stamp = value("ts")
    if stamp is None:
        ts = now_ns
    elif chosen["ts"][1].lower() == "ts_ns":  # exactly ns, whatever its size
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            raise ValueError(f"ts_ns is a whole number of ns, not {_kind(stamp)}")
        ts = _in_range(stamp, stamp)
    else:
        ts = parse_time(stamp)
    severity = 6 if value("severity") is None else parse_level(value("severity"))
    host = value("host")
    if host is not None and not isinstance(host, str):
        raise ValueError(f"host is a text, not {_kind(host)}")
    app = value("app")
    if app is not None and not isinstance(app, str):
        raise ValueError(f"app is a text, not {_kind(app)}")
    pid = value("pid")
    if pid is not None:
        if isinstance(pid, str) and pid.isascii() and pid.isdigit():
            pid = int(pid)
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 2**31:
            raise ValueError(f"pid {pid!r} is not a process id")
    source = value("source")
    if source is None:
        source = DEFAULT_SOURCE
    elif not isinstance(source, str) or not _SOURCE_NAME.fullmatch(source):
        raise ValueError(f"source {source!r} is not a name (letters, digits, '.', '_', '-'; at most 64)")
    elif source in RESERVED_SOURCES:
        raise ValueError(f"source {source!r} is the agent's own")
    fields: Fields = {}
    extra = value("fields")
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValueError(f"fields is an object, not {_kind(extra)}")
        for key, v in extra.items():
            _add_field(fields, key, v)
    record = Record(ts=ts, msg=msg, host=host or hostname, source=source, app=app or "", pid=pid,
                    severity=severity, fields=fields)
    for key, v in obj.items():
        if key in taken:
            continue
        attribute = _ATTRIBUTE.get(key.lower())
        if attribute is not None and _agrees(attribute, key.lower(), v, record):
            continue  # another name for what the record says already (ts and ts_ns, level and priority)
        _add_field(fields, key, v)
    return record


def _agrees(attribute: str, key: str, value: object, record: Record) -> bool:
    """Whether a second key for one of the record's attributes says the same
    as the first (to the microsecond, for times)."""
    try:
        if attribute == "ts":
            other = value if key == "ts_ns" and type(value) is int else parse_time(value)
            return isinstance(other, int) and other // 1000 == record.ts // 1000
        if attribute == "severity":
            return parse_level(value) == record.severity
        if attribute == "msg":
            return _text_or_bytes(value, "message") == record.msg
        if attribute == "pid":
            return value == record.pid or (isinstance(value, str) and value == str(record.pid))
        return value == getattr(record, attribute)
    except ValueError:
        return False


@dataclass(slots=True)
class ParsedBody:
    """The records of a POST body, one per line that is not blank, in order;
    ``line_numbers[i]`` is the line (from 1) of ``records[i]``; ``errors``
    (line, why) for the lines kept with a ``parse_error``."""

    records: list[Record] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _raw(line: bytes) -> str | bytes:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(line)


def parse_body(body: bytes, *, hostname: str, key: str, now_ns: int) -> ParsedBody:
    """The records of a body of JSON lines (LF or CRLF; blank lines skipped).

    A line that is not JSON, or whose object :func:`line_record` cannot take,
    is still a record: its raw text as the message, the time it arrived,
    this host, source ``http``, and ``parse_error`` saying why (the rule of
    every collector: what arrived is kept). Every record carries
    ``_HTTP_KEY``, the name of the key that sent it."""
    out = ParsedBody()
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            try:
                obj = json.loads(line)
            except RecursionError:
                raise ValueError("not JSON: nested too deeply") from None
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(f"not JSON: {exc}") from None
            record = line_record(obj, hostname=hostname, now_ns=now_ns)
        except ValueError as exc:
            why = str(exc)
            record = Record(ts=now_ns, msg=_raw(line), host=hostname, source=DEFAULT_SOURCE,
                            fields={PARSE_ERROR: why})
            out.errors.append((number, why))
        record.fields[KEY_FIELD] = key
        out.records.append(record)
        out.line_numbers.append(number)
    return out
