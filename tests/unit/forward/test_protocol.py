"""The peer protocol's codec and state machine (forward/protocol.py, docs/protocol.md), without sockets."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from hostlog.forward.protocol import (
    LENGTH,
    MAX_FRAME,
    NEED_DATA,
    PROTOCOL_VERSION,
    Ack,
    Chunk,
    Connection,
    Error,
    Event,
    Hello,
    NeedData,
    Role,
    Welcome,
)

EDGE = "0123456789abcdef0123456789abcdef"
CENTRAL = "fedcba9876543210fedcba9876543210"
U64 = 2**64 - 1


def raw_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return LENGTH.pack(len(body)) + body


def body_of(frame: bytes) -> Any:
    (n,) = LENGTH.unpack_from(frame)
    assert n == len(frame) - LENGTH.size
    return msgpack.unpackb(frame[LENGTH.size:], raw=False)


def hello_map(**change: Any) -> dict[str, Any]:
    return {"t": "hello", "v": 1, "agent": EDGE, "host": "edge1", "token": None} | change


def welcome_map(**change: Any) -> dict[str, Any]:
    return {"t": "welcome", "v": 1, "agent": CENTRAL, "held": 0} | change


def chunk_map(**change: Any) -> dict[str, Any]:
    return {"t": "chunk", "origin": EDGE, "first": 1, "count": 3, "clen": 10, "data": b"\x01\x02"} | change


def ack_map(**change: Any) -> dict[str, Any]:
    return {"t": "ack", "origin": EDGE, "seq": 3} | change


def server_after_hello() -> Connection:
    server = Connection(Role.SERVER)
    server.receive_data(raw_frame(hello_map()))
    assert isinstance(server.next_event(), Hello)
    return server


def server_after_welcome() -> Connection:
    server = server_after_hello()
    server.send(Welcome(CENTRAL, 0))
    return server


def client_after_hello() -> Connection:
    client = Connection(Role.CLIENT)
    client.send(Hello(EDGE, "edge1"))
    return client


def client_after_welcome() -> Connection:
    client = client_after_hello()
    client.receive_data(raw_frame(welcome_map()))
    assert isinstance(client.next_event(), Welcome)
    return client


def fail(conn: Connection, data: bytes) -> str:
    """Feed data; the RemoteProtocolError's reason (the test fails if none is raised)."""
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        conn.events()
    assert conn.closed
    return str(info.value)


# -- strategies ------------------------------------------------------------------------------------

agent_ids = st.uuids(version=4).map(lambda u: u.hex)
u64s = st.integers(0, U64)
texts = st.text(max_size=40)
hellos = st.builds(Hello, agent=agent_ids, host=texts, token=st.none() | texts)
welcomes = st.builds(Welcome, agent=agent_ids, held=u64s)
chunks = st.builds(Chunk, origin=agent_ids, first=st.integers(1, 2**40), count=st.integers(1, 2**20),
                   chunk_len=st.integers(0, 2**32), data=st.binary(max_size=600))
acks = st.builds(Ack, origin=agent_ids, seq=u64s)
errors = st.builds(Error, kind=st.sampled_from(["retry", "rejected"]), reason=texts)


def to_server(hello: Hello, body: list[Chunk], error: Error | None) -> tuple[list[Event], bytes]:
    """What a client sends in a whole conversation (the server's Welcome given to it), as bytes."""
    client = Connection(Role.CLIENT)
    out = [client.send(hello)]
    client.receive_data(raw_frame(welcome_map()))
    assert isinstance(client.next_event(), Welcome)
    out += [client.send(c) for c in body]
    events: list[Event] = [hello, *body]
    if error is not None:
        out.append(client.send(error))
        events.append(error)
    return events, b"".join(out)


