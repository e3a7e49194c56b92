"""Sans-IO Fluent Forward protocol v1, the server side: bytes in, events out.

One :class:`ForwardServerConnection` per client connection. ``receive_data()``
takes whatever bytes the socket returned (``b""`` is EOF), ``next_event()``
returns the next event or :data:`NEED_DATA`, ``data_to_send()`` the bytes to
write back (the HELO and PONG of the handshake), and :func:`ack_bytes` makes
the ``{"ack": chunk}`` reply the I/O half sends once a message's events are
durable. No networking, no clock except ``now_ns`` (for time 0 or nil).

Errors: :class:`FluentProtocolError` means the client sent something the
protocol does not allow (malformed msgpack, an array that is no event mode, a
message over ``max_message``); its text says why, and the connection is
done. A client that fails the handshake is not an error: it gets
:class:`Rejected` and a PONG that says why. Anything else is a bug.

Theory of operation (the specification is "Forward Protocol Specification
v1", fluentd wiki; the section names below are its own):

* The stream is msgpack objects back to back with no other framing; one read
  may hold part of an object or several objects. A streaming unpacker keeps
  the part of a message it has parsed; we count the bytes since the last
  complete object ourselves, because msgpack's buffer limit alone does not
  bound an array of many small items (they leave its buffer as they parse).
* State: ``HANDSHAKE`` (shared key configured: HELO sent, waiting for PING),
  ``TRANSPORT`` (events), ``CLOSED`` (EOF, or the handshake refused), and
  ``ERROR`` (a protocol error was raised; every later call raises it again).
  :data:`_TRANSITIONS` is the whole table; an input the table does not have
  for the state is a protocol error.
* Event modes (section "Event Modes"), told apart by the second element:
  an array is Forward, bin (or str, v0) is PackedForward, anything else is
  the time of a Message. ``option.compressed == "gzip"`` makes a
  PackedForward a CompressedPackedForward; several gzip members one after
  another are one stream.
* Time (section "EventTime Ext Format"): ext type 0 with 8 bytes (big-endian
  uint32 seconds, uint32 nanoseconds), an integer (seconds) or a float
  (seconds, as PyPI fluent-logger sends by default); msgpack's own timestamp
  (ext -1) too. 0 or nil mean "now", as fluentd reads them. Seconds must be in
  0 .. 2**32 - 1, the range EventTime can carry.
* Fluent Bit's event format with metadata, ``[[time, metadata], record]``
  (its ``retain_metadata_in_forward_mode``), is read as ``[time, record]``.
* A nil object is a heartbeat (section "Heartbeat Message"): ignored.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgpack

from hostlog.errors import HostlogError

__all__ = [
    "NEED_DATA",
    "Authenticated",
    "Closed",
    "Entries",
    "Event",
    "EventTime",
    "FluentProtocolError",
    "ForwardServerConnection",
    "Mode",
    "NeedData",
    "Rejected",
    "State",
    "ack_bytes",
    "digest",
    "event_time_ns",
    "gunzip",
]


class FluentProtocolError(HostlogError):
    """The client broke the Forward protocol; the message says how. The
    connection cannot go on: what follows the bad bytes has no known start."""


class State(enum.Enum):
    HANDSHAKE = "handshake"  # HELO sent, waiting for the client's PING
    TRANSPORT = "transport"  # events
    CLOSED = "closed"  # EOF seen, or the handshake refused (PONG false sent)
    ERROR = "error"  # a FluentProtocolError was raised


class _Input(enum.Enum):
    PING = "a PING"
    EVENTS = "an event message"
    NIL = "a nil heartbeat"
    EOF = "end of stream"


#: (state, input) -> state after it. Not in the table: a protocol error.
#: (HANDSHAKE, PING) goes to CLOSED instead when the PING is refused.
_TRANSITIONS: Final[dict[tuple[State, _Input], State]] = {
    (State.HANDSHAKE, _Input.PING): State.TRANSPORT,
    (State.HANDSHAKE, _Input.EOF): State.CLOSED,
    (State.TRANSPORT, _Input.EVENTS): State.TRANSPORT,
    (State.TRANSPORT, _Input.NIL): State.TRANSPORT,
    (State.TRANSPORT, _Input.EOF): State.CLOSED,
}

Mode = Literal["Message", "Forward", "PackedForward", "CompressedPackedForward"]

#: The largest seconds value taken: EventTime's uint32 range (keeps ns in int64).
MAX_SECONDS: Final = 2**32 - 1


class NeedData:
    """The type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event()`` has nothing more until more bytes (or EOF) arrive.
NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class EventTime:
    """The Forward protocol's time: msgpack ext type 0."""

    seconds: int
    nanoseconds: int

    @property
    def ns(self) -> int:
        return self.seconds * 1_000_000_000 + self.nanoseconds


@dataclass(slots=True)
class Entries:
    """The events of one message (one Message, or all entries of a Forward or
    PackedForward). ``chunk`` is the option's ack id (``None``: no ack wanted)."""

    tag: str
    times: list[int]  # ns since the epoch, one per record
    records: list[dict[str | bytes, Any]]
    chunk: str | bytes | None = None
    mode: Mode = "Message"
    size: int | None = None  # option.size as sent (not checked against the count)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The client passed the handshake; its PONG is in ``data_to_send()``."""

    client_hostname: str
    username: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The client failed the handshake; a PONG false with ``reason`` is in
    ``data_to_send()``: send it, then close the connection."""

    reason: str
    client_hostname: str


@dataclass(frozen=True, slots=True)
class Closed:
    """EOF. ``incomplete``: bytes of a message the client did not finish."""

    incomplete: int = 0


Event = Entries | Authenticated | Rejected | Closed


def digest(*parts: str | bytes) -> str:
    """Lowercase hex SHA-512 of the parts' bytes, concatenated (section
    "Handshake Messages": every digest is made so)."""
    h = hashlib.sha512()
    for part in parts:
        h.update(_raw(part))
    return h.hexdigest()


def ack_bytes(chunk: str | bytes) -> bytes:
    """``{"ack": chunk}``, the chunk echoed as it came (str or bin, same bytes)."""
    out: bytes = _PACKER.pack({"ack": chunk})
    return out


def event_time_ns(value: object, now_ns: Callable[[], int] = time.time_ns) -> int:
    """An event's time as ns since the epoch; FluentProtocolError if it is none."""
    kind = type(value)
    if kind is EventTime:
        assert isinstance(value, EventTime)
        if value.seconds == 0 and value.nanoseconds == 0:
            return now_ns()
        return value.ns
    if kind is int:
        assert isinstance(value, int)
        if value == 0:
            return now_ns()
        if 0 < value <= MAX_SECONDS:
            return value * 1_000_000_000
        raise FluentProtocolError(f"event time {value} is out of range (0 .. {MAX_SECONDS} s)")
    if kind is float:
        assert isinstance(value, float)
        if value == 0.0:
            return now_ns()
        if not (math.isfinite(value) and 0.0 < value <= MAX_SECONDS):
            raise FluentProtocolError(f"event time {value!r} is out of range (0 .. {MAX_SECONDS} s)")
        # split before scaling: seconds * 1e9 as a float would lose the
        # nanoseconds; truncated as fluent-logger makes its EventTime
        seconds = int(value)
        total = seconds * 1_000_000_000 + int((value - seconds) * 1e9)
        return total or now_ns()  # under a nanosecond after the epoch: time 0, which means "now"
    if value is None:
        return now_ns()
    if kind is msgpack.Timestamp:
        stamp: Any = value
        ns: int = stamp.to_unix_nano()
        if 0 <= ns <= MAX_SECONDS * 1_000_000_000:
            return ns or now_ns()
        raise FluentProtocolError(f"event time {ns} ns is out of range")
    raise FluentProtocolError(f"event time must be an integer, a float or EventTime, not {_what(value)}")


def gunzip(data: bytes, limit: int) -> bytes:
    """The gzip members of ``data``, one after another, decompressed; at most
    ``limit`` bytes out, so a small bomb cannot take the memory."""
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
        try:
            piece = inflater.decompress(rest, limit - total + 1)
        except zlib.error as exc:
            raise FluentProtocolError(f"CompressedPackedForward: bad gzip data: {exc}") from exc
        total += len(piece)
        if total > limit:
            raise FluentProtocolError(f"CompressedPackedForward: entries larger than max_message "
                                      f"({limit} bytes) once decompressed")
        out.append(piece)
        if not inflater.eof:
            raise FluentProtocolError("CompressedPackedForward: the gzip data ends inside a member")
        rest = inflater.unused_data
    return b"".join(out)


