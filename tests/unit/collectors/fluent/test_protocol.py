"""Tests of hostlog.collectors.fluent.protocol: the Forward protocol's server side, sans-IO.

Conformance streams are the captures in ``../shared/corpora/fluent-forward/
transcripts/`` beside the checkout: the real @fluent-org/logger 1.0.10
FluentClient talking to its own FluentServer (every event mode, with and
without ack, the shared-key handshake with and without user auth), and PyPI
fluent-logger 0.11.1 (integer, float and EventTime times). Each client stream
is replayed byte for byte (whole, as captured TCP reads, split at every byte,
one byte at a time); the events must be what the real server handed its
listener, and what we send back (HELO with the captured nonce, PONG, acks)
must be the captured server bytes exactly. Without the corpus the replay
tests fail when CI=true, else they are skipped.

Messages here are built with msgpack directly (not with the module's code),
so the decoder is checked against the specification's shapes, not itself.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostlog.collectors.fluent.protocol import (
    NEED_DATA,
    Authenticated,
    Closed,
    Entries,
    Event,
    EventTime,
    FluentProtocolError,
    ForwardServerConnection,
    Rejected,
    State,
    ack_bytes,
    event_time_ns,
    gunzip,
)
from hostlog.errors import HostlogError
from tests.conftest import CORPORA, need

TRANSCRIPTS = CORPORA / "fluent-forward" / "transcripts"
NOW = 1_700_000_000 * 10**9  # what "now" is for time 0 / nil


def now() -> int:
    return NOW


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def event_time(seconds: int, nanoseconds: int = 0) -> msgpack.ExtType:
    """EventTime: ext type 0, 8 bytes (msgpack-python packs it as fixext8)."""
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanoseconds))


def ext8_event_time(seconds: int, nanoseconds: int) -> bytes:
    """The ext8 encoding of an EventTime (c7 08 00 ...), which msgpack-python never makes."""
    return b"\xc7\x08\x00" + struct.pack(">II", seconds, nanoseconds)


def server(**kw: Any) -> ForwardServerConnection:
    kw.setdefault("now_ns", now)
    return ForwardServerConnection(**kw)


def feed(conn: ForwardServerConnection, *pieces: bytes, eof: bool = True) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        if piece:  # (b"" is EOF)
            conn.receive_data(piece)
            events += conn.events()
    if eof:
        conn.receive_data(b"")
        events += conn.events()
    return events


def flat(events: list[Event]) -> list[tuple[str, int, dict[Any, Any]]]:
    """(tag, ns, record) of every event, in order."""
    return [(e.tag, t, r) for e in events if isinstance(e, Entries) for t, r in zip(e.times, e.records)]


# -- the captured transcripts ----------------------------------------------------------------------

def _scenarios() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(TRANSCRIPTS.glob("*.jsonl")) if TRANSCRIPTS.is_dir() else []:
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out or [{"scenario": "missing"}]


SCENARIOS = _scenarios()


def _expected(scenario: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """What the real server (or, for the PyPI captures, the decoded stream) says was sent."""
    def ns(t: Any) -> int:
        if isinstance(t, dict) and "$EventTime" in t:
            return t["$EventTime"]["sec"] * 10**9 + t["$EventTime"]["nsec"]
        if isinstance(t, dict):
            return t["epoch"] * 10**9 + t["nano"]
        if isinstance(t, float):
            seconds = int(t)
            return seconds * 10**9 + int((t - seconds) * 1e9)
        return int(t) * 10**9
    if "received_by_server" in scenario:
        return [(e["tag"], ns(e["time"]), e["record"]) for e in scenario["received_by_server"]]
    return [(tag, ns(t), record) for tag, t, record in scenario["decoded"]]


def _replay_server(scenario: dict[str, Any]) -> ForwardServerConnection:
    """A server configured as the captured one, with the captured HELO's nonce and salt."""
    security = (scenario.get("server_options") or {}).get("security")
    if not security:
        return server()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(base64.b64decode(scenario["server_to_client_b64"]))
    helo = next(unpacker)
    assert helo[0] == "HELO"
    return server(shared_key=security["sharedKey"], users=security["userDict"],
                  server_hostname=security["serverHostname"], nonce=helo[1]["nonce"],
                  auth_salt=helo[1]["auth"] or None)