def fed(role: Role, pieces: list[bytes], *, welcome: bool = True) -> list[Event]:
    """The events a connection of ``role`` gives for data read in these pieces."""
    conn = Connection(role)
    if role is Role.CLIENT:
        conn.send(Hello(EDGE, "edge1"))
    got: list[Event] = []
    for piece in pieces:
        conn.receive_data(piece)
        # one event at a time: the Welcome must be sent before the chunks behind the Hello are read
        while not isinstance(event := conn.next_event(), NeedData):
            got.append(event)
            if role is Role.SERVER and isinstance(event, Hello) and welcome:
                conn.send(Welcome(CENTRAL, 0))
    return got


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]


# -- round trips -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(hellos, welcomes, st.lists(chunks, max_size=4), st.lists(acks, max_size=4), st.none() | errors,
       st.none() | errors)
def test_a_whole_conversation_round_trips_through_both_sides(hello, welcome, sent_chunks, sent_acks, c_err, s_err):
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(hello))
    assert server.events() == [hello] and server.peer_hello == hello
    client.receive_data(server.send(welcome))
    assert client.events() == [welcome] and client.peer_welcome == welcome
    for c in sent_chunks:  # (b"" would be EOF: no join of an empty list)
        server.receive_data(client.send(c))
    assert server.events() == sent_chunks
    for a in sent_acks:
        client.receive_data(server.send(a))
    assert client.events() == sent_acks
    if c_err is not None:
        server.receive_data(client.send(c_err))
        assert server.events() == [c_err] and server.closed and client.closed
    elif s_err is not None:
        client.receive_data(server.send(s_err))
        assert client.events() == [s_err] and server.closed and client.closed
    else:
        assert not server.closed and not client.closed


@settings(max_examples=100, deadline=None)
@given(hellos, st.lists(chunks, min_size=1, max_size=4), st.none() | errors,
       st.lists(st.integers(0, 3000), max_size=12))
def test_bytes_in_random_pieces_give_the_same_events(hello, body, error, cuts):
    events, data = to_server(hello, body, error)
    assert fed(Role.SERVER, split(data, cuts)) == events


@settings(max_examples=50, deadline=None)
@given(welcomes, st.lists(acks, max_size=5), st.none() | errors, st.lists(st.integers(0, 500), max_size=12))
def test_bytes_in_random_pieces_give_the_same_events_on_the_client(welcome, sent_acks, error, cuts):
    server = server_after_hello()
    events: list[Event] = [welcome, *sent_acks] + ([error] if error else [])
    data = b"".join(server.send(e) for e in events)
    assert fed(Role.CLIENT, split(data, cuts)) == events


