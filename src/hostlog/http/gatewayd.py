"""journal-gatewayd's API over the spool (docs/gatewayd.md): ``/entries``,
``/machine`` and ``/fields/NAME``, so ``curl``, gatewayd's clients and
``systemd-journal-remote --url=http://HOST:PORT`` read a hostlog agent as
they read a journal.

``/entries``: the ``Accept`` header picks the layout (``text/plain`` is
``-o short``, ``application/json`` ``-o json``, ``text/event-stream``
``-o json-sse``, ``application/json-seq`` ``-o json-seq``,
``application/vnd.fdo.journal`` ``-o export``), written by the query's own
:class:`~hostlog.query.output.Formatter`: the bytes ``hostlog query -q -o
MODE`` prints. ``Range: entries=cursor[[:num_skip]:num_entries]``
(gatewayd_range.py) picks where to start and how many; the query string
holds ``FIELD=value`` matches (and the words of ``hostlog query``, as
everywhere in the server: params.py), ``?boot``, ``?discrete``, ``?follow``.

Reading is done on the server's read threads, a step of at most
:data:`STEP` records at a time, so one long answer never holds a thread for
long; ``?follow`` then goes on with the server's one poller of the spool
(follow.py). A follower that falls behind is not told it missed records
(the formats have no place for such a notice): what the hub did not give
it is read again from the spool, within the followers' CPU budget, so it
gets every record, later; one whose client takes nothing for
:data:`STALL_S` is disconnected. Nothing here waits on a client but that
client's own request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hostlog.http.follow import FollowersFull, get_hub, parse_position
from hostlog.http.gatewayd_format import (
    MEDIA_TYPES,
    entries_mode,
    field_line,
    for_journal_remote,
    machine_json,
    os_pretty_name,
)
from hostlog.http.gatewayd_range import RangeError, parse_range
from hostlog.http.look import AUDIT_SOURCE, Missed
from hostlog.http.params import ParamError, query_from_params
from hostlog.http.server import CTX, HttpContext, Route, note_records
from hostlog.journal.fields import field_values, is_valid_field_name
from hostlog.query.filters import Query
from hostlog.query.output import Formatter
from hostlog.query.run import frame_selected, iter_selected, last_seq
from hostlog.record import Record
from hostlog.spool.reader import SpoolReader

log = logging.getLogger("hostlog.http")

__all__ = ["STEP", "distinct_step", "entries_start", "routes"]

#: records one step on a read thread reads and formats at most
STEP = 5_000
#: a follower with nothing to send looks whether its client is still there this often
IDLE_CHECK_S = 1.0
#: a follower whose client takes nothing for this long is disconnected
STALL_S = 30.0
_TRUE = ("1", "yes", "y", "true", "t", "on")
_FALSE = ("0", "no", "n", "false", "f", "off")
_IDENTITY_FIELDS = ("__CURSOR", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ")

Pairs = list[tuple[int, Record]]
T = TypeVar("T")


def routes(ctx: HttpContext) -> list[Route]:
    return [Route("GET", "/entries", entries), Route("GET", "/machine", machine),
            Route("GET", "/fields/{name}", fields)]


def _bad_request(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text.rstrip("\n") + "\n")


def _boolean(name: str, value: str) -> bool:
    """gatewayd's parse_boolean(); a bare ``?follow`` is true."""
    if value == "":
        return True
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ParamError(f"parameter {name!r}: {value!r} is not a boolean (1/0, yes/no, true/false, on/off)")


# -- the reading, on the read threads ----------------------------------------------------------

@dataclass
class _Reading:
    """One request's reader, filter and layout."""

    reader: SpoolReader
    query: Query
    mode: str
    formatter: Formatter
    fast: Callable[[Record], bytes | None] | None
    identity: bool  # the layout shows a record's cursor (json, export)

    @classmethod
    def make(cls, reader: SpoolReader, query: Query, mode: str) -> _Reading:
        formatter = Formatter(mode)
        return cls(reader, query, mode, formatter, formatter.fast_path(), not mode.startswith("short"))

    def format(self, pairs: Pairs) -> bytes:
        fmt = self.formatter.format
        if self.mode == "export":
            return b"".join([fmt(for_journal_remote(r)) for _, r in pairs])
        fast = self.fast
        if fast is not None:
            return b"".join([fast(r) or fmt(r) for _, r in pairs])
        return b"".join([fmt(r) for _, r in pairs])


