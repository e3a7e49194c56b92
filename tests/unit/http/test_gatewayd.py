"""journal-gatewayd's /entries, /fields and /machine against a real HTTP
server of the agent's over a real spool (in this process, on its own event
loop in a thread), read with a plain HTTP client.

* each Accept gives the bytes ``hostlog query -q -o MODE`` prints (the CLI
  run as a process over the same spool);
* Range, matches and ?discrete select what the model of gatewayd_range.py
  says, on generated requests (the spool has a dozen frames, records of
  this node and forwarded ones, and the server reads in steps of 7);
* ?follow: live records after the history, exactly once, also for a
  follower whose buffer overflows (what it missed is read again), and the
  follower goes when its client goes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostlog.http import gatewayd
from hostlog.http.gatewayd_range import EntriesRange, format_range, shown
from hostlog.http.keys import KeyStore, keys_path
from hostlog.http.params import query_from_params
from hostlog.journal.fields import parse_export
from hostlog.query.run import iter_selected
from hostlog.record import Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.agentproc import wait_for
from tests.conftest import need
from tests.integration.helpers import JOURNAL_REMOTE
from tests.support.http import ServedSpool

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]
BASE = 1_700_000_000 * 10**9
OTHER_BOOT = "0123456789abcdef0123456789abcdef"
FOREIGN = "f" * 32  # the origin of records another node forwarded
MEDIA = {"short": "text/plain", "json": "application/json", "json-sse": "text/event-stream",
         "json-seq": "application/json-seq", "export": "application/vnd.fdo.journal"}


class Server:
    """A :class:`ServedSpool` with the gatewayd routes, run on an event loop
    of its own thread, so plain blocking clients (and hypothesis) can talk to it."""

    def __init__(self, tmp: Path, extra_config: str = "") -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gatewayd-test-loop", daemon=True)
        self.thread.start()
        self.served = ServedSpool(tmp, extra_config, unix=False, modules=[gatewayd])
        self.call(self.served.__aenter__())
        self.key = KeyStore(keys_path(tmp)).create("reader", ["read"])
        assert self.served.harness.spool is not None
        self.agent_id = self.served.harness.spool.agent_id

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def write(self, records: list[Record]) -> None:
        """Records into the spool through the agent's sink (one frame), durable when this returns."""
        async def go() -> None:
            assert self.served.harness.context is not None
            self.served.harness.context.sink.submit(Columns.of(records))
            await self.served.flush()
        self.call(go())

    def flush(self) -> None:
        self.call(self.served.flush())

    def close(self) -> None:
        try:
            self.call(self.served.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def spool_dir(self) -> Path:
        return self.served.harness.spool_dir

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.served.port, timeout=20)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self.connect()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.key}", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def reader(self) -> SpoolReader:
        return SpoolReader.open(self.spool_dir)

    def followers(self) -> int:
        hub = self.served.server.ctx.extras.get("tail_hub") if self.served.server else None
        return 0 if hub is None else len(hub.subscriptions)


def dataset() -> list[list[Record]]:
    """~300 records in frames of 1 to 60: two hosts, five apps, every
    priority, two boots (this one among them), multi-line and binary
    messages, units, times out of order, and records another node forwarded."""
    this_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    records = []
    for i in range(300):
        fields: dict[str, Any] = {"TAG": f"t{i % 4}"}
        if i % 5 == 0:
            fields["_BOOT_ID"] = this_boot
        elif i % 5 == 1:
            fields["_BOOT_ID"] = OTHER_BOOT
        if i % 7 == 0:
            fields["_SYSTEMD_UNIT"] = "web.service"
        msg: str | bytes = f"record {i}"
        if i % 31 == 3:
            msg = f"record {i}\nsecond line of {i}"
        elif i % 37 == 5:
            msg = b"record \xff\xfe " + str(i).encode()
        ts = BASE + i * 10**9 + (-5 * 10**9 if i % 11 == 4 else 0)
        r = Record(ts=ts, msg=msg, host=f"h{i % 3}", source="syslog", app=["nginx", "sshd", "cron", "app", "db"][i % 5],
                   pid=100 + i % 9, severity=i % 8, facility=3, fields=fields)
        if 200 <= i < 230:
            r.origin, r.seq = FOREIGN, 1000 + i
        records.append(r)
    sizes = [1, 7, 30, 2, 60, 13, 40, 1, 25, 50, 3, 68]
    frames, at = [], 0
    for n in sizes:
        frames.append(records[at:at + n])
        at += n
    assert at == len(records)
    return frames


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    saved = gatewayd.STEP
    gatewayd.STEP = 7  # several steps per answer
    srv = Server(tmp_path_factory.mktemp("gatewayd"))
    try:
        for frame in dataset():
            srv.write(frame)
        yield srv
    finally:
        gatewayd.STEP = saved
        srv.close()


