"""The native API: ``/api/v1/logs`` (docs/http.md, "The native API").

``GET /api/v1/logs`` (scope ``read``) pages through what ``hostlog query``
would select with the same words: every filter as a parameter
(:func:`hostlog.http.params.query_from_params`), ``n`` (the last N, as
``-n``), ``reverse``, ``cursor`` (the page after this position) and
``limit`` (the page size, 1000 by default, at most 10000). The answer is the
records as JSON lines (:func:`hostlog.http.records.record_json`), or with
``Accept: application/json`` one object ``{"records": [...], "next_cursor":
"..."}``; the header ``Hostlog-Next-Cursor`` is the cursor of the next page
in both, present on an empty page too (the newest position looked at).
Reading runs on the server's read threads, never on the event loop.

``POST /api/v1/logs`` (scope ``ingest``) takes JSON lines, one record each
(:func:`parse_body`), hands them to the spool writer in one batch and answers
``{"accepted": n, "refused": m, "errors": k}``. A line that cannot be read is
kept as a record of its raw text with a ``parse_error`` field, never
rejected with the rest. Quotas (``[http] ingest_rate_limit`` per key,
``per_source_rate_limit`` per ``source``): the records are taken in order up
to the first one over a quota; that one and the rest are refused (429, with
``Retry-After``), counted, and said in a notice record, as the syslog rate
limit says "Suppressed N messages".

The parsers here (parameters, times, levels, field names, lines, quotas) are
pure functions; the handlers at the end do the I/O.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from hostlog.collectors.fluent.collector import LEVELS
from hostlog.collectors.ratelimit import MAX_HOSTS, TokenBucket
from hostlog.http.follow import parse_position, position_cursor
from hostlog.http.params import ParamError, query_from_params, truthy
from hostlog.http.records import record_json
from hostlog.http.server import AUDIT_SOURCE, CTX, PRINCIPAL, HttpContext, Route, note_filter, note_records
from hostlog.query.filters import Query
from hostlog.query.run import frame_selected, last_seq
from hostlog.record import Columns, Fields, FieldValue, Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import SegmentReader

log = logging.getLogger("hostlog.http")

__all__ = [
    "DEFAULT_LIMIT", "MAX_LIMIT", "NEXT_CURSOR_HEADER", "Page", "Paging", "ParsedBody", "Quotas",
    "field_name", "paging_from_params", "parse_body", "parse_level", "parse_time", "read_page",
    "routes", "wants_json",
]

PATH = "/api/v1/logs"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
NEXT_CURSOR_HEADER = "Hostlog-Next-Cursor"
NDJSON = "application/x-ndjson"
#: the parameters GET /api/v1/logs reads itself (the rest are filters)
OWN_PARAMS = ("n", "reverse", "cursor", "limit")

Pairs = list[tuple[int, Record]]


# -- GET: parameters ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Paging:
    """What a request asked of the page, besides its filter."""

    lines: int | None = None  # n: the last N (None: no n)
    reverse: bool = False
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT


def _count(name: str, value: str, default: int | None = None) -> int:
    if value == "" and default is not None:
        return default
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_LIMIT:
        raise ParamError(f"parameter {name!r} must be a number from 0 to {MAX_LIMIT}, not {value!r}")
    return int(text)


def paging_from_params(params: Iterable[tuple[str, str]]) -> Paging:
    """``n``, ``reverse``, ``cursor``, ``limit`` of a query string (pairs);
    :class:`ParamError` names a bad one. ``n`` without a value is 10 and
    ``n=all`` no limit, as ``hostlog query -n``."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name in OWN_PARAMS:
            if name in seen:
                raise ParamError(f"parameter {name!r} given twice")
            seen[name] = value
    lines = None
    if "n" in seen and seen["n"] != "all":
        lines = _count("n", seen["n"], default=10)
    limit = _count("limit", seen["limit"]) if "limit" in seen else DEFAULT_LIMIT
    reverse = truthy(seen["reverse"]) if "reverse" in seen else False
    cursor = seen.get("cursor")
    if cursor is not None and not cursor:
        raise ParamError("parameter 'cursor' is empty")
    return Paging(lines=lines, reverse=reverse, cursor=cursor, limit=limit)


