"""Sans-IO syslog message parser: RFC 5424, and RFC 3164 as real senders write it.

One call turns the bytes of one message (a UDP datagram, or a frame from
:mod:`hostlog.collectors.syslog_framing`) into one :class:`~hostlog.record.Record`.
It never raises and never drops: input it cannot read becomes a record that
holds the raw message and a ``parse_error`` field (docs/syslog.md lists the
rules and the field names).

Theory of operation, shaped by speed (the collector's budget is a few µs per
message):

* The bytes are decoded once. Valid UTF-8 (nearly everything) is parsed as
  ``str`` and every slice is already the ``str`` a Record wants. Otherwise the
  decode uses ``surrogateescape`` so parsing is the same, and the parts that
  hold undecodable bytes go back to ``bytes`` losslessly.
* Two precompiled regexes cover the common shapes in one ``match`` each: the
  whole RFC 5424 HEADER and ``<PRI>Mmm dd hh:mm:ss``. Their character classes
  never overlap the separating space, so they do not backtrack. Everything
  else (RFC 3164 with ISO time, no PRI, bad PRI, broken RFC 5424) takes a
  slower path that is still linear.
* Timestamps become epoch ns by arithmetic on a cached base per second (UTC)
  or per minute (local time), never a datetime object per message.
* A batch (:func:`parse_messages`) of the common shapes is read without a
  Python loop per message: one ``re.split`` over the batch joined by LF
  cuts every line into its parts, and each column (times, hosts, pids, ...)
  is built by C-level ``map`` calls over per-batch lookup tables. A line the
  batch regex does not take whole, and anything unusual (a frame the framer
  cut, a date that does not exist, SD that does not parse), is parsed by
  :func:`parse_message`, so a batch gives exactly the records
  ``[parse_message(raw) for raw in raws]`` would give, only faster.
"""

from __future__ import annotations

import calendar
import gc
import re
import time
from datetime import date
from itertools import repeat
from operator import add

from hostlog.collectors.syslog_framing import TruncatedFrame
from hostlog.record import Record

__all__ = ["clear_time_caches", "parse_message", "parse_messages"]

_NS = 1_000_000_000
_CACHE_MAX = 4096  # entries per time cache; a busy stream needs a few per minute
_PID_CACHE_MAX = 16384  # PROCID texts: a busy host has a few thousand processes
_MISS = object()  # not in a cache (None in a cache means "no such time")

# RFC 5424 section 6 ABNF, one match for the whole HEADER plus the SP before
# STRUCTURED-DATA:
#   HEADER = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
#   PRIVAL = 1*3DIGIT ; VERSION = NONZERO-DIGIT 0*2DIGIT
#   TIMESTAMP = NILVALUE / FULL-DATE "T" FULL-TIME ; TIME-SECFRAC = "." 1*6DIGIT
#   TIME-OFFSET = "Z" / TIME-NUMOFFSET ; HOSTNAME = NILVALUE / 1*255PRINTUSASCII
#   APP-NAME = 1*48PRINTUSASCII ; PROCID = 1*128 ; MSGID = 1*32 (or NILVALUE)
_PRI = r"<(0|[1-9][0-9]{0,2})>"  # "<00>", "<002>" are not PRIs (section 6.2.1)
_TS5424 = (r"-|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
           r"(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")
_HEADER_FIELDS = r"([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) "
_RFC5424 = re.compile(_PRI + r"([1-9][0-9]{0,2}) (" + _TS5424 + r") " + _HEADER_FIELDS)

# RFC 5424 section 6.3: SD-NAME = 1*32PRINTUSASCII except '=', SP, ']', %d34.
# PARAM-VALUE: '"', '\' and ']' MUST be escaped (6.3.3); any other backslash
# pair is kept as it is, so "\\." accepts it and _SD_UNESCAPE leaves it alone.
_SD_NAME = r'[!#-<>-\\^-~]{1,32}'
_SD_VALUE = r'[^"\\\]]*(?:\\.[^"\\\]]*)*'
_SD_ELEMENT = re.compile(r'\[(' + _SD_NAME + r')((?: ' + _SD_NAME + r'="' + _SD_VALUE
                         + r'")*)\]', re.S)
