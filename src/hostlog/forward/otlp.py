"""``[[forward]] type = "otlp"``: OTLP/HTTP logs (OpenTelemetry), to the
OpenTelemetry Collector or any backend that takes OTLP (Loki 3, Elastic,
Datadog, ...). docs/forwarding.md ("Other outputs: OTLP") has the mapping.

Each spool chunk becomes one ``ExportLogsServiceRequest`` POSTed to the
target (``/v1/logs`` unless its URL names a path), protobuf or JSON, gzipped
or not. Several requests are in flight at once (the sender's ``window``
bounds them); their acknowledgements are reported in spool order, so the
cursor never passes a chunk that is not held.

What a response means (the OTLP/HTTP specification's rules):

* 2xx: held. A ``partial_success`` that rejected records is logged and
  counted (:class:`OtlpStats`), and the chunk counts as sent: the backend
  has said it will not take those records.
* 429, 502, 503, 504, and a connection that fails: the same request again,
  in place (so order is kept), after ``Retry-After`` (seconds or an HTTP
  date, at most :data:`RETRY_AFTER_MAX_S`) or a jittered exponential backoff
  (0.5 s doubling, at most 30 s). A connection that fails before this
  output's first success is not retried here: the sender's own backoff and
  failover to the next target take over.
* 400 (and 413 for one record): the backend cannot take those records as
  they are, and never will. Logged with the response's body, counted, and
  the chunk is acknowledged (skipped) so the records behind it go on.
  A 413 for a chunk of several records sends it again in halves.
* 401, 403: :class:`~hostlog.forward.output.Refused` with ``rejected``: the
  sender waits long before it tries again. Any other status (a wrong path,
  a 500): ``Refused`` as well, ``rejected`` for a 4xx; the chunk stays in
  the spool and is sent again.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import gzip as gzip_module
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from hostlog import __version__
from hostlog.config.endpoints import Endpoint
from hostlog.forward.output import Identity, Refused, decode_chunk
from hostlog.forward.protocol import Chunk
from hostlog.record import SEVERITY_NAMES, Columns

log = logging.getLogger("hostlog.forward.otlp")

__all__ = ["DEFAULT_PATH", "OWN_ATTRIBUTES", "OtlpOutput", "OtlpStats", "SEVERITY_NUMBERS", "build_request",
           "encode_request", "retry_after", "stats_for"]

Encoding = Literal["protobuf", "json"]

#: The path of a target URL that names none.
DEFAULT_PATH = "/v1/logs"
#: The scope every record is sent under.
SCOPE_NAME = "hostlog"
#: syslog severity (index) -> OpenTelemetry SeverityNumber: the OpenTelemetry
#: log data model's example mapping (its Appendix B, "Syslog" column).
SEVERITY_NUMBERS: tuple[SeverityNumber.ValueType, ...] = (
    SeverityNumber.SEVERITY_NUMBER_FATAL,  # emerg (21)
    SeverityNumber.SEVERITY_NUMBER_ERROR3,  # alert (19)
    SeverityNumber.SEVERITY_NUMBER_ERROR2,  # crit (18)
    SeverityNumber.SEVERITY_NUMBER_ERROR,  # err (17)
    SeverityNumber.SEVERITY_NUMBER_WARN,  # warning (13)
    SeverityNumber.SEVERITY_NUMBER_INFO2,  # notice (10)
    SeverityNumber.SEVERITY_NUMBER_INFO,  # info (9)
    SeverityNumber.SEVERITY_NUMBER_DEBUG,  # debug (5)
)
#: Statuses after which the same request is sent again, in place.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
#: A longer ``Retry-After`` is cut to this (the sender gives up on a link
#: whose window stays full without an ack for a minute).
RETRY_AFTER_MAX_S = 30.0
#: Attempts of one request that fail to connect, after a success, before
#: the session ends (the sender reconnects, or fails over).
CONNECT_ATTEMPTS = 6
CONNECT_TIMEOUT_S = 10.0
#: No byte of the response for this long: the attempt failed (retried).
READ_TIMEOUT_S = 30.0
#: Connections to the target at once; more requests in flight queue for one.
CONNECTIONS = 4
GZIP_LEVEL = 6
#: How much of an error response's body is logged.
LOGGED_BODY = 512


@dataclass
class OtlpStats:
    """What the outputs to one target URL did, across their connections
    (an output lasts one connection: :func:`stats_for` keeps these)."""

    requests: int = 0  #: requests the target took (2xx)
    retries: int = 0  #: requests sent again (429, 502, 503, 504, a failed connection)
    rejected_records: int = 0  #: records a partial success said the target dropped
    skipped_chunks: int = 0  #: chunks (or halves of them) answered 400: not sent again
    skipped_records: int = 0  #: the records in those


_STATS: dict[str, OtlpStats] = {}


def stats_for(url: str) -> OtlpStats:
    """The counts of the outputs to ``url`` (its full URL, path included) in this process."""
    stats = _STATS.get(url)
    if stats is None:
        stats = _STATS[url] = OtlpStats()
    return stats


# --- the request --------------------------------------------------------------

def _set(target: AnyValue, value: object) -> None:
    """An attribute's or the body's value: str as a string, bytes as bytes,
    a list as an array; anything else as its string form."""
    if isinstance(value, str):
        try:
            target.string_value = value
        except UnicodeEncodeError:  # lone surrogates (undecodable bytes kept by surrogateescape)
            target.bytes_value = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bytes | bytearray):
        target.bytes_value = bytes(value)
    elif isinstance(value, list | tuple):
        array = target.array_value
        array.SetInParent()  # (an empty list is an empty array, not no value)
        for item in value:
            _set(array.values.add(), item)
    else:
        _set(target, str(value))


def _add_key(attributes: Any, name: str) -> KeyValue:
    try:
        kv: KeyValue = attributes.add(key=name)
    except UnicodeEncodeError:
        kv = attributes.add(key=name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return kv


def _severity(severity: int) -> tuple[SeverityNumber.ValueType, str]:
    if 0 <= severity < len(SEVERITY_NUMBERS):
        return SEVERITY_NUMBERS[severity], SEVERITY_NAMES[severity]
    return SeverityNumber.SEVERITY_NUMBER_UNSPECIFIED, str(severity)


#: Attributes every record gets from its own columns; a field of one of
#: these names gives way to them (an attribute key must be unique).
OWN_ATTRIBUTES = frozenset({"log.source", "process.pid", "syslog.facility", "hostlog.origin", "hostlog.seq"})


def build_request(columns: Columns) -> ExportLogsServiceRequest:
    """The records of a batch as one export request: one ResourceLogs per
    (host, app), in the order they first appear, each with one ScopeLogs
    ``hostlog`` holding its records in batch order."""
    request = ExportLogsServiceRequest()
    groups: dict[tuple[str, str], Any] = {}  # (host, app) -> its ScopeLogs' log_records
    severities = [_severity(n) for n in range(len(SEVERITY_NUMBERS))]
    own = OWN_ATTRIBUTES
    for ts, host, source, app, pid, severity, facility, msg, fields, origin, seq in zip(*columns.columns):
        records = groups.get((host, app))
        if records is None:
            records = groups[host, app] = _scope(request, host, app)
        ts = max(0, ts)
        number, text = severities[severity] if 0 <= severity < len(severities) else _severity(severity)
        record = records.add(time_unix_nano=ts, observed_time_unix_nano=ts, severity_number=number,
                             severity_text=text)
        _set(record.body, msg)
        attributes = record.attributes
        for key, value in fields.items():
            if key not in own:
                _set(_add_key(attributes, key).value, value)
        _set(attributes.add(key="log.source").value, source)
        if pid is not None:
            attributes.add(key="process.pid").value.int_value = pid
        if facility is not None:
            attributes.add(key="syslog.facility").value.int_value = facility
        _set(attributes.add(key="hostlog.origin").value, origin)
        attributes.add(key="hostlog.seq").value.int_value = seq
    return request


def _scope(request: ExportLogsServiceRequest, host: str, app: str) -> Any:
    """A new ResourceLogs for ``host`` and ``app``; its ScopeLogs' records."""
    resource_logs = request.resource_logs.add()
    resource = resource_logs.resource.attributes
    if host:
        _set(resource.add(key="host.name").value, host)
    if app:
        _set(resource.add(key="service.name").value, app)
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = SCOPE_NAME
    scope_logs.scope.version = __version__
    return scope_logs.log_records


