"""Batches of syslog messages: the batch paths, and the three entry points.

:func:`parse_messages` (records), :func:`parse_columns` (columns, what the
collector hands the spool) and :func:`parse_block` (the frames of a framer
block, read in place) give exactly the records
``[parse_message(raw) for raw in raws]`` would give, only faster:

* the compiled splitter (``_syslog5424.split`` and ``split_block``) reads
  RFC 5424 frames straight into columns;
* the batch regexes of :mod:`hostlog.collectors.syslog.grammar` read a batch
  of the common RFC 5424 / RFC 3164 shapes without a Python loop per message;
* whatever either leaves goes to the per-message parser of
  :mod:`hostlog.collectors.syslog.parse`.

Each step down is a fallback. One that happens because a faster path
*failed* (raised: a bug) is counted in ``parse.FALLBACKS`` and exported as an
error; one that happens by design (a frame the faster path does not take:
RFC 3164, a cut frame, a PROCID that is no pid, ...) is reported to the
caller's ``slow`` callback, ``slow(kind, n)``: the collector counts those
as its events (``slow_blocks``, ``slow_messages``) and logs each kind once.
This module imports ``parse`` (and ``clock``, ``framing``, ``grammar``);
none of them imports this one.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from itertools import repeat
from operator import add
from typing import Any, cast

from hostlog.collectors.syslog.clock import CLOCK, MISS, NS, Miss
from hostlog.collectors.syslog.framing import OctetBlock, SyslogFramer, TruncatedFrame
from hostlog.collectors.syslog.grammar import (
    SNIFF5424,
    SPLIT3164,
    SPLIT3164_GROUPS,
    SPLIT5424,
    SPLIT5424_GROUPS,
)
from hostlog.collectors.syslog.parse import FALLBACKS, parse_pid, parse_safe, structured_data
from hostlog.record import Columns, Fields, FieldValue, Record

try:  # the compiled half (setup.py builds it; without a compiler, Python reads every batch)
    from hostlog.collectors.syslog import _syslog5424 as _syslog5424
except ImportError:  # pragma: no cover - tested where the extension is built
    _syslog5424 = None

__all__ = ["BATCH_MIN", "SLOW_KINDS", "PidTable", "Slow", "parse_block", "parse_columns",
           "parse_messages"]

#: Smaller batches go message by message: the batch set-up would cost more.
BATCH_MIN = 8

#: ``slow(kind, n)``: ``n`` inputs of ``kind`` a faster path left to a slower
#: one: "block" (a block left to the framer's split_block; n = 1), "columns"
#: (frames the compiled splitter left to the batch regexes, or all of them
#: when it is not built), "frame" (frames it left to parse_message), "batch"
#: (a batch the batch regexes left to parse_message) and "line" (lines they
#: left to parse_message).
Slow = Callable[[str, int], None]

#: What each kind of ``slow`` means, as the collector logs it once.
SLOW_KINDS = {
    "block": "a block the compiled splitter does not take (RFC 3164, a NUL, a line over "
             "max_message) is framed by the Python framer",
    "columns": "frames the compiled splitter does not take (mostly not RFC 5424, or the splitter "
               "is not built) are read by the Python batch regexes",
    "frame": "frames the compiled splitter does not take (another VERSION, a PROCID that is no "
             "pid, not UTF-8, an error) are parsed one by one",
    "batch": "a batch the batch regexes cannot read (a NUL or an LF inside a message, not UTF-8) "
             "is parsed one by one",
    "line": "lines the batch regexes do not take whole (an unusual shape, an error) are parsed "
            "one by one",
}


def parse_messages(raws: list[bytes], *, received_ns: int, default_host: str = "",
                   peer: str | None = None, slow: Slow | None = None) -> list[Record]:
    """Parse a batch that arrived together; all share ``received_ns``.

    The result is ``[parse_message(raw, ...) for raw in raws]``; batches of
    the common shapes take the batch path (see the module docstring).
    """
    if len(raws) >= BATCH_MIN:
        try:
            recs = _parse_batch(raws, received_ns, default_host, peer, slow)
        except Exception as exc:  # a bug in the batch path must not lose messages
            FALLBACKS.note("batch", exc)
            recs = None
        if recs is not None:
            return recs
        if slow is not None:
            slow("batch", len(raws))
    return [parse_safe(raw, received_ns, default_host, peer) for raw in raws]


def parse_columns(raws: list[bytes], *, received_ns: int, default_host: str = "",
                  peer: str | None = None, slow: Slow | None = None) -> Columns:
    """:func:`parse_messages` as :class:`~hostlog.record.Columns`: what the
    collector hands the spool. RFC 5424 batches are read by the compiled
    splitter without an object per message."""
    if len(raws) >= BATCH_MIN:
        try:
            columns = _parse_columns(raws, received_ns, default_host, peer, slow)
        except Exception as exc:  # a bug in the batch path must not lose messages
            FALLBACKS.note("columns", exc)
            columns = None
        if columns is not None:
            return columns
        if slow is not None:
            slow("columns", len(raws))
    return Columns.of(parse_messages(raws, received_ns=received_ns, default_host=default_host,
                                     peer=peer, slow=slow))


def parse_block(block: bytes, *, received_ns: int, default_host: str = "",
                peer: str | None = None, max_message: int = 65536,
                slow: Slow | None = None) -> Columns | None:
    """The frames of a block (a :class:`~hostlog.collectors.syslog.framing.LineBlock`
    or :class:`~hostlog.collectors.syslog.framing.OctetBlock` from
    ``SyslogFramer.feed_blocks``) as :class:`~hostlog.record.Columns`, read
    without a bytes object per frame; or None when the block is not for this
    path (RFC 3164, a NUL or a line over ``max_message`` in a LineBlock, no
    compiled splitter): then ``parse_columns`` of the framer's
    ``split_block`` reads it. The same records either way."""
    try:
        columns = _parse_block(block, received_ns, default_host, peer, max_message, slow)
    except Exception as exc:  # a bug in the batch path must not lose messages
        FALLBACKS.note("block", exc)
        return None
    if columns is None and slow is not None:
        slow("block", 1)
    return columns


# --- batches ---------------------------------------------------------------
# parse_messages() joins a batch with LF (trailers stripped as parse_message
# strips them) and decodes it once (a batch with a NUL inside a message, or
# that is not UTF-8, goes message by message). One re.split with the
# batch regex of the batch's format (sniffed from its first line) then yields,
# per line it takes whole, its groups and, after them, the text up to the
# next line it takes: MSG, followed by any line the regex did not take (those
# go to parse_message, in their place; a message holding an LF, possible with
# octet counting and datagrams, sends the whole batch message by message).
# Columns are list slices of the split result; every per-message step after
# that is a C-level map over a column with a table built per batch from its
# distinct values (seconds, zones, pids, MSGIDs, SD texts), so Python code
# runs per distinct value, not per message. The batch regexes accept a subset
# of what the per-message parser accepts, and give everything they take the
# same meaning (tests/unit/collectors/syslog/test_parse_batch.py holds batches
# to parse_message, field order included).

_SEVERITY = {str(p): p & 7 for p in range(192)}
_FACILITY = {str(p): p >> 3 for p in range(192)}
_SECOND_NS = {"%02d" % s: s * NS for s in range(60)}
_NONE_EMPTY: dict[str | None, str] = {None: ""}
_TRAILERS = (b"\n", b"\x00")
_NO_PID = {None: None, "-": None}
_PID_CACHE_MAX = 16384  # PROCID texts: a busy host has a few thousand processes
#: fractions of 1 to 3 digits (and none) -> ns
_FRAC_MS: dict[str | None, int] = {None: 0, **{f"{v:0{n}d}": v * 10 ** (9 - n)
                                              for n in (1, 2, 3) for v in range(10 ** n)}}
_NIL_EMPTY = {"-": ""}


def _frac_ns(fracs: list[str | None]) -> Iterator[int]:
    """TIME-SECFRAC digits -> ns ("123" -> 123_000_000, None -> 0), lazily."""
    if _FRAC_MS.keys() >= set(fracs):  # none, or up to milliseconds: a table
        return map(_FRAC_MS.__getitem__, fracs)
    # finer: right-pad to 9 digits, then int(), all C-level (None -> "": all str)
    digits = cast("Iterator[str]", map(_NONE_EMPTY.get, fracs, fracs))
    return map(int, map(str.ljust, digits, repeat(9), repeat("0")))


def _parse_batch(raws: list[bytes], received_ns: int, default_host: str,
                 peer: str | None, slow: Slow | None = None) -> list[Record] | None:
    """The batch path of parse_messages; None: parse message by message."""
    kinds = set(map(type, raws))
    if not kinds <= {bytes, TruncatedFrame}:
        return None
    joined = b"\n".join(raws)
    if b"\x00" in joined or b"\n\n" in joined or joined.endswith(b"\n"):
        # datagrams often end with LF, CR LF or NUL: strip those as
        # parse_message does; a NUL left inside a message goes one by one
        joined = b"\n".join([raw.rstrip(b"\r\n\x00") if raw.endswith(_TRAILERS) else raw
                             for raw in raws])
        if b"\x00" in joined:
            return None
    try:
        text = "\n" + joined.decode()
    except UnicodeDecodeError:
        return None
    if SNIFF5424.match(text):
        stride = SPLIT5424_GROUPS + 1
        parts = SPLIT5424.split(text)
    else:
        stride = SPLIT3164_GROUPS + 1
        parts = SPLIT3164.split(text)
    n = len(parts) // stride
    if n == 0:
        return None
    msgs = parts[stride::stride]
    # Every line taken and none left over means one line per message. An LF
    # inside a message (octet counting, datagrams) breaks that: then the
    # batch goes one by one.
    rows: list[int] | None
    if parts[0] or n != len(raws) or "\n" in "".join(msgs):
        if joined.count(b"\n") != len(raws) - 1:
            return None
        # Some lines were not taken: they sit in parts[0] (before the first
        # line taken) and after the MSG of the line taken before them.
        line = parts[0].count("\n")
        rows = []
        for j, m in enumerate(msgs):
            rows.append(line)
            extra = m.count("\n")
            if extra:
                msgs[j] = m[:m.index("\n")]
                line += extra
            line += 1
    else:
        rows = None
    redo: set[int] = set()  # rows parse_message reads instead (rare)
    if stride == SPLIT5424_GROUPS + 1:
        recs = _columns5424(parts, msgs, redo, received_ns, default_host, peer)
    else:
        recs = _columns3164(parts, msgs, redo, received_ns, default_host, peer)
    if TruncatedFrame in kinds:
        lines = rows if rows is not None else range(n)
        redo.update(j for j, i in enumerate(lines) if type(raws[i]) is TruncatedFrame)
    for j in redo:
        recs[j] = parse_safe(raws[j if rows is None else rows[j]], received_ns,
                              default_host, peer)
    if slow is not None and (redo or rows is not None):
        slow("line", len(redo) + (0 if rows is None else len(raws) - len(rows)))
    if rows is None:
        return recs
    out: list[Record | None] = [None] * len(raws)
    for i, rec in zip(rows, recs):
        out[i] = rec
    for i, got in enumerate(out):
        if got is None:
            out[i] = parse_safe(raws[i], received_ns, default_host, peer)
    return cast("list[Record]", out)  # (every row filled)


def _rows_where(column: Sequence[object], bad: Container[object]) -> list[int]:
    return [j for j, v in enumerate(column) if v in bad]


# (parts: what re.split() of a batch gives; typeshed types the None of a group
# that did not take part as Any, hence "str | Any")
def _columns5424(parts: list[str | Any], msgs: list[str], redo: set[int], received_ns: int,
                 default_host: str, peer: str | None) -> list[Record]:
    pri, secs, fracs, zones, hosts, apps, procids, msgids, sds = (
        parts[k::SPLIT5424_GROUPS + 1] for k in range(1, SPLIT5424_GROUPS + 1))
    # TIMESTAMP: (seconds - offset) per distinct (second, zone), + fraction
    zone_set = set(zones)
    if len(zone_set) == 1:
        keys: list[str] | list[tuple[str, str]] = secs
        pairs = [(s, zones[0]) for s in set(secs)]
    else:
        keys = list(zip(secs, zones))
        pairs = list(set(keys))
    bases: dict[str | tuple[str, str], int] = {}
    bad: set[str | tuple[str, str]] = set()
    clock = CLOCK
    for s, z in pairs:
        b = clock.utc_base(s)
        off = 0 if z == "Z" else clock.offset(z)
        key = s if keys is secs else (s, z)
        if b is None or off is None:
            bad.add(key)
            bases[key] = 0
        else:
            bases[key] = (b - off) * NS
    if bad:
        redo.update(_rows_where(keys, bad))
    ts = list(map(add, map(bases.__getitem__, keys), _frac_ns(fracs)))
    # PROCID: a pid, or NILVALUE, or (odd) a "procid" field
    pid_of = _PIDS.of(procids)
    distinct = set(procids)
    distinct.discard("-")
    odd = None in map(pid_of.__getitem__, distinct)  # some PROCID is not a pid
    pids = list(map(pid_of.__getitem__, procids))
    # fields: copies of one dict per distinct MSGID (order as parse_message)
    f: Fields
    if not odd:
        proto: dict[str, Fields] = {}
        for m in set(msgids):
            f = {} if m == "-" else {"msgid": m}
            if peer is not None:
                f["peer"] = peer
            proto[m] = f
        fields = list(map(dict.copy, map(proto.__getitem__, msgids)))
    else:
        fields = [_fields5424(p, m, pid_of, peer) for p, m in zip(procids, msgids)]
    if sds.count("-") != len(sds):
        # STRUCTURED-DATA: parsed once per distinct text (senders repeat it,
        # e.g. logger's timeQuality), its fields put before "peer"
        parsed: dict[str, tuple[tuple[str, FieldValue], ...] | None] = {}
        for j, sd in enumerate(sds):
            if sd == "-":
                continue
            items = parsed.get(sd, MISS)
            if items is MISS:
                sd_fields: Fields = {}
                ok = structured_data(sd, 0, sd_fields, True) == len(sd)
                items = parsed[sd] = tuple(sd_fields.items()) if ok else None
            if items is None:
                redo.add(j)
                continue
            f = fields[j]
            f.pop("peer", None)
            f.update(items)
            if peer is not None:
                f["peer"] = peer
    return list(map(Record, ts, msgs, map({"-": default_host}.get, hosts, hosts),
                    repeat("syslog"), map(_NIL_EMPTY.get, apps, apps), pids,
                    map(_SEVERITY.__getitem__, pri), map(_FACILITY.__getitem__, pri), fields))


class PidTable:
    """PROCID texts -> pids (None: no pid), for the batch paths.

    The pid of a PROCID text never changes, so the table is only ever added
    to; once full, PROCIDs it lacks are looked up for their batch alone.
    """

    def __init__(self, most: int = _PID_CACHE_MAX) -> None:
        self.most = most
        self.known: dict[str | None, int | None] = dict(_NO_PID)

    def of(self, procids: list[str | None]) -> dict[str | None, int | None]:
        """A table holding every PROCID of a batch."""
        known = self.known
        distinct = set(procids)
        # (None is known from the start, _NO_PID: a missing PROCID is a str)
        missing = cast("set[str]", distinct.difference(known))
        if not missing:
            return known
        if len(known) + len(missing) <= self.most:
            for p in missing:
                known[p] = parse_pid(p)
            return known
        table = {p: known[p] for p in distinct.difference(missing)}
        table.update((p, parse_pid(p)) for p in missing)
        return table


#: the batch paths' PROCID table (state of this module alone)
_PIDS = PidTable()


def _fields5424(procid: str, msgid: str, pid_of: dict[str | None, int | None],
                peer: str | None) -> Fields:
    f: Fields = {}
    if procid != "-" and pid_of[procid] is None:
        f["procid"] = procid
    if msgid != "-":
        f["msgid"] = msgid
    if peer is not None:
        f["peer"] = peer
    return f


def _columns3164(parts: list[str | Any], msgs: list[str], redo: set[int], received_ns: int,
                 default_host: str, peer: str | None) -> list[Record]:
    pri, minutes, secs, fracs, hosts, apps, procids = (
        parts[k::SPLIT3164_GROUPS + 1] for k in range(1, SPLIT3164_GROUPS + 1))
    # TIMESTAMP: local minute base per distinct "Mmm dd [yyyy] hh:mm", as SyslogClock.bsd_ns
    clock = CLOCK
    clock.receive_day(received_ns)
    bases: dict[str, int] = {}
    bad: set[str] = set()
    for k in set(minutes):
        b = clock.local_minute(k, received_ns)
        if b is None:
            bad.add(k)
            bases[k] = 0
        else:
            bases[k] = b * NS
    if bad:
        redo.update(_rows_where(minutes, bad))
    bad_secs = set(secs).difference(_SECOND_NS)
    if bad_secs:
        redo.update(_rows_where(secs, bad_secs))
    ts = list(map(add, map(add, map(bases.__getitem__, minutes),
                           map(_SECOND_NS.get, secs, repeat(0))), _frac_ns(fracs)))
    pid_of = _PIDS.of(procids)
    proto: Fields = {} if peer is None else {"peer": peer}
    host_of: dict[str | None, str] = {None: default_host}
    return list(map(Record, ts, msgs, map(host_of.get, hosts, hosts),
                    repeat("syslog"), map(_NONE_EMPTY.get, apps, apps),
                    map(pid_of.__getitem__, procids), map(_SEVERITY.__getitem__, pri),
                    map(_FACILITY.__getitem__, pri), map(dict.copy, repeat(proto, len(msgs)))))


# --- batches as columns -------------------------------------------------------
# The collector's path: the compiled split() reads the RFC 5424 frames it
# can (see _syslog5424.c) straight into columns; fields dicts are made once
# per distinct MSGID and STRUCTURED-DATA text and shared by the rows that
# have them (Columns rows are read-only). Frames it leaves, and a batch that
# is mostly something else (RFC 3164), are parsed by the Python parsers.

#: What split() and split_block() return: (ts, host, app, pid, severity,
#: facility, msg, msgid, sd, redo); a row in redo holds None, and its frame's
#: bytes in msg.
_Split = tuple[list[int | None], list[str | None], list[str | None], list[int | None],
               list[int | None], list[int | None], list[str | bytes | None], list[str | None],
               list[str | None], list[int]]


def _parse_columns(raws: list[bytes], received_ns: int, default_host: str,
                   peer: str | None, slow: Slow | None = None) -> Columns | None:
    """parse_messages as Columns; None: use the Record path."""
    if _syslog5424 is None:
        return None
    split = _syslog5424.split(raws, received_ns, default_host)
    return _columns(split, raws, received_ns, default_host, peer, slow)


def _parse_block(block: bytes, received_ns: int, default_host: str, peer: str | None,
                 max_message: int, slow: Slow | None = None) -> Columns | None:
    """The frames of a LineBlock or OctetBlock (plain bytes: lines) as
    Columns; None: split the block with the framer and parse the frames."""
    if _syslog5424 is None:
        return None
    split = _syslog5424.split_block(block, received_ns, default_host, max_message,
                                    type(block) is OctetBlock)
    if split is None:
        return None
    return _columns(split, block, received_ns, default_host, peer, slow)


def _columns(split: _Split, raws: list[bytes] | bytes, received_ns: int, default_host: str,
             peer: str | None, slow: Slow | None = None) -> Columns | None:
    """Columns from what split() or split_block() returned; None: use the
    Record path. ``raws`` are the frames, or the block: a frame the Python
    parser must redo after a look at its STRUCTURED-DATA comes from there."""
    block = raws if isinstance(raws, bytes) else None
    ts, hosts, apps, pids, sevs, facs, msgs, msgids, sds, redo = split
    # a block's size bounds its text: no pass over the messages to measure them
    text_size = None if block is None else len(block)
    n = len(ts)
    if len(redo) * 2 > n:
        return None  # mostly not the common RFC 5424 shape: the batch regexes read it
    # the rows split() left hold their frame in msg
    redo_raws = cast("list[bytes]", [msgs[j] for j in redo])
    f: Fields | Miss | None
    by_msgid: dict[str | None, Fields] = {}
    for m in set(msgids):
        f = {} if m is None else {"msgid": m}
        if peer is not None:
            f["peer"] = peer
        by_msgid[m] = f
    fields = list(map(by_msgid.__getitem__, msgids))
    by_sd: dict[tuple[str | None, str], Fields | None] = {}
    if sds.count(None) != n:
        for j, sd in enumerate(sds):
            if sd is None:
                continue
            key = (msgids[j], sd)
            f = by_sd.get(key, MISS)
            if f is MISS:
                sd_fields: Fields = {}
                if structured_data(sd, 0, sd_fields, True) == len(sd):
                    msgid = msgids[j]
                    f = {} if msgid is None else {"msgid": msgid}
                    f.update(sd_fields)
                    if peer is not None:
                        f["peer"] = peer
                else:
                    f = None  # e.g. an SD-ID twice: parse_message says so
                by_sd[key] = f
            if f is None:
                if isinstance(raws, bytes):  # rare: the block's frames are split once (no
                    raws = SyslogFramer(len(raws)).split_block(raws)  # cuts: split_block took it)
                redo.append(j)
                redo_raws.append(raws[j])
            else:
                fields[j] = f
    columns: list[list[Any]] = [ts, hosts, ["syslog"] * n, apps, pids, sevs, facs, msgs, fields,
                                [""] * n, [0] * n]
    # every fields dict of the batch, for the spool's frame index
    pool = [*by_msgid.values(), *filter(None, by_sd.values())]
    if redo and slow is not None:
        slow("frame", len(redo))
    for j, raw in zip(redo, redo_raws):
        rec = parse_safe(raw, received_ns, default_host, peer)
        (ts[j], hosts[j], apps[j], pids[j], sevs[j], facs[j], msgs[j], fields[j]) = (
            rec.ts, rec.host, rec.app, rec.pid, rec.severity, rec.facility, rec.msg,
            rec.fields)
        pool.append(rec.fields)
    return Columns(columns, text_size=text_size, fields_pool=pool)