_SD_PARAM = re.compile(r' (' + _SD_NAME + r')="(' + _SD_VALUE + r')"', re.S)
_SD_UNESCAPE = re.compile(r'\\([\\"\]])')

# RFC 3164 section 4.1.2: TIMESTAMP = "Mmm dd hh:mm:ss" (day padded with a
# space). Real senders add: upper-case months, an unpadded day, a year after
# the day ("Mar  7 2008 19:06:53"), fractions of a second. Group 1 is the
# part up to the minute: it is the time cache key.
_BSD = (r"((?:[A-Za-z]{3}) {1,2}[0-9]{1,2} (?:[0-9]{4} )?[0-9]{2}:[0-9]{2})"
        r":([0-9]{2})(?:\.([0-9]{1,6}))?(?: |$)")
_RFC3164 = re.compile(_PRI + _BSD)
_BSD_TS = re.compile(_BSD)
# rsyslog's RFC 3339 flavour of RFC 3164 (RSYSLOG_ForwardFormat); no zone
# means local time, like the BSD form.
_ISO_TS = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}):([0-9]{2})"
                     r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:?[0-9]{2})?(?: |$)")
_PRI_ONLY = re.compile(_PRI)
# After PRI, a VERSION and SP (or the end) means the sender meant RFC 5424.
# A longer digit run is RFC 3164 content ("<0>1990 Oct 22 ...", RFC 3164 5.4).
_VERSION_START = re.compile(r"[1-9][0-9]{0,2}(?: |$)")
_DIAG = (("VERSION", re.compile(r"[1-9][0-9]{0,2}")), ("TIMESTAMP", re.compile(_TS5424)),
         ("HOSTNAME", re.compile(r"[!-~]{1,255}")), ("APP-NAME", re.compile(r"[!-~]{1,48}")),
         ("PROCID", re.compile(r"[!-~]{1,128}")), ("MSGID", re.compile(r"[!-~]{1,32}")))

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_FRAC_SCALE = tuple(10 ** (9 - n) for n in range(10))  # "003" -> 3 * 10**6 ns

# Time caches: text of a timestamp prefix -> epoch seconds, or None if invalid.
_utc_seconds: dict[str, int | None] = {}   # "YYYY-MM-DDThh:mm:ss" (UTC wall clock)
_offsets: dict[str, int | None] = {}       # "+hh:mm" -> seconds east of UTC
_local_minutes: dict[str, int | None] = {}  # 3164 keys; valid for one receive day
_local_day = [0, 0]  # [start, end) ns of the local receive day _local_minutes is for


def clear_time_caches() -> None:
    """Forget cached time bases; call after the process time zone changed (tzset)."""
    _utc_seconds.clear()
    _offsets.clear()
    _local_minutes.clear()
    _local_day[:] = [0, 0]


def parse_message(raw: bytes, *, received_ns: int, default_host: str = "",
                  peer: str | None = None) -> Record:
    """Parse one syslog message; never raises (see the module docstring)."""
    return _parse_safe(raw, received_ns, default_host, peer)


def parse_messages(raws: list[bytes], *, received_ns: int, default_host: str = "",
                   peer: str | None = None) -> list[Record]:
    """Parse a batch that arrived together; all share ``received_ns``.

    The result is ``[parse_message(raw, ...) for raw in raws]``; batches of
    the common shapes take the batch path (see the module docstring).
    """
    if len(raws) >= _BATCH_MIN:
        # The batch path holds lists of every message's parts while it makes
        # two objects per message; a cyclic collection started by those
        # allocations would walk all of those lists (and keep doing so as they
        # age). It runs in about a millisecond with the collector paused, and
        # afterwards only the records it returns are left to walk. (Only the
        # caller that paused it resumes it, so nesting and threads are safe.)
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            recs = _parse_batch(raws, received_ns, default_host, peer)
        except Exception:  # a bug in the batch path must not lose messages
            recs = None
        finally:
            if paused:
                gc.enable()
        if recs is not None:
            return recs
    return [_parse_safe(raw, received_ns, default_host, peer) for raw in raws]


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
# same meaning (tests/unit/collectors/test_syslog_parse_batch.py holds batches
# to parse_message, field order included).