def encode_request(request: ExportLogsServiceRequest, encoding: Encoding) -> bytes:
    """The request's body: binary protobuf, or OTLP/JSON.

    OTLP/JSON is protobuf's JSON mapping with lowerCamelCase field names
    (``MessageToJson``'s default) and two exceptions: enums as integers
    (``use_integers_for_enums``), and trace and span ids as hex, not base64
    (hostlog's records carry none, so none are written). 64-bit integers
    are strings, which OTLP/JSON receivers accept.
    """
    if encoding == "json":
        text: str = json_format.MessageToJson(request, use_integers_for_enums=True, indent=None,
                                              ensure_ascii=False)
        return text.encode()
    body: bytes = request.SerializeToString()
    return body


def _content_type(encoding: Encoding) -> str:
    return "application/json" if encoding == "json" else "application/x-protobuf"


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an
    HTTP-date), at most :data:`RETRY_AFTER_MAX_S`; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # (an HTTP-date is GMT)
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, delay), RETRY_AFTER_MAX_S)


def _backoff(attempt: int) -> float:
    """The wait before retry ``attempt`` (0, 1, ...): 0.5 s doubling, at most 30 s, jittered down by up to half."""
    return min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2.0 ** attempt) * random.uniform(0.5, 1.0)


def _printable(body: bytes) -> str:
    text = body[:LOGGED_BODY].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip() or "(no body)"