def _replay(scenario: dict[str, Any], pieces: list[bytes]) -> tuple[list[Event], bytes]:
    """Events and every byte the server side sends, acks sent in order."""
    conn = _replay_server(scenario)
    sent = conn.data_to_send()
    events: list[Event] = []
    for piece in [p for p in pieces if p] + [b""]:
        conn.receive_data(piece)
        for event in conn.events():
            events.append(event)
            sent += conn.data_to_send()
            if isinstance(event, Entries) and event.chunk is not None:
                sent += ack_bytes(event.chunk)
    return events, sent


def _need_corpus(scenario: dict[str, Any]) -> None:
    need(scenario["scenario"] != "missing", f"the Fluent Forward transcripts in {TRANSCRIPTS}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["scenario"] for s in SCENARIOS])
def test_transcript_replayed_whole_gives_the_real_servers_events_and_bytes(scenario: dict[str, Any]) -> None:
    _need_corpus(scenario)
    stream = base64.b64decode(scenario["client_to_server_b64"])
    events, sent = _replay(scenario, [stream])
    assert flat(events) == _expected(scenario)
    assert sent == base64.b64decode(scenario.get("server_to_client_b64", ""))
    assert isinstance(events[-1], Closed) and events[-1].incomplete == 0
    security = (scenario.get("server_options") or {}).get("security")
    if security:
        (auth,) = [e for e in events if isinstance(e, Authenticated)]
        assert auth.client_hostname == scenario["client_options"]["security"]["clientHostname"]
        assert auth.username == scenario["client_options"]["security"].get("username", "")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["scenario"] for s in SCENARIOS])
def test_transcript_replayed_as_captured_reads_and_at_every_split_gives_the_same(
        scenario: dict[str, Any]) -> None:
    _need_corpus(scenario)
    stream = base64.b64decode(scenario["client_to_server_b64"])
    want_events, want_sent = _replay(scenario, [stream])
    want = flat(want_events)
    reads = [base64.b64decode(s["b64"]) for s in scenario.get("segments", [])
             if s["dir"] == "client->server"]
    if reads:
        assert b"".join(reads) == stream
        events, sent = _replay(scenario, reads)
        assert (flat(events), sent) == (want, want_sent)
    for cut in range(1, len(stream)):
        events, sent = _replay(scenario, [stream[:cut], stream[cut:]])
        assert (flat(events), sent) == (want, want_sent), f"split at {cut}"
    events, sent = _replay(scenario, [stream[i:i + 1] for i in range(len(stream))])
    assert (flat(events), sent) == (want, want_sent)


def test_transcript_float_time_reads_as_the_python_client_makes_its_own_event_time() -> None:
    """PyPI fluent-logger sent the same call once as a float and once (nanosecond_precision)
    as EventTime: both must give the same nanoseconds."""
    pypi = {s["scenario"]: s for s in SCENARIOS if s["scenario"].startswith("python-fluent-logger")}
    need(len(pypi) == 2, f"the PyPI fluent-logger transcripts in {TRANSCRIPTS}")
    as_float, as_event_time = (flat(feed(server(), base64.b64decode(s["client_to_server_b64"])))
                               for _, s in sorted(pypi.items()))
    assert [t for _, t, _ in as_float] == [t for _, t, _ in as_event_time] == \
        [1500000000 * 10**9, 1500000000 * 10**9 + 123456716]


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if (s.get("server_options") or {}).get("security")]
                         or [{"scenario": "missing"}], ids=lambda s: s["scenario"])