#: Smaller batches go message by message: the batch set-up would cost more.
_BATCH_MIN = 8

_FAST_PRI = r"<(1[0-8][0-9]|19[01]|[1-9][0-9]?|0)>"  # 0..191, no leading zero (6.2.1)
# RFC 5424 with VERSION 1 and a TIMESTAMP; STRUCTURED-DATA is captured whole
# and parsed per message (only where it is not "-"). No class matches LF, so
# a match never spans two lines.
_SD_VALUE_LINE = r'[^"\\\]\n]*(?:\\[^\n][^"\\\]\n]*)*'
_SD_ELEMENT_LINE = (r'\[' + _SD_NAME + r'(?: ' + _SD_NAME + r'="' + _SD_VALUE_LINE + r'")*\]')
_SPLIT5424 = re.compile(
    r"\n" + _FAST_PRI + r"1 "
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,6}))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2}) "
    r"([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) "
    r"(-|(?:" + _SD_ELEMENT_LINE + r")+)(?: \ufeff?|(?=\n)|\Z)")
_GROUPS5424 = 9
# RFC 3164 with PRI, a BSD TIMESTAMP, a HOSTNAME or none, and a TAG
# "name:", "name[pid]:" or "name[pid]". HOSTNAME and TAG name hold no ":",
# "[" or "]", so a word the per-message rules read as a TAG is never taken
# for a HOSTNAME here, and the reverse.
_SPLIT3164 = re.compile(
    r"\n" + _FAST_PRI + r"([A-Za-z]{3} {1,2}[0-9]{1,2} (?:[0-9]{4} )?[0-9]{2}:[0-9]{2})"
    r":([0-9]{2})(?:\.([0-9]{1,6}))? (?:([^ \n:\[\]]+) )?([^ \n:\[\]]+)"
    r"(?:\[([1-9][0-9]{0,8}|0)\]:?|:)(?: |(?=\n)|\Z)")
_GROUPS3164 = 7
_SNIFF5424 = re.compile(r"\n<[0-9]{1,3}>[1-9]")

_SEVERITY = {str(p): p & 7 for p in range(192)}
_FACILITY = {str(p): p >> 3 for p in range(192)}
_SECOND_NS = {"%02d" % s: s * _NS for s in range(60)}
_NONE_EMPTY = {None: ""}
_TRAILERS = (b"\n", b"\x00")
_NO_PID = {None: None, "-": None}
_pids: dict[str | None, int | None] = dict(_NO_PID)  # PROCID text -> pid (None: no pid)
#: fractions of 1 to 3 digits (and none) -> ns
_FRAC_MS = {None: 0, **{f"{v:0{n}d}": v * 10 ** (9 - n)
                        for n in (1, 2, 3) for v in range(10 ** n)}}
_NIL_EMPTY = {"-": ""}


def _frac_ns(fracs: list[str | None]):
    """TIME-SECFRAC digits -> ns ("123" -> 123_000_000, None -> 0), lazily."""
    if _FRAC_MS.keys() >= set(fracs):  # none, or up to milliseconds: a table
        return map(_FRAC_MS.__getitem__, fracs)
    # finer: right-pad to 9 digits, then int(), all C-level
    return map(int, map(str.ljust, map(_NONE_EMPTY.get, fracs, fracs), repeat(9), repeat("0")))


