"""/api/v1/tail: its formats (pure, with properties) and its handler against an
in-process server on a real spool (tests/support/http.py): WebSocket and SSE,
the last N then live, resuming after a cursor, what a slow follower is told,
and every refusal with its status."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.http import tail
from hostlog.http.budget import Budget
from hostlog.http.follow import get_hub, position_cursor
from hostlog.http.keys import KeyStore, keys_path
from hostlog.http.look import Missed
from hostlog.http.params import ParamError
from hostlog.http.records import record_json
from hostlog.http.tail import (
    Encoder,
    dropped_message,
    encode_record,
    parse_tail_params,
    sse_event,
    ws_text_frame,
)
from hostlog.record import Record
from tests.support.http import ServedSpool


def run(coro):
    return asyncio.run(coro)


def rec(i: int, msg: str | None = None, severity: int = 6) -> Record:
    return Record(ts=1_800_000_000_000_000_000 + i * 1000, msg=msg if msg is not None else f"line {i}",
                  host="h1", app="web", pid=100 + i, severity=severity, source="syslog",
                  fields={"N": str(i)})


# -- formats -------------------------------------------------------------------------------

def read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """RFC 6455 5.2, as a client reads a server's frames: (opcode, payload)
    of each whole frame, and what is left over."""
    out = []
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x80, "FIN"
        assert b0 & 0x70 == 0, "no RSV bits"
        assert b1 & 0x80 == 0, "a server does not mask"
        n, head = b1 & 0x7F, 2
        if n == 126:
            if len(data) - pos < 4:
                break
            n, head = struct.unpack_from("!H", data, pos + 2)[0], 4
        elif n == 127:
            if len(data) - pos < 10:
                break
            n, head = struct.unpack_from("!Q", data, pos + 2)[0], 10
        if len(data) - pos < head + n:
            break
        out.append((b0 & 0x0F, data[pos + head:pos + head + n]))
        pos += head + n
    return out, data[pos:]


@given(st.lists(st.binary(max_size=70_000), max_size=5), st.integers(0, 200))
@settings(max_examples=60, deadline=None)
def test_ws_frames_read_back_whole_and_in_order(payloads: list[bytes], split: int) -> None:
    stream = b"".join(ws_text_frame(p) for p in payloads)
    frames, rest = read_frames(stream)
    assert [(1, p) for p in payloads] == frames and rest == b""
    # cut anywhere: what is whole reads back, the rest waits
    cut = min(split * 97, len(stream))
    first, rest = read_frames(stream[:cut])
    assert frames[:len(first)] == first
    assert rest == stream[cut - len(rest):cut]


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_ws_length_encodings_at_their_edges(n: int) -> None:
    frame = ws_text_frame(b"x" * n)
    assert len(frame) - n == (2 if n < 126 else 4 if n < 65536 else 10)
    assert read_frames(frame)[0] == [(1, b"x" * n)]


def read_sse(stream: bytes) -> list[dict[str, str]]:
    """Events as the HTML standard's parser dispatches them (id, event, data)."""
    events, current, data = [], {}, []
    for line in stream.decode().split("\n"):
        if line == "":
            if data:
                events.append({**current, "data": "\n".join(data)})
            current, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            current[name] = value
    return events


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=60)


@given(st.lists(st.tuples(TEXT, st.none() | st.sampled_from(["dropped", "x"]),
                          st.none() | TEXT.filter(lambda t: t.strip() == t)), max_size=6))
def test_sse_events_read_back(events: list[tuple[str, str | None, str | None]]) -> None:
    stream = b": keepalive\n\n" + b"".join(sse_event(d.encode(), event=e, event_id=i) for d, e, i in events)
    got = read_sse(stream)
    want = []
    for data, event, event_id in events:
        item = {"data": data}
        if event is not None:
            item["event"] = event
        if event_id is not None:
            item["id"] = event_id
        want.append(item)
    assert got == want


def test_sse_refuses_a_line_break_in_data() -> None:
    with pytest.raises(ValueError):
        sse_event(b"two\nlines")


MESSAGES = st.one_of(st.text(max_size=40), st.binary(max_size=40))


@given(MESSAGES, st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True),
                                 st.one_of(st.text(max_size=10), st.binary(max_size=10)), max_size=3))
def test_a_record_is_one_line_of_utf8_json_equal_to_record_json(msg, fields) -> None:
    record = Record(ts=5, msg=msg, host="h", app="a", fields=fields)
    data = encode_record(record, "n:5", {"region": "eu"})
    assert b"\n" not in data and b"\r" not in data
    assert json.loads(data.decode("utf-8")) == json.loads(json.dumps(record_json(record, "n:5", {"region": "eu"})))