def test_bytes_split_at_every_position_give_the_same_events():
    body = [Chunk(EDGE, 1, 2, 5, b"abc"), Chunk(EDGE, 3, 1, 0, b""), Chunk(EDGE, 4, 9, 99, b"z" * 70)]
    events, data = to_server(Hello(EDGE, "edge1", "tok"), body, Error("retry", "bye"))
    for i in range(len(data) + 1):
        assert fed(Role.SERVER, [p for p in (data[:i], data[i:]) if p]) == events, i
    assert fed(Role.SERVER, [data[i:i + 1] for i in range(len(data))]) == events  # a byte at a time


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 1 << 20])
def test_a_chunk_of_any_size_round_trips_and_its_data_is_msgpack_bin(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    chunk = Chunk(EDGE, 7, 5, 3 * size, data)
    frame = client_after_welcome().send(chunk)
    assert body_of(frame) == {"t": "chunk", "origin": EDGE, "first": 7, "count": 5, "clen": 3 * size, "data": data}
    server = server_after_welcome()
    server.receive_data(frame)
    got = server.next_event()
    assert got == chunk and type(got.data) is bytes  # type: ignore[union-attr]
    assert server.next_event() is NEED_DATA


def test_the_wire_format_is_a_length_prefix_and_a_short_keyed_map():
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    hello = client.send(Hello(EDGE, "edge1"))
    assert hello[:4] == struct.pack(">I", len(hello) - 4)
    assert body_of(hello) == hello_map()
    server.receive_data(hello)
    server.events()
    assert body_of(server.send(Welcome(CENTRAL, 12))) == welcome_map(held=12)
    assert body_of(server.send(Ack(EDGE, 40))) == ack_map(seq=40)
    assert server.send(Ack(EDGE, 40)) == raw_frame({"t": "ack", "origin": EDGE, "seq": 40})
    assert body_of(server.send(Error("retry", "spool full"))) == {"t": "error", "kind": "retry",
                                                                   "reason": "spool full"}
    assert body_of(Connection(Role.CLIENT).send(Hello(EDGE, "e", "s3cret"))) == hello_map(host="e", token="s3cret")


def test_frames_built_by_hand_are_read():
    server = Connection(Role.SERVER)
    server.receive_data(raw_frame(hello_map(token="t")))
    assert server.events() == [Hello(EDGE, "edge1", "t", 1)]
    server.send(Welcome(CENTRAL, 0))
    server.receive_data(raw_frame(chunk_map()) + raw_frame({"t": "error", "kind": "rejected", "reason": "x"}))
    assert server.events() == [Chunk(EDGE, 1, 3, 10, b"\x01\x02"), Error("rejected", "x")]


def test_chunk_last_is_its_last_seq():
    assert Chunk(EDGE, 10, 1, 0, b"").last == 10
    assert Chunk(EDGE, 10, 5, 0, b"").last == 14


def test_need_data_is_one_sentinel():
    assert isinstance(NEED_DATA, NeedData)
    assert Connection(Role.SERVER).next_event() is NEED_DATA
    assert Connection(Role.SERVER).events() == []


# -- the client's state machine --------------------------------------------------------------------


def test_a_client_sends_hello_first_and_once():
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send(Chunk(EDGE, 1, 1, 0, b""))
    client.send(Hello(EDGE, "edge1"))
    with pytest.raises(LocalProtocolError, match="sent already"):
        client.send(Hello(EDGE, "edge1"))


def test_a_client_sends_chunks_only_after_the_welcome():
    client = client_after_hello()
    with pytest.raises(LocalProtocolError, match="before the server's welcome"):
        client.send(Chunk(EDGE, 1, 1, 0, b""))
    client.receive_data(raw_frame(welcome_map()))
    client.events()
    for first in (1, 2, 3):
        assert client.send(Chunk(EDGE, first, 1, 0, b""))


@pytest.mark.parametrize("event", [Welcome(CENTRAL, 0), Ack(EDGE, 1)])
def test_a_client_never_sends_welcome_or_ack(event):
    with pytest.raises(LocalProtocolError, match="a client does not send"):
        client_after_welcome().send(event)


def test_a_welcome_before_the_hello_was_sent_is_refused():
    assert "before hello was sent" in fail(Connection(Role.CLIENT), raw_frame(welcome_map()))


def test_a_second_welcome_is_refused():
    assert fail(client_after_welcome(), raw_frame(welcome_map())) == "unexpected second welcome"


def test_an_ack_before_the_welcome_is_refused():
    assert fail(client_after_hello(), raw_frame(ack_map())) == "expected welcome, got ack"


@pytest.mark.parametrize("frame", [hello_map(), chunk_map()], ids=["hello", "chunk"])
def test_a_client_never_receives_hello_or_chunk(frame):
    assert fail(client_after_welcome(), raw_frame(frame)) == f"a client does not receive {frame['t']}"


def test_a_client_receives_acks_any_number_of_times():
    client = client_after_welcome()
    client.receive_data(b"".join(raw_frame(ack_map(seq=s)) for s in range(5)))
    assert client.events() == [Ack(EDGE, s) for s in range(5)]
    assert not client.closed


def test_a_client_may_be_refused_with_an_error_instead_of_a_welcome():
    client = client_after_hello()
    client.receive_data(raw_frame({"t": "error", "kind": "rejected", "reason": "wrong or missing token"}))
    assert client.events() == [Error("rejected", "wrong or missing token")]
    assert client.closed and client.peer_welcome is None


# -- the server's state machine --------------------------------------------------------------------


def test_a_server_first_receives_a_hello():
    assert fail(Connection(Role.SERVER), raw_frame(chunk_map())) == "expected hello, got chunk"


def test_a_second_hello_is_refused():
    assert fail(server_after_welcome(), raw_frame(hello_map())) == "unexpected second hello"
    assert fail(server_after_hello(), raw_frame(hello_map())) == "unexpected second hello"


def test_a_chunk_before_the_welcome_was_sent_is_refused():
    assert "before welcome was sent" in fail(server_after_hello(), raw_frame(chunk_map()))


@pytest.mark.parametrize("frame", [welcome_map(), ack_map()], ids=["welcome", "ack"])
def test_a_server_never_receives_welcome_or_ack(frame):
    assert fail(server_after_welcome(), raw_frame(frame)) == f"a server does not receive {frame['t']}"
    assert fail(Connection(Role.SERVER), raw_frame(frame)) == f"a server does not receive {frame['t']}"


def test_a_server_sends_welcome_only_after_the_hello_and_once():
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError, match="before the client's hello"):
        server.send(Welcome(CENTRAL, 0))
    server.receive_data(raw_frame(hello_map()))
    assert server.events() == [Hello(EDGE, "edge1")] and server.peer_hello == Hello(EDGE, "edge1")
    server.send(Welcome(CENTRAL, 0))
    with pytest.raises(LocalProtocolError, match="sent already"):
        server.send(Welcome(CENTRAL, 0))