def _parse_batch(raws: list[bytes], received_ns: int, default_host: str,
                 peer: str | None) -> list[Record] | None:
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
    if _SNIFF5424.match(text):
        stride = _GROUPS5424 + 1
        parts = _SPLIT5424.split(text)
    else:
        stride = _GROUPS3164 + 1
        parts = _SPLIT3164.split(text)
    n = len(parts) // stride
    if n == 0:
        return None
    msgs = parts[stride::stride]
    # Every line taken and none left over means one line per message. An LF
    # inside a message (octet counting, datagrams) breaks that: then the
    # batch goes one by one.
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
    if stride == _GROUPS5424 + 1:
        recs = _columns5424(parts, msgs, redo, received_ns, default_host, peer)
    else:
        recs = _columns3164(parts, msgs, redo, received_ns, default_host, peer)
    if TruncatedFrame in kinds:
        lines = rows if rows is not None else range(n)
        redo.update(j for j, i in enumerate(lines) if type(raws[i]) is TruncatedFrame)
    for j in redo:
        recs[j] = _parse_safe(raws[j if rows is None else rows[j]], received_ns,
                              default_host, peer)
    if rows is None:
        return recs
    out: list[Record | None] = [None] * len(raws)
    for i, rec in zip(rows, recs):
        out[i] = rec
    for i, rec in enumerate(out):
        if rec is None:
            out[i] = _parse_safe(raws[i], received_ns, default_host, peer)
    return out  # type: ignore[return-value]


def _rows_where(column: list, bad: set) -> list[int]:
    return [j for j, v in enumerate(column) if v in bad]


def _columns5424(parts: list, msgs: list[str], redo: set[int], received_ns: int,
                 default_host: str, peer: str | None) -> list[Record]:
    pri, secs, fracs, zones, hosts, apps, procids, msgids, sds = (
        parts[k::_GROUPS5424 + 1] for k in range(1, _GROUPS5424 + 1))
    # TIMESTAMP: (seconds - offset) per distinct (second, zone), + fraction
    zone_set = set(zones)
    if len(zone_set) == 1:
        keys: list = secs
        pairs = [(s, zones[0]) for s in set(secs)]
    else:
        keys = list(zip(secs, zones))
        pairs = list(set(keys))
    bases: dict = {}
    bad = set()
    for s, z in pairs:
        b = _utc_seconds.get(s, _MISS)
        if b is _MISS:
            b = _cached(_utc_seconds, s, _utc_second)
        off = 0 if z == "Z" else _offset(z)
        key = s if keys is secs else (s, z)
        if b is None or off is None:
            bad.add(key)
            bases[key] = 0
        else:
            bases[key] = (b - off) * _NS
    if bad:
        redo.update(_rows_where(keys, bad))
    ts = list(map(add, map(bases.__getitem__, keys), _frac_ns(fracs)))
    # PROCID: a pid, or NILVALUE, or (odd) a "procid" field
    pid_of = _pids_of(procids)
    distinct = set(procids)
    distinct.discard("-")
    odd = None in map(pid_of.__getitem__, distinct)  # some PROCID is not a pid
    pids = list(map(pid_of.__getitem__, procids))
    # fields: copies of one dict per distinct MSGID (order as parse_message)
    if not odd:
        proto = {}
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
        parsed: dict[str, tuple | None] = {}
        for j, sd in enumerate(sds):
            if sd == "-":
                continue
            items = parsed.get(sd, _MISS)
            if items is _MISS:
                sd_fields: dict[str, str | bytes] = {}
                ok = _structured_data(sd, 0, sd_fields, True) == len(sd)
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


def _pids_of(procids: list[str | None]) -> dict[str | None, int | None]:
    """A table holding every PROCID of the batch -> its pid (None: no pid).

    The pid of a PROCID text never changes, so the cache is only ever added
    to; once full, PROCIDs it lacks are looked up for their batch alone.
    """
    distinct = set(procids)
    missing = distinct.difference(_pids)
    if not missing:
        return _pids
    if len(_pids) + len(missing) <= _PID_CACHE_MAX:
        for p in missing:
            _pids[p] = _pid(p)  # type: ignore[arg-type]
        return _pids
    return {p: _pids[p] if p in _pids else _pid(p) for p in distinct}  # type: ignore[arg-type]


def _fields5424(procid: str, msgid: str, pid_of: dict, peer: str | None) -> dict:
    f: dict[str, str | bytes] = {}
    if procid != "-" and pid_of[procid] is None:
        f["procid"] = procid
    if msgid != "-":
        f["msgid"] = msgid
    if peer is not None:
        f["peer"] = peer
    return f


