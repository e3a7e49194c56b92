"""The Fluent Forward output (forward/fluent.py): the handshake against real
captures of the npm @fluent-org/logger client and server
(shared/corpora/fluent-forward/transcripts), the messages decoded back to the
records, the acks' order; and the output over loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

import lz4.block
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import encode_chunk, encode_columns
from hostlog.config import Forward
from hostlog.config.endpoints import Endpoint
from hostlog.errors import LocalProtocolError
from hostlog.forward import fluent
from hostlog.forward.fluent import (
    RESERVED_KEYS,
    FluentAuthError,
    FluentClient,
    FluentOutput,
    FluentProtocolError,
    State,
    encode_messages,
    event_time,
    packed_forward,
    password_digest,
    record_map,
    shared_key_digest,
    tag_of,
)
from hostlog.forward.output import Identity, Refused
from hostlog.forward.protocol import Chunk
from hostlog.forward.sender import output_factory
from hostlog.record import Columns, Record

TRANSCRIPT = "fluent-forward/transcripts/npm_fluent-org-logger_1.0.10.jsonl"
ORIGIN = "0123456789abcdef0123456789abcdef"


# -- helpers ---------------------------------------------------------------------------

def scenarios(corpora: Path) -> dict[str, dict[str, Any]]:
    lines = (corpora / TRANSCRIPT).read_text().splitlines()
    return {d["scenario"]: d for d in map(json.loads, lines)}


def split_messages(data: bytes) -> list[tuple[Any, bytes]]:
    """The msgpack objects of a stream, each with its own bytes."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    out, start = [], 0
    for obj in unpacker:
        end = unpacker.tell()
        out.append((obj, data[start:end]))
        start = end
    return out


def ext_hook(code: int, data: bytes) -> Any:
    assert code == 0 and len(data) == 8, (code, data)
    return struct.unpack(">II", data)


def decode_forward(data: bytes) -> list[tuple[str, list[tuple[tuple[int, int], dict[str, Any]]], dict[str, Any]]]:
    """PackedForward / CompressedPackedForward messages as (tag, [(time, record)], option)."""
    out = []
    for (tag, entries, option), _ in split_messages(data):
        assert isinstance(tag, str) and isinstance(entries, bytes), "entries must be msgpack bin"
        if option.get("compressed") == "gzip":
            entries = gzip.decompress(entries)
        else:
            assert "compressed" not in option
        unpacker = msgpack.Unpacker(raw=False, ext_hook=ext_hook)
        unpacker.feed(entries)
        events = [(t, rec) for t, rec in unpacker]
        assert option["size"] == len(events)
        out.append((tag, events, option))
    return out


def established(**options: Any) -> FluentClient:
    return FluentClient("web-1", **options)


def rec(i: int, app: str = "web", msg: str | bytes | None = None, **kw: Any) -> Record:
    return Record(ts=1_700_000_000_123_456_789 + i, msg=f"m{i}" if msg is None else msg, host="web-1",
                  source="syslog", app=app, origin=ORIGIN, seq=i, **kw)


def helo(nonce: bytes = b"n" * 16, auth: str | bytes = "", keepalive: bool = True) -> bytes:
    return msgpack.packb(["HELO", {"nonce": nonce, "auth": auth, "keepalive": keepalive}], use_bin_type=True)


def pong_for(client: FluentClient, *, server: str = "fluent-1", key: str | None = None, ok: bool = True,
             reason: str = "") -> bytes:
    digest = shared_key_digest(client.salt, server, client.nonce, key or client.shared_key or "") if ok else ""
    return msgpack.packb(["PONG", ok, reason, server, digest], use_bin_type=True)


# -- the handshake ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["PackedForward+ack+shared_key_handshake", "Forward+shared_key+user_auth"])
def test_the_ping_is_byte_for_byte_the_npm_clients_and_its_pong_checks(corpora: Path, name: str) -> None:
    """Given the npm client's hostname, key, user and salt, the PING to the
    real server's HELO is the bytes that client sent; the server's PONG passes."""
    scenario = scenarios(corpora)[name]
    security = scenario["client_options"]["security"]
    (helo_msg, helo_bytes), (pong_msg, pong_bytes) = split_messages(
        base64.b64decode(scenario["server_to_client_b64"]))[:2]
    (ping_msg, ping_bytes) = split_messages(base64.b64decode(scenario["client_to_server_b64"]))[0]
    assert helo_msg[0] == "HELO" and pong_msg[0] == "PONG" and ping_msg[0] == "PING"
    client = FluentClient(security["clientHostname"], shared_key=security["sharedKey"],
                          username=security.get("username"), password=security.get("password"), salt=ping_msg[2])
    assert client.state is State.HELO and not client.established
    assert client.receive_data(helo_bytes) == ping_bytes
    assert client.state is State.PONG and client.keepalive is True
    assert client.receive_data(pong_bytes) == b""
    assert client.established and client.server_hostname == "server.example"