def test_a_server_sends_acks_only_after_its_welcome():
    server = server_after_hello()
    with pytest.raises(LocalProtocolError, match="before welcome was sent"):
        server.send(Ack(EDGE, 1))
    server.send(Welcome(CENTRAL, 0))
    assert [body_of(server.send(Ack(EDGE, s)))["seq"] for s in (1, 5, 9)] == [1, 5, 9]


@pytest.mark.parametrize("event", [Hello(EDGE, "x"), Chunk(EDGE, 1, 1, 0, b"")])
def test_a_server_never_sends_hello_or_chunk(event):
    with pytest.raises(LocalProtocolError, match="a server does not send"):
        server_after_welcome().send(event)


def test_a_server_receives_chunks_any_number_of_times():
    server = server_after_welcome()
    sent = [Chunk(EDGE, 1 + 10 * i, 10, 100, bytes([i]) * i) for i in range(20)]
    server.receive_data(b"".join(raw_frame(chunk_map(first=c.first, count=10, clen=100, data=c.data)) for c in sent))
    assert server.events() == sent


# -- errors and closing ----------------------------------------------------------------------------

STATES = {
    "client-new": lambda: Connection(Role.CLIENT),
    "client-hello-sent": client_after_hello,
    "client-welcomed": client_after_welcome,
    "server-new": lambda: Connection(Role.SERVER),
    "server-hello-received": server_after_hello,
    "server-welcome-sent": server_after_welcome,
}


@pytest.mark.parametrize("state", STATES)
def test_an_error_may_be_sent_in_any_open_state_and_then_nothing_more(state):
    conn = STATES[state]()
    assert not conn.closed
    frame = conn.send(Error("retry", "spool full"))
    assert body_of(frame) == {"t": "error", "kind": "retry", "reason": "spool full"}
    assert conn.closed
    for event in (Error("rejected", "again"), Hello(EDGE, "x"), Welcome(CENTRAL, 0), Chunk(EDGE, 1, 1, 0, b""),
                  Ack(EDGE, 1)):
        with pytest.raises(LocalProtocolError):
            conn.send(event)


