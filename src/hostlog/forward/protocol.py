"""The peer protocol between agents, sans I/O: events in, bytes out, bytes in, events out.

Agent-to-agent forwarding (docs/protocol.md, "Peer protocol") speaks framed
msgpack over one stream (TCP or TLS). This module is only the codec and the
state machine, in the style of h11: a :class:`Connection` turns the events this
side sends into the bytes to write (:meth:`Connection.send`), and the bytes read
from the peer into events (:meth:`Connection.receive_data`, then
:meth:`Connection.next_event` or :meth:`Connection.events`). It opens no socket,
keeps no time and never blocks; the sender and the receiver that drive it are
written on top of it.

A frame is a 4-byte big-endian body length (:data:`LENGTH`) and a msgpack map
whose key ``"t"`` names its type. The conversation::

    client (sender, edge)             server (receiver, central)
    Hello       ------------------->
                <-------------------  Welcome   (or Error)
    Chunk       ------------------->
    Chunk       ------------------->
                <-------------------  Ack       (cumulative, per origin)
    ...
    Error       <------------------>  Error     (either side, then it closes)

What the peer sends that the protocol does not allow (garbage, a wrong version,
an oversized frame, a frame out of order) raises :class:`RemoteProtocolError`
from :meth:`Connection.next_event`, and nothing else ever does; what this side
tries to send against the rules raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

import msgpack

from hostlog.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "LENGTH",
    "MAX_FRAME",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Ack",
    "Chunk",
    "Connection",
    "Error",
    "Event",
    "Hello",
    "NeedData",
    "Role",
    "Welcome",
]

#: The version this side speaks; a peer that announces another one is refused.
PROTOCOL_VERSION: Final = 1
#: The default largest frame body accepted (and sent), in bytes.
MAX_FRAME: Final = 64 * 1024 * 1024
#: The length prefix of every frame: the body's size, 4 bytes big-endian.
LENGTH: Final = struct.Struct(">I")

_U64: Final = 2**64 - 1  # the largest integer msgpack carries
_AGENT_ID: Final = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
_REASON_MAX: Final = 60  # characters of a peer's value quoted in an error message


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, the first frame: who the sender is."""

    agent: str  #: the sender's agent id (32 lowercase hex digits, a uuid4 hex)
    host: str  #: the sender's host name
    token: str | None = None  #: the shared token, if the receiver wants one
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> client, the reply to Hello: who the receiver is and where to resume."""

    agent: str  #: the receiver's agent id
    held: int  #: the highest seq of this sender's stream the receiver holds durably (0: none)
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Chunk:
    """Client -> server, after Welcome: ``count`` records of the sender's spool from seq ``first``."""

    origin: str  #: the agent id of the sender's spool
    first: int  #: the sender's spool seq of the first record in it (>= 1)
    count: int  #: the records in it (>= 1)
    chunk_len: int  #: the chunk's length once LZ4-block-decompressed (>= 0)
    data: bytes  #: the chunk, LZ4 block compressed (no size prefix), as the spool holds it

    @property
    def last(self) -> int:
        """The seq of the last record in the chunk."""
        return self.first + self.count - 1


@dataclass(frozen=True, slots=True)
class Ack:
    """Server -> client, cumulative: every record of ``origin`` up to ``seq`` is durable at the receiver."""

    origin: str
    seq: int


@dataclass(frozen=True, slots=True)
class Error:
    """Either direction: why this side stops; its sender closes the connection afterwards.

    ``retry``: try again later (the receiver's spool is full, it is shutting down);
    ``rejected``: do not send this again (bad token, wrong version, a broken frame).
    """

    kind: Literal["retry", "rejected"]
    reason: str


Event = Hello | Welcome | Chunk | Ack | Error