def test_the_digests_are_the_transcripts(corpora: Path) -> None:
    """sha512 hex of salt + hostname + nonce + key (the client's hostname in
    the PING, the server's in the PONG) and of auth salt + user + password."""
    scenario = scenarios(corpora)["Forward+shared_key+user_auth"]
    helo_msg, pong_msg = [m for m, _ in split_messages(base64.b64decode(scenario["server_to_client_b64"]))[:2]]
    ping = split_messages(base64.b64decode(scenario["client_to_server_b64"]))[0][0]
    nonce, auth = helo_msg[1]["nonce"], helo_msg[1]["auth"]
    assert isinstance(nonce, bytes) and isinstance(auth, bytes) and len(nonce) == len(auth) == 16
    salt = ping[2]
    assert shared_key_digest(salt, "client.example", nonce, "k3y") == ping[3]
    assert shared_key_digest(salt, "server.example", nonce, "k3y") == pong_msg[4]
    assert password_digest(auth, "alice", "s3cret") == ping[5]
    assert shared_key_digest(salt, "client.example", nonce, "k3Y") != ping[3]


def test_the_handshake_takes_the_servers_bytes_one_at_a_time(corpora: Path) -> None:
    scenario = scenarios(corpora)["PackedForward+ack+shared_key_handshake"]
    server = base64.b64decode(scenario["server_to_client_b64"])
    (_, helo_bytes), (_, pong_bytes) = split_messages(server)[:2]
    ping_msg, ping_bytes = split_messages(base64.b64decode(scenario["client_to_server_b64"]))[0]
    client = FluentClient("client.example", shared_key="secure_communication_is_awesome", salt=ping_msg[2])
    sent = b"".join(client.receive_data(bytes([b])) for b in helo_bytes + pong_bytes)
    assert sent == ping_bytes and client.established


def test_without_user_auth_the_ping_has_no_user_even_if_one_is_configured() -> None:
    client = FluentClient("web-1", shared_key="k", username="edge", password="p")
    ping = msgpack.unpackb(client.receive_data(helo(auth="")), raw=False)
    assert ping[4:] == ["", ""]
    client = FluentClient("web-1", shared_key="k", username="edge", password="p")
    ping = msgpack.unpackb(client.receive_data(helo(auth=b"a" * 16)), raw=False)
    assert ping[4:] == ["edge", password_digest(b"a" * 16, "edge", "p")]


def test_a_refusing_pong_says_why_and_is_a_rejection() -> None:
    client = established(shared_key="k")
    client.receive_data(helo())
    with pytest.raises(FluentAuthError, match="shared key mismatch") as info:
        client.receive_data(pong_for(client, ok=False, reason="shared key mismatch"))
    assert isinstance(info.value, Refused) and info.value.rejected


def test_a_pong_that_does_not_prove_the_key_is_refused() -> None:
    client = established(shared_key="the key")
    client.receive_data(helo())
    with pytest.raises(FluentAuthError, match="does not prove"):
        client.receive_data(pong_for(client, key="another key"))
    assert not client.established


def test_a_pong_with_this_agents_own_hostname_is_refused() -> None:
    client = established(shared_key="k")
    client.receive_data(helo())
    with pytest.raises(FluentAuthError, match="own"):
        client.receive_data(pong_for(client, server="web-1"))


@pytest.mark.parametrize("message", [["PONG", True, "", "fluent-1"], ["PONG", "yes", "", "s", "d"], {"ack": "x"},
                                     ["HELO", {"nonce": b"n"}]])
def test_anything_but_a_pong_after_the_ping_is_a_protocol_error(message: Any) -> None:
    client = established(shared_key="k")
    client.receive_data(helo())
    with pytest.raises(FluentProtocolError):
        client.receive_data(msgpack.packb(message, use_bin_type=True))