@pytest.mark.parametrize("state", STATES)
def test_an_error_may_be_received_in_any_open_state_and_then_nothing_more(state):
    conn = STATES[state]()
    conn.receive_data(raw_frame({"t": "error", "kind": "rejected", "reason": "go away"})
                      + raw_frame(ack_map()) + b"garbage after the error")
    assert conn.next_event() == Error("rejected", "go away")
    assert conn.closed and not conn.peer_closed
    # chosen behaviour: after a received Error, NEED_DATA for good; what follows is discarded
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\xff\xff\xff\xff more garbage")
    conn.receive_data(b"")
    assert conn.next_event() is NEED_DATA and conn.events() == []
    with pytest.raises(LocalProtocolError):
        conn.send(Error("rejected", "me too"))


def test_after_a_remote_protocol_error_one_error_may_still_be_sent():
    server = server_after_welcome()
    reason = fail(server, raw_frame(["not", "a", "map"]))
    assert server.closed
    with pytest.raises(RemoteProtocolError) as again:  # raised again, not forgotten
        server.next_event()
    assert str(again.value) == reason
    with pytest.raises(LocalProtocolError):
        server.send(Ack(EDGE, 1))
    client = client_after_hello()
    client.receive_data(server.send(Error("rejected", reason)))
    assert client.events() == [Error("rejected", reason)]
    with pytest.raises(LocalProtocolError):
        server.send(Error("rejected", reason))
    server.receive_data(raw_frame(chunk_map()))  # ignored once broken
    with pytest.raises(RemoteProtocolError):
        server.events()


def test_an_error_of_an_unknown_kind_is_refused_both_ways():
    with pytest.raises(LocalProtocolError, match="kind"):
        Connection(Role.CLIENT).send(Error("later", "x"))  # type: ignore[arg-type]
    assert "kind" in fail(Connection(Role.SERVER), raw_frame({"t": "error", "kind": "later", "reason": "x"}))


def test_protocol_errors_are_hostlog_protocol_errors():
    assert issubclass(RemoteProtocolError, ProtocolError) and issubclass(LocalProtocolError, ProtocolError)


# -- versions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 9, U64])
def test_a_hello_of_another_version_is_refused_and_answered_with_an_error(version):
    server = Connection(Role.SERVER)
    frame = Connection(Role.CLIENT).send(Hello(EDGE, "edge1", version=version))  # a sender may claim any
    reason = fail(server, frame)
    assert reason == f"unsupported protocol version {version} (this side speaks 1)"
    assert server.peer_hello is None
    answer = server.send(Error("rejected", reason))
    client = client_after_hello()
    client.receive_data(answer)
    assert client.events() == [Error("rejected", reason)]


def test_the_version_is_checked_before_the_fields_another_version_may_have():
    frame = raw_frame({"t": "hello", "v": 2, "id": b"\x00" * 16, "caps": ["zstd"]})
    assert fail(Connection(Role.SERVER), frame) == "unsupported protocol version 2 (this side speaks 1)"


def test_a_welcome_of_another_version_is_refused():
    assert fail(client_after_hello(), raw_frame(welcome_map(v=2))) == (
        "unsupported protocol version 2 (this side speaks 1)")


def test_a_hello_without_a_usable_version_is_garbage():
    assert "missing v" in fail(Connection(Role.SERVER), raw_frame({k: v for k, v in hello_map().items() if k != "v"}))
    assert "version must be an int" in fail(Connection(Role.SERVER), raw_frame(hello_map(v=True)))
    assert "version must be an int" in fail(Connection(Role.SERVER), raw_frame(hello_map(v="1")))


def test_this_side_speaks_version_1():
    assert PROTOCOL_VERSION == 1 and Hello(EDGE, "x").version == 1 and Welcome(EDGE, 0).version == 1