def _columns3164(parts: list, msgs: list[str], redo: set[int], received_ns: int,
                 default_host: str, peer: str | None) -> list[Record]:
    pri, minutes, secs, fracs, hosts, apps, procids = (
        parts[k::_GROUPS3164 + 1] for k in range(1, _GROUPS3164 + 1))
    # TIMESTAMP: local minute base per distinct "Mmm dd [yyyy] hh:mm", as _bsd_ns
    if not _local_day[0] <= received_ns < _local_day[1]:
        _new_local_day(received_ns)
    bases = {}
    bad = set()
    for k in set(minutes):
        b = _local_minute(k, received_ns)
        if b is None:
            bad.add(k)
            bases[k] = 0
        else:
            bases[k] = b * _NS
    if bad:
        redo.update(_rows_where(minutes, bad))
    bad_secs = set(secs).difference(_SECOND_NS)
    if bad_secs:
        redo.update(_rows_where(secs, bad_secs))
    ts = list(map(add, map(add, map(bases.__getitem__, minutes),
                           map(_SECOND_NS.get, secs, repeat(0))), _frac_ns(fracs)))
    pid_of = _pids_of(procids)
    proto: dict = {} if peer is None else {"peer": peer}
    return list(map(Record, ts, msgs, map({None: default_host}.get, hosts, hosts),
                    repeat("syslog"), map(_NONE_EMPTY.get, apps, apps),
                    map(pid_of.__getitem__, procids), map(_SEVERITY.__getitem__, pri),
                    map(_FACILITY.__getitem__, pri), map(dict.copy, repeat(proto, len(msgs)))))


def _parse_safe(raw: bytes, received_ns: int, default_host: str,
                peer: str | None) -> Record:
    try:
        rec = _parse(raw, received_ns, default_host)
    except Exception as exc:  # a parser bug must not lose the message or stop the collector
        try:
            whole: str | bytes = raw.decode()
        except Exception:
            whole = bytes(raw)
        rec = _unparsed(whole, received_ns, default_host, None,
                        f"internal error: {type(exc).__name__}")
    if type(raw) is TruncatedFrame:  # the framer cut it (max_message or EOF)
        rec.fields["truncated"] = "true"
    if peer is not None:
        rec.fields["peer"] = peer
    return rec


def _parse(raw: bytes, received_ns: int, default_host: str) -> Record:
    # Senders append LF, CR LF or NUL to datagrams as well as to stream frames.
    if raw.endswith((b"\n", b"\x00")):
        raw = raw.rstrip(b"\r\n\x00")
    try:
        text = raw.decode()
        clean = True
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
        clean = False

    m = _RFC5424.match(text)
    if m is not None:
        pri = int(m[1])
        if pri <= 191:
            rec = _rfc5424(text, clean, m, pri, received_ns, default_host)
            if rec is not None:
                return rec
        return _slow(raw, text, clean, received_ns, default_host)
    m = _RFC3164.match(text)
    if m is not None:
        pri = int(m[1])
        if pri <= 191:
            ts = _bsd_ns(m[2], m[3], m[4], received_ns)
            if ts is not None:
                return _rfc3164(text, clean, m.end(), pri, ts, default_host)
    return _slow(raw, text, clean, received_ns, default_host)


def _slow(raw: bytes, text: str, clean: bool, received_ns: int,
          default_host: str) -> Record:
    """Every shape the two fast regexes do not take, and every error."""
    whole = text if clean else raw  # what an error record keeps
    if not text:
        return _unparsed(whole, received_ns, default_host, None, "empty message")
    pm = _PRI_ONLY.match(text)
    if pm is None or int(pm[1]) > 191:
        if text[0] == "<":
            # RFC 3164 4.3.3: an unidentifiable PRI -> PRI 13 and the whole
            # packet is CONTENT.
            return _unparsed(whole, received_ns, default_host, None, "bad PRI at byte 0")
        pri, p = None, 0  # no PRI: RFC 3164 4.3.3 (user.notice is assumed below)
    else:
        pri, p = int(pm[1]), pm.end()
        if _VERSION_START.match(text, p):
            return _unparsed(whole, received_ns, default_host, pri,
                             "rfc5424: " + _diagnose5424(text, p))

    m = _BSD_TS.match(text, p)
    ts = _bsd_ns(m[1], m[2], m[3], received_ns) if m is not None else None
    if ts is None:
        m = _ISO_TS.match(text, p)
        if m is not None:
            ts = _iso_ns(m)
    if ts is not None:
        return _rfc3164(text, clean, m.end(), 13 if pri is None else pri, ts, default_host)
    if pri is None:
        return _unparsed(whole, received_ns, default_host, None, "no PRI and no TIMESTAMP")
    # RFC 3164 4.3.2: "If the relay does not find a valid TIMESTAMP [...] it
    # MUST add a TIMESTAMP and HOSTNAME"; the text after PRI is the CONTENT.
    msg = text[p:]
    return Record(received_ns, msg if clean else _restore(msg), default_host, "syslog",
                  "", None, pri & 7, pri >> 3, {})