@pytest.mark.parametrize("message", [{"ack": "x"}, ["HELO"], ["HELO", {"auth": ""}], ["HELO", {"nonce": 5}],
                                     ["PONG", True, "", "s", "d"]])
def test_with_a_shared_key_the_first_message_must_be_a_helo(message: Any) -> None:
    client = established(shared_key="k")
    with pytest.raises(FluentProtocolError):
        client.receive_data(msgpack.packb(message, use_bin_type=True))


def test_a_helo_to_a_client_without_a_shared_key_says_what_to_set() -> None:
    client = established()
    assert client.established
    with pytest.raises(FluentAuthError, match="set shared_key"):
        client.receive_data(helo())


def test_garbage_and_oversized_messages_from_the_server_are_protocol_errors() -> None:
    with pytest.raises(FluentProtocolError, match="msgpack"):
        established().receive_data(b"\xc1")  # never used in msgpack
    with pytest.raises(FluentProtocolError, match="more than"):
        established().receive_data(b"\xdb" + struct.pack(">I", 1 << 20) + b"x" * (fluent.MAX_SERVER_MESSAGE + 1))


def test_the_connection_closed_during_the_handshake_is_an_error() -> None:
    client = established(shared_key="k")
    with pytest.raises(ConnectionResetError, match="HELO"):
        client.connection_closed()
    established().connection_closed()  # after it: the end of the acks, no error


# -- encoding -------------------------------------------------------------------------

def test_event_time_is_the_fixext8_of_the_captures(corpora: Path) -> None:
    scenario = scenarios(corpora)["PackedForward"]
    entries = split_messages(base64.b64decode(scenario["client_to_server_b64"]))[0][0][1]
    first = msgpack.packb([event_time(1_500_000_000_123_456_789), {"message": "hello", "n": 1}], use_bin_type=True)
    assert entries.startswith(first) and first[1:3] == b"\xd7\x00"
    assert event_time(-5).data == struct.pack(">II", 0, 0)
    assert event_time(2**32 * 10**9).data == struct.pack(">II", 2**32 - 1, 999_999_999)


def test_a_packed_forward_message_is_byte_for_byte_the_npm_clients(corpora: Path) -> None:
    scenario = scenarios(corpora)["PackedForward+ack"]
    (tag, entries, option), raw = split_messages(base64.b64decode(scenario["client_to_server_b64"]))[0]
    assert packed_forward(tag, entries, option["size"], option["chunk"], compress=False) == raw


def test_a_compressed_message_is_gzip_with_its_option(corpora: Path) -> None:
    scenario = scenarios(corpora)["CompressedPackedForward+ack"]
    (tag, gz, option), _ = split_messages(base64.b64decode(scenario["client_to_server_b64"]))[0]
    message = msgpack.unpackb(packed_forward(tag, gzip.decompress(gz), 2, option["chunk"], compress=True), raw=False)
    assert message[0] == tag and message[2] == option  # {"size", "chunk", "compressed": "gzip"}, in that order
    assert list(message[2]) == list(option) and gzip.decompress(message[1]) == gzip.decompress(gz)


@pytest.mark.parametrize(("app", "tag"), [("nginx", "nginx"), ("", "hostlog"), ("db.pg-main_1", "db.pg-main_1"),
                                          ("my app/x:y", "my_app_x_y"), ("ünï", "_n_")])
def test_the_tag_is_the_app_in_tag_characters(app: str, tag: str) -> None:
    assert tag_of(app) == tag