def wants_json(accept: str) -> bool:
    """Whether an ``Accept`` header asks for one JSON object rather than JSON
    lines: it names ``application/json`` (with a q above 0) before, or
    without, ``application/x-ndjson``."""
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        kind = kind.lower()
        if kind not in ("application/json", NDJSON):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0 or not math.isfinite(q):
            continue
        candidate = (-q, position, kind)
        if best is None or candidate < best:
            best = candidate
    return best is not None and best[2] == "application/json"


# -- GET: reading (on the read threads) ---------------------------------------------------

@dataclass(slots=True)
class Page:
    """One page: (spool seq, record) pairs in the order shown, and the spool
    position the next page starts after (before, with ``reverse``)."""

    pairs: Pairs
    next_seq: int
    damaged: int = 0  # frames passed over as damaged (said in a header)


def _pick(reader: SpoolReader, seg: SegmentReader, entry: IndexEntry, query: Query, *, after: int,
          before: int | None, want: int, from_end: bool, audit: bool) -> Pairs:
    """What one frame gives a page: at most ``want`` selected records after
    ``after`` and before ``before``, the first ones (the last with
    ``from_end``), in spool order; audit records only when ``audit``."""
    end = entry.first_seq + entry.count - 1
    if before is None or end < before:
        pairs = frame_selected(reader, seg, entry, query, after_seq=after, identity=False,
                               first=None if from_end else want, last=want if from_end else None)
        kept = pairs if audit else [p for p in pairs if p[1].source != AUDIT_SOURCE]
        if len(kept) == len(pairs) or len(pairs) < want:
            return kept
    # the frame straddles ``before``, or audit records took places: the whole frame
    pairs = frame_selected(reader, seg, entry, query, after_seq=after, identity=False)
    kept = [p for p in pairs if (before is None or p[0] < before)
            and (audit or p[1].source != AUDIT_SOURCE)]
    return kept[-want:] if from_end else kept[:want]


def _forward(reader: SpoolReader, query: Query, after: int, want: int, audit: bool) -> Pairs:
    """The first ``want`` selected records after position ``after``, oldest first."""
    out: Pairs = []
    if want <= 0:
        return out
    frames = reader.frames_quick(test=query.frame_test, after_seq=after, since_ns=query.since_ns,
                                 until_ns=query.until_ns)
    with closing(frames):
        for seg, entry in frames:
            out += _pick(reader, seg, entry, query, after=after, before=None, want=want - len(out),
                         from_end=False, audit=audit)
            if len(out) >= want:
                break
    return out


def _backward(reader: SpoolReader, query: Query, before: int | None, want: int, audit: bool) -> Pairs:
    """The last ``want`` selected records before position ``before`` (None:
    the end), newest first."""
    out: Pairs = []
    if want <= 0:
        return out
    frames = reader.frames_quick(reverse=True, test=query.frame_test, since_ns=query.since_ns,
                                 until_ns=query.until_ns)
    with closing(frames):
        for seg, entry in frames:
            if before is not None and entry.first_seq >= before:
                continue
            pairs = _pick(reader, seg, entry, query, after=0, before=before, want=want - len(out),
                          from_end=True, audit=audit)
            out.extend(reversed(pairs))
            if len(out) >= want:
                break
    return out