class NeedData:
    """What :meth:`Connection.next_event` returns when no complete event is buffered."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: The one instance of :class:`NeedData`.
NEED_DATA: Final = NeedData()


class Role(enum.Enum):
    CLIENT = "client"  #: the sender (edge): sends Hello and Chunk
    SERVER = "server"  #: the receiver (central): sends Welcome and Ack


# -- the codec -------------------------------------------------------------------------------------

# The keys of each frame type's map, exactly: a frame with others is refused.
_KEYS: Final[dict[str, frozenset[str]]] = {
    "hello": frozenset(("t", "v", "agent", "host", "token")),
    "welcome": frozenset(("t", "v", "agent", "held")),
    "chunk": frozenset(("t", "origin", "first", "count", "clen", "data")),
    "ack": frozenset(("t", "origin", "seq")),
    "error": frozenset(("t", "kind", "reason")),
}
_TYPE_NAME: Final[dict[type, str]] = {Hello: "hello", Welcome: "welcome", Chunk: "chunk", Ack: "ack", Error: "error"}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX] + "..."


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= _U64


def _problem(event: Event) -> str | None:
    """What is wrong with an event's fields, or None: the same rules both ways."""
    if isinstance(event, Chunk):
        if not (isinstance(event.origin, str) and _AGENT_ID.fullmatch(event.origin)):
            return f"origin must be an agent id (32 hex digits), not {_short(event.origin)}"
        if not _is_int(event.first, 1):
            return f"first must be an int >= 1, not {_short(event.first)}"
        if not _is_int(event.count, 1):
            return f"count must be an int >= 1, not {_short(event.count)}"
        if event.first + event.count - 1 > _U64:
            return f"first + count - 1 is past {_U64}"
        if not _is_int(event.chunk_len, 0):
            return f"chunk_len must be an int >= 0, not {_short(event.chunk_len)}"
        if not isinstance(event.data, bytes):
            return f"data must be bytes, not {type(event.data).__name__}"
    elif isinstance(event, Ack):
        if not (isinstance(event.origin, str) and _AGENT_ID.fullmatch(event.origin)):
            return f"origin must be an agent id (32 hex digits), not {_short(event.origin)}"
        if not _is_int(event.seq, 0):
            return f"seq must be an int >= 0, not {_short(event.seq)}"
    elif isinstance(event, Hello):
        if not _is_int(event.version, 0):
            return f"version must be an int >= 0, not {_short(event.version)}"
        if not (isinstance(event.agent, str) and _AGENT_ID.fullmatch(event.agent)):
            return f"agent must be an agent id (32 hex digits), not {_short(event.agent)}"
        if not isinstance(event.host, str):
            return f"host must be a str, not {_short(event.host)}"
        if not (event.token is None or isinstance(event.token, str)):
            return f"token must be a str or nil, not {type(event.token).__name__}"
    elif isinstance(event, Welcome):
        if not _is_int(event.version, 0):
            return f"version must be an int >= 0, not {_short(event.version)}"
        if not (isinstance(event.agent, str) and _AGENT_ID.fullmatch(event.agent)):
            return f"agent must be an agent id (32 hex digits), not {_short(event.agent)}"
        if not _is_int(event.held, 0):
            return f"held must be an int >= 0, not {_short(event.held)}"
    elif isinstance(event, Error):
        if event.kind not in ("retry", "rejected"):
            return f"kind must be 'retry' or 'rejected', not {_short(event.kind)}"
        if not isinstance(event.reason, str):
            return f"reason must be a str, not {_short(event.reason)}"
    return None


def _bin_header(n: int) -> bytes:
    """The msgpack header of a bin of n bytes (bin 8, bin 16 or bin 32)."""
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _encode(event: Event) -> tuple[bytes, bytes]:
    """The frame body of an event, in two parts: a chunk's data is the second, uncopied."""
    if isinstance(event, Chunk):
        # The map with an empty bin for "data", which packs last as b"\xc4\x00"; that is
        # cut off and the real bin header put instead, so the (large) data is copied once,
        # into the frame, and never into an intermediate msgpack buffer.
        head: bytes = msgpack.packb(
            {"t": "chunk", "origin": event.origin, "first": event.first, "count": event.count,
             "clen": event.chunk_len, "data": b""}, use_bin_type=True)
        return head[:-2] + _bin_header(len(event.data)), event.data
    fields: dict[str, Any]
    if isinstance(event, Ack):
        fields = {"t": "ack", "origin": event.origin, "seq": event.seq}
    elif isinstance(event, Hello):
        fields = {"t": "hello", "v": event.version, "agent": event.agent, "host": event.host, "token": event.token}
    elif isinstance(event, Welcome):
        fields = {"t": "welcome", "v": event.version, "agent": event.agent, "held": event.held}
    else:
        fields = {"t": "error", "kind": event.kind, "reason": event.reason}
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    return body, b""


def _decode(t: str, body: dict[Any, Any]) -> Event:
    """The event of a frame map whose type and keys were checked (its values not yet)."""
    if t == "chunk":
        return Chunk(body["origin"], body["first"], body["count"], body["clen"], body["data"])
    if t == "ack":
        return Ack(body["origin"], body["seq"])
    if t == "hello":
        return Hello(body["agent"], body["host"], body["token"], body["v"])
    if t == "welcome":
        return Welcome(body["agent"], body["held"], body["v"])
    return Error(body["kind"], body["reason"])