def _rfc5424(text: str, clean: bool, m: re.Match[str], pri: int, received_ns: int,
             default_host: str) -> Record | None:
    """Finish an RFC 5424 message whose HEADER matched; None on any error."""
    _, version, ts_text, host, app, procid, msgid = m.groups()
    if ts_text == "-":
        ts = received_ns  # RFC 5424 6.2.3: NILVALUE if the originator has no time
    else:
        ts = _rfc3339_ns(ts_text)
        if ts is None:
            return None
    fields: dict[str, str | bytes] = {}
    pid = None
    if procid != "-":
        pid = _pid(procid)
        if pid is None:
            fields["procid"] = procid
    if msgid != "-":
        fields["msgid"] = msgid
    if version != "1":
        fields["version"] = version
    p = m.end()
    if text.startswith("-", p):
        p += 1
    elif text.startswith("[", p):
        p = _structured_data(text, p, fields, clean)
        if p < 0:
            return None
    else:
        return None
    if p == len(text):
        msg: str | bytes = ""
    elif text[p] == " ":
        msg = text[p + 1:]
        # RFC 5424 6.4: MSG-UTF8 = BOM UTF-8-STRING; the BOM is a marker, not text.
        if msg.startswith("\ufeff"):
            msg = msg[1:]
        if not clean:
            msg = _restore(msg)
    else:
        return None  # STRUCTURED-DATA must be followed by SP MSG or nothing
    return Record(ts, msg, default_host if host == "-" else host, "syslog",
                  "" if app == "-" else app, pid, pri & 7, pri >> 3, fields)


def _structured_data(text: str, p: int, fields: dict[str, str | bytes], clean: bool) -> int:
    """Parse SD-ELEMENTs at ``p`` into ``fields``; return the end, or -1 if invalid."""
    seen = set()
    while True:
        m = _SD_ELEMENT.match(text, p)
        if m is None:
            return -1
        sd_id = m[1]
        # RFC 5424 6.3.2: "The same SD-ID MUST NOT exist more than once in a message."
        if sd_id in seen:
            return -1
        seen.add(sd_id)
        params = m[2]
        if not params:
            fields["sd." + sd_id] = ""  # an element without params still says something
        else:
            prefix = "sd." + sd_id + "."
            for name, value in _SD_PARAM.findall(params):
                if "\\" in value:
                    value = _SD_UNESCAPE.sub(r"\1", value)
                val: str | bytes = value if clean else _restore(value)
                key = prefix + name
                old = fields.get(key)
                if old is not None:
                    # RFC 5424 7.2.1: a PARAM-NAME may repeat (several "ip" in
                    # "origin"); keep every value, one per line.
                    val = _join(old, val)
                fields[key] = val
        p = m.end()
        # RFC 5424 6.3: no space between SD-ELEMENTs.
        if not text.startswith("[", p):
            return p


def _join(old: str | bytes, new: str | bytes) -> str | bytes:
    if isinstance(old, str) and isinstance(new, str):
        return old + "\n" + new
    return b"\n".join(v if isinstance(v, bytes) else v.encode() for v in (old, new))