@pytest.mark.parametrize("compress", [False, True])
def test_records_decode_back_from_the_messages(compress: bool) -> None:
    records = [
        rec(1, pid=42, facility=3, severity=3, fields={"UNIT": "a.service", "RAW": b"\x00\xff", "L": ["x", b"\x80"]}),
        rec(2, app="", msg=b"\xff\xfe not utf-8"),
        rec(3, app="my app", fields={"message": "a field", "host": "h2", "field_message": "taken"}),
        rec(4, pid=7),
    ]
    messages = encode_messages(Columns.of(records), compress=compress)
    decoded = decode_forward(b"".join(m for _, m in messages))
    assert [d[0] for d in decoded] == ["web", "hostlog", "my_app"]  # one message per tag, first seen first
    assert [d[2]["chunk"] for d in decoded] == [cid for cid, _ in messages]
    for cid, _ in messages:
        assert len(base64.b64decode(cid, validate=True)) == 16
    by_seq = {r["hostlog_seq"]: (tag, t, r) for tag, events, _ in decoded for t, r in events}
    assert by_seq[1] == ("web", (1_700_000_000, 123_456_790), {
        "message": "m1", "host": "web-1", "source": "syslog", "severity": 3, "pid": 42, "facility": 3,
        "UNIT": "a.service", "RAW": b"\x00\xff", "L": ["x", b"\x80"], "hostlog_origin": ORIGIN, "hostlog_seq": 1})
    assert by_seq[2][2]["message"] == b"\xff\xfe not utf-8" and "pid" not in by_seq[2][2]
    # a field named like a record key keeps its value under field_<name> (and again if that is taken)
    assert by_seq[3][2] == {"message": "m3", "host": "web-1", "source": "syslog", "severity": 6,
                            "field_message": "a field", "field_host": "h2", "field_field_message": "taken",
                            "hostlog_origin": ORIGIN, "hostlog_seq": 3}
    assert [r["hostlog_seq"] for _, events, _ in decoded for _, r in events] == [1, 4, 2, 3]


field_names = st.one_of(st.sampled_from(sorted(RESERVED_KEYS)), st.text(min_size=1, max_size=12))
field_values = st.one_of(st.text(max_size=30), st.binary(max_size=30),
                         st.lists(st.one_of(st.text(max_size=8), st.binary(max_size=8)), max_size=3))
records_st = st.builds(
    Record, ts=st.integers(0, 2**32 * 10**9 - 1), msg=st.one_of(st.text(max_size=200), st.binary(max_size=200)),
    host=st.text(max_size=20), source=st.sampled_from(["syslog", "journald", "file", ""]),
    app=st.one_of(st.just(""), st.text(max_size=20)), pid=st.one_of(st.none(), st.integers(0, 2**31)),
    severity=st.integers(0, 7), facility=st.one_of(st.none(), st.integers(0, 23)),
    fields=st.dictionaries(field_names, field_values, max_size=5), origin=st.just(ORIGIN), seq=st.just(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(records_st, min_size=1, max_size=30), st.booleans(), st.integers(1, 4096))
def test_random_records_encode_and_decode_back(records: list[Record], compress: bool, max_entries: int) -> None:
    for i, r in enumerate(records, 1):
        r.seq = 100 + i
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fluent, "MAX_ENTRIES_BYTES", max_entries)  # small: tags split into several messages
        messages = encode_messages(Columns.of(records), compress=compress)
    decoded = decode_forward(b"".join(m for _, m in messages))
    assert len({cid for cid, _ in messages}) == len(messages) == len(decoded)
    got = {r["hostlog_seq"]: (tag, t, r) for tag, events, _ in decoded for t, r in events}
    assert sorted(got) == [r.seq for r in records]
    for r in records:
        tag, (sec, nsec), m = got[r.seq]
        assert tag == tag_of(r.app) and sec * 10**9 + nsec == r.ts
        assert (m["message"], m["host"], m["source"], m["severity"]) == (r.msg, r.host, r.source, r.severity)
        assert m.get("pid") == r.pid and m.get("facility") == r.facility
        assert (m["hostlog_origin"], m["hostlog_seq"]) == (r.origin, r.seq)
        extra = {k: v for k, v in m.items() if k not in RESERVED_KEYS}
        assert len(extra) == len(r.fields)  # every field, none lost to a name taken
        assert sorted(map(repr, extra.values())) == sorted(map(repr, r.fields.values()))
        for name, value in r.fields.items():
            if name not in RESERVED_KEYS and not name.startswith("field_"):
                assert m[name] == value
    # the entries of one tag keep their order
    for tag in {tag for tag, _, _ in decoded}:
        seqs = [r["hostlog_seq"] for t, events, _ in decoded if t == tag for _, r in events]
        assert seqs == [r.seq for r in records if tag_of(r.app) == tag]


def test_record_map_is_the_documented_shape() -> None:
    assert record_map("hi", "h", "syslog", 4, None, None, {}, ORIGIN, 9) == {
        "message": "hi", "host": "h", "source": "syslog", "severity": 4, "hostlog_origin": ORIGIN, "hostlog_seq": 9}