def _nth_back(reader: SpoolReader, query: Query, bound: int, wanted: int) -> int | None:
    """The position of the ``wanted``-th selected record counted back from
    position ``bound`` (1: the last at or before it); the first there is
    when there are fewer; None when there is none."""
    count = 0
    oldest: int | None = None
    for seg, entry in reader.frames_quick(reverse=True, test=query.frame_test, since_ns=query.since_ns,
                                          until_ns=query.until_ns):
        if entry.first_seq > bound:
            continue
        seqs = [seq for seq, _ in frame_selected(reader, seg, entry, query, identity=False) if seq <= bound]
        if not seqs:
            continue
        if count + len(seqs) >= wanted:
            return seqs[len(seqs) - (wanted - count)]
        count += len(seqs)
        oldest = seqs[0]
    return oldest


def entries_start(reader: SpoolReader, query: Query, position: int | None, skip: int,
                  upto: int) -> int | None:
    """The spool position of the first record ``/entries`` shows, among what
    ``query`` selects up to position ``upto`` (None: none): the moves of
    :func:`hostlog.http.gatewayd_range.start_index`, reading only the frames
    they pass over."""
    if skip < 0:
        bound = upto if position is None else min(position, upto)
        return _nth_back(reader, query, bound, 1 - skip)
    after = 0 if position is None else max(position - 1, 0)
    last: int | None = None
    taken = 0
    for seq, _ in iter_selected(reader, query, after_seq=after, identity=False):
        if seq > upto:
            break
        last = seq
        taken += 1
        if taken > skip:
            break
    return last


def _selected_step(reading: _Reading, after: int, upto: int, limit: int,
                   no_audit: bool = False) -> tuple[Pairs, int, bool]:
    """At most ``limit`` selected records after position ``after`` up to
    ``upto``; the position looked at up to; whether that was all."""
    pairs: Pairs = []
    for seq, record in iter_selected(reading.reader, reading.query, after_seq=after,
                                     identity=reading.identity):
        if seq > upto:
            return pairs, upto, True
        if no_audit and record.source == AUDIT_SOURCE:
            continue
        pairs.append((seq, record))
        if len(pairs) >= limit:
            return pairs, seq, False
    return pairs, upto, True


def _history_step(reading: _Reading, after: int, upto: int, limit: int,
                  no_audit: bool = False) -> tuple[bytes, int, int, bool]:
    """:func:`_selected_step`, formatted: (bytes, position looked at up to,
    records, whether that was all)."""
    pairs, looked, done = _selected_step(reading, after, upto, limit, no_audit)
    return reading.format(pairs), looked, len(pairs), done


def distinct_step(reader: SpoolReader, query: Query, name: str, after: int, seen: dict[bytes, None],
                  limit: int = STEP) -> tuple[list[bytes], int, bool]:
    """``hostlog query -F NAME`` a step at a time: the values of field
    ``name`` not in ``seen`` yet, in order of first sight, among at most
    ``limit`` selected records after position ``after`` (added to ``seen``);
    the last position read; whether the spool was read to its end."""
    identity = name in _IDENTITY_FIELDS
    new: list[bytes] = []
    taken = 0
    last = after
    for seq, record in iter_selected(reader, query, after_seq=after, identity=identity):
        for value in field_values(record, name):
            if value not in seen:
                seen[value] = None
                new.append(value)
        last = seq
        taken += 1
        if taken >= limit:
            return new, last, False
    return new, last, True


# -- /entries ------------------------------------------------------------------------------------

@dataclass
class _Request:
    """What a request to /entries asks for."""

    mode: str
    query: Query
    cursor: str | None
    skip: int
    count: int | None
    follow: bool
    discrete: bool