def test_transcript_handshake_with_another_key_is_refused_and_no_event_comes_through(
        scenario: dict[str, Any]) -> None:
    _need_corpus(scenario)
    security = scenario["server_options"]["security"]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(base64.b64decode(scenario["server_to_client_b64"]))
    helo = next(unpacker)
    conn = server(shared_key=security["sharedKey"] + "x", users=security["userDict"],
                  server_hostname="server.example", nonce=helo[1]["nonce"], auth_salt=helo[1]["auth"] or None)
    conn.data_to_send()
    events = feed(conn, base64.b64decode(scenario["client_to_server_b64"]))
    assert events == [Rejected("shared_key mismatch", "client.example")]
    assert msgpack.unpackb(conn.data_to_send()) == ["PONG", False, "shared_key mismatch", "", ""]
    assert conn.state is State.CLOSED


# -- handshake ---------------------------------------------------------------------------------

def sha512_hex(*parts: bytes) -> str:
    return hashlib.sha512(b"".join(parts)).hexdigest()


def ping(nonce: bytes, key: str, *, host: str = "client.example", salt: str = "s" * 32,
         user: str = "", password: str = "", auth_salt: bytes = b"") -> bytes:
    password_digest = sha512_hex(auth_salt, user.encode(), password.encode()) if user else ""
    return pack(["PING", host, salt, sha512_hex(salt.encode(), host.encode(), nonce, key.encode()),
                 user, password_digest])


def helo_of(conn: ForwardServerConnection) -> dict[str, Any]:
    kind, options = msgpack.unpackb(conn.data_to_send(), raw=False)
    assert kind == "HELO"
    assert set(options) == {"nonce", "auth", "keepalive"}
    return options  # type: ignore[no-any-return]


def test_handshake_with_the_right_key_gets_a_pong_that_proves_the_server_knows_it() -> None:
    conn = server(shared_key="k3y", server_hostname="agent.example")
    helo = helo_of(conn)
    assert isinstance(helo["nonce"], bytes) and len(helo["nonce"]) == 16
    assert helo["auth"] == "" and helo["keepalive"] is True
    assert conn.state is State.HANDSHAKE
    events = feed(conn, ping(helo["nonce"], "k3y", salt="pepper"), pack(["t", 1, {"a": 1}]))
    assert events[0] == Authenticated("client.example", "")
    assert flat(events) == [("t", 10**9, {"a": 1})]
    pong = msgpack.unpackb(conn.data_to_send(), raw=False)
    assert pong == ["PONG", True, "", "agent.example",
                    sha512_hex(b"pepper", b"agent.example", helo["nonce"], b"k3y")]


def test_handshake_nonces_differ_per_connection() -> None:
    assert helo_of(server(shared_key="k"))["nonce"] != helo_of(server(shared_key="k"))["nonce"]


def test_handshake_with_a_wrong_key_is_refused_with_pong_false_and_later_events_are_ignored() -> None:
    conn = server(shared_key="right")
    helo = helo_of(conn)
    events = feed(conn, ping(helo["nonce"], "wrong") + pack(["t", 1, {"a": 1}]))
    assert events == [Rejected("shared_key mismatch", "client.example")]
    assert msgpack.unpackb(conn.data_to_send(), raw=False) == ["PONG", False, "shared_key mismatch", "", ""]
    assert conn.state is State.CLOSED


def test_handshake_digest_over_another_nonce_is_refused() -> None:
    conn = server(shared_key="k")
    helo_of(conn)
    assert feed(conn, ping(b"\0" * 16, "k"))[0] == Rejected("shared_key mismatch", "client.example")


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "s3cret"), ("", "")])
def test_handshake_with_a_wrong_user_or_password_is_refused(user: str, password: str) -> None:
    conn = server(shared_key="k", users={"alice": "s3cret"})
    helo = helo_of(conn)
    assert isinstance(helo["auth"], bytes) and len(helo["auth"]) == 16
    events = feed(conn, ping(helo["nonce"], "k", user=user, password=password, auth_salt=helo["auth"]))
    assert events == [Rejected("username/password mismatch", "client.example")]
    assert msgpack.unpackb(conn.data_to_send(), raw=False) == \
        ["PONG", False, "username/password mismatch", "", ""]