# -- frame sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [100, MAX_FRAME])
def test_an_oversized_length_prefix_is_refused_before_its_body_arrives(limit):
    server = Connection(Role.SERVER, max_frame=limit)
    server.receive_data(LENGTH.pack(limit + 1)[:3])
    assert server.next_event() is NEED_DATA  # 3 of the 4 prefix bytes: nothing to say yet
    server.receive_data(LENGTH.pack(limit + 1)[3:])
    with pytest.raises(RemoteProtocolError, match=f"frame of {limit + 1} bytes is over the limit of {limit}"):
        server.next_event()
    assert server.closed
    assert len(server._buf) == 0  # nothing of it kept


def test_a_frame_of_exactly_max_frame_is_read():
    body = msgpack.packb(hello_map(host=""), use_bin_type=True)
    body = msgpack.packb(hello_map(host="h" * (200 - len(body) - 1)), use_bin_type=True)
    server = Connection(Role.SERVER, max_frame=len(body))
    server.receive_data(LENGTH.pack(len(body)) + body)
    assert isinstance(server.next_event(), Hello)
    small = Connection(Role.SERVER, max_frame=len(body) - 1)
    assert "over the limit" in fail(small, LENGTH.pack(len(body)))


def test_a_zero_length_frame_is_refused():
    assert fail(Connection(Role.SERVER), LENGTH.pack(0)) == "empty frame (length 0)"


def test_a_frame_over_max_frame_is_not_sent():
    client = Connection(Role.CLIENT, max_frame=1000)
    client.send(Hello(EDGE, "edge1"))
    client.receive_data(raw_frame(welcome_map()))
    client.events()
    assert client.send(Chunk(EDGE, 1, 1, 0, b"x" * 900))
    with pytest.raises(LocalProtocolError, match="over max_frame"):
        client.send(Chunk(EDGE, 1, 1, 0, b"x" * 1000))
    assert not client.closed


def test_max_frame_must_fit_the_length_prefix():
    with pytest.raises(ValueError):
        Connection(Role.SERVER, max_frame=0)
    with pytest.raises(ValueError):
        Connection(Role.SERVER, max_frame=2**32)


# -- garbage ---------------------------------------------------------------------------------------

GARBAGE_CHUNKS = {
    "not msgpack": LENGTH.pack(1) + b"\xc1",
    "truncated msgpack": LENGTH.pack(2) + b"\x92\x01",
    "trailing bytes in the frame": (lambda b: LENGTH.pack(len(b)) + b)(
        msgpack.packb(chunk_map(), use_bin_type=True) + b"\x00"),
    "not a map": raw_frame([1, 2, 3]),
    "a map with a non-str key": raw_frame({1: 2}),
    "no type": raw_frame({"origin": EDGE}),
    "unknown type": raw_frame({"t": "bye"}),
    "type not a str": raw_frame({"t": 5}),
    "missing field": raw_frame({k: v for k, v in chunk_map().items() if k != "clen"}),
    "unknown field": raw_frame(chunk_map(extra=1)),
    "bool for an int": raw_frame(chunk_map(first=True)),
    "float for an int": raw_frame(chunk_map(count=1.0)),
    "first 0": raw_frame(chunk_map(first=0)),
    "count 0": raw_frame(chunk_map(count=0)),
    "negative clen": raw_frame(chunk_map(clen=-1)),
    "str for data": raw_frame(chunk_map(data="abc")),
    "bytes for origin": raw_frame(chunk_map(origin=EDGE.encode())),
    "origin not an agent id": raw_frame(chunk_map(origin="../../etc")),
    "origin in upper case": raw_frame(chunk_map(origin=EDGE.upper())),
    "invalid utf-8": LENGTH.pack(3) + b"\xa2\xff\xfe",
    "nested too deep": (lambda b: LENGTH.pack(len(b)) + b)(b"\x91" * 100_000 + b"\x00"),
    "ext type": raw_frame(msgpack.ExtType(5, b"x")),
    "last seq past u64": raw_frame(chunk_map(first=U64, count=2)),
}


