"""Sans-IO syslog message parser: RFC 5424, and RFC 3164 as real senders write it.

One call turns the bytes of one message (a UDP datagram, or a frame from
:mod:`hostlog.collectors.syslog.framing`) into one :class:`~hostlog.record.Record`.
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
  slower path that is still linear. Every regex is built in
  :mod:`hostlog.collectors.syslog.grammar`, from the one declaration of the
  fields and their limits.
* Timestamps become epoch ns by arithmetic on a cached base per second (UTC)
  or per minute (local time), never a datetime object per message
  (:mod:`hostlog.collectors.syslog.clock`).
* Batches (``parse_messages``, ``parse_columns``, ``parse_block``) are read
  by :mod:`hostlog.collectors.syslog.parse_batch`, which hands every message
  it does not read itself to :func:`parse_safe` here, so a batch gives
  exactly the records ``[parse_message(raw) for raw in raws]`` would give.
  This module does not import that one: the import graph stays one way.
"""

from __future__ import annotations

import logging
import re
from typing import cast

from hostlog.collectors.syslog.clock import CLOCK, clear_time_caches
from hostlog.collectors.syslog.framing import TruncatedFrame
from hostlog.collectors.syslog.grammar import (
    BSD_TS,
    HEADER5424,
    HEADERLESS_TAG,
    ISO_TS,
    PRI_ONLY,
    PRIVAL_MAX,
    RFC3164,
    RFC5424,
    SD_ELEMENT,
    SD_PARAM,
    SD_UNESCAPE,
    VERSION_START,
)
from hostlog.record import Fields, Record

__all__ = ["FALLBACKS", "Fallbacks", "clear_time_caches", "parse_message", "parse_pid", "parse_safe",
           "structured_data"]

#: The HEADER fields in order, each with its own regex: the diagnostics name
#: the first that does not match.
_DIAG = tuple((f.name, f.regex) for f in HEADER5424)

_log = logging.getLogger("hostlog.syslog")