def test_handshake_with_the_right_user_and_password_passes() -> None:
    conn = server(shared_key="k", users={"alice": "s3cret", "bob": "pw"})
    helo = helo_of(conn)
    events = feed(conn, ping(helo["nonce"], "k", user="bob", password="pw", auth_salt=helo["auth"]))
    assert events[0] == Authenticated("client.example", "bob")
    assert msgpack.unpackb(conn.data_to_send(), raw=False)[:3] == ["PONG", True, ""]


def test_events_before_the_handshake_are_a_protocol_error() -> None:
    conn = server(shared_key="k")
    helo_of(conn)
    with pytest.raises(FluentProtocolError, match="expected a PING"):
        feed(conn, pack(["tag", 1, {"a": 1}]))


@pytest.mark.parametrize("message,reason", [
    (["PING", "h", "salt", "digest"], "6 elements"),
    (["PING", 1, "salt", "d", "", ""], "client hostname must be a string"),
    (["PING", "h", 5, "d", "", ""], "salt must be a string or bin"),
])
def test_malformed_ping_is_a_protocol_error(message: list[Any], reason: str) -> None:
    conn = server(shared_key="k")
    with pytest.raises(FluentProtocolError, match=reason):
        feed(conn, pack(message))


def test_without_a_shared_key_nothing_is_sent_and_a_ping_is_no_event_mode() -> None:
    conn = server()
    assert conn.data_to_send() == b""
    with pytest.raises(FluentProtocolError, match="2 to 4 elements"):
        feed(conn, ping(b"n" * 16, "k"))


# -- the event modes ---------------------------------------------------------------------------

def test_message_mode_with_and_without_option() -> None:
    events = feed(server(), pack(["a", 1500000000, {"m": 1}]),
                  pack(["b", event_time(1500000001, 5), {"m": 2}, {"chunk": "c1"}]))
    assert [(e.mode, e.chunk) for e in events if isinstance(e, Entries)] == [("Message", None), ("Message", "c1")]
    assert flat(events) == [("a", 1500000000 * 10**9, {"m": 1}), ("b", 1500000001 * 10**9 + 5, {"m": 2})]


def test_forward_mode() -> None:
    entries = [[1500000000, {"n": 1}], [event_time(1500000001, 2), {"n": 2}], [1500000002.5, {"n": 3}]]
    (e, _) = feed(server(), pack(["fw", entries, {"size": 3, "chunk": "x"}]))
    assert isinstance(e, Entries)
    assert (e.mode, e.chunk, e.size, e.tag) == ("Forward", "x", 3, "fw")
    assert e.times == [1500000000 * 10**9, 1500000001 * 10**9 + 2, 1500000002 * 10**9 + 500_000_000]
    assert e.records == [{"n": 1}, {"n": 2}, {"n": 3}]


def _packed(entries: list[list[Any]]) -> bytes:
    return b"".join(pack(entry) for entry in entries)


def test_packed_forward_mode_as_bin_and_as_str_for_v0() -> None:
    stream = _packed([[1, {"a": "x"}], [2, {"a": "y"}]])
    (e, _) = feed(server(), pack(["p", stream, {"size": 2}]))
    assert isinstance(e, Entries) and e.mode == "PackedForward"
    assert flat([e]) == [("p", 10**9, {"a": "x"}), ("p", 2 * 10**9, {"a": "y"})]
    # v0 clients sent the entries as a msgpack str (raw bytes, not UTF-8 here)
    v0 = b"\x92\xa1p" + b"\xda" + struct.pack(">H", len(stream)) + stream  # str 16
    assert flat(feed(server(), v0)) == flat([e])