def read_page(reader: SpoolReader, query: Query, paging: Paging, after: int | None) -> Page:
    """The page ``paging`` asks for; ``after`` is the position of its cursor
    (None: no cursor). Runs on a read thread.

    Without a cursor, ``n`` picks the records as ``hostlog query -n`` does
    (docs/query.md, "-n with -S, -U and -r"), of which the page holds the
    first ``limit``; with one, the page is the records after the cursor
    (before it, with ``reverse``), at most ``n`` and ``limit``. Audit records
    come only to a query for ``source=audit`` (a reader of everything would
    otherwise page through the trail of its own reading, forever)."""
    from hostlog.query.engine import effective

    audit = AUDIT_SOURCE in query.sources
    lines, reverse = paging.lines, paging.reverse
    if lines is not None:
        lines, reverse = effective(lines=lines, reverse=reverse, follow=False, grep=query.grep is not None)
    want = paging.limit if lines is None else min(lines, paging.limit)
    newest = last_seq(reader)  # before reading: what is appended meanwhile is not passed over
    if reverse:  # newest first: the first ``limit`` of the newest N are the newest ``limit``
        pairs = _backward(reader, query, after, want, audit)
        next_seq = pairs[-1][0] if pairs else (after if after is not None else newest)
        return Page(pairs, next_seq, len(reader.damage))
    if after is None and lines is not None and query.since_ns is None:
        # the newest N, counted from the end; an --until does not move where
        # they are counted from, it drops those of them after it (journalctl)
        counted = query if query.until_ns is None else dataclasses.replace(query, until_ns=None)
        picked = _backward(reader, counted, None, lines, audit)
        picked.reverse()
        if query.until_ns is not None:
            picked = [p for p in picked if p[1].ts <= query.until_ns]
        pairs = picked[:paging.limit]
        full = len(picked) > paging.limit
    else:
        start = after or 0
        pairs = _forward(reader, query, start, want, audit)
        full = want == 0 or len(pairs) >= want
        newest = max(newest, start)
    if full and pairs:
        next_seq = pairs[-1][0]
    else:
        next_seq = max(newest, pairs[-1][0] if pairs else 0)
    return Page(pairs, next_seq, len(reader.damage))


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once, not per record
_ENCODE_ASCII = json.JSONEncoder(separators=(",", ":")).encode


def _json_bytes(value: Any) -> bytes:
    try:
        return _ENCODE(value).encode()
    except UnicodeEncodeError:  # a lone surrogate somewhere: escaped, still valid JSON
        return _ENCODE_ASCII(value).encode()


def _render(page: Page, node_id: str, tags: dict[str, str], as_object: bool) -> bytes:
    lines = [_json_bytes(record_json(record, position_cursor(node_id, seq), tags))
             for seq, record in page.pairs]
    if as_object:
        cursor = _json_bytes(position_cursor(node_id, page.next_seq))
        return b'{"records":[' + b",".join(lines) + b'],"next_cursor":' + cursor + b"}\n"
    return b"".join(line + b"\n" for line in lines)


def _get_page(ctx: HttpContext, query: Query, paging: Paging, as_object: bool) -> tuple[bytes, Page]:
    """Everything a GET does with the spool, on a read thread."""
    reader = ctx.reader()
    after = None
    if paging.cursor is not None:
        try:
            after = parse_position(ctx.agent_id, paging.cursor, lambda: reader)
        except ValueError as exc:
            raise ParamError(f"parameter 'cursor': {exc}") from None
    page = read_page(reader, query, paging, after)
    return _render(page, ctx.agent_id, ctx.config.agent.tags, as_object), page


async def get_logs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    pairs = list(request.query.items())
    try:
        query = query_from_params(pairs, allowed=OWN_PARAMS)
        paging = paging_from_params(pairs)
        as_object = wants_json(request.headers.get("Accept", ""))
        body, page = await ctx.read(_get_page, ctx, query, paging, as_object)
    except ParamError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    note_records(request, len(page.pairs))
    ctx.count("api_records_read", len(page.pairs))
    headers = {NEXT_CURSOR_HEADER: position_cursor(ctx.agent_id, page.next_seq)}
    if page.damaged:
        ctx.count("api_damaged_frames", page.damaged)
        headers["Hostlog-Damaged-Frames"] = str(page.damaged)
        log.warning("http: %s passed over %d damaged frames", PATH, page.damaged)
    return web.Response(body=body, headers=headers,
                        content_type="application/json" if as_object else NDJSON)


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