def _rfc3164(text: str, clean: bool, p: int, pri: int, ts: int, default_host: str) -> Record:
    """Finish an RFC 3164 message; ``p`` is the first character after TIMESTAMP SP."""
    # RFC 3164 4.1.2: HOSTNAME SP follows TIMESTAMP. Senders that leave it out
    # (the local /dev/log path, many devices) go straight to TAG, which ends
    # with ":" or "[pid]:"; such a first word is a TAG, not a HOSTNAME.
    sp = text.find(" ", p)
    word = text[p:] if sp < 0 else text[p:sp]
    if word.endswith(":") or _is_tag_pid(word):
        host = default_host
    else:
        # An empty word (two spaces after TIMESTAMP) names no host.
        host = default_host if not word else word if clean else _restore_str(word)
        p = len(text) if sp < 0 else sp + 1
        sp = text.find(" ", p)
        word = text[p:] if sp < 0 else text[p:sp]
    # RFC 3164 4.1.3: MSG = TAG CONTENT; TAG is conventionally "name[pid]:".
    app, pid, fields = "", None, {}
    if word.endswith(":"):
        tag: str | None = word[:-1]
    elif _is_tag_pid(word):
        tag = word
    else:
        tag = None  # no TAG: the whole rest is CONTENT ("Use the BFG!", RFC 3164 5.4)
    if tag is not None:
        p = len(text) if sp < 0 else sp + 1
        if tag.endswith("]") and (i := tag.find("[")) > 0:
            procid = tag[i + 1:-1]
            tag = tag[:i]
            if procid:
                pid = _pid(procid)
                if pid is None:
                    fields["procid"] = procid if clean else _restore_str(procid)
        app = tag if clean else _restore_str(tag)
    msg = text[p:]
    return Record(ts, msg if clean else _restore(msg), host, "syslog", app, pid,
                  pri & 7, pri >> 3, fields)


def _is_tag_pid(word: str) -> bool:
    # "name[pid]" (a "[" after at least one character, "]" at the end)
    return word.endswith("]") and word.find("[") > 0


def _pid(procid: str) -> int | None:
    # Only a plain decimal that fits a Linux pid becomes Record.pid: leading
    # zeros or 40 digits would not survive a round trip through int.
    if 0 < len(procid) <= 10 and procid.isascii() and procid.isdigit() \
            and (procid[0] != "0" or procid == "0"):
        n = int(procid)
        if n < 2 ** 31:
            return n
    return None


def _restore(s: str) -> str | bytes:
    """A slice of a surrogateescape-decoded text: str if it is valid UTF-8, else bytes."""
    if s.isascii():
        return s
    try:
        s.encode()
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape")


def _restore_str(s: str) -> str:
    # Record.host/app are str: undecodable bytes there become \xNN escapes.
    r = _restore(s)
    return r.decode("utf-8", "backslashreplace") if isinstance(r, bytes) else r


def _unparsed(whole: str | bytes, received_ns: int, default_host: str, pri: int | None,
              why: str) -> Record:
    """The record for input we could not read: all of it in msg, and why."""
    if pri is None:
        pri = 13  # RFC 3164 4.3.3: no or unidentifiable PRI -> user.notice
    return Record(received_ns, whole, default_host, "syslog", "", None, pri & 7, pri >> 3,
                  {"parse_error": why})


def _diagnose5424(text: str, p: int) -> str:
    """Name the first RFC 5424 part that is wrong, and where (slow path only)."""
    for name, rx in _DIAG:
        sp = text.find(" ", p)
        token = text[p:] if sp < 0 else text[p:sp]
        if rx.fullmatch(token) is None or (name == "TIMESTAMP" and token != "-"
                                            and _rfc3339_ns(token) is None):
            return f"bad {name} at byte {_at(text, p)}"
        if sp < 0:
            return f"message ends after {name} at byte {_at(text, len(text))}"
        p = sp + 1
    q = p + 1 if text.startswith("-", p) else p
    seen: set[str] = set()
    while q == p or text.startswith("[", q):
        m = _SD_ELEMENT.match(text, q)
        if m is None:
            return f"bad STRUCTURED-DATA at byte {_at(text, q)}"
        if m[1] in seen:
            return f"duplicate SD-ID at byte {_at(text, q)}"
        seen.add(m[1])
        q = m.end()
    # RFC 5424 6: SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]
    return f"no SP after STRUCTURED-DATA at byte {_at(text, q)}"