def test_compressed_packed_forward_with_several_gzip_members() -> None:
    first = _packed([[1, {"i": 0}], [2, {"i": 1}]])
    second = _packed([[3, {"i": 2}]])
    blob = gzip.compress(first) + gzip.compress(second)
    (e, _) = feed(server(), pack(["z", blob, {"compressed": "gzip", "size": 3, "chunk": "c"}]))
    assert isinstance(e, Entries) and e.mode == "CompressedPackedForward" and e.chunk == "c"
    assert [r["i"] for r in e.records] == [0, 1, 2]
    assert e.times == [10**9, 2 * 10**9, 3 * 10**9]


def test_compressed_text_means_not_compressed_and_zstd_is_refused_by_name() -> None:
    stream = _packed([[1, {"i": 0}]])
    assert flat(feed(server(), pack(["t", stream, {"compressed": "text"}]))) == [("t", 10**9, {"i": 0})]
    with pytest.raises(FluentProtocolError, match="'zstd' is not supported"):
        feed(server(), pack(["t", stream, {"compressed": "zstd"}]))


def test_gzip_data_without_the_compressed_option_is_a_protocol_error() -> None:
    with pytest.raises(FluentProtocolError, match="gzip data, but option compressed"):
        feed(server(), pack(["t", gzip.compress(_packed([[1, {"i": 0}]])), {}]))


@pytest.mark.parametrize("blob,reason", [
    (b"this is not gzip", "bad gzip data"),
    (gzip.compress(b"\x92\x01\x80" * 10)[:-6], "ends inside a member"),
])
def test_bad_gzip_is_a_protocol_error(blob: bytes, reason: str) -> None:
    with pytest.raises(FluentProtocolError, match=reason):
        feed(server(), pack(["t", blob, {"compressed": "gzip"}]))


def test_gzip_output_is_bounded_by_max_message() -> None:
    bomb = gzip.compress(b"\x00" * (1 << 20))  # 1 MiB of zeros in about 1 KiB
    assert len(bomb) < 4096
    with pytest.raises(FluentProtocolError, match="larger than max_message"):
        feed(server(max_message=64 * 1024), pack(["t", bomb, {"compressed": "gzip"}]))
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 4) == b"abcd"


def test_packed_entries_cut_inside_an_entry_are_a_protocol_error() -> None:
    stream = _packed([[1, {"a": "x"}], [2, {"a": "y"}]])
    with pytest.raises(FluentProtocolError, match="end inside an entry"):
        feed(server(), pack(["p", stream[:-2]]))


def test_fluent_bit_metadata_form_reads_as_time_and_record() -> None:
    stream = _packed([[[event_time(5, 6), {"otel": 1}], {"log": "x"}]])
    assert flat(feed(server(), pack(["fb", stream]))) == [("fb", 5 * 10**9 + 6, {"log": "x"})]


def test_nil_records_are_dropped_as_fluentd_drops_them_and_nil_is_a_heartbeat() -> None:
    events = feed(server(), pack(None), pack(["t", 1, None, {"chunk": "c"}]),
                  pack(["t", [[1, None], [2, {"k": 1}]]]))
    entries = [e for e in events if isinstance(e, Entries)]
    assert [(e.chunk, len(e.records)) for e in entries] == [("c", 0), (None, 1)]
    assert flat(events) == [("t", 2 * 10**9, {"k": 1})]


# -- times ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("wire,ns", [
    (pack(1500000000), 1500000000 * 10**9),
    (pack(event_time(1500000000, 123456789)), 1500000000_123456789),
    (ext8_event_time(1500000000, 123456789), 1500000000_123456789),
    (pack(1500000000.25), 1500000000_250000000),
    (pack(1500000000.1234567), 1500000000_123456716),  # as fluent-logger makes its own EventTime of it
    (pack(msgpack.Timestamp(1500000000, 7)), 1500000000_000000007),
    (pack(0), NOW),
    (pack(None), NOW),
    (pack(event_time(0, 0)), NOW),
])
def test_event_times_in_every_form(wire: bytes, ns: int) -> None:
    message = b"\x93\xa1t" + wire + pack({"k": "v"})
    assert flat(feed(server(), message)) == [("t", ns, {"k": "v"})]