# -- acks ------------------------------------------------------------------------------

def ack(chunk_id: str) -> bytes:
    return msgpack.packb({"ack": chunk_id}, use_bin_type=True)


def test_a_chunk_is_acked_once_every_message_of_it_and_of_every_earlier_chunk_is() -> None:
    client = established()
    a = encode_messages(Columns.of([rec(1, "x"), rec(2, "y"), rec(3, "x")]), compress=False)
    b = encode_messages(Columns.of([rec(4, "x")]), compress=False)
    c = encode_messages(Columns.of([rec(5, "z"), rec(6, "x")]), compress=False)
    assert (len(a), len(b), len(c)) == (2, 1, 2)
    sent = client.add_chunk(3, a) + client.add_chunk(4, b) + client.add_chunk(6, c)
    assert len(decode_forward(sent)) == 5 and client.in_flight == 5
    client.receive_data(ack(b[0][0]) + ack(c[1][0]))  # later chunks first: nothing yet
    assert client.acked() == []
    client.receive_data(ack(a[1][0]))  # one of a's two
    assert client.acked() == []
    client.receive_data(ack(a[0][0]))  # a complete, and b was
    assert client.acked() == [3, 4]
    assert client.acked() == []
    client.receive_data(ack(c[0][0]))
    assert client.acked() == [6] and client.in_flight == 0


def test_acks_split_across_reads_and_in_one_read() -> None:
    client = established()
    messages = encode_messages(Columns.of([rec(i, f"app{i}") for i in range(1, 6)]), compress=False)
    client.add_chunk(5, messages)
    data = b"".join(ack(cid) for cid, _ in reversed(messages))
    for i in range(len(data) - 1):
        client.receive_data(data[i:i + 1])
    assert client.acked() == []
    client.receive_data(data[-1:])
    assert client.acked() == [5]


def test_an_ack_for_an_unknown_id_or_a_second_ack_is_a_protocol_error() -> None:
    client = established()
    messages = encode_messages(Columns.of([rec(1)]), compress=False)
    client.add_chunk(1, messages)
    with pytest.raises(FluentProtocolError, match="not sent"):
        client.receive_data(ack("bm90IHNlbnQgYnkgdXMhIQ=="))
    client = established()
    client.add_chunk(1, messages)
    client.receive_data(ack(messages[0][0]))
    with pytest.raises(FluentProtocolError, match="acked already"):
        client.receive_data(ack(messages[0][0]))
    with pytest.raises(FluentProtocolError, match="unexpected"):
        established().receive_data(msgpack.packb(["something", "else"]))


def test_a_tag_past_the_size_limit_is_several_messages_acked_as_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluent, "MAX_ENTRIES_BYTES", 1000)
    records = [rec(i, msg="x" * 300) for i in range(1, 11)]
    messages = encode_messages(Columns.of(records), compress=False)
    decoded = decode_forward(b"".join(m for _, m in messages))
    assert len(messages) >= 4 and {tag for tag, _, _ in decoded} == {"web"}
    assert all(len(msgpack.unpackb(m, raw=False)[1]) <= 1000 for _, m in messages)
    assert [r["hostlog_seq"] for _, events, _ in decoded for _, r in events] == list(range(1, 11))
    client = established()
    client.add_chunk(10, messages)
    for cid, _ in messages[:-1]:
        client.receive_data(ack(cid))
    assert client.acked() == []
    client.receive_data(ack(messages[-1][0]))
    assert client.acked() == [10]


def test_records_before_the_handshake_or_out_of_order_are_this_sides_error() -> None:
    with pytest.raises(LocalProtocolError):
        established(shared_key="k").encode_chunk(1, Columns.of([rec(1)]))
    client = established()
    client.encode_chunk(5, Columns.of([rec(5)]))
    with pytest.raises(LocalProtocolError):
        client.encode_chunk(5, Columns.of([rec(5)]))


def test_a_chunk_of_no_records_is_acked_in_its_turn() -> None:
    client = established()
    first = encode_messages(Columns.of([rec(1)]), compress=False)
    client.add_chunk(1, first)
    client.add_chunk(2, [])
    assert client.acked() == []
    client.receive_data(ack(first[0][0]))
    assert client.acked() == [1, 2]
    client.add_chunk(3, [])
    assert client.acked() == [3]


