"""``[[forward]] type = "syslog"``: RFC 5424 over TCP or TLS with octet
counting (RFC 6587 / RFC 5425), so rsyslog or syslog-ng can be the central node.

The format (:func:`format_record`, pure) keeps what a record carries:

* PRI from facility (user, 1, when there is none) and severity; TIMESTAMP in
  UTC with microseconds; HOSTNAME, APP-NAME, PROCID; MSGID from the
  ``msgid`` field (what the syslog collector keeps of one); each value cut to
  its RFC 5424 length and to printable US-ASCII, ``-`` when empty. A msgid
  MSGID cannot carry as it is (``-``, its NILVALUE; too long; other
  characters) goes whole into hostlog's SD element as ``msgid``.
* STRUCTURED-DATA: the fields a syslog source parsed from SD
  (``sd.ID.PARAM``) as the elements they came from; every other field, and
  the record's identity (origin, seq), in one element
  ``[hostlog@32473 ...]`` (32473 is the enterprise number RFC 5612 sets
  aside for examples: hostlog has none of its own). PARAM-NAMEs are cut to
  32 characters, those not allowed replaced by ``_``; values escaped.
* MSG: UTF-8 with a BOM; a message that is not UTF-8 goes as the bytes it is.

Syslog has no acknowledgements: a chunk counts as delivered once its bytes
are written to the socket and the kernel has taken them (``drain``). A
connection that breaks can lose what was still in its send buffer; for
exactly-once delivery use the hostlog protocol (docs/forwarding.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from hostlog.config.endpoints import Endpoint
from hostlog.forward.output import Identity, decode_chunk
from hostlog.forward.protocol import Chunk
from hostlog.record import Columns, Record

__all__ = ["SD_ID", "SyslogOutput", "format_batch", "format_record"]

SD_ID = "hostlog@32473"
CONNECT_TIMEOUT_S = 10.0
_BOM = b"\xef\xbb\xbf"
_NOT_PRINT = re.compile(r"[^!-~]")
_NOT_SD_NAME = re.compile(r'[^!-~]|[= \]"]')
_SD_ESCAPE = re.compile(r'(["\\\]])')
_SD_FIELD = re.compile(r"sd\.([^.]+)(?:\.(.+))?", re.S)


def _header_value(value: object, most: int) -> str:
    text = _NOT_PRINT.sub("_", str(value or ""))[:most]
    return text or "-"


def _sd_name(name: str) -> str:
    return _NOT_SD_NAME.sub("_", name)[:32] or "_"


def _sd_value(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    return _SD_ESCAPE.sub(r"\\\1", value)


def _seconds(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _timestamp(ts_ns: int) -> str:
    return f"{_seconds(ts_ns // 10**9)}.{ts_ns // 1000 % 10**6:06d}Z"


class _Formatter:
    """Formats records; what rows of one chunk share (the second of their
    time, host, app, pid, origin, header fields) is worked out once."""

    __slots__ = ("second", "second_text", "headers", "origins")

    def __init__(self) -> None:
        self.second = -1
        self.second_text = ""
        self.headers: dict[tuple[object, int], str] = {}
        self.origins: dict[str, str] = {}

    def timestamp(self, ts_ns: int) -> str:
        second = ts_ns // 10**9
        if second != self.second:
            self.second, self.second_text = second, _seconds(second)
        return f"{self.second_text}.{ts_ns // 1000 % 10**6:06d}Z"

    def header(self, value: object, most: int) -> str:
        key = (value, most)
        try:
            return self.headers[key]
        except KeyError:
            text = self.headers[key] = _header_value(value, most)
            return text
        except TypeError:  # (not hashable: never, for what records hold)
            return _header_value(value, most)

    def format(self, ts: int, host: str, app: str, pid: object, severity: int, facility: int | None,
               msg: str | bytes, fields: dict[str, Any] | None, origin: str, seq: int) -> bytes:
        facility = facility if facility is not None and 0 <= facility <= 23 else 1
        severity = severity if 0 <= severity <= 7 else 6
        fields = fields or {}
        quoted = self.origins.get(origin)
        if quoted is None:
            quoted = self.origins[origin] = _sd_value(origin)
        ours = f'origin="{quoted}" seq="{seq}"'
        sd = ""
        if fields:
            elements: dict[str, list[str]] = {}
            extra = []
            for key, value in fields.items():
                if key == "msgid":
                    continue
                m = _SD_FIELD.fullmatch(key)
                if m is not None:
                    params = elements.setdefault(_sd_name(m[1]), [])
                    if m[2] is not None:
                        # a repeated PARAM-NAME was kept one value per line
                        values: list[str] | list[bytes] | list[str | bytes] = (
                            value if isinstance(value, list) else value.split("\n")
                            if isinstance(value, str) else value.split(b"\n"))
                        params += [f'{_sd_name(m[2])}="{_sd_value(v)}"' for v in values]
                    continue
                name = _sd_name(key)
                # a field of several values (journald's) is a repeated PARAM-NAME, as RFC 5424 7.2.1 allows
                extra += [f'{name}="{_sd_value(v)}"' for v in (value if isinstance(value, list) else [value])]
            sd = "".join(f"[{sd_id}{''.join(' ' + p for p in params)}]" for sd_id, params in elements.items()
                         if sd_id != SD_ID)
            if extra:
                ours += " " + " ".join(extra)
        msgid = fields.get("msgid")
        msgid_text = self.header(msgid, 32)
        if msgid is not None and msgid_text != msgid:
            # "-" (the NILVALUE), too long or not PRINTUSASCII: MSGID cannot carry it as it is;
            # our SD element does, whole, and MSGID says nothing
            ours += f' msgid="{_sd_value(msgid)}"'
            msgid_text = "-"
        header = (f"<{facility * 8 + severity}>1 {self.timestamp(ts)} {self.header(host, 255)} "
                  f"{self.header(app, 48)} {self.header(pid, 128)} "
                  f"{msgid_text} {sd}[{SD_ID} {ours}]")
        if isinstance(msg, bytes):
            if not msg:
                return header.encode()
            body = msg
        elif msg:
            body = _BOM + (msg.encode() if msg.isascii() else msg.encode("utf-8", "surrogateescape"))
        else:
            return header.encode()
        return header.encode() + b" " + body


def format_record(record: Record) -> bytes:
    """One record as an RFC 5424 message (without the octet count)."""
    return _Formatter().format(record.ts, record.host, record.app, record.pid, record.severity, record.facility,
                               record.msg, record.fields, record.origin, record.seq)


def format_batch(batch: Columns) -> bytes:
    """Every record of a batch as RFC 5424 messages with octet counting, as
    :func:`frame` of :func:`format_record` of each, without making the records."""
    ts, host, _source, app, pid, severity, facility, msg, fields, origin, seq = batch.columns
    fmt = _Formatter().format
    return frame([fmt(*row) for row in zip(ts, host, app, pid, severity, facility, msg, fields, origin, seq)])


def frame(messages: list[bytes]) -> bytes:
    """Octet counting (RFC 6587 3.4.1, RFC 5425 4.3): ``LEN SP MSG`` each."""
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


class SyslogOutput:
    """One TCP or TLS connection to a syslog server."""

    def __init__(self, endpoint: Endpoint, identity: Identity,
                 ssl_context: Callable[[], ssl.SSLContext] | None) -> None:
        assert endpoint.host is not None and endpoint.port is not None
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._written: list[int] = []  # chunks written, not yet drained
        self._delivered: asyncio.Queue[int] = asyncio.Queue()

    async def open(self) -> None:
        ep = self.endpoint
        ctx = None
        if ep.scheme == "tls":  # never plain TCP for a tls:// target: the system's CAs at least
            ctx = self.ssl_context() if self.ssl_context else ssl.create_default_context()
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(ep.host, ep.port, ssl=ctx, server_hostname=ep.host if ctx else None),
            CONNECT_TIMEOUT_S)
        return None

    async def send(self, chunk: Chunk) -> None:
        assert self.writer is not None
        self.writer.write(format_batch(decode_chunk(chunk)))
        self._written.append(chunk.last)

    async def drain(self) -> None:
        assert self.writer is not None
        await self.writer.drain()
        for seq in self._written:
            self._delivered.put_nowait(seq)
        self._written.clear()

    async def acks(self) -> AsyncIterator[int]:
        assert self.reader is not None
        eof = asyncio.ensure_future(self._until_closed())
        try:
            while True:
                get = asyncio.ensure_future(self._delivered.get())
                done, _ = await asyncio.wait([get, eof], return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                    continue
                get.cancel()
                return  # the server closed the connection
        finally:
            eof.cancel()

    async def _until_closed(self) -> Any:
        assert self.reader is not None
        while await self.reader.read(4096):
            pass  # a syslog server says nothing; whatever it says is ignored

    async def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except (OSError, TimeoutError, ssl.SSLError):
            pass