def cli(srv: Server, *args: str) -> bytes:
    res = subprocess.run([*HOSTLOG, "query", "-D", str(srv.spool_dir), "--no-pager", *args],
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def cursors_of(body: bytes) -> list[str]:
    return [json.loads(line)["__CURSOR"] for line in body.splitlines() if line]


# -- the layouts ---------------------------------------------------------------------------------

def test_each_accept_gives_the_bytes_hostlog_query_prints(server: Server) -> None:
    got = {}
    for mode, media in MEDIA.items():
        status, headers, body = server.get("/entries?source=syslog", {"Accept": media})
        assert status == 200 and headers["Content-Type"] == media
        got[mode] = body
    # the CLI, all modes at once (processes), over the same spool
    procs = {mode: subprocess.Popen([*HOSTLOG, "query", "-D", str(server.spool_dir), "--no-pager", "-q",
                                     "-o", mode, "--source", "syslog"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for mode in MEDIA}
    for mode, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert got[mode] == out, mode
    assert got["short"].count(b"\n") > 300  # every record, continuation lines too; no "-- Boot" lines
    assert b"-- Boot" not in got["short"]
    assert len(parse_export(got["export"])) == 300
    # no Accept (curl's */*) is text/plain
    assert server.get("/entries?source=syslog", {"Accept": "*/*"})[2] == got["short"]


def test_without_a_filter_the_audit_records_are_there_as_in_hostlog_query(server: Server) -> None:
    server.get("/entries", {"Range": "entries=:1"})  # leaves an audit record at least
    wait_for(lambda: server.flush() or server.served.stored("audit"), what="an audit record")
    status, _, body = server.get("/entries", {"Accept": "application/json"})
    assert status == 200
    shown_seqs = [int(json.loads(line)["_HOSTLOG_SEQ"]) for line in body.splitlines()]
    everything = cli(server, "-o", "json")
    expected = b"".join(line + b"\n" for line in everything.splitlines()
                        if json.loads(line)["__CURSOR"] in set(cursors_of(body)))
    assert body == expected
    assert any(json.loads(line)["_HOSTLOG_SOURCE"] == "audit" for line in body.splitlines())
    assert len(shown_seqs) >= 301


# -- what is selected ------------------------------------------------------------------------------

FILTERS = ["", "SYSLOG_IDENTIFIER=nginx", "SYSLOG_IDENTIFIER=nginx&SYSLOG_IDENTIFIER=db", "TAG=t1&_HOSTNAME=h2",
           "priority=warning", "_SYSTEMD_UNIT=web.service", "unit=web", "TAG=none"]


def positions(srv: Server, params: str) -> tuple[list[int], dict[str, int], dict[int, str]]:
    """What the filter selects (source=syslog added), by position; each record's
    __CURSOR and position, both ways."""
    query = query_from_params([tuple(p.split("=", 1)) for p in (params + "&source=syslog").split("&") if p])
    selected, by_cursor, cursor_at = [], {}, {}
    for seq, record in iter_selected(srv.reader(), query):
        selected.append(seq)
        cursor = f"{record.origin}:{record.seq}"
        by_cursor[cursor], cursor_at[seq] = seq, cursor
    return selected, by_cursor, cursor_at


_ALL: dict[str, tuple[list[int], dict[str, int], dict[int, str]]] = {}


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(FILTERS), st.none() | st.integers(0, 305) | st.integers(200, 229).map(lambda i: -i),
       st.integers(-320, 320) | st.integers(-5, 5), st.none() | st.integers(1, 320) | st.integers(1, 12),
       st.booleans())
def test_range_matches_and_discrete_select_what_gatewayd_would(server: Server, params: str, where: int | None,
                                                             skip: int, count: int | None, discrete: bool) -> None:
    if params not in _ALL:
        _ALL[params] = positions(server, params)
    selected, by_cursor, cursor_at = _ALL[params]
    everything = _ALL.setdefault("*", positions(server, ""))
    if where is None:
        cursor, position = None, None
    elif where < 0:  # the __CURSOR of a forwarded record: looked up
        cursor = f"{FOREIGN}:{1000 - where}"
        position = everything[1][cursor]
    else:  # a position of this node's spool (a record of any source there, or past the end)
        cursor, position = f"{server.agent_id}:{where}", where
    wanted = EntriesRange(cursor, skip, count)
    headers = {"Accept": "application/json", "Range": format_range(wanted)}
    query = "?" + "&".join(p for p in (params, "source=syslog", "discrete" if discrete else "") if p)
    status, _, body = server.get("/entries" + query, headers)
    if discrete and cursor is None:
        assert status == 400 and b"discrete" in body
        return
    assert status == 200, body
    got = [by_cursor[c] for c in cursors_of(body)]
    assert got == shown(selected, position, wanted, discrete=discrete)


def test_boot_is_a_match_on_this_boot(server: Server) -> None:
    this_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    selected, _, cursor_at = positions(server, f"_BOOT_ID={this_boot}")
    assert len(selected) == 60
    for query, expected in [
        ("?boot&source=syslog", f"_BOOT_ID={this_boot}"),
        ("?boot=yes&source=syslog&TAG=t1", f"_BOOT_ID={this_boot}&TAG=t1"),
        (f"?boot&source=syslog&_BOOT_ID={OTHER_BOOT}", f"_BOOT_ID={this_boot}&_BOOT_ID={OTHER_BOOT}"),
        ("?boot=0&source=syslog", ""),
    ]:
        status, _, body = server.get("/entries" + query, {"Accept": "application/json"})
        assert status == 200
        sel, _, at = positions(server, expected)
        assert cursors_of(body) == [at[p] for p in sel], query


@pytest.mark.parametrize("path, headers, named", [
    ("/entries", {"Range": "entries=:1:0"}, b"Range: num_entries"),
    ("/entries", {"Range": "entries=:x:1"}, b"Range: num_skip"),
    ("/entries", {"Range": "bytes=0-10"}, b"Range:"),
    ("/entries", {"Range": "entries=abc"}, b"Range: not a cursor"),
    ("/entries", {"Range": f"entries={FOREIGN}:5"}, b"Range: no record with cursor"),
    ("/entries?follow=maybe", {}, b"'follow'"),
    ("/entries?discrete=2", {}, b"'discrete'"),
    ("/entries?discrete", {}, b"discrete needs a cursor"),
    ("/entries?unit_name=x", {}, b"'unit_name'"),
    ("/entries?priority=loud", {}, b"loud"),
    ("/entries?=x", {}, b"without a name"),
    ("/fields/lower", {}, b"'lower'"),
    ("/fields/1ABC", {}, b"'1ABC'"),
    ("/fields/MESSAGE?since=notatime", {}, b"notatime"),
])
def test_bad_requests_are_400_and_say_what(server: Server, path: str, headers: dict[str, str], named: bytes) -> None:
    status, _, body = server.get(path, headers)
    assert status == 400 and named in body, (status, body)


def test_a_request_without_a_key_is_refused(server: Server) -> None:
    conn = server.connect()
    try:
        conn.request("GET", "/entries")
        assert conn.getresponse().status == 401
    finally:
        conn.close()


def test_the_audit_record_counts_what_was_returned(server: Server) -> None:
    status, _, body = server.get("/entries?source=syslog&TAG=t2", {"Range": "entries=:3:9",
                                                                  "Accept": "application/json"})
    assert status == 200 and len(body.splitlines()) == 9
    server.get("/fields/TAG?source=syslog")

    def audited() -> tuple[list[Record], list[Record]] | None:
        # the audit record is handed over once the answer is sent: wait for it
        server.flush()
        audit = server.served.stored("audit")
        entries = [r for r in audit if r.fields["AUDIT_FILTER"] == "source=syslog&TAG=t2 Range: entries=:3:9"]
        fields = [r for r in audit if r.fields["AUDIT_ENDPOINT"] == "/fields/TAG"]
        return (entries, fields) if entries and fields else None

    entries, fields = wait_for(audited, what="the audit records")
    assert entries[-1].fields["AUDIT_RECORDS"] == "9" and entries[-1].fields["AUDIT_STATUS"] == "200"
    assert fields[-1].fields["AUDIT_RECORDS"] == "4"  # the values returned


# -- /fields and /machine ---------------------------------------------------------------------------

def test_fields_are_the_values_hostlog_query_F_lists(server: Server) -> None:
    for name in ("SYSLOG_IDENTIFIER", "_HOSTNAME", "PRIORITY", "_BOOT_ID", "MESSAGE"):
        status, headers, body = server.get(f"/fields/{name}?source=syslog")
        assert status == 200 and headers["Content-Type"] == "text/plain"
        assert body == cli(server, "-F", name, "--source", "syslog"), name
    status, headers, body = server.get("/fields/MESSAGE?source=syslog&TAG=t3", {"Accept": "application/json"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    values = [json.loads(line)["MESSAGE"] for line in body.splitlines()]
    plain = [v for v in values if isinstance(v, str)]
    assert len(values) == 75 and len(plain) < 75  # the binary ones are arrays of bytes
    assert any("\n" in v for v in plain)
    assert server.get("/fields/NOSUCHFIELD")[2] == b""


def test_machine(server: Server) -> None:
    server.flush()
    before = sum(p.stat().st_size for p in (server.spool_dir / "segments").glob("*.seg"))
    status, headers, body = server.get("/machine")
    server.flush()
    after = sum(p.stat().st_size for p in (server.spool_dir / "segments").glob("*.seg"))
    assert status == 200 and headers["Content-Type"] == "application/json"
    info = json.loads(body)
    assert list(info) == ["machine_id", "boot_id", "hostname", "os_pretty_name", "virtualization", "usage",
                          "cutoff_from_realtime", "cutoff_to_realtime"]
    assert info["machine_id"] == Path("/etc/machine-id").read_text().strip()
    assert info["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    assert info["hostname"] == "test-host" and info["os_pretty_name"] and info["virtualization"]
    assert before <= int(info["usage"]) <= after
    assert int(info["cutoff_from_realtime"]) == (BASE - 5 * 10**9 + 4 * 10**9) // 1000  # record 4, moved back
    assert BASE // 1000 + 299 * 10**6 <= int(info["cutoff_to_realtime"]) <= time.time_ns() // 1000


# -- ?follow ----------------------------------------------------------------------------------------

def _marked(srv: Server, marker: str, n: int, start: int = 0) -> list[Record]:
    return [Record(ts=time.time_ns(), msg=f"{marker} {i}", host="live", source="syslog", app="follow", severity=5)
            for i in range(start, start + n)]


def test_follow_shows_the_history_then_what_arrives_and_stops_after_num_entries(server: Server) -> None:
    server.write(_marked(server, "before", 3))  # the history
    conn = server.connect()
    try:
        conn.request("GET", "/entries?follow&source=syslog&host=live",
                     headers={"Authorization": f"Bearer {server.key}", "Range": "entries=:-1:6"})
        resp = conn.getresponse()
        assert resp.status == 200
        wait_for(lambda: server.followers() == 1, what="the follower to subscribe")
        server.write(_marked(server, "live", 2))
        server.write(_marked(server, "live", 5, start=2))
        body = resp.read()  # the stream ends after 6 entries
    finally:
        conn.close()
    lines = body.decode().splitlines()
    # the 2nd newest and the newest of the history (gatewayd's :-1), then the first live ones
    assert [line.split(": ", 1)[1] for line in lines] == ["before 1", "before 2", "live 0", "live 1",
                                                        "live 2", "live 3"]
    wait_for(lambda: server.followers() == 0, what="the follower to go")


def test_a_follower_goes_when_its_client_goes(server: Server) -> None:
    conn = server.connect()
    conn.request("GET", "/entries?follow&source=syslog&host=gone",
                 headers={"Authorization": f"Bearer {server.key}", "Accept": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    wait_for(lambda: server.followers() == 1, what="the follower to subscribe")
    records = [Record(ts=time.time_ns(), msg=f"gone {i}", host="gone", source="syslog", app="x") for i in range(3)]
    server.write(records)
    got = [json.loads(resp.readline())["MESSAGE"] for _ in range(3)]
    assert got == ["gone 0", "gone 1", "gone 2"]
    conn.close()
    wait_for(lambda: server.followers() == 0, timeout=15, what="the server to see the client go")


def test_a_follower_that_falls_behind_gets_every_record_later(tmp_path: Path) -> None:
    srv = Server(tmp_path, "follower_buffer = 16\n")
    conn = None
    try:
        srv.write(_marked(srv, "old", 5))
        conn = srv.connect()
        conn.request("GET", "/entries?follow&source=syslog",
                     headers={"Authorization": f"Bearer {srv.key}", "Accept": "application/vnd.fdo.journal"})
        resp = conn.getresponse()
        assert resp.status == 200
        wait_for(lambda: srv.followers() == 1, what="the follower to subscribe")
        for k in range(3):  # bursts far beyond the follower's 16 records of room
            srv.write(_marked(srv, f"burst{k}", 1000))
        entries: list[dict[str, list[bytes]]] = []
        buf = b""
        deadline = time.monotonic() + 60
        while len(entries) < 5 + 3 * 1000 and time.monotonic() < deadline:
            chunk = resp.read1(1 << 16)
            assert chunk, "the stream ended"
            buf += chunk
            cut = buf.rfind(b"\n\n") + 2
            if cut >= 2:
                entries += parse_export(buf[:cut])
                buf = buf[cut:]
        messages = [e["MESSAGE"][0].decode() for e in entries]
        expected = [f"old {i}" for i in range(5)] + [f"burst{k} {i}" for k in range(3) for i in range(1000)]
        assert messages == expected
        assert srv.served.server is not None
        assert srv.served.server.ctx.counters.get("gatewayd_rereads", 0) >= 1
    finally:
        if conn is not None:
            conn.close()
        srv.close()


# -- the export stream and systemd-journal-remote ------------------------------------------------------

def test_journal_remote_takes_every_record_even_odd_ones(tmp_path: Path) -> None:
    need(JOURNAL_REMOTE.exists(), f"{JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    srv = Server(tmp_path / "srv")
    try:
        odd = [Record(ts=0, msg="time zero", host="h", source="syslog", app="a"),
               Record(ts=BASE, msg="bad boot", host="h", source="syslog", app="a", fields={"_BOOT_ID": "xyz"}),
               Record(ts=BASE, msg="bad mono", host="h", source="syslog", app="a",
                      fields={"__MONOTONIC_TIMESTAMP": "abc"}),
               Record(ts=-5 * 10**9, msg="before 1970", host="h", source="syslog", app="a")]
        plain = [Record(ts=BASE + i, msg=f"plain {i}", host="h", source="syslog", app="a") for i in range(3)]
        srv.write(plain[:1] + odd + plain[1:])
        status, _, body = srv.get("/entries?source=syslog", {"Accept": "application/vnd.fdo.journal"})
        assert status == 200
    finally:
        srv.close()
    out = tmp_path / "remote.journal"
    res = subprocess.run([str(JOURNAL_REMOTE), f"--output={out}", "--split-mode=none", "-"], input=body,
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    shown_json = subprocess.run(["journalctl", f"--file={out}", "-o", "json", "--no-pager"], capture_output=True,
                                timeout=60, env=dict(os.environ, SYSTEMD_COLORS="0"))
    got = [json.loads(line) for line in shown_json.stdout.splitlines()]
    assert [e["MESSAGE"] for e in got] == ["plain 0", "time zero", "bad boot", "bad mono", "before 1970",
                                          "plain 1", "plain 2"]
    by_message = {e["MESSAGE"]: e for e in got}
    assert by_message["bad boot"]["HOSTLOG_INVALID_BOOT_ID"] == "xyz"
    assert by_message["bad mono"]["HOSTLOG_INVALID__MONOTONIC_TIMESTAMP"] == "abc"
    assert by_message["time zero"]["HOSTLOG_INVALID__REALTIME_TIMESTAMP"] == "0"
    assert by_message["time zero"]["__REALTIME_TIMESTAMP"] == "1"