# -- POST: quotas -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Admission:
    """How many of a request's records (the first ones) may pass; when not all,
    which quota stopped them (``"key"`` or ``"source"``), the source whose
    quota it was, and the seconds until that quota has room again."""

    allowed: int
    limit: str | None = None
    source: str | None = None
    retry_after: int = 0


@dataclass
class Quotas:
    """Token buckets for ``POST /api/v1/logs``: one per key (``[http]
    ingest_rate_limit``), one per record source (``per_source_rate_limit``).
    Pure: time is passed in."""

    per_key: tuple[float, float] | None = None  # (rate, burst)
    per_source: tuple[float, float] | None = None
    keys: dict[str, TokenBucket] = field(default_factory=dict)
    sources: dict[str, TokenBucket] = field(default_factory=dict)

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], name: str, limit: tuple[float, float]) -> TokenBucket:
        bucket = buckets.get(name)
        if bucket is None:
            if len(buckets) >= MAX_HOSTS:
                buckets.clear()  # forget idle ones; they start with a full bucket
            bucket = buckets[name] = TokenBucket(*limit)
        return bucket

    def admit(self, key: str, sources: list[str], now: float) -> Admission:
        """Take tokens for the records (their sources, in order) up to the first
        one a quota refuses; no token is taken for a refused record."""
        key_bucket = self._bucket(self.keys, key, self.per_key) if self.per_key else None
        allowed, i, n = 0, 0, len(sources)
        while i < n:
            source = sources[i]
            run = i + 1
            while run < n and sources[run] == source:
                run += 1
            wanted = run - i
            granted = wanted if key_bucket is None else key_bucket.take(wanted, now)
            stopped_by = "key" if granted < wanted else None
            if self.per_source is not None:
                source_bucket = self._bucket(self.sources, source, self.per_source)
                by_source = source_bucket.take(granted, now)
                if by_source < granted:
                    if key_bucket is not None:
                        key_bucket.tokens += granted - by_source  # not used after all
                    granted, stopped_by = by_source, "source"
            allowed += granted
            if stopped_by is not None:
                bucket = key_bucket if stopped_by == "key" else self.sources[source]
                assert bucket is not None
                wait = max(1, math.ceil((1.0 - bucket.tokens) / bucket.rate))
                return Admission(allowed, stopped_by, source if stopped_by == "source" else None, wait)
            i = run
        return Admission(allowed)


@dataclass
class _Suppressions:
    """Refused records not yet said in a notice, by (key, limit, source)."""

    pending: dict[tuple[str, str, str], int] = field(default_factory=dict)
    last_notice: float = -math.inf
    timer: asyncio.TimerHandle | None = None


NOTICE_INTERVAL = 1.0  # at most one notice record a second, as the syslog rate limit


def _notices(ctx: HttpContext, pending: Mapping[tuple[str, str, str], int]) -> list[Record]:
    out = []
    for (key, limit, source), n in sorted(pending.items()):
        which = f"the rate limit of key {key}" if limit == "key" else f"the rate limit of source {source}"
        out.append(Record(ts=time.time_ns(), msg=f"Suppressed {n} records from key {key} "
                                                 f"(HTTP ingest: {which})",
                          host=ctx.hostname, source="hostlog", app="hostlog", severity=4,
                          fields={"suppressed": str(n), "key": key, "limit": limit, "ingest_source": source}))
    return out


def _say_suppressed(ctx: HttpContext, state: _Suppressions) -> None:
    state.timer = None
    pending, state.pending = state.pending, {}
    if not pending:
        return
    state.last_notice = time.monotonic()
    try:
        ctx.submit(Columns.of(_notices(ctx, pending)))
    except Exception as exc:  # the spool refused (the agent is stopping): said here instead
        log.error("http: rate limit notice not kept (%s): %s", exc, dict(pending))


def _say_now(ctx: HttpContext, state: _Suppressions) -> None:
    """At the server's stop: what is pending is said now, not by a timer after it."""
    if state.timer is not None:
        state.timer.cancel()
    _say_suppressed(ctx, state)