@pytest.mark.parametrize("wire,reason", [
    (pack(-1), "out of range"),
    (pack(2**32), "out of range"),
    (pack(float("nan")), "out of range"),
    (pack(True), "not a boolean"),
    (pack({"s": 1}), "not a map"),  # (a str there is PackedForward's v0 entries)
    (pack(msgpack.ExtType(0, b"1234")), "must hold 8 bytes"),
    (pack(msgpack.ExtType(0, struct.pack(">II", 1, 10**9))), "nanoseconds"),
    (pack(msgpack.ExtType(5, b"12345678")), "not ext type 5"),
])
def test_bad_event_times_are_protocol_errors(wire: bytes, reason: str) -> None:
    with pytest.raises(FluentProtocolError, match=reason):
        feed(server(), b"\x93\xa1t" + wire + pack({"k": "v"}))


def test_event_time_ns_direct() -> None:
    assert event_time_ns(EventTime(1, 2)) == 1_000_000_002
    assert event_time_ns(0, lambda: 42) == 42


# -- options and acks ----------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [
    "mjev9l9J1q87Uc/8xKw7YA==",
    "p8n9gmxTQVC8/nh2wlKKeQ==\n",  # fluentd's Base64.encode64 ends in a newline: kept
    b"\x00\x01binary-chunk",  # a bin chunk is answered as bin
])
def test_ack_echoes_the_chunk_byte_for_byte(chunk: str | bytes) -> None:
    (e, _) = feed(server(), pack(["t", 1, {"a": 1}, {"chunk": chunk}]))
    assert isinstance(e, Entries) and e.chunk == chunk
    assert ack_bytes(chunk) == pack({"ack": chunk})


def test_ack_of_a_chunk_str_that_is_not_utf8_gives_back_the_same_bytes() -> None:
    raw_chunk = b"\xff\xfeid"
    wire = b"\x94\xa1t\x01\x81\xa1a\x01\x81\xa5chunk\xa4" + raw_chunk
    (e, _) = feed(server(), wire)
    assert isinstance(e, Entries) and e.chunk is not None
    assert ack_bytes(e.chunk) == b"\x81\xa3ack\xa4" + raw_chunk


def test_unknown_option_keys_are_ignored() -> None:
    (e, _) = feed(server(), pack(["t", 1, {"a": 1}, {"fluent_signal": 0, "future": [1, 2], "chunk": "c"}]))
    assert isinstance(e, Entries) and e.chunk == "c"


@pytest.mark.parametrize("option,reason", [
    ([1], "option must be a map"),
    ({"chunk": 5}, "chunk must be a string"),
    ({"size": "2"}, "size must be a count"),
    ({"compressed": 1}, "compressed must be a string"),
])
def test_bad_options_are_protocol_errors(option: Any, reason: str) -> None:
    with pytest.raises(FluentProtocolError, match=reason):
        feed(server(), pack(["t", 1, {"a": 1}, option]))


# -- malformed input and limits ------------------------------------------------------------------------

@pytest.mark.parametrize("wire,reason", [
    (pack(5), "expected an array, got an integer"),
    (b'{"json": true}', "JSON input is not supported"),
    (pack(["t"]), "2 to 4 elements"),
    (pack(["t", 1, {"a": 1}, {}, 5]), "2 to 4 elements"),
    (pack([1, 1, {"a": 1}]), "tag must be a string"),
    (pack(["t", 1, [1, 2]]), "record must be a map"),
    (pack(["t", [[1, {"a": 1}, 3]]]), r"entry must be \[time, record\]"),
    (pack(["t", [5]]), r"entry must be \[time, record\]"),
    (pack(["t", [], {}, 1]), "at most 3 elements"),
    (pack(["t", 1]), "needs 3 elements"),
    (b"\xc1", "malformed msgpack"),
    (b"\x93\xa1t\x01\x81\x01\x02", "malformed msgpack"),  # an integer map key
    (b"\x91" * 5000, "malformed msgpack"),  # nested deeper than the unpacker's stack
])
def test_malformed_input_is_a_protocol_error_with_a_reason(wire: bytes, reason: str) -> None:
    with pytest.raises(FluentProtocolError, match=reason) as info:
        feed(server(), wire)
    assert isinstance(info.value, HostlogError)