def _raw(value: str | bytes) -> bytes:
    # strings were decoded with surrogateescape: this gives back their bytes
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _what(value: object) -> str:
    """A value's kind as the error messages name it (no value: it may be huge)."""
    if value is None:
        return "nil"
    if isinstance(value, msgpack.ExtType):
        return f"ext type {value.code}"
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             bytes: "a bin", list: "an array", dict: "a map", EventTime: "an EventTime"}
    return names.get(type(value), f"a {type(value).__name__}")


def _ext(code: int, data: bytes) -> object:
    if code == 0:
        if len(data) != 8:
            raise FluentProtocolError(f"EventTime (ext type 0) must hold 8 bytes, not {len(data)}")
        seconds, nanoseconds = struct.unpack(">II", data)
        if nanoseconds >= 1_000_000_000:
            raise FluentProtocolError(f"EventTime nanoseconds {nanoseconds} is not below 10**9")
        return EventTime(seconds, nanoseconds)
    return msgpack.ExtType(code, data)


def _unpacker(max_message: int) -> Any:
    # raw=False + surrogateescape: str objects come out as str, and a str that
    # is not UTF-8 keeps its bytes (encode with surrogateescape gives them back)
    return msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=True,
                            max_buffer_size=max_message, ext_hook=_ext)


_PACKER: Final = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


@dataclass
class _Handshake:
    """What the server says in HELO and checks in PING."""

    shared_key: str
    users: Mapping[str, str]
    server_hostname: str
    nonce: bytes
    auth_salt: bytes  # empty when users are not checked