class Fallbacks:
    """Times a faster parse path failed with an unexpected error and the
    slower one read the input instead (nothing is lost, but it is a bug):
    counted by path, the first of each logged with its traceback. The agent
    exports the counts as ``hostlog_errors_total{source="syslog",where="parse_fallback_<path>"}``."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def note(self, path: str, exc: BaseException) -> None:
        first = path not in self.counts
        self.counts[path] = self.counts.get(path, 0) + 1
        if first:
            _log.error("syslog parser: the %s path failed, the slower path read the input: %s",
                       path, exc, exc_info=exc)


#: The process's fallback counts (one parser per process; tests read it).
FALLBACKS = Fallbacks()


def parse_message(raw: bytes, *, received_ns: int, default_host: str = "",
                  peer: str | None = None) -> Record:
    """Parse one syslog message; never raises (see the module docstring)."""
    return parse_safe(raw, received_ns, default_host, peer)


def parse_safe(raw: bytes, received_ns: int, default_host: str, peer: str | None) -> Record:
    """:func:`parse_message` with positional arguments (the batch paths call it per message)."""
    try:
        rec = _parse(raw, received_ns, default_host)
    except Exception as exc:  # a parser bug must not lose the message or stop the collector
        FALLBACKS.note("message", exc)
        try:
            whole: str | bytes = raw.decode()
        except UnicodeDecodeError:
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

    m = RFC5424.match(text)
    if m is not None:
        pri = int(m[1])
        if pri <= PRIVAL_MAX:
            rec = _rfc5424(text, clean, m, pri, received_ns, default_host)
            if rec is not None:
                return rec
        return _slow(raw, text, clean, received_ns, default_host)
    m = RFC3164.match(text)
    if m is not None:
        pri = int(m[1])
        if pri <= PRIVAL_MAX:
            ts = CLOCK.bsd_ns(m[2], m[3], m[4], received_ns)
            if ts is not None:
                return _rfc3164(text, clean, m.end(), pri, ts, default_host)
    return _slow(raw, text, clean, received_ns, default_host)


def _slow(raw: bytes, text: str, clean: bool, received_ns: int,
          default_host: str) -> Record:
    """Every shape the two fast regexes do not take, and every error."""
    whole = text if clean else raw  # what an error record keeps
    if not text:
        return _unparsed(whole, received_ns, default_host, None, "empty message")
    pm = PRI_ONLY.match(text)
    if pm is None or int(pm[1]) > PRIVAL_MAX:
        if text[0] == "<":
            # RFC 3164 4.3.3: an unidentifiable PRI -> PRI 13 and the whole
            # packet is CONTENT.
            return _unparsed(whole, received_ns, default_host, None, "bad PRI at byte 0")
        pri, p = None, 0  # no PRI: RFC 3164 4.3.3 (user.notice is assumed below)
    else:
        pri, p = int(pm[1]), pm.end()
        if VERSION_START.match(text, p):
            return _unparsed(whole, received_ns, default_host, pri,
                             "rfc5424: " + _diagnose5424(text, p))

    m = BSD_TS.match(text, p)
    ts = CLOCK.bsd_ns(m[1], m[2], m[3], received_ns) if m is not None else None
    if ts is None:
        m = ISO_TS.match(text, p)
        if m is not None:
            ts = CLOCK.iso_ns(m)
    if ts is not None and m is not None:  # (m is the match ts was read from)
        return _rfc3164(text, clean, m.end(), 13 if pri is None else pri, ts, default_host)
    if pri is None:
        return _unparsed(whole, received_ns, default_host, None, "no PRI and no TIMESTAMP")
    # RFC 3164 4.3.2: "If the relay does not find a valid TIMESTAMP [...] it
    # MUST add a TIMESTAMP and HOSTNAME": no HEADER, so no HOSTNAME to read.
    # The MSG may still start with a TAG, as from Python's SysLogHandler
    # ("<14>myapp: text"): journald's syslog_parse_identifier() and rsyslog
    # both read a first word ending with ":" as the TAG, so that is the one
    # rule here. Any other first word is CONTENT ("<14>hello world",
    # "<14>Just a sentence: with colon"), as journald reads it (rsyslog would
    # take "hello" for a HOSTNAME and "world" for a TAG).
    pid: int | None
    fields: Fields
    app, pid, fields = "", None, {}
    m = HEADERLESS_TAG.match(text, p)
    if m is not None:
        app, pid, fields = _tag(m[1], clean)
        p = m.end()  # one blank after the TAG is no CONTENT (journald skips one)
    msg = text[p:]
    return Record(received_ns, msg if clean else _restore(msg), default_host, "syslog",
                  app, pid, pri & 7, pri >> 3, fields)


def _rfc5424(text: str, clean: bool, m: re.Match[str], pri: int, received_ns: int,
             default_host: str) -> Record | None:
    """Finish an RFC 5424 message whose HEADER matched; None on any error."""
    _, version, ts_text, host, app, procid, msgid = m.groups()
    ts: int | None
    if ts_text == "-":
        ts = received_ns  # RFC 5424 6.2.3: NILVALUE if the originator has no time
    else:
        ts = CLOCK.rfc3339_ns(ts_text)
        if ts is None:
            return None
    fields: Fields = {}
    pid = None
    if procid != "-":
        pid = parse_pid(procid)
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
        p = structured_data(text, p, fields, clean)
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


def structured_data(text: str, p: int, fields: Fields, clean: bool) -> int:
    """Parse SD-ELEMENTs at ``p`` into ``fields``; return the end, or -1 if invalid."""
    seen = set()
    while True:
        m = SD_ELEMENT.match(text, p)
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
            for name, value in SD_PARAM.findall(params):
                if "\\" in value:
                    value = SD_UNESCAPE.sub(r"\1", value)
                val: str | bytes = value if clean else _restore(value)
                key = prefix + name
                old = fields.get(key)
                if old is not None:
                    # RFC 5424 7.2.1: a PARAM-NAME may repeat (several "ip" in
                    # "origin"); keep every value, one per line.
                    val = _join(cast("str | bytes", old), val)  # (no lists here)
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
    pid: int | None
    fields: Fields
    app, pid, fields = "", None, {}
    if word.endswith(":"):
        tag: str | None = word[:-1]
    elif _is_tag_pid(word):
        tag = word
    else:
        tag = None  # no TAG: the whole rest is CONTENT ("Use the BFG!", RFC 3164 5.4)
    if tag is not None:
        p = len(text) if sp < 0 else sp + 1
        app, pid, fields = _tag(tag, clean)
    msg = text[p:]
    return Record(ts, msg if clean else _restore(msg), host, "syslog", app, pid,
                  pri & 7, pri >> 3, fields)


def _tag(tag: str, clean: bool) -> tuple[str, int | None, Fields]:
    """A TAG without its ":" -> (app, pid, fields): "name[pid]" gives the pid,
    or a "procid" field when the part in brackets is not a pid."""
    pid: int | None = None
    fields: Fields = {}
    if tag.endswith("]") and (i := tag.find("[")) > 0:
        procid = tag[i + 1:-1]
        tag = tag[:i]
        if procid:
            pid = parse_pid(procid)
            if pid is None:
                fields["procid"] = procid if clean else _restore_str(procid)
    return (tag if clean else _restore_str(tag)), pid, fields


def _is_tag_pid(word: str) -> bool:
    # "name[pid]" (a "[" after at least one character, "]" at the end)
    return word.endswith("]") and word.find("[") > 0


def parse_pid(procid: str) -> int | None:
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
                                            and CLOCK.rfc3339_ns(token) is None):
            return f"bad {name} at byte {_at(text, p)}"
        if sp < 0:
            return f"message ends after {name} at byte {_at(text, len(text))}"
        p = sp + 1
    q = p + 1 if text.startswith("-", p) else p
    seen: set[str] = set()
    while q == p or text.startswith("[", q):
        m = SD_ELEMENT.match(text, q)
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