def _parse_entries(request: web.Request, boot_id: str) -> _Request:
    try:
        mode = entries_mode(request.headers.get("Accept"))
        wanted = parse_range(request.headers.get("Range"))
        follow = discrete = boot = False
        rest: list[tuple[str, str]] = []
        for name, value in request.query.items():
            if name == "follow":
                follow = _boolean(name, value)
            elif name == "discrete":
                discrete = _boolean(name, value)
            elif name == "boot":
                boot = _boolean(name, value)
            elif name == "":
                raise ParamError("a parameter without a name")
            else:
                rest.append((name, value))
        query = query_from_params(rest)
    except (RangeError, ParamError) as exc:
        raise _bad_request(str(exc)) from None
    if boot:
        # gatewayd adds the match _BOOT_ID=<this boot>: ANDed with the other
        # fields, ORed with other _BOOT_ID values
        this_boot = boot_id.encode()
        groups = [dict(g) for g in query.matches] or [{}]
        for g in groups:
            g["_BOOT_ID"] = set(g.get("_BOOT_ID", set())) | {this_boot}
        query.matches = groups
    count = wanted.count
    if discrete:
        if wanted.cursor is None:
            raise _bad_request("?discrete needs a cursor: Range: entries=CURSOR")
        count = 1
    return _Request(mode, query, wanted.cursor, wanted.skip, count, follow, discrete)