@dataclass
class ForwardServerConnection:
    """The server side of one Forward connection (see the module docstring).

    ``nonce`` and ``auth_salt`` are 16 random bytes each unless given (a test
    replaying a captured handshake gives the captured ones).
    """

    max_message: int = 64 * 1024 * 1024
    shared_key: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    server_hostname: str = ""
    nonce: bytes | None = None
    auth_salt: bytes | None = None
    now_ns: Callable[[], int] = time.time_ns

    def __post_init__(self) -> None:
        if self.max_message < 1:
            raise ValueError("max_message must be at least 1")
        self.state = State.TRANSPORT
        self.client_hostname: str | None = None  # from the PING
        self.username: str | None = None
        self.error: FluentProtocolError | None = None
        self._unpacker: Any = _unpacker(self.max_message)
        self._incoming: deque[memoryview] = deque()  # received, not yet fed
        self._fed = 0  # bytes fed to the unpacker
        self._boundary = 0  # stream offset where the current message starts
        self._objects = 0  # complete objects read
        self._eof = False
        self._outgoing: list[bytes] = []
        self._handshake: _Handshake | None = None
        if self.shared_key is not None:
            self._handshake = _Handshake(
                self.shared_key, dict(self.users), self.server_hostname,
                self.nonce if self.nonce is not None else os.urandom(16),
                (self.auth_salt if self.auth_salt is not None else os.urandom(16)) if self.users else b"")
            self.state = State.HANDSHAKE
            # "auth" is "" (str) when user authentication is off, as fluentd and the npm server send it
            auth: str | bytes = self._handshake.auth_salt or ""
            self._outgoing.append(_PACKER.pack(
                ["HELO", {"nonce": self._handshake.nonce, "auth": auth, "keepalive": True}]))

    # -- the calls -------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means EOF."""
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        if data:
            self._incoming.append(memoryview(data))
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        """Bytes for the client (HELO, PONG), emptied by the call."""
        out = b"".join(self._outgoing)
        self._outgoing.clear()
        return out

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA; raises FluentProtocolError."""
        if self.error is not None:
            raise FluentProtocolError(f"the connection already failed: {self.error}")
        if self.state is State.CLOSED:
            return NEED_DATA
        try:
            while True:
                found, obj = self._next_object()
                if not found:
                    if not self._eof:
                        return NEED_DATA
                    self._step(_Input.EOF)
                    return Closed(self._fed - self._boundary + sum(map(len, self._incoming)))
                event = self._handle(obj)
                if event is not None:
                    return event
        except FluentProtocolError as exc:
            self.state = State.ERROR
            self.error = exc
            raise

    def events(self) -> Iterator[Event]:
        """Every event until NEED_DATA."""
        while True:
            event = self.next_event()
            if isinstance(event, NeedData):
                return
            yield event

    # -- the stream ------------------------------------------------------------------------
    def _next_object(self) -> tuple[bool, Any]:
        unpacker = self._unpacker
        while True:
            try:
                obj = next(unpacker)
            except StopIteration:
                pass
            except ValueError as exc:  # msgpack's FormatError, StackError, limits, map keys
                raise FluentProtocolError(f"malformed msgpack: {exc or type(exc).__name__}") from exc
            else:
                self._boundary = unpacker.tell()
                self._objects += 1
                return True, obj
            if not self._incoming:
                return False, None
            # Feed no more than what keeps the message under way within
            # max_message: the unpacker's buffer then never overflows either.
            room = self.max_message - (self._fed - self._boundary)
            if room <= 0:
                raise FluentProtocolError(f"a message larger than max_message ({self.max_message} bytes)")
            piece = self._incoming[0]
            if len(piece) > room:
                self._incoming[0] = piece[room:]
                piece = piece[:room]
            else:
                self._incoming.popleft()
            unpacker.feed(piece)
            self._fed += len(piece)

    def _step(self, what: _Input) -> None:
        after = _TRANSITIONS.get((self.state, what))
        if after is None:
            expected = "a PING" if self.state is State.HANDSHAKE else "an event message"
            raise FluentProtocolError(f"{what.value} is not allowed in the {self.state.value} state "
                                      f"(expected {expected})")
        self.state = after

    def _handle(self, obj: Any) -> Event | None:
        if obj is None:
            self._step(_Input.NIL)
            return None
        if type(obj) is not list:
            hint = ""
            if self._objects == 1 and obj in (0x7B, 0x5B):  # '{' or '[' read as a fixint
                hint = " (JSON input is not supported: send msgpack)"
            raise FluentProtocolError(f"expected an array, got {_what(obj)}{hint}")
        if self.state is State.HANDSHAKE:
            if not (obj and obj[0] == "PING"):
                self._step(_Input.EVENTS)  # raises: events before the handshake
            return self._ping(obj)
        self._step(_Input.EVENTS)
        return _entries(obj, self.max_message, self.now_ns)

    # -- the handshake (section "Handshake Messages") -----------------------------------------
    def _ping(self, obj: list[Any]) -> Event:
        # ["PING", client_hostname, shared_key_salt, hex digest, username, password digest]
        if len(obj) != 6:
            raise FluentProtocolError(f"PING must have 6 elements, not {len(obj)}")
        _, hostname, salt, key_digest, username, password_digest = obj
        for name, value in (("client hostname", hostname), ("shared key digest", key_digest),
                            ("username", username), ("password digest", password_digest)):
            if not isinstance(value, str):
                raise FluentProtocolError(f"PING: the {name} must be a string, not {_what(value)}")
        if not isinstance(salt, str | bytes):
            raise FluentProtocolError(f"PING: the shared key salt must be a string or bin, not {_what(salt)}")
        hs = self._handshake
        assert hs is not None
        self.client_hostname = hostname
        want = digest(salt, hostname, hs.nonce, hs.shared_key)
        if not hmac.compare_digest(want.encode(), _raw(key_digest).lower()):
            return self._refuse("shared_key mismatch", hostname)
        if hs.users:
            password = hs.users.get(username)
            if password is None or not hmac.compare_digest(
                    digest(hs.auth_salt, username, password).encode(), _raw(password_digest).lower()):
                return self._refuse("username/password mismatch", hostname)
            self.username = username
        self._step(_Input.PING)
        # the PONG proves the server knows the key too: same salt and nonce, our hostname
        self._outgoing.append(_PACKER.pack(
            ["PONG", True, "", hs.server_hostname,
             digest(salt, hs.server_hostname, hs.nonce, hs.shared_key)]))
        return Authenticated(hostname, self.username or "")

    def _refuse(self, reason: str, hostname: str) -> Rejected:
        # fluentd's answer to a failed PING: ["PONG", false, reason, "", ""], then close
        self._outgoing.append(_PACKER.pack(["PONG", False, reason, "", ""]))
        self.state = State.CLOSED
        return Rejected(reason, hostname)


# -- the event modes ----------------------------------------------------------------------

def _entries(obj: list[Any], max_message: int, now_ns: Callable[[], int]) -> Entries:
    """One event message (section "Event Modes") as Entries."""
    if not 2 <= len(obj) <= 4:
        raise FluentProtocolError(f"an event message is an array of 2 to 4 elements, not {len(obj)}")
    tag = obj[0]
    if type(tag) is not str:
        raise FluentProtocolError(f"the tag must be a string, not {_what(tag)}")
    second = obj[1]
    if type(second) is list:  # Forward: [tag, [[time, record], ...], option?]
        if len(obj) > 3:
            raise FluentProtocolError("Forward mode: [tag, entries, option] has at most 3 elements")
        option = _option(obj[2] if len(obj) == 3 else None)
        times, records = _read_entries(second, now_ns, "Forward")
        return Entries(tag, times, records, option.chunk, "Forward", option.size)
    if type(second) is bytes or type(second) is str:  # PackedForward: [tag, bin, option?]
        if len(obj) > 3:
            raise FluentProtocolError("PackedForward mode: [tag, entries, option] has at most 3 elements")
        option = _option(obj[2] if len(obj) == 3 else None)
        packed = _raw(second)
        mode: Mode = "PackedForward"
        if option.compressed == "gzip":
            packed = gunzip(packed, max_message)
            mode = "CompressedPackedForward"
        elif option.compressed not in (None, "text"):
            raise FluentProtocolError(f"compressed {option.compressed!r} is not supported (only gzip)")
        elif packed[:2] == b"\x1f\x8b":  # (an entry starts with an array header, never 0x1f)
            raise FluentProtocolError("PackedForward: the entries are gzip data, but option compressed "
                                      "is not \"gzip\"")
        times, records = _read_entries(_unpack_entries(packed, max_message), now_ns, mode)
        return Entries(tag, times, records, option.chunk, mode, option.size)
    # Message: [tag, time, record, option?]
    if len(obj) < 3:
        raise FluentProtocolError(f"Message mode: [tag, time, record] needs 3 elements, not {len(obj)}"
                                  f" (the second is {_what(second)}, which is no entries)")
    option = _option(obj[3] if len(obj) == 4 else None)
    record = obj[2]
    if record is None:  # fluentd drops an event whose record is nil
        return Entries(tag, [], [], option.chunk, "Message", option.size)
    if type(record) is not dict:
        raise FluentProtocolError(f"the record must be a map, not {_what(record)}")
    return Entries(tag, [event_time_ns(second, now_ns)], [record], option.chunk, "Message", option.size)


@dataclass(frozen=True, slots=True)
class _Option:
    chunk: str | bytes | None
    size: int | None
    compressed: str | None


def _option(value: Any) -> _Option:
    # Unknown keys are ignored (fluent_signal and whatever comes next).
    if value is None:
        return _Option(None, None, None)
    if type(value) is not dict:
        raise FluentProtocolError(f"the option must be a map, not {_what(value)}")
    chunk = value.get("chunk")
    if chunk is not None and not isinstance(chunk, str | bytes):
        raise FluentProtocolError(f"option chunk must be a string, not {_what(chunk)}")
    size = value.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise FluentProtocolError(f"option size must be a count, not {_what(size)}")
    compressed = value.get("compressed")
    if compressed is not None and type(compressed) is not str:
        raise FluentProtocolError(f"option compressed must be a string, not {_what(compressed)}")
    return _Option(chunk, size, compressed)


def _unpack_entries(packed: bytes, max_message: int) -> list[Any]:
    """The [time, record] arrays of a PackedForward's concatenated stream."""
    unpacker = _unpacker(max(max_message, len(packed)))
    unpacker.feed(packed)
    entries: list[Any] = []
    end = 0  # (tell() counts the bytes of an unfinished object too: note where each one ends)
    try:
        for entry in unpacker:
            entries.append(entry)
            end = unpacker.tell()
    except ValueError as exc:
        raise FluentProtocolError(f"PackedForward: malformed msgpack in the entries: "
                                  f"{exc or type(exc).__name__}") from exc
    if end != len(packed):
        raise FluentProtocolError(f"PackedForward: the entries end inside an entry "
                                  f"({len(packed) - end} bytes left over)")
    return entries


def _read_entries(entries: list[Any], now_ns: Callable[[], int],
                  mode: Mode) -> tuple[list[int], list[dict[str | bytes, Any]]]:
    times: list[int] = []
    records: list[dict[str | bytes, Any]] = []
    for entry in entries:
        if type(entry) is not list or len(entry) != 2:
            raise FluentProtocolError(f"{mode}: an entry must be [time, record], not {_what(entry)}"
                                      + (f" of {len(entry)} elements" if type(entry) is list else ""))
        when, record = entry
        if type(when) is list and len(when) == 2 and type(when[1]) is dict:
            when = when[0]  # Fluent Bit's [[time, metadata], record]
        if record is None:
            continue  # dropped, as fluentd drops it
        if type(record) is not dict:
            raise FluentProtocolError(f"{mode}: the record must be a map, not {_what(record)}")
        times.append(event_time_ns(when, now_ns))
        records.append(record)
    return times, records