@pytest.mark.parametrize("frame", GARBAGE_CHUNKS.values(), ids=GARBAGE_CHUNKS.keys())
def test_garbage_from_a_client_is_a_remote_protocol_error(frame):
    server = server_after_welcome()
    fail(server, frame)
    assert server.closed


@pytest.mark.parametrize("frame", [
    raw_frame(ack_map(seq=-1)), raw_frame(ack_map(seq="3")), raw_frame(ack_map(seq=False)),
    raw_frame(ack_map(origin=None)), raw_frame(welcome_map(held=-1)), raw_frame(welcome_map(agent=1)),
], ids=["negative seq", "str seq", "bool seq", "nil origin", "negative held", "int agent"])
def test_garbage_from_a_server_is_a_remote_protocol_error(frame):
    client = client_after_welcome() if body_of(frame)["t"] == "ack" else client_after_hello()
    fail(client, frame)


@pytest.mark.parametrize("frame", [hello_map(token=5), hello_map(host=None), hello_map(agent="edge-1"),
                                   hello_map(token=b"s3cret")], ids=["int token", "nil host", "bad agent", "bin token"])
def test_a_malformed_hello_is_a_remote_protocol_error(frame):
    assert "bad hello frame" in fail(Connection(Role.SERVER), raw_frame(frame))


def test_the_reason_quotes_little_of_what_the_peer_sent():
    reason = fail(Connection(Role.SERVER), raw_frame({"t": "x" * 10_000}))
    assert reason.startswith("unknown frame type 'xxx") and len(reason) < 120


def test_events_before_a_broken_frame_are_delivered_by_next_event():
    server = server_after_welcome()
    server.receive_data(raw_frame(chunk_map()) + raw_frame([1]))
    assert server.next_event() == Chunk(EDGE, 1, 3, 10, b"\x01\x02")
    with pytest.raises(RemoteProtocolError):
        server.next_event()


@pytest.mark.parametrize("event", [
    Chunk(EDGE, 0, 1, 0, b""), Chunk(EDGE, 1, 0, 0, b""), Chunk(EDGE, 1, 1, -1, b""),
    Chunk(EDGE, 1, 1, 0, "text"),  # type: ignore[arg-type]
    Chunk(EDGE, True, 1, 0, b""), Chunk("edge-1", 1, 1, 0, b""), Chunk(EDGE, 1, 1, 2**64, b""),
])
def test_an_invalid_chunk_is_not_sent_and_changes_nothing(event):
    client = client_after_welcome()
    with pytest.raises(LocalProtocolError):
        client.send(event)
    assert not client.closed
    assert client.send(Chunk(EDGE, 1, 1, 0, b""))


def test_an_invalid_hello_is_not_sent_and_the_hello_can_still_be_sent():
    client = Connection(Role.CLIENT)
    for bad in (Hello("not-an-id", "h"), Hello(EDGE, None), Hello(EDGE, "h", 5), Hello(EDGE, "h", version=-1)):  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            client.send(bad)
    assert body_of(client.send(Hello(EDGE, "h"))) == hello_map(host="h")


def test_something_not_an_event_is_not_sent():
    with pytest.raises(LocalProtocolError, match="not a protocol event"):
        Connection(Role.CLIENT).send({"t": "hello"})  # type: ignore[arg-type]


def drain(conn: Connection) -> None:
    """Every event, then EOF: either events or a RemoteProtocolError, nothing else, and it ends."""
    for eof in (False, True):
        if eof:
            conn.receive_data(b"")
        try:
            for _ in range(10_000):
                if isinstance(conn.next_event(), NeedData):
                    break
            else:
                raise AssertionError("next_event does not come to an end")
        except RemoteProtocolError:
            assert conn.closed
            return
    assert conn.closed and conn.peer_closed


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(STATES)), st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_random_bytes_only_ever_give_events_or_a_remote_protocol_error(state, data, cuts):
    conn = STATES[state]()
    for piece in split(data, cuts):
        conn.receive_data(piece)
        try:
            conn.events()
        except RemoteProtocolError:
            assert conn.closed
            break
    drain(conn)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), U64) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20) | agent_ids,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["t", "v", "agent", "host", "token", "held", "origin", "first", "count", "clen",
                               "data", "seq", "kind", "reason"])