def test_after_a_protocol_error_the_connection_stays_failed() -> None:
    conn = server()
    conn.receive_data(pack(["t", 1, {"a": 1}]) + pack(7) + pack(["t", 2, {"b": 2}]))
    first = conn.next_event()
    assert isinstance(first, Entries) and first.records == [{"a": 1}]
    with pytest.raises(FluentProtocolError, match="expected an array"):
        conn.next_event()
    assert conn.state is State.ERROR
    with pytest.raises(FluentProtocolError, match="already failed"):
        conn.next_event()


def test_a_message_over_max_message_is_refused_but_many_small_ones_pass() -> None:
    limit = 4096
    small = pack(["t", 1, {"m": "x" * 100}])
    assert flat(feed(server(max_message=limit), small * 200)) == [("t", 10**9, {"m": "x" * 100})] * 200
    with pytest.raises(FluentProtocolError, match="larger than max_message"):
        feed(server(max_message=limit), pack(["t", 1, {"m": "x" * limit}]))


def test_an_array_of_many_small_items_over_max_message_is_refused_as_it_arrives() -> None:
    # msgpack's own buffer limit would not see this: each item leaves its buffer once parsed
    entries = [[1, {}]] * 3000  # 3 bytes each: 9 KB in one Forward message
    wire = pack(["t", entries])
    conn = server(max_message=4096)
    with pytest.raises(FluentProtocolError, match="larger than max_message"):
        for i in range(0, len(wire), 100):
            conn.receive_data(wire[i:i + 100])
            list(conn.events())
    assert flat(feed(server(max_message=len(wire)), wire)) == [("t", 10**9, {})] * 3000


def test_eof_inside_a_message_says_how_many_bytes_were_lost() -> None:
    whole = pack(["t", 1, {"a": 1}])
    partial = pack(["t", 2, {"b": "x" * 50}])
    events = feed(server(), whole + partial[:20])
    assert flat(events) == [("t", 10**9, {"a": 1})]
    assert events[-1] == Closed(incomplete=20)
    assert feed(server(), whole)[-1] == Closed(incomplete=0)


def test_receive_after_eof_is_a_local_error() -> None:
    conn = server()
    conn.receive_data(b"")
    with pytest.raises(RuntimeError):
        conn.receive_data(b"x")
    assert conn.next_event() == Closed(0)
    assert conn.next_event() is NEED_DATA


# -- properties ----------------------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) \
    | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=12)
records = st.dictionaries(keys, values, max_size=6)
times = st.one_of(
    st.tuples(st.just("int"), st.integers(1, 2**32 - 1)),
    st.tuples(st.just("event_time"), st.integers(1, 2**32 - 1), st.integers(0, 10**9 - 1)),
    st.tuples(st.just("float"), st.integers(1, 2**31), st.integers(0, 999)),  # seconds + ms as a float
)
events_st = st.lists(st.tuples(times, records), min_size=1, max_size=8)
chunks = st.none() | st.text(min_size=1, max_size=30) | st.binary(min_size=1, max_size=16)
modes = st.sampled_from(["Message", "Forward", "PackedForward", "CompressedPackedForward"])


def _wire_time(t: tuple[Any, ...]) -> tuple[Any, int]:
    """(value on the wire, the ns it means)."""
    if t[0] == "int":
        return t[1], t[1] * 10**9
    if t[0] == "event_time":
        return event_time(t[1], t[2]), t[1] * 10**9 + t[2]
    value = t[1] + t[2] / 1000
    seconds = int(value)
    return value, seconds * 10**9 + int((value - seconds) * 1e9)