def test_a_lone_surrogate_is_escaped_not_lost() -> None:
    data = encode_record(Record(ts=1, msg="a\udcffb"), "n:1")
    assert json.loads(data)["message"] == "a\udcffb"


def test_the_encoder_makes_each_message_once_and_stays_bounded() -> None:
    enc = Encoder("node", {"region": "eu"}, limit=64)
    r = rec(1)
    first = enc.ws(1, r)
    assert enc.ws(1, r) is first and enc.encoded == 1
    assert read_frames(first)[0][0][1] == encode_record(r, "node:1", {"region": "eu"})
    event = read_sse(enc.sse(1, r))[0]
    assert event["id"] == "node:1" and json.loads(event["data"])["cursor"] == "node:1"
    for i in range(1000):
        enc.ws(i, r)
    assert len(enc._ws) <= 64


def test_a_dropped_notice_names_the_positions() -> None:
    assert dropped_message(Missed(3, 10, 14, False), "node") == {
        "dropped": 3, "first_cursor": "node:10", "last_cursor": "node:14", "exact": False}


@given(st.integers(0, 100_000), st.lists(st.sampled_from(["unit", "host", "priority"]), max_size=2))
def test_tail_params(n: int, names: list[str]) -> None:
    values = {"unit": "nginx", "host": "web-1", "priority": "warning"}
    params = [(k, values[k]) for k in dict.fromkeys(names)]
    p = parse_tail_params([*params, ("n", str(n))])
    assert p.n == n and p.cursor is None
    assert parse_tail_params([*params, ("cursor", "a:1")]).cursor == "a:1"
    # an EventSource reconnecting to the same URL resumes, whatever n said
    p = parse_tail_params([*params, ("n", str(n))], last_event_id="a:9")
    assert p.cursor == "a:9" and p.n == 0


@pytest.mark.parametrize("params, word", [
    ([("n", "x")], "'n'"), ([("n", "-1")], "'n'"), ([("n", "100001")], "'n'"), ([("n", "1"), ("n", "2")], "'n'"),
    ([("cursor", "a:1"), ("n", "3")], "'cursor' and 'n'"), ([("cursor", "")], "'cursor'"),
    ([("follow", "1")], "'follow'"), ([("priority", "bogus")], "bogus"),
])
def test_bad_tail_params_name_the_parameter(params, word) -> None:
    with pytest.raises(ParamError, match=word):
        parse_tail_params(params)


# -- the handler ---------------------------------------------------------------------------