# --- the output ---------------------------------------------------------------

class OtlpOutput:
    """One HTTP client session to an OTLP/HTTP logs endpoint: a request per
    chunk, several in flight, acknowledged in order."""

    def __init__(self, endpoint: Endpoint, identity: Identity,
                 ssl_context: Callable[[], ssl.SSLContext] | None, *, encoding: Encoding = "protobuf",
                 gzip: bool = True, headers: Mapping[str, str] | None = None,
                 stats: OtlpStats | None = None) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self.ssl_context = ssl_context
        self.encoding: Encoding = encoding
        self.gzip = gzip
        self.url = endpoint.url if endpoint.path else endpoint.url + DEFAULT_PATH
        self.headers = {"User-Agent": f"hostlog/{__version__}", "Content-Type": _content_type(encoding),
                        **(headers or {})}
        if gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.stats = stats if stats is not None else stats_for(self.url)
        self.session: aiohttp.ClientSession | None = None
        self._pending: collections.deque[tuple[int, asyncio.Task[None]]] = collections.deque()
        self._sent = asyncio.Event()
        self._delivered = False  # a request of this session succeeded
        self._warned: set[str] = set()  # retry reasons logged (once each per session)
        self._sleep: Callable[[float], Any] = asyncio.sleep  # (tests make it instant)

    async def open(self) -> None:
        """The client session; no request (OTLP cannot say what a target holds)."""
        ctx: ssl.SSLContext | bool = False
        if self.endpoint.scheme == "https":
            ctx = self.ssl_context() if self.ssl_context is not None else True
        connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=ctx)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True,
                                             trust_env=False)
        return None

    async def send(self, chunk: Chunk) -> None:
        task = asyncio.create_task(self._export(chunk), name=f"otlp {self.url} seq {chunk.first}..{chunk.last}")
        self._pending.append((chunk.last, task))
        self._sent.set()

    async def drain(self) -> None:
        """Nothing to wait for: requests go out on their own, and the
        sender's window bounds how many are in flight."""

    async def acks(self) -> AsyncIterator[int]:
        """The ``last`` seq of each chunk, in the order sent, once its request
        (and every earlier one) is done; raises what ended a request."""
        while True:
            while not self._pending:
                self._sent.clear()
                await self._sent.wait()
            last, task = self._pending[0]
            await asyncio.wait([task])  # (not `await task`: cancelling this must not cancel it)
            task.result()
            self._pending.popleft()
            yield last

    def counts(self) -> dict[str, int]:
        """What the outputs to this URL did so far (for status and metrics)."""
        return dataclasses.asdict(self.stats)

    async def close(self) -> None:
        tasks = [task for _, task in self._pending]
        self._pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
            for task in tasks:  # (retrieved: no "exception never retrieved" at exit)
                if task.done() and not task.cancelled():
                    task.exception()
        if self.session is not None:
            session, self.session = self.session, None
            try:
                await asyncio.wait_for(session.close(), 2.0)
            except (OSError, TimeoutError, aiohttp.ClientError):
                pass

    # -- one chunk -------------------------------------------------------------------
    async def _export(self, chunk: Chunk) -> None:
        columns = await asyncio.to_thread(decode_chunk, chunk)
        await self._deliver(columns, f"seq {chunk.first}..{chunk.last}")

    def _body(self, columns: Columns) -> bytes:
        body = encode_request(build_request(columns), self.encoding)
        return gzip_module.compress(body, GZIP_LEVEL, mtime=0) if self.gzip else body

    async def _deliver(self, columns: Columns, what: str) -> None:
        """Send the records until the target takes them, or says it never will."""
        body = await asyncio.to_thread(self._body, columns)
        attempt = failed_connects = 0
        while True:
            try:
                status, headers, payload = await self._post(body)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{self.url}: {str(exc) or type(exc).__name__}"
                if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError | aiohttp.InvalidURL):
                    raise ConnectionError(reason) from exc  # (no retry helps)
                failed_connects += 1
                if not self._delivered or failed_connects >= CONNECT_ATTEMPTS:
                    raise ConnectionError(reason) from exc
                await self._retry(_backoff(attempt), reason, what)
                attempt += 1
                continue
            if 200 <= status < 300:
                self._delivered = True
                self.stats.requests += 1
                self._partial_success(headers, payload, what)
                return
            reason = f"{self.url} answered {status}"
            if status in RETRY_STATUSES:
                wait = retry_after(headers.get("Retry-After"))
                await self._retry(_backoff(attempt) if wait is None else wait, reason, what)
                attempt += 1
                continue
            if status == 413 and len(columns) > 1:
                log.warning("forward otlp: %s (too large) for %s: sending it in halves", reason, what)
                half = len(columns) // 2
                await self._deliver(columns.slice(0, half), what)
                await self._deliver(columns.slice(half, len(columns)), what)
                return
            if status in (400, 413):
                self.stats.skipped_chunks += 1
                self.stats.skipped_records += len(columns)
                log.error("forward otlp: %s for %s: %s; skipping its %d records (sending them again "
                          "would get the same answer)", reason, what, _printable(payload), len(columns))
                return
            raise Refused(f"{reason}: {_printable(payload)}", rejected=400 <= status < 500)

    async def _retry(self, wait: float, reason: str, what: str) -> None:
        self.stats.retries += 1
        level = logging.DEBUG if reason in self._warned else logging.WARNING
        self._warned.add(reason)
        log.log(level, "forward otlp: %s for %s; trying again in %.1f s", reason, what, wait)
        await self._sleep(wait)

    async def _post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """One attempt: the response's status, headers and body."""
        if self.session is None:
            raise ConnectionError(f"{self.url}: not open")
        async with self.session.post(self.url, data=body, headers=self.headers, allow_redirects=False) as resp:
            return resp.status, resp.headers, await resp.read()

    def _partial_success(self, headers: Mapping[str, str], payload: bytes, what: str) -> None:
        if not payload:
            return
        response = ExportLogsServiceResponse()
        try:
            if headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json":
                json_format.Parse(payload, response, ignore_unknown_fields=True)
            else:
                response.ParseFromString(payload)
        except (DecodeError, json_format.ParseError, ValueError):
            return  # (a body that is not a response: the status said success)
        rejected = response.partial_success.rejected_log_records
        message = response.partial_success.error_message
        if rejected > 0:
            self.stats.rejected_records += rejected
            log.warning("forward otlp: %s took %s but rejected %d of its records: %s", self.url, what,
                        rejected, message or "(no reason given)")
        elif message:  # (a warning: everything was taken)
            log.info("forward otlp: %s took %s, and says: %s", self.url, what, message)