def _at(text: str, i: int) -> int:
    """Byte offset of character ``i`` (diagnostics speak of bytes)."""
    return i if text.isascii() else len(text[:i].encode("utf-8", "surrogateescape"))


# --- time ------------------------------------------------------------------
# Caches map the text of a timestamp prefix to epoch seconds (None: no such
# time). Hits cost one dict lookup; a miss costs a few µs, once per second
# (UTC) or minute (local) of traffic. Each is cleared when it grows too big.

def _cached(cache: dict[str, int | None], key: str, compute) -> int | None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    value = cache[key] = compute(key)
    return value


def _valid_date(y: int, m: int, d: int) -> bool:
    return 1 <= y <= 9999 and 1 <= m <= 12 and 1 <= d <= calendar.monthrange(y, m)[1]


def _utc_second(key: str) -> int | None:
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


def _offset(text: str) -> int | None:
    off = _offsets.get(text, _MISS)
    return _cached(_offsets, text, _offset_seconds) if off is _MISS else off


def _rfc3339_ns(ts: str) -> int | None:
    """RFC 5424 TIMESTAMP (already shape-checked by the regex) -> epoch ns."""
    key = ts[:19]
    base = _utc_seconds.get(key, _MISS)
    if base is _MISS:
        base = _cached(_utc_seconds, key, _utc_second)
    if base is None:
        return None
    if ts[-1] == "Z":
        off, frac = 0, ts[20:-1]
    else:
        off, frac = _offset(ts[-6:]), ts[20:-6]
        if off is None:
            return None
    ns = (base - off) * _NS
    return ns + int(frac) * _FRAC_SCALE[len(frac)] if frac else ns


def _iso_ns(m: re.Match[str]) -> int | None:
    """RFC 3339-like TIMESTAMP in the RFC 3164 position; no zone = local time."""
    day, hhmm, sec, frac, zone = m.groups()
    if zone is None:
        base = _local_minute(day + "T" + hhmm, 0)
    else:
        if zone in "Zz":
            off: int | None = 0
        else:
            off = _offset(zone if len(zone) == 6 else zone[:3] + ":" + zone[3:])
        b = _utc_second(day + "T" + hhmm + ":00")
        base = None if b is None or off is None else b - off
    if base is None or int(sec) > 59:
        return None
    ns = (base + int(sec)) * _NS
    return ns + int(frac) * _FRAC_SCALE[len(frac)] if frac else ns


def _bsd_ns(key: str, sec: str, frac: str | None, received_ns: int) -> int | None:
    """RFC 3164 TIMESTAMP (local time, maybe no year) -> epoch ns, or None if invalid."""
    if not _local_day[0] <= received_ns < _local_day[1]:
        _new_local_day(received_ns)
    base = _local_minute(key, received_ns)
    s = int(sec)
    if base is None or s > 59:
        return None
    ns = (base + s) * _NS
    return ns + int(frac) * _FRAC_SCALE[len(frac)] if frac else ns


def _new_local_day(received_ns: int) -> None:
    """The year of "Mmm dd" depends on the local receive date: new day, new bases."""
    _local_minutes.clear()
    t = time.localtime(received_ns // _NS)
    _local_day[:] = [int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday + k, 0, 0, 0, 0, 0, -1)))
                     * _NS for k in (0, 1)]


def _local_minute(key: str, received_ns: int) -> int | None:
    """Epoch seconds of a local wall-clock minute; cached, also when invalid."""
    base = _local_minutes.get(key, _MISS)
    if base is _MISS:
        base = _cached(_local_minutes, key, lambda k: _local_minute_uncached(k, received_ns))
    return base


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
    if not (_valid_date(y, mo, d) and h <= 23 and mi <= 59 and 1900 <= y <= 9999):
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
    now = time.localtime(received_ns // _NS)
    y = now.tm_year
    ahead = date(y, month, 1).toordinal() + day - 1 - date(y, now.tm_mon, now.tm_mday).toordinal()
    if ahead > 31:
        return y - 1
    if ahead < -334:
        return y + 1
    return y
