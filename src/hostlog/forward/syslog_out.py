"""``[[forward]] type = "syslog"``: RFC 5424 over TCP or TLS with octet
counting (RFC 6587 / RFC 5425), so rsyslog or syslog-ng can be the central node.

The format (:func:`format_record`, pure) keeps what a record carries:

* PRI from facility (user, 1, when there is none) and severity; TIMESTAMP in
  UTC with microseconds; HOSTNAME, APP-NAME, PROCID; MSGID from the
  ``msgid`` field (what the syslog collector keeps of one); each value cut to
  its RFC 5424 length and to printable US-ASCII, ``-`` when empty.
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
from hostlog.record import Record

__all__ = ["SD_ID", "SyslogOutput", "format_record"]

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


def _timestamp(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns // 10**9, dt.UTC).replace(microsecond=ts_ns // 1000 % 10**6)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_record(record: Record) -> bytes:
    """One record as an RFC 5424 message (without the octet count)."""
    facility = record.facility if record.facility is not None and 0 <= record.facility <= 23 else 1
    severity = record.severity if 0 <= record.severity <= 7 else 6
    fields = record.fields or {}
    elements: dict[str, list[str]] = {}
    ours = [f'origin="{_sd_value(record.origin)}"', f'seq="{record.seq}"']
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
        ours += [f'{name}="{_sd_value(v)}"' for v in (value if isinstance(value, list) else [value])]
    sd = "".join(f"[{sd_id}{''.join(' ' + p for p in params)}]" for sd_id, params in elements.items()
                 if sd_id != SD_ID)
    sd += f"[{SD_ID} {' '.join(ours)}]"
    header = (f"<{facility * 8 + severity}>1 {_timestamp(record.ts)} {_header_value(record.host, 255)} "
              f"{_header_value(record.app, 48)} {_header_value(record.pid, 128)} "
              f"{_header_value(fields.get('msgid'), 32)} {sd}")
    msg = record.msg
    body = msg if isinstance(msg, bytes) else _BOM + msg.encode("utf-8", "surrogateescape") if msg else b""
    return header.encode() + (b" " + body if body else b"")


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
        batch = decode_chunk(chunk)
        self.writer.write(frame([format_record(r) for r in batch.records()]))
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