def _encode(mode: str, tag: str, events: list[tuple[Any, dict[str, Any]]], chunk: str | bytes | None,
            gzip_members: int) -> bytes:
    option: dict[str, Any] = {} if chunk is None else {"chunk": chunk}
    if mode == "Message":
        return b"".join(pack([tag, t, r] + ([option] if option else [])) for t, r in events)
    if mode == "Forward":
        return pack([tag, [[t, r] for t, r in events]] + ([option] if option else []))
    stream = [pack([t, r]) for t, r in events]
    option["size"] = len(events)
    if mode == "PackedForward":
        return pack([tag, b"".join(stream), option])
    # cut the entries into gzip members
    members = max(1, min(gzip_members, len(stream)))
    step = -(-len(stream) // members)
    blob = b"".join(gzip.compress(b"".join(stream[i:i + step])) for i in range(0, len(stream), step))
    option["compressed"] = "gzip"
    return pack([tag, blob, option])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(modes, st.text(min_size=1, max_size=12), events_st, chunks,
                                   st.integers(1, 3)), min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 10_000), max_size=6), handshake=st.booleans())
def test_random_events_in_every_mode_decode_back(messages: list[Any], cuts: list[int], handshake: bool) -> None:
    wire = b""
    want: list[tuple[str, int, dict[str, Any]]] = []
    want_chunks: list[str | bytes] = []
    for mode, tag, events, chunk, members in messages:
        on_wire = [(_wire_time(t), r) for t, r in events]
        wire += _encode(mode, tag, [(w, r) for (w, _), r in on_wire], chunk, members)
        want += [(tag, ns, r) for (_, ns), r in on_wire]
        if chunk is not None:
            want_chunks += [chunk] * (len(events) if mode == "Message" else 1)
    conn = server(shared_key="k" if handshake else None, users={})
    if handshake:
        wire = ping(helo_of(conn)["nonce"], "k") + wire
    cuts = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
    events = feed(conn, *pieces)
    assert flat(events) == want
    assert [e.chunk for e in events if isinstance(e, Entries) and e.chunk is not None] == want_chunks
    assert events[-1] == Closed(0)


def _only_events_or_protocol_errors(conn: ForwardServerConnection, pieces: list[bytes]) -> None:
    """Events or FluentProtocolError, nothing else; and it ends (each event
    takes at least one byte, so there are at most len(data) + 2 of them)."""
    budget = sum(map(len, pieces)) + 2
    try:
        for piece in [p for p in pieces if p] + [b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                assert isinstance(event, Entries | Authenticated | Rejected | Closed)
                if isinstance(event, Entries):
                    assert all(isinstance(t, int) and t > 0 for t in event.times)
                    assert all(type(r) is dict for r in event.records)
                    assert len(event.times) == len(event.records)
                budget -= 1
                assert budget >= 0, "more events than bytes"
    except FluentProtocolError as exc:
        assert str(exc)  # always a reason
        assert conn.state is State.ERROR


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600), cut=st.integers(0, 600), handshake=st.booleans())
def test_random_bytes_give_events_or_a_protocol_error_only(data: bytes, cut: int, handshake: bool) -> None:
    conn = server(max_message=1024, shared_key="k" if handshake else None)
    conn.data_to_send()
    _only_events_or_protocol_errors(conn, [data[:cut], data[cut:]])


@settings(max_examples=300, deadline=None)
@given(objects=st.lists(values, max_size=5))
def test_random_msgpack_objects_give_events_or_a_protocol_error_only(objects: list[Any]) -> None:
    _only_events_or_protocol_errors(server(max_message=4096), [b"".join(map(pack, objects))])


@settings(max_examples=300, deadline=None)
@given(mode=modes, events=events_st, flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    min_size=1, max_size=4))
def test_damaged_valid_messages_give_events_or_a_protocol_error_only(
        mode: str, events: list[Any], flips: list[tuple[int, int]]) -> None:
    wire = bytearray(_encode(mode, "tag", [(_wire_time(t)[0], r) for t, r in events], "c", 2))
    for at, byte in flips:
        wire[at % len(wire)] = byte
    _only_events_or_protocol_errors(server(max_message=8192), [bytes(wire)])