def _suppressed(ctx: HttpContext, key: str, admission: Admission, refused: int) -> None:
    state = ctx.extras.get("api_suppressions")
    if state is None:
        state = ctx.extras["api_suppressions"] = _Suppressions()
        ctx.on_stop.append(lambda: _say_now(ctx, state))
    assert isinstance(state, _Suppressions)
    slot = (key, admission.limit or "", admission.source or "")
    state.pending[slot] = state.pending.get(slot, 0) + refused
    if state.timer is not None:
        return
    wait = state.last_notice + NOTICE_INTERVAL - time.monotonic()
    if wait <= 0:
        _say_suppressed(ctx, state)
    else:
        state.timer = asyncio.get_running_loop().call_later(wait, _say_suppressed, ctx, state)


def _quotas(ctx: HttpContext) -> Quotas:
    quotas = ctx.extras.get("api_quotas")
    if quotas is None:
        http = ctx.config.http
        per_key = http.ingest_rate_limit if http is not None else None
        per_source = http.per_source_rate_limit if http is not None else None
        quotas = ctx.extras["api_quotas"] = Quotas(
            per_key=(per_key.rate, float(per_key.burst or 1)) if per_key else None,
            per_source=(per_source.rate, float(per_source.burst or 1)) if per_source else None)
    assert isinstance(quotas, Quotas)
    return quotas


#: bodies larger than this are parsed on a worker thread, not on the event loop
PARSE_INLINE_BYTES = 64 * 1024


async def post_logs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    principal = request[PRINCIPAL]
    if request.query:
        name = next(iter(request.query))
        raise web.HTTPBadRequest(text=f"unknown parameter {name!r} (POST {PATH} takes none)\n")
    body = await request.read()  # at most the server's client_max_size, else 413
    now_ns = time.time_ns()
    if len(body) > PARSE_INLINE_BYTES:
        parsed = await asyncio.to_thread(parse_body, body, hostname=ctx.hostname, key=principal.name,
                                         now_ns=now_ns)
    else:
        parsed = parse_body(body, hostname=ctx.hostname, key=principal.name, now_ns=now_ns)
    records = parsed.records
    admission = _quotas(ctx).admit(principal.name, [r.source for r in records], time.monotonic())
    accepted = records[:admission.allowed]
    refused = len(records) - len(accepted)
    if accepted:
        try:
            await ctx.keep(Columns.of(accepted))  # 200 once durable, as every source acks
        except Exception as exc:  # the spool writer refused: the agent is stopping
            log.error("http: %d records sent to %s not kept: %s", len(accepted), PATH, exc)
            raise web.HTTPServiceUnavailable(text="the agent is stopping; nothing was kept\n") from None
    last_line = parsed.line_numbers[len(accepted) - 1] if accepted else 0
    errors = [(line, why) for line, why in parsed.errors if line <= last_line]
    note_records(request, len(accepted))
    note_filter(request, f"accepted {len(accepted)}, refused {refused}, errors {len(errors)}")
    ctx.count("ingest_records", len(accepted))
    if errors:
        ctx.count("ingest_errors", len(errors))
    answer: dict[str, Any] = {"accepted": len(accepted), "refused": refused, "errors": len(errors)}
    if errors:
        answer["error_lines"] = [{"line": line, "error": why} for line, why in errors[:MAX_ERRORS_SHOWN]]
    if not refused:
        return web.json_response(answer)
    ctx.count("ingest_refused", refused)
    _suppressed(ctx, principal.name, admission, refused)
    answer["resend_from_line"] = parsed.line_numbers[len(accepted)]
    answer["limit"] = admission.limit
    if admission.source is not None:
        answer["source"] = admission.source
    answer["retry_after"] = admission.retry_after
    return web.json_response(answer, status=429, headers={"Retry-After": str(admission.retry_after)})


def routes(ctx: HttpContext) -> list[Route]:
    return [Route("GET", PATH, get_logs, scope="read"), Route("POST", PATH, post_logs, scope="ingest")]