async def entries(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    asked = _parse_entries(request, ctx.boot_id)
    position: int | None = None
    if asked.cursor is not None:
        try:
            position = await ctx.read(parse_position, ctx.agent_id, asked.cursor, ctx.reader)
        except ValueError as exc:
            raise _bad_request(f"Range: {exc}") from None
    if asked.follow:
        hub = get_hub(ctx)
        if len(hub.subscriptions) >= hub.max_followers:  # refused before any history is sent
            ctx.count("followers_refused")
            raise FollowersFull(hub.max_followers)
    reading = _Reading.make(ctx.reader(), asked.query, asked.mode)
    upto = await ctx.read(last_seq, reading.reader)
    start = await ctx.read(entries_start, reading.reader, asked.query, position, asked.skip, upto)
    if asked.discrete and start != position:
        start = None  # gatewayd: the entry landed on is not the one the cursor names
    response = web.StreamResponse(headers={"Content-Type": MEDIA_TYPES[asked.mode]})
    await response.prepare(request)
    remaining = asked.count
    sent = 0  # every selected record up to this position has been written
    if start is not None:
        sent = start - 1
        while remaining is None or remaining > 0:
            step = STEP if remaining is None else min(STEP, remaining)
            data, sent, n, done = await ctx.read(_history_step, reading, sent, upto, step)
            if n:
                await response.write(data)
                note_records(request, n)
                if remaining is not None:
                    remaining -= n
            if done:
                break
    if asked.follow and (remaining is None or remaining > 0) and not asked.discrete:
        # from the newest record at the start on (or from the cursor, when
        # it names a place after that and nothing was shown before it)
        floor = upto if start is not None or position is None else max(upto, position - 1)
        await _follow(request, response, ctx, reading, max(sent, floor), remaining)
        transport = request.transport
        if transport is None or transport.is_closing():
            return response  # the client went away: nothing more to write
    await response.write_eof()
    return response


async def _follow(request: web.Request, response: web.StreamResponse, ctx: HttpContext,
                  reading: _Reading, sent: int, remaining: int | None) -> None:
    """``?follow``: what arrives after position ``sent``, until the client
    goes (or takes nothing for :data:`STALL_S`), the server stops, or
    ``remaining`` records were written."""
    hub = get_hub(ctx)
    no_audit = AUDIT_SOURCE not in reading.query.sources
    try:
        sub = await hub.subscribe(reading.query, after=sent)
    except FollowersFull:
        return  # others took the last places since the check before the history: the stream ends here
    ctx.count("gatewayd_followers")

    def gone() -> bool:
        transport = request.transport
        return sub.closed or transport is None or transport.is_closing()

    async def emit(pairs: Pairs) -> bool:
        """Write the pairs after ``sent``; False when the stream is to end."""
        nonlocal sent, remaining
        pairs = [p for p in pairs if p[0] > sent]
        if remaining is not None:
            pairs = pairs[:remaining]
        if pairs:
            data, cpu = await ctx.read(_timed, reading.format, pairs)
            hub.budget.charge(cpu, len(pairs))
            if gone():
                return False
            try:
                await asyncio.wait_for(response.write(data), STALL_S)
            except TimeoutError:
                ctx.count("gatewayd_stalled")
                log.info("http: a follower of /entries took nothing for %.0f s: disconnected", STALL_S)
                if request.transport is not None:
                    request.transport.close()
                return False
            note_records(request, len(pairs))
            sent = pairs[-1][0]
            if remaining is not None:
                remaining -= len(pairs)
        return remaining is None or remaining > 0

    async def reread(missed: Missed) -> bool:
        """What the subscription was not given (positions first..last), from
        the spool, within the followers' budget."""
        nonlocal sent
        ctx.count("gatewayd_rereads")
        after = max(sent, missed.first - 1)
        while after < missed.last:
            while hub.budget.records_allowed() <= 0:
                if gone():
                    return False
                await asyncio.sleep(hub.poll_s)
            step = STEP if remaining is None else min(STEP, remaining)
            (pairs, after, done), cpu = await ctx.read(_timed, _selected_step, reading, after, missed.last,
                                                       step, no_audit)
            hub.budget.charge(cpu)
            if not await emit(pairs):
                return False
            sent = max(sent, after)
            if done:
                break
        return True

    try:
        async for step in hub.catch_up(sub):
            # step.missed: positions retention removed or damage hid: nothing to read again
            if not await emit(step):
                return
        while not gone():
            await sub.wait(IDLE_CHECK_S)
            pairs, missed = sub.take()
            if missed is not None and not await reread(missed):
                return
            if not await emit(pairs):
                return
    finally:
        hub.unsubscribe(sub)


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and the CPU time it took on this thread (for the followers' budget)."""
    t0 = time.thread_time()
    return fn(*args), time.thread_time() - t0


# -- /fields/NAME ----------------------------------------------------------------------------------

async def fields(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    name = request.match_info["name"]
    if not is_valid_field_name(name):
        raise _bad_request(f"field name {name!r} is not valid (A-Z, 0-9 and _, at most 64, "
                           "not starting with a digit)")
    try:
        query = query_from_params(request.query.items())
    except ParamError as exc:
        raise _bad_request(str(exc)) from None
    as_json = entries_mode(request.headers.get("Accept")) == "json"
    reader = ctx.reader()
    upto = await ctx.read(last_seq, reader)
    response = web.StreamResponse(headers={"Content-Type": MEDIA_TYPES["json" if as_json else "short"]})
    await response.prepare(request)
    seen: dict[bytes, None] = {}
    after, done = 0, False
    while not done and after < upto:
        new, after, done = await ctx.read(distinct_step, reader, query, name, after, seen)
        if new:
            await response.write(b"".join(field_line(name, v, as_json) for v in new))
            note_records(request, len(new))
    await response.write_eof()
    return response


# -- /machine --------------------------------------------------------------------------------------

def _spool_numbers(ctx: HttpContext) -> tuple[int, int, int, str]:
    """Bytes the spool's segments take; the oldest and newest record time
    (µs); the OS's pretty name."""
    usage = 0
    segments = Path(ctx.spool_dir) / "segments"
    try:
        with os.scandir(segments) as it:
            for entry in it:
                if entry.name.endswith(".seg"):
                    try:
                        usage += entry.stat().st_size
                    except FileNotFoundError:
                        pass  # removed by retention since the listing
    except FileNotFoundError:
        pass
    lo: int | None = None
    hi: int | None = None
    for _, entry in ctx.reader().frames_quick():
        lo = entry.ts_min if lo is None else min(lo, entry.ts_min)
        hi = entry.ts_max if hi is None else max(hi, entry.ts_max)
    pretty = "Linux"
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            pretty = os_pretty_name(Path(path).read_text(errors="replace"))
            break
        except OSError:
            continue
    return usage, max(lo or 0, 0) // 1000, max(hi or 0, 0) // 1000, pretty


def _virtualization() -> str:
    """What systemd-detect-virt says; ``bare`` for none (gatewayd's word)."""
    tool = shutil.which("systemd-detect-virt")
    if tool is None:
        return "bare"
    try:
        result = subprocess.run([tool], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("http: systemd-detect-virt: %s; /machine says virtualization 'bare'", exc)
        return "bare"
    name = result.stdout.strip()
    return name if name and name != "none" else "bare"


async def machine(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    usage, cutoff_from, cutoff_to, pretty = await ctx.read(_spool_numbers, ctx)
    virtualization = ctx.extras.get("gatewayd_virtualization")
    if virtualization is None:
        virtualization = ctx.extras["gatewayd_virtualization"] = await ctx.read(_virtualization)
    body = machine_json(machine_id=ctx.machine_id, boot_id=ctx.boot_id, hostname=ctx.hostname,
                        os_pretty_name=pretty, virtualization=str(virtualization), usage=usage,
                        cutoff_from_realtime=cutoff_from, cutoff_to_realtime=cutoff_to)
    return web.Response(body=body, headers={"Content-Type": "application/json"})