# -- the output over sockets -------------------------------------------------------------

def spool_chunk(records: list[Record]) -> Chunk:
    batch = Columns.of(records)
    raw = encode_columns(batch.columns)
    return Chunk(ORIGIN, records[0].seq, len(records), len(raw), lz4.block.compress(raw, store_size=False))


def output(port: int, **options: Any) -> FluentOutput:
    return FluentOutput(Endpoint("tcp", "127.0.0.1", port, None), Identity(ORIGIN, "web-1"), None, **options)


async def serve(handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_the_output_sends_chunks_and_reports_acks_in_order() -> None:
    """A server that acks each chunk's messages only once it has every one,
    last first: the output reports each chunk's last seq, in order."""
    async def main() -> tuple[list[int], list[Any]]:
        got: list[Any] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            unpacker = msgpack.Unpacker(raw=False)
            ids = []
            while len(ids) < 4:
                unpacker.feed(await reader.read(65536))
                for message in unpacker:
                    got.append(message)
                    ids.append(message[2]["chunk"])
            for cid in reversed(ids):
                writer.write(ack(cid))
            await writer.drain()
            await reader.read()  # until the client closes
            writer.close()

        server, port = await serve(handler)
        out = output(port)
        assert await asyncio.wait_for(out.open(), 5) is None
        await out.send(spool_chunk([rec(1, "a"), rec(2, "b")]))
        await out.send(spool_chunk([rec(3, "a"), rec(4, "c")]))
        await out.drain()
        seqs = []
        async with asyncio.timeout(5):
            async for seq in out.acks():
                seqs.append(seq)
                if seq == 4:
                    break
        await out.close()
        server.close()
        return seqs, got

    seqs, got = asyncio.run(main())
    assert seqs == [2, 4]  # the second chunk's acks came first: reported after the first's
    assert sorted(m[0] for m in got) == ["a", "a", "b", "c"]


def test_a_chunk_of_no_records_is_reported_without_a_word_from_the_server() -> None:
    async def main() -> list[int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never acks
            writer.close()

        server, port = await serve(handler)
        out = output(port)
        await asyncio.wait_for(out.open(), 5)
        seqs: list[int] = []

        async def take() -> None:
            async for seq in out.acks():
                seqs.append(seq)
                return

        taking = asyncio.create_task(take())
        await asyncio.sleep(0.05)  # (acks() waits on the connection by now)
        raw = encode_chunk([])
        await out.send(Chunk(ORIGIN, 7, 1, len(raw), lz4.block.compress(raw, store_size=False)))
        await asyncio.wait_for(taking, 5)
        await out.close()
        server.close()
        return seqs

    assert asyncio.run(main()) == [7]


def test_acks_wait_for_a_send_under_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender counts a batch of chunks as sent once it has sent them all,
    and refuses an ack past that: a chunk acked while the next one is still
    being encoded (off the loop) is reported only once that one is sent."""
    encode = fluent.encode_messages

    def slow_second(columns: Columns, **options: Any) -> list[tuple[str, bytes]]:
        if columns.seq[0] == 2:
            time.sleep(0.3)  # (on the send's thread: the first chunk's ack comes meanwhile)
        return encode(columns, **options)

    monkeypatch.setattr(fluent, "encode_messages", slow_second)

    async def main() -> tuple[list[int], list[tuple[int, int]]]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            unpacker = msgpack.Unpacker(raw=False)
            while data := await reader.read(65536):
                unpacker.feed(data)
                for message in unpacker:
                    writer.write(ack(message[2]["chunk"]))  # at once
            writer.close()

        server, port = await serve(handler)
        out = output(port)
        await asyncio.wait_for(out.open(), 5)
        sent_upto = 0
        seqs: list[int] = []
        early: list[tuple[int, int]] = []

        async def take() -> None:
            async for seq in out.acks():
                seqs.append(seq)
                if seq > sent_upto:
                    early.append((seq, sent_upto))
                if seq == 2:
                    return

        taking = asyncio.create_task(take())
        await out.send(spool_chunk([rec(1)]))
        await out.send(spool_chunk([rec(2)]))
        sent_upto = 2  # the batch sent, as the sender counts it
        await asyncio.wait_for(taking, 5)
        await out.close()
        server.close()
        return seqs, early

    seqs, early = asyncio.run(main())
    assert seqs == [1, 2] and early == []


def test_without_a_shared_key_open_does_not_wait_for_the_server() -> None:
    async def main() -> float:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # says nothing, as a server without a shared key
            writer.close()

        server, port = await serve(handler)
        out = output(port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(out.open(), 5)
        took = loop.time() - start
        await out.close()
        server.close()
        return took

    assert asyncio.run(main()) < 1.0


def test_with_a_shared_key_a_server_that_sends_no_helo_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluent, "HELO_TIMEOUT_S", 0.3)

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server, port = await serve(handler)
        out = output(port, shared_key="k")
        try:
            with pytest.raises(FluentAuthError, match="no HELO"):
                await asyncio.wait_for(out.open(), 5)
        finally:
            await out.close()
            server.close()

    asyncio.run(main())


def test_a_server_that_hangs_up_during_the_handshake_is_an_error_saying_so() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(helo())
            await reader.read(1)  # the PING
            writer.close()  # and no PONG

        server, port = await serve(handler)
        out = output(port, shared_key="k")
        try:
            with pytest.raises(ConnectionResetError, match="PONG"):
                await asyncio.wait_for(out.open(), 5)
        finally:
            await out.close()
            server.close()

    asyncio.run(main())


def test_the_output_handshakes_then_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server of ours playing the npm one's part: HELO, checks the PING, PONG, acks."""
    async def main() -> tuple[list[int], list[Any]]:
        got: list[Any] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonce, auth = b"N" * 16, b"A" * 16
            writer.write(helo(nonce, auth))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                unpacker.feed(data)
                for message in unpacker:
                    got.append(message)
                    if message[0] == "PING":
                        _, host, salt, digest, user, pw = message
                        ok = digest == shared_key_digest(salt, host, nonce, "k") and \
                            pw == password_digest(auth, "edge", "p") and user == "edge"
                        writer.write(msgpack.packb(["PONG", ok, "" if ok else "no", "fluent-1",
                                                    shared_key_digest(salt, "fluent-1", nonce, "k")]))
                    else:
                        writer.write(ack(message[2]["chunk"]))
            writer.close()

        server, port = await serve(handler)
        out = output(port, shared_key="k", username="edge", password="p", compress=True)
        await asyncio.wait_for(out.open(), 5)
        assert out.client.established and out.client.server_hostname == "fluent-1"
        await out.send(spool_chunk([rec(1), rec(2)]))
        seqs = []
        async with asyncio.timeout(5):
            async for seq in out.acks():
                seqs.append(seq)
                break
        await out.close()
        server.close()
        return seqs, got

    seqs, got = asyncio.run(main())
    assert seqs == [2]
    assert got[0][0] == "PING" and got[1][2]["compressed"] == "gzip" and got[1][2]["size"] == 2


def test_a_helo_before_a_reset_is_seen_and_refused_with_what_to_set() -> None:
    """A server that wants a key says HELO, then drops a client that sends
    records instead of a PING (the npm server resets it): the error is the
    HELO's, not the reset's."""
    async def main() -> BaseException | None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(helo())
            await writer.drain()
            await reader.read(1)  # the client's first record
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            writer.transport.abort()

        server, port = await serve(handler)
        out = output(port)
        await asyncio.wait_for(out.open(), 5)
        error: BaseException | None = None
        try:
            async with asyncio.timeout(5):
                await out.send(spool_chunk([rec(1)]))
                await out.drain()
                async for _ in out.acks():
                    pass
        except Exception as exc:
            error = exc
        await out.close()
        server.close()
        return error

    error = asyncio.run(main())
    assert isinstance(error, FluentAuthError) and "set shared_key" in str(error) and error.rejected


def test_the_sender_makes_a_fluent_output_of_the_forward_section() -> None:
    forward = Forward(name="agg", type="fluent", targets=["tls://agg-1:24224"], shared_key="k", username="u",
                      password="p", compress=True)
    make = output_factory(forward, Identity(ORIGIN, "web-1"), None)
    out = make(forward.endpoints()[0])
    assert isinstance(out, FluentOutput)
    assert (out.endpoint.scheme, out.endpoint.host, out.endpoint.port) == ("tls", "agg-1", 24224)
    client = out.client
    assert (client.hostname, client.shared_key, client.username, client.password, client.compress) == \
        ("web-1", "k", "u", "p", True)