# -- the state machine -----------------------------------------------------------------------------


class Connection:
    """One side of a peer connection: the protocol's state, a receive buffer, no I/O.

    * ``send(event)`` returns the bytes to write, or raises :class:`LocalProtocolError`
      when the event is not allowed now (or its fields are invalid); the state
      changes only when it returns.
    * ``receive_data(data)`` buffers bytes read from the peer; ``b""`` is the peer's EOF.
    * ``next_event()`` returns the next complete event, or :data:`NEED_DATA`; it raises
      :class:`RemoteProtocolError` for anything the peer was not allowed to send, and
      the connection is then closed. Calling it again raises the same error again.

    Closing: once an :class:`Error` was sent or received, a protocol error was
    raised, or the peer's EOF was received, ``closed`` is true and :meth:`send`
    takes only an :class:`Error`, and only if none was sent or received yet (so
    the I/O layer can tell the peer why it is dropped: ``Error("rejected",
    str(exc))``). After a received Error, ``next_event`` returns ``NEED_DATA`` for
    good and whatever the peer sends after it is discarded.
    """

    def __init__(self, role: Role, *, max_frame: int = MAX_FRAME) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, not {role!r}")
        if not 1 <= max_frame <= 0xFFFFFFFF:
            raise ValueError(f"max_frame must be 1..{0xFFFFFFFF}, not {max_frame}")
        self.role: Final = role
        self.max_frame: Final = max_frame
        #: (server side) the client's Hello, once received and accepted
        self.peer_hello: Hello | None = None
        #: (client side) the server's Welcome, once received
        self.peer_welcome: Welcome | None = None
        #: the peer's EOF was received
        self.peer_closed = False
        self._hello_done = False  # client: Hello sent; server: Hello received
        self._welcome_done = False  # client: Welcome received; server: Welcome sent
        self._error_sent = False
        self._error_received = False
        self._failure: str | None = None  # the reason of the RemoteProtocolError raised
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf

    @property
    def closed(self) -> bool:
        """True once an Error was sent or received, a protocol error raised or the peer's EOF received."""
        return self._error_sent or self._error_received or self._failure is not None or self.peer_closed

    # -- sending -----------------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """The bytes of ``event`` to write to the peer; LocalProtocolError if it may not be sent now."""
        name = _TYPE_NAME.get(type(event))
        if name is None:
            raise LocalProtocolError(f"not a protocol event: {_short(event)}")
        if isinstance(event, Error):
            if self._error_sent or self._error_received:
                raise LocalProtocolError("an Error was already sent or received: the connection is closed")
        else:
            if self.closed:
                raise LocalProtocolError(f"cannot send {name}: the connection is closed")
            self._check_send_order(event, name)
        problem = _problem(event)
        if problem is not None:
            raise LocalProtocolError(f"cannot send {name}: {problem}")
        head, data = _encode(event)
        size = len(head) + len(data)
        if size > self.max_frame:
            raise LocalProtocolError(f"cannot send {name}: a {size}-byte frame is over max_frame {self.max_frame}")
        # the state changes only now that the bytes exist
        if isinstance(event, Error):
            self._error_sent = True
        elif isinstance(event, Hello):
            self._hello_done = True
        elif isinstance(event, Welcome):
            self._welcome_done = True
        if data:
            return b"".join((LENGTH.pack(size), head, data))
        return LENGTH.pack(size) + head

    def _check_send_order(self, event: Event, name: str) -> None:
        if self.role is Role.CLIENT:
            if isinstance(event, Hello):
                if self._hello_done:
                    raise LocalProtocolError("cannot send hello: it was sent already")
            elif isinstance(event, Chunk):
                if not self._welcome_done:
                    raise LocalProtocolError("cannot send chunk before the server's welcome was received")
            else:
                raise LocalProtocolError(f"a client does not send {name}")
        else:
            if isinstance(event, Welcome):
                if not self._hello_done:
                    raise LocalProtocolError("cannot send welcome before the client's hello was received")
                if self._welcome_done:
                    raise LocalProtocolError("cannot send welcome: it was sent already")
            elif isinstance(event, Ack):
                if not self._welcome_done:
                    raise LocalProtocolError("cannot send ack before welcome was sent")
            else:
                raise LocalProtocolError(f"a server does not send {name}")

    # -- receiving ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the peer; ``b""`` means the peer closed (EOF).

        Bytes that come after a received Error or a protocol error are discarded;
        bytes after the EOF are a bug of the caller (LocalProtocolError).
        """
        if self._error_received or self._failure is not None:
            return
        if not data:
            self.peer_closed = True
            return
        if self.peer_closed:
            raise LocalProtocolError("data received after EOF")
        if self._pos:  # drop what the last batch consumed: once per batch, not once per frame
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | NeedData:
        """The next complete event the peer sent, or NEED_DATA; RemoteProtocolError if it broke the protocol."""
        if self._failure is not None:
            raise RemoteProtocolError(self._failure)
        if self._error_received:
            return NEED_DATA
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < LENGTH.size:
            if avail and self.peer_closed:
                self._fail("connection closed in the middle of a frame")
            return NEED_DATA
        (size,) = LENGTH.unpack_from(buf, pos)
        if size == 0:
            self._fail("empty frame (length 0)")
        if size > self.max_frame:
            self._fail(f"frame of {size} bytes is over the limit of {self.max_frame}")
        end = pos + LENGTH.size + size
        if len(buf) < end:
            if self.peer_closed:
                self._fail("connection closed in the middle of a frame")
            return NEED_DATA
        try:
            with memoryview(buf) as view, view[pos + LENGTH.size : end] as body:
                obj = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:  # whatever the decoder raises on the peer's bytes: all are the peer's fault
            self._fail(f"frame is not valid msgpack ({type(exc).__name__}: {_short(str(exc))})")
        self._pos = end
        event = self._parse(obj)
        self._after_receive(event)
        if end == len(buf):  # everything consumed: reset without moving bytes
            buf.clear()
            self._pos = 0
        return event

    def events(self) -> list[Event]:
        """Every complete event buffered now, in order (next_event until NEED_DATA).

        A RemoteProtocolError propagates; events decoded before it in the same
        call are then dropped with the connection (nothing of them was acted on).
        """
        out: list[Event] = []
        while True:
            event = self.next_event()
            if isinstance(event, NeedData):
                return out
            out.append(event)

    def _fail(self, reason: str) -> NoReturn:
        """Record a protocol error: the connection is closed and the error raised, now and on every next_event."""
        self._failure = reason
        self._buf = bytearray()
        self._pos = 0
        raise RemoteProtocolError(reason)

    def _parse(self, obj: Any) -> Event:
        if not isinstance(obj, dict):
            self._fail(f"frame is not a msgpack map but {type(obj).__name__}")
        t = obj.get("t")
        if not isinstance(t, str) or t not in _KEYS:
            self._fail(f"unknown frame type {_short(t)}")
        self._check_receive_order(t)
        if t in ("hello", "welcome"):
            # checked before the other keys: another version may have other ones
            v = obj.get("v")
            if _is_int(v, 0) and v != PROTOCOL_VERSION:
                self._fail(f"unsupported protocol version {v} (this side speaks {PROTOCOL_VERSION})")
        keys = _KEYS[t]
        if obj.keys() != keys:
            missing = sorted(keys - obj.keys())
            extra = sorted(map(_short, obj.keys() - keys))
            self._fail(f"bad {t} frame: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else []) +
                ([f"unknown key(s) {', '.join(extra)}"] if extra else [])))
        event = _decode(t, obj)
        problem = _problem(event)
        if problem is not None:
            self._fail(f"bad {t} frame: {problem}")
        return event

    def _check_receive_order(self, t: str) -> None:
        if t == "error":
            return  # either side, in any state not closed
        if self.role is Role.SERVER:
            if t == "hello":
                if self._hello_done:
                    self._fail("unexpected second hello")
            elif t == "chunk":
                if not self._hello_done:
                    self._fail("expected hello, got chunk")
                if not self._welcome_done:
                    self._fail("unexpected chunk before welcome was sent")
            else:
                self._fail(f"a server does not receive {t}")
        else:
            if t == "welcome":
                if not self._hello_done:
                    self._fail("unexpected welcome before hello was sent")
                if self._welcome_done:
                    self._fail("unexpected second welcome")
            elif t == "ack":
                if not self._welcome_done:
                    self._fail("expected welcome, got ack")
            else:
                self._fail(f"a client does not receive {t}")

    def _after_receive(self, event: Event) -> None:
        if isinstance(event, Error):
            self._error_received = True
            self._buf = bytearray()  # the peer closes after it: nothing more is read
            self._pos = 0
        elif isinstance(event, Hello):
            self._hello_done = True
            self.peer_hello = event
        elif isinstance(event, Welcome):
            self._welcome_done = True
            self.peer_welcome = event
