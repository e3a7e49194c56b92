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
(:func:`hostlog.http.ingest.parse_body`), hands them to the spool writer in one batch and answers
``{"accepted": n, "refused": m, "errors": k}``. A line that cannot be read is
kept as a record of its raw text with a ``parse_error`` field, never
rejected with the rest. Quotas (``[http] ingest_rate_limit`` per key,
``per_source_rate_limit`` per ``source``): the records are taken in order up
to the first one over a quota; that one and the rest are refused (429, with
``Retry-After``), counted, and said in a notice record, as the syslog rate
limit says "Suppressed N messages".

The parsers here (parameters, quotas) and in ``ingest.py`` (times, levels,
field names, lines) are pure; the handlers at the end do the I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hostlog.collectors.ratelimit import MAX_HOSTS, TokenBucket
from hostlog.http.follow import parse_position, position_cursor
from hostlog.http.ingest import MAX_ERRORS_SHOWN, parse_body
from hostlog.http.params import ParamError, query_from_params, truthy
from hostlog.http.records import record_json
from hostlog.http.server import AUDIT_SOURCE, CTX, PRINCIPAL, HttpContext, Route, note_filter, note_records
from hostlog.query.filters import Query
from hostlog.query.run import frame_selected, last_seq
from hostlog.record import Columns, Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import SegmentReader

log = logging.getLogger("hostlog.http")

__all__ = [
    "DEFAULT_LIMIT", "MAX_LIMIT", "NEXT_CURSOR_HEADER", "Page", "Paging", "Quotas",
    "paging_from_params", "read_page", "routes", "wants_json",
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