frame_maps = st.dictionaries(field_names, msgpack_values, max_size=7).flatmap(
    lambda d: st.sampled_from(["hello", "welcome", "chunk", "ack", "error"]).map(lambda t: d | {"t": t}))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(STATES)), st.lists(frame_maps | msgpack_values, min_size=1, max_size=4))
def test_random_frames_only_ever_give_events_or_a_remote_protocol_error(state, objects):
    conn = STATES[state]()
    conn.receive_data(b"".join(raw_frame(o) for o in objects))
    drain(conn)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_valid_frames_with_bytes_changed_only_ever_give_events_or_a_remote_protocol_error(changes):
    _, data = to_server(Hello(EDGE, "edge1", "tok"), [Chunk(EDGE, 1, 2, 5, b"abc" * 20), Chunk(EDGE, 3, 1, 0, b"")],
                        Error("retry", "bye"))
    mutated = bytearray(data)
    for where, value in changes:
        mutated[where % len(mutated)] = value
    conn = Connection(Role.SERVER, max_frame=4096)
    got: list[Event] = []
    try:
        conn.receive_data(bytes(mutated))
        for event in conn.events():
            got.append(event)
            if isinstance(event, Hello):
                conn.send(Welcome(CENTRAL, 0))
    except RemoteProtocolError:
        assert conn.closed
    drain(conn)


# -- EOF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 3, 4, 10], ids=["in the prefix", "in the prefix", "after the prefix",
                                                    "in the body"])
def test_eof_in_the_middle_of_a_frame_is_a_remote_protocol_error(cut):
    server = Connection(Role.SERVER)
    frame = raw_frame(hello_map())
    server.receive_data(frame[:cut])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="^connection closed in the middle of a frame$"):
        server.next_event()
    assert server.closed and server.peer_closed


def test_eof_between_frames_ends_the_events_quietly():
    server = server_after_welcome()
    assert not server.closed and not server.peer_closed
    server.receive_data(raw_frame(chunk_map()) + raw_frame(chunk_map(first=4)))
    server.receive_data(b"")
    assert server.peer_closed and server.closed
    assert [c.first for c in server.events()] == [1, 4]  # what came before the EOF is still read
    assert server.next_event() is NEED_DATA and server.next_event() is NEED_DATA
    server.receive_data(b"")  # a second EOF changes nothing
    assert server.events() == []


def test_eof_before_anything_is_quiet_too():
    server = Connection(Role.SERVER)
    server.receive_data(b"")
    assert server.next_event() is NEED_DATA and server.closed and server.peer_closed


def test_after_eof_only_an_error_may_be_sent_and_data_is_a_bug():
    server = server_after_welcome()
    server.receive_data(b"")
    assert server.events() == []
    with pytest.raises(LocalProtocolError):
        server.send(Ack(EDGE, 1))
    with pytest.raises(LocalProtocolError, match="after EOF"):
        server.receive_data(b"x")
    assert body_of(server.send(Error("retry", "x")))["t"] == "error"


# -- buffering -------------------------------------------------------------------------------------


def test_the_receive_buffer_holds_at_most_one_unread_frame_and_a_read():
    frame = client_after_welcome().send(Chunk(EDGE, 1, 100, 1 << 20, bytes(256 * 1024)))
    data = frame * 40
    server = server_after_welcome()
    peak, n = 0, 0
    for i in range(0, len(data), 65536):
        server.receive_data(data[i:i + 65536])
        peak = max(peak, len(server._buf))
        n += len(server.events())
    assert n == 40
    assert peak <= len(frame) + 65536
    assert len(server._buf) == 0