async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def ws_messages(ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 10.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        out.append(json.loads(msg.data))
    return out


def test_websocket_the_last_n_then_live_and_resume_after_a_cursor(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            secret = KeyStore(keys_path(tmp_path)).create("ops", ["read"])
            auth = {"Authorization": f"Bearer {secret}"}
            node = served.server.ctx.agent_id
            await served.write([rec(i) for i in range(10)])
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(served.url + "/api/v1/tail?n=3", headers=auth) as ws:
                    first = await ws_messages(ws, 3)
                    assert [m["message"] for m in first] == ["line 7", "line 8", "line 9"]
                    assert first[0] == record_json(rec(7), position_cursor(node, 8))
                    await served.write([rec(10), rec(11)])
                    live = await ws_messages(ws, 2)
                    assert [m["cursor"] for m in live] == [position_cursor(node, 11), position_cursor(node, 12)]
                # while no one follows, more records; then resume after the last seen
                await served.write([rec(i) for i in range(12, 20)])
                async with session.ws_connect(served.url + "/api/v1/tail",
                                              params={"cursor": live[-1]["cursor"]}, headers=auth) as ws:
                    resumed = await ws_messages(ws, 8)
                    await served.write([rec(20)])
                    resumed += await ws_messages(ws, 1)
                    assert [m["message"] for m in resumed] == [f"line {i}" for i in range(12, 21)]
                # filters: the same words as hostlog query
                await served.write([rec(21, severity=3), rec(22)])
                async with session.ws_connect(served.url + "/api/v1/tail?priority=err&n=5", headers=auth) as ws:
                    (only,) = await ws_messages(ws, 1)
                    assert only["message"] == "line 21" and only["level"] == "err"
            await served.flush()
            audit = [r for r in served.stored("audit") if "/api/v1/tail" in str(r.msg)]
            assert len(audit) == 3 and "101, 5 records" in str(audit[0].msg)
    run(main())


def test_server_sent_events_and_last_event_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            secret = KeyStore(keys_path(tmp_path)).create("ops", ["read"])
            headers = {"Authorization": f"Bearer {secret}", "Accept": "text/event-stream"}
            await served.write([rec(i) for i in range(5)])
            async with aiohttp.ClientSession() as session:
                async with session.get(served.url + "/api/v1/tail?n=2", headers=headers) as resp:
                    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
                    buf = b""
                    while buf.count(b"\n\n") < 3:  # retry:, then two events
                        buf += await asyncio.wait_for(resp.content.readany(), 10)
                    events = read_sse(buf)
                    assert [json.loads(e["data"])["message"] for e in events] == ["line 3", "line 4"]
                    assert events[-1]["id"] == json.loads(events[-1]["data"])["cursor"]
                    assert buf.startswith(b"retry: ")
                await served.write([rec(5), rec(6)])
                # what an EventSource does when it reconnects: the same URL and Last-Event-ID
                async with session.get(served.url + "/api/v1/tail?n=2",
                                       headers={**headers, "Last-Event-ID": events[-1]["id"]}) as resp:
                    buf = b""
                    while buf.count(b"\n\n") < 3:
                        buf += await asyncio.wait_for(resp.content.readany(), 10)
                    assert [json.loads(e["data"])["message"] for e in read_sse(buf)] == ["line 5", "line 6"]
    run(main())


def test_refusals(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail], extra_config="max_followers = 1\n") as served:
            store = KeyStore(keys_path(tmp_path))
            reader, ingester = store.create("ops", ["read"]), store.create("shipper", ["ingest"])
            auth = {"Authorization": f"Bearer {reader}"}
            url = served.url + "/api/v1/tail"
            async with aiohttp.ClientSession() as session:
                async def status(params: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
                    async with session.get(url, params=params, headers=headers) as resp:
                        return resp.status, await resp.text()
                sse = {**auth, "Accept": "text/event-stream"}
                assert (await status(headers={"Accept": "text/event-stream"}))[0] == 401
                assert (await status(headers={"Authorization": f"Bearer {ingester}",
                                              "Accept": "text/event-stream"}))[0] == 403
                code, text = await status(headers=auth)
                assert code == 406 and "text/event-stream" in text
                for params, word in (({"n": "many"}, "'n'"), ({"colour": "red"}, "'colour'"),
                                     ({"cursor": "nope"}, "'cursor'"), ({"cursor": "abc:5"}, "'cursor'"),
                                     ({"since": "not a time"}, "not a time")):
                    code, text = await status(params, sse)
                    assert code == 400 and word in text, (params, text)
                # a WebSocket with a bad parameter: refused before the upgrade, 400
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with session.ws_connect(url + "?n=x", headers=auth):
                        pass
                assert refused.value.status == 400
                # one follower at most: the second gets 503 while the first follows
                async with session.ws_connect(url, headers=auth) as ws:
                    await until(lambda: len(get_hub(served.server.ctx).subscriptions) == 1)
                    code, text = await status(headers=sse)
                    assert code == 503 and "max_followers" in text
                    await ws.close()
                await until(lambda: not get_hub(served.server.ctx).subscriptions)
                async with session.ws_connect(url, headers=auth) as ws:  # a place again
                    await served.write([rec(1)])
                    assert (await ws_messages(ws, 1))[0]["message"] == "line 1"
    run(main())


class RawFollower:
    """A WebSocket client with a tiny receive buffer that reads only when told."""

    def __init__(self, port: int, secret: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /api/v1/tail HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                          f"Authorization: Bearer {secret}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = b""

    def read(self, until_told: int, timeout: float = 20.0) -> tuple[list[dict], list[dict]]:
        records, notices = [], []
        deadline = time.monotonic() + timeout
        while len(records) + sum(n["dropped"] for n in notices) < until_told:
            assert time.monotonic() < deadline, (len(records), notices)
            self.buf += self.sock.recv(1 << 16)
            frames, self.buf = read_frames(self.buf)
            for opcode, payload in frames:
                assert opcode == 1, opcode
                obj = json.loads(payload)
                (notices if "dropped" in obj else records).append(obj)
        return records, notices

    def close(self) -> None:
        self.sock.close()


def test_a_slow_follower_is_told_what_it_missed_and_holds_no_one_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail], extra_config="follower_buffer = 200\n") as served:
            secret = KeyStore(keys_path(tmp_path)).create("ops", ["read"])
            hub = get_hub(served.server.ctx)
            hub.budget = Budget(share_min=1.0, share_max=1.0, burst=1e6)  # only the follower is slow
            node = served.server.ctx.agent_id
            slow = await asyncio.to_thread(RawFollower, served.port, secret)  # (blocking: off the loop)
            total = 1500
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(served.url + "/api/v1/tail",
                                              headers={"Authorization": f"Bearer {secret}"}) as fast:
                    await until(lambda: len(hub.subscriptions) == 2)
                    big = "x" * 16_000  # 24 MB in all: more than the socket buffers hold
                    got: list[dict] = []
                    for k in range(0, total, 100):
                        await served.write([rec(k + i, msg=f"{k + i} {big}") for i in range(100)])
                        got += await ws_messages(fast, 100)  # the fast one keeps up all along
                    assert [int(m["message"].split()[0]) for m in got] == list(range(total))
            records, notices = await asyncio.to_thread(slow.read, total)
            slow.close()
            seqs = [int(r["cursor"].rpartition(":")[2]) for r in records]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            assert notices and all(n["exact"] for n in notices)
            assert len(records) + sum(n["dropped"] for n in notices) == total
            # each notice covers exactly what was not sent, between what was
            for n in notices:
                first = int(n["first_cursor"].rpartition(":")[2])
                last = int(n["last_cursor"].rpartition(":")[2])
                assert n["first_cursor"].startswith(node + ":")
                assert not any(first <= s <= last for s in seqs)
                assert n["dropped"] == last - first + 1
            assert served.server.ctx.counters.get("follow_missed", 0) >= sum(n["dropped"] for n in notices)
    run(main())


# -- the client's side (hostlog logs) ----------------------------------------------------

FIELD_VALUES = st.one_of(st.text(max_size=12), st.binary(max_size=12),
                         st.lists(st.one_of(st.text(max_size=6), st.binary(max_size=6)), min_size=2, max_size=3))
RECORDS = st.builds(
    Record,
    ts=st.integers(0, 4_000_000_000 * 10**9),
    msg=st.one_of(st.text(max_size=40), st.binary(max_size=40)),
    host=st.text(max_size=10), source=st.sampled_from(["syslog", "journald", "api"]),
    app=st.text(max_size=10), pid=st.none() | st.integers(0, 2**22),
    severity=st.integers(0, 7),
    fields=st.dictionaries(st.sampled_from(["SYSLOG_PID", "_SOURCE_REALTIME_TIMESTAMP", "_COMM", "_SYSTEMD_UNIT",
                                            "MESSAGE_ID", "X"]), FIELD_VALUES, max_size=3))


@given(RECORDS, st.booleans())
@settings(max_examples=300, deadline=None)
def test_hostlog_logs_prints_what_hostlog_query_prints(record: Record, color: bool) -> None:
    from hostlog.cli.logs_cmd import LinePrinter, record_from_json
    from hostlog.query.output import Formatter

    obj = json.loads(json.dumps(record_json(record, "n:1")))
    want = Formatter("short", color=color, utc=True).format(record)
    assert LinePrinter("short", color=color, utc=True).line(obj) == want
    def raw(m: str | bytes) -> bytes:
        return m if isinstance(m, bytes) else m.encode("utf-8", "surrogatepass")
    back = record_from_json(obj)
    assert raw(back.msg) == raw(record.msg) and back.ts == record.ts and back.pid == record.pid


def test_hostlog_logs_arguments() -> None:
    import argparse

    from hostlog.cli.logs_cmd import Target, filter_params, level_param, parse_url, tail_params

    assert parse_url("http://127.0.0.1:19532") == Target("http://127.0.0.1:19532")
    assert parse_url("https://logs.example:443/hostlog/") == Target("https://logs.example:443/hostlog")
    assert parse_url("127.0.0.1:19532") == Target("http://127.0.0.1:19532")
    assert parse_url("unix:///run/hostlog/http.sock") == Target("http://localhost", "/run/hostlog/http.sock")
    for bad in ("ftp://x", "unix://relative", "http://h:1/?unit=x", "http://"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert level_param("warn") == "warning" and level_param("error..debug") == "err..debug"
    assert level_param("3") == "3"
    args = argparse.Namespace(unit=["nginx"], host=["web-1"], source=["api"], level="warn", grep="GET")
    filters = filter_params(args)
    assert filters == [("unit", "nginx"), ("host", "web-1"), ("source", "api"), ("priority", "warning"),
                       ("grep", "GET")]
    assert tail_params(filters, None, 10)[-1] == ("n", "10")
    assert tail_params(filters, "a:5", 10)[-1] == ("cursor", "a:5") and ("n", "10") not in tail_params(
        filters, "a:5", 10)
    # what the server takes: the same words
    from hostlog.http.params import query_from_params
    query_from_params(tail_params(filters, None, 10), allowed=("n", "cursor"))
