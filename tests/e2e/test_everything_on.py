"""Every feature on at once, end to end: the guard against losing records
where features meet.

One real ``hostlog agent`` process with everything an operator switches on:
syslog over TCP, UDP, TLS and a unix datagram socket (with a rate limit
high enough never to bite), a second syslog source whose low rate limit is
exercised on purpose, a tailed file rotated by rename in the middle, a
journal directory that gains a file in the middle (files written by
systemd-journal-remote), a Fluent Forward client waiting for its acks, a
supervised app printing numbered lines, metrics,
the control socket, the HTTP server with a live tail (server-sent events)
following the whole stream, forwarding over mutual TLS to a central agent (a
second real agent with a receiver), and a SIGHUP reload in the middle of the
stream that adds an app and a file path.

Every record carries a marker ``E2E:<stream>:<n>``. The test then checks
that each stream arrived exactly once (no loss, no duplicate), that what the
rate limit dropped is exactly what its notices say it suppressed (and what
``hostlog_records_dropped_total`` counts), that ``hostlog_records_in_total``
agrees with the spool source by source, and that the agent's log holds no
error; and that the central node holds exactly what the agent's spool holds,
by (origin, seq); and that the live tail was given every record the spool
holds, once each, in spool order, or told which it missed.

Every wait is bounded; every process started here is stopped by its PID.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgpack

from tests.agentproc import HOSTLOG, AgentProcess, free_port, metric_by_label, wait_for
from tests.conftest import need
from tests.integration.helpers import JOURNAL_REMOTE, build_journal, export_entry
from tests.support.pki import make_test_pki

MARKER = re.compile(r"E2E:([a-z0-9]+):(\d+)")

# records per stream; a few thousand each, ~20k in all
COUNTS = {
    "tcp": 3000,      # logger --tcp, RFC 5424, LF-framed
    "udp": 2000,      # logger --udp, RFC 3164
    "tls": 2000,      # an ssl client, RFC 5425 (octet counting)
    "unix": 2000,     # logger --socket, the local /dev/log format
    "file": 3000,     # a tailed file, rotated by rename halfway
    "file2": 500,     # a file path the reload adds
    "journal": 3000,  # two journal files, the second one written halfway
    "app1": 3000,     # a supervised app
    "app2": 500,      # the app the reload adds
    "fluent": 2000,   # a Fluent Forward client, PackedForward with acks
}
PAUSE = 0.1          # between chunks: the streams last a few seconds, the reload falls inside
LIMITED = 400         # sent to the rate-limited source
LIMITED_BURST = 100
SOURCE_OF = {"tcp": "syslog", "udp": "syslog", "tls": "syslog", "unix": "syslog",
             "file": "file", "file2": "file", "journal": "journald", "app1": "process",
             "app2": "process", "limited": "syslog", "fluent": "forward"}

APP_SCRIPT = """\
import sys, time
name, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for i in range(count):
    sys.stdout.write(f"E2E:{name}:{i} line {i} of the supervised app\\n")
    if i % 100 == 99:
        sys.stdout.flush()
        time.sleep(pause)
sys.stdout.flush()
time.sleep(3600)  # stays up until the agent stops it
"""


def need_components() -> None:
    need(shutil.which("logger") is not None, "logger (util-linux)")
    need(JOURNAL_REMOTE.exists(), f"{JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    try:
        import systemd.journal  # noqa: F401  (the agent's journald collector needs it)
        have_journal = True
    except ImportError:
        have_journal = False
    need(have_journal, "systemd-python (the journald collector)")
    try:
        import prometheus_client  # noqa: F401
        have_metrics = True
    except ImportError:
        have_metrics = False
    need(have_metrics, "prometheus_client (the metrics endpoint)")


def config(tmp: Path, ports: dict[str, int], pki: dict[str, Path], *, reloaded: bool) -> str:
    """The agent's config; ``reloaded`` is the one the SIGHUP switches to:
    a second app and a second file path, nothing else changed."""
    paths = [f"{tmp}/logs/*.log"] + ([f"{tmp}/logs2/*.log"] if reloaded else [])
    app = lambda name, marker, count: textwrap.dedent(f"""
        [[app]]
        name = "{name}"
        command = [{json.dumps(sys.executable)}, "{tmp}/app.py", "{marker}", "{count}", "{PAUSE}"]
        restart = "on-failure"
        """)  # noqa: E731
    apps = app("e2eapp", "app1", COUNTS["app1"]) + (app("e2eapp2", "app2", COUNTS["app2"])
                                                     if reloaded else "")
    return textwrap.dedent(f"""
        [agent]
        hostname = "e2e-host"
        state_dir = "{tmp}/state"

        [spool]
        fsync = "batch"
        fsync_interval = "20ms"

        [[source]]
        type = "syslog"
        name = "syslog"
        listen = ["tcp://127.0.0.1:{ports['syslog']}", "udp://127.0.0.1:{ports['syslog']}",
                  "tls://127.0.0.1:{ports['tls']}", "unix://{tmp}/dev-log"]
        # on, and far above this test's traffic: the limiter sees every batch
        rate_limit = {{ rate = 1000000, burst = 1000000 }}

        [[source]]
        type = "syslog"
        name = "limited"
        listen = ["tcp://127.0.0.1:{ports['limited']}"]
        # exercised: most of what this source is sent is suppressed and said so
        rate_limit = {{ rate = 5, burst = {LIMITED_BURST} }}

        [[source]]
        type = "file"
        name = "files"
        paths = {json.dumps(paths)}
        app = "e2efile"
        start = "beginning"
        rotate_wait = "2s"
        poll_interval = "200ms"

        [[source]]
        type = "forward"
        name = "fluent"
        listen = ["tcp://127.0.0.1:{ports['fluent']}"]

        [[source]]
        type = "journald"
        name = "journal"
        directory = "{tmp}/journal"
        start = "beginning"

        [[forward]]
        name = "central"
        targets = ["tls://localhost:{ports['central']}"]

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['server']}"
        key = "{pki['server_key']}"

        [control]
        socket = "{tmp}/control.sock"
        metrics = "127.0.0.1:{ports['metrics']}"

        [http]
        listen = ["127.0.0.1:{ports['http']}"]

        # rules on every batch of every source: they change a field, drop
        # nothing (records in must still be what the spool holds)
        [[rule]]
        name = "tag-all"
        set = {{ e2e_rules = "on" }}

        [[rule]]
        name = "never-matches"
        match = {{ identifier = "e2e-no-such-app" }}
        drop = true
        """) + apps


def central_config(home: Path, ports: dict[str, int], pki: dict[str, Path]) -> str:
    """The central node the agent forwards to: a receiver, and a syslog source of its own."""
    return textwrap.dedent(f"""
        [agent]
        hostname = "e2e-central"
        state_dir = "{home}/state"

        [spool]
        fsync_interval = "20ms"

        [[source]]
        type = "syslog"
        name = "local"
        listen = ["tcp://127.0.0.1:{ports['central_syslog']}"]

        [receiver]
        listen = "tls://127.0.0.1:{ports['central']}"

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['server']}"
        key = "{pki['server_key']}"
        """)


# -- senders (each in its own thread; each sets ``half`` halfway through) ------------------

def lines(stream: str, start: int, stop: int) -> str:
    return "".join(f"E2E:{stream}:{i} message {i} of the {stream} stream\n"
                   for i in range(start, stop))


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, count)) for i in range(0, count, size)]


def logger_chunks(tmp: Path, stream: str, args: list[str], half: threading.Event,
                  size: int = 250, between: Callable[[], None] = lambda: time.sleep(PAUSE)) -> None:
    """``logger -f`` of the stream, ``size`` lines per run of logger."""
    parts = chunks(COUNTS[stream], size)
    for n, (a, b) in enumerate(parts):
        f = tmp / f"{stream}-{a}.txt"
        f.write_text(lines(stream, a, b))
        subprocess.run(["logger", *args, "-t", f"e2e-{stream}", "-f", str(f)], check=True,
                       timeout=60)
        if n + 1 == len(parts) // 2:
            half.set()
        between()


def udp_queue(port: int) -> tuple[int, int]:
    """(bytes queued, datagrams dropped) of the UDP socket on 127.0.0.1:port, from /proc."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == local:
            return int(cols[4].split(":")[1], 16), int(cols[-1])
    raise AssertionError(f"no UDP socket on 127.0.0.1:{port}")


def send_tls(port: int, pki: dict[str, Path], half: threading.Event) -> None:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    ctx.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
    parts = chunks(COUNTS["tls"], 200)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            for n, (a, b) in enumerate(parts):
                frames = []
                for i in range(a, b):
                    body = (f"<134>1 2026-01-01T00:00:00Z tlshost e2e-tls {os.getpid()} - - "
                            f"E2E:tls:{i} message {i} of the tls stream").encode()
                    frames.append(b"%d %s" % (len(body), body))
                tls.sendall(b"".join(frames))
                if n + 1 == len(parts) // 2:
                    half.set()
                time.sleep(PAUSE)
            tls.unwrap()


def send_fluent(port: int, half: threading.Event) -> None:
    """A Fluent Forward client: PackedForward messages of 100 records, each
    with a chunk id it waits to see acknowledged (the agent acks once durable)."""
    parts = chunks(COUNTS["fluent"], 100)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        unpacker = msgpack.Unpacker(raw=False)
        for n, (a, b) in enumerate(parts):
            entries = b"".join(msgpack.packb([int(time.time()), {"message": f"E2E:fluent:{i} record {i}",
                                                                  "level": "info", "n": i}])
                               for i in range(a, b))
            chunk = f"c{n}"
            s.sendall(msgpack.packb(["e2e.fluent", entries, {"chunk": chunk, "size": b - a}],
                                    use_bin_type=True))
            while True:  # the ack, before the next message
                data = s.recv(65536)
                assert data, "the agent closed the Fluent Forward connection"
                unpacker.feed(data)
                acks = [m for m in unpacker if isinstance(m, dict) and m.get("ack") == chunk]
                if acks:
                    break
            if n + 1 == len(parts) // 2:
                half.set()
            time.sleep(PAUSE / 2)


def write_file_with_rotation(logs: Path, half: threading.Event) -> None:
    """Like an app under logrotate: half the lines, rename, a few more lines to
    the renamed file (the app has not reopened yet), then a new file."""
    count = COUNTS["file"]
    live = logs / "app.log"
    out = open(live, "a")
    try:
        for a, b in chunks(count // 2, 250):
            out.write(lines("file", a, b))
            out.flush()
            time.sleep(PAUSE)
        half.set()
        live.rename(logs / "app.log.1")  # not matched by the glob
        out.write(lines("file", count // 2, count // 2 + 100))
        out.flush()
    finally:
        out.close()
    with open(live, "a") as out:
        for a, b in chunks(count - count // 2 - 100, 250):
            a, b = a + count // 2 + 100, b + count // 2 + 100
            out.write(lines("file", a, b))
            out.flush()
            time.sleep(PAUSE)


def journal_export(start: int, stop: int) -> bytes:
    now = time.time_ns() // 1000
    return b"".join(export_entry({
        "__REALTIME_TIMESTAMP": str(now + i), "__MONOTONIC_TIMESTAMP": str(1_000_000 + i),
        "_BOOT_ID": "0123456789abcdef0123456789abcdef", "_HOSTNAME": "journal-host",
        "PRIORITY": "6", "SYSLOG_IDENTIFIER": "e2e-journal",
        "MESSAGE": f"E2E:journal:{i} entry {i} of the journal"}) for i in range(start, stop))


class Senders:
    """Threads that send; an exception in one fails the test, with its traceback."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.halves: dict[str, threading.Event] = {}
        self.errors: list[BaseException] = []

    def start(self, name: str, target: Callable[..., None], *args: object) -> None:
        half = self.halves[name] = threading.Event()

        def run() -> None:
            try:
                target(*args, half)
            except BaseException as exc:  # noqa: BLE001  (re-raised in join)
                self.errors.append(exc)
                half.set()
        thread = threading.Thread(target=run, name=f"send-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait_halfway(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name, half in self.halves.items():
            assert half.wait(max(0.0, deadline - time.monotonic())), f"{name} not halfway"

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} did not finish"
        if self.errors:
            raise self.errors[0]


class TailFollower:
    """A live tail over server-sent events (``/api/v1/tail``), from the start
    of the spool to the end of the test, in a thread: what it was given, in
    order, and what it was told it missed."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.rows: list[dict] = []  # the records, in the order given
        self.dropped = 0
        self.error: BaseException | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="tail-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            # n=100000: everything the spool holds first (the test starts on an empty spool)
            conn.request("GET", "/api/v1/tail?n=100000",
                         headers={"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"})
            resp = conn.getresponse()
            assert resp.status == 200, (resp.status, resp.read())
            event = "message"
            for raw in resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    if event == "dropped":
                        self.dropped += int(data["dropped"])
                    else:
                        self.rows.append(data)
                elif not line:
                    event = "message"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if self._conn is not None:  # not closed by stop()
                self.error = exc
        except AssertionError as exc:
            self.error = exc

    def stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def markers(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for r in self.rows:
            m = MARKER.search(r["message"]) if isinstance(r.get("message"), str) else None
            if m is not None:
                out.setdefault(m.group(1), Counter())[int(m.group(2))] += 1
        return out


# -- the spool, read as a user reads it -----------------------------------------------------

def markers(rows: list[dict]) -> dict[str, Counter]:
    """stream -> Counter of record numbers (a count of 2 is a duplicate)."""
    out: dict[str, Counter] = {}
    for r in rows:
        msg = r.get("MESSAGE")
        m = MARKER.search(msg) if isinstance(msg, str) else None
        if m is not None:
            stream = m.group(1)
            assert SOURCE_OF.get(stream) == r["_HOSTLOG_SOURCE"], r
            out.setdefault(stream, Counter())[int(m.group(2))] += 1
    return out


def suppressed_by(rows: list[dict], source_name: str) -> int:
    return sum(int(r["suppressed"]) for r in rows if r["_HOSTLOG_SOURCE"] == "hostlog"
               and "suppressed" in r and f"syslog source {source_name}:" in r["MESSAGE"])


def bad_log_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if " ERROR " in line or "Traceback" in line or "Fatal error" in line]


def assert_alive(agent: AgentProcess) -> None:
    code = agent.proc.poll()
    if code is not None:
        raise AssertionError(f"the agent exited with {code}:\n" + "\n".join(
            bad_log_lines(agent.log_text())[:20]) + "\n...\n" + agent.log_text()[-3000:])


def complete(got: dict[str, Counter]) -> bool:
    return all(len(got.get(s, ())) >= n for s, n in COUNTS.items())


def report(got: dict[str, Counter]) -> str:
    lines_ = []
    for stream, n in COUNTS.items():
        c = got.get(stream, Counter())
        missing = [i for i in range(n) if i not in c]
        dups = sorted(i for i, k in c.items() if k > 1)
        extra = sorted(i for i in c if i >= n)
        if len(c) == n and not missing and not dups and not extra:
            continue
        lines_.append(f"{stream}: {len(c)} of {n} distinct, {len(missing)} missing "
                      f"{missing[:10]}, {len(dups)} duplicated {dups[:10]}, unexpected {extra[:10]}")
    return "\n".join(lines_) or "every stream complete"


def test_every_feature_on_at_once_every_record_exactly_once(tmp_path: Path) -> None:
    need_components()
    tmp = tmp_path
    ports = {"syslog": free_port(), "tls": free_port(), "limited": free_port(),
             "metrics": free_port(), "central": free_port(), "central_syslog": free_port(),
             "fluent": free_port(), "http": free_port()}
    pki = make_test_pki(tmp / "pki")
    (tmp / "app.py").write_text(APP_SCRIPT)
    (tmp / "logs").mkdir()
    (tmp / "logs2").mkdir()
    # the path the reload adds already holds its lines; read from its beginning once added
    (tmp / "logs2" / "other.log").write_text(lines("file2", 0, COUNTS["file2"]))
    half_journal = COUNTS["journal"] // 2
    build_journal(journal_export(0, half_journal), tmp / "journal" / "first.journal")

    (tmp / "central").mkdir()
    central = AgentProcess(tmp / "central", central_config(tmp / "central", ports, pki))
    central.start()
    agent = AgentProcess(tmp, config(tmp, ports, pki, reloaded=False))
    agent.start()
    stopped = False
    follower: TailFollower | None = None
    try:
        made = agent.hostlog("key", "create", "e2e-reader", "--scope", "read", "-c", str(agent.config))
        follower = TailFollower(ports["http"], made.stdout.decode().strip().splitlines()[-1])
        senders = Senders()
        port = str(ports["syslog"])

        def udp_paced(t: Path, half: threading.Event) -> None:
            # A burst, then wait until the agent has read the socket's queue:
            # this test is about records the agent loses, not datagrams the
            # kernel drops at a rate the receiver cannot keep up with.
            def drained() -> None:
                wait_for(lambda: udp_queue(ports["syslog"])[0] == 0, timeout=10,
                         what="the UDP queue read")
            logger_chunks(t, "udp", ["--udp", "--rfc3164", "--server", "127.0.0.1", "--port", port],
                          half, size=100, between=drained)

        senders.start("tcp", logger_chunks, tmp, "tcp",
                      ["--tcp", "--rfc5424", "--server", "127.0.0.1", "--port", port])
        senders.start("udp", udp_paced, tmp)
        senders.start("unix", logger_chunks, tmp, "unix",
                      ["--socket", f"{tmp}/dev-log", "--socket-errors=on"])
        senders.start("tls", send_tls, ports["tls"], pki)
        senders.start("file", write_file_with_rotation, tmp / "logs")
        senders.start("fluent", send_fluent, ports["fluent"])

        def limited(half: threading.Event) -> None:
            f = tmp / "limited.txt"
            f.write_text(lines("limited", 0, LIMITED))
            subprocess.run(["logger", "--tcp", "--rfc5424", "--server", "127.0.0.1", "--port",
                            str(ports["limited"]), "-t", "e2e-limited", "-f", str(f)],
                           check=True, timeout=60)
            half.set()
        senders.start("limited", limited)

        # -- the middle of the stream: a journal file more, and a reload by SIGHUP
        senders.wait_halfway(timeout=30)
        build_journal(journal_export(half_journal, COUNTS["journal"]), tmp / "journal" / "second.journal")
        agent.write_config(config(tmp, ports, pki, reloaded=True))
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded:" in agent.log_text() or agent.proc.poll() is not None,
                 timeout=20, what="the reload")
        assert_alive(agent)
        try:
            senders.join(timeout=60)
        finally:
            assert_alive(agent)  # a sender's error is no news when the agent is gone
        # and a reload through the control socket, the config unchanged: nothing restarts
        res = subprocess.run([*HOSTLOG, "ctl", "-c", str(agent.config), "reload"],
                             capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr.decode()

        # -- everything arrives: metrics first (cheap), then the spool
        expect_in = {"syslog": sum(COUNTS[s] for s in ("tcp", "udp", "tls", "unix")) + LIMITED_BURST,
                     "file": COUNTS["file"] + COUNTS["file2"], "journald": COUNTS["journal"],
                     "process": COUNTS["app1"] + COUNTS["app2"], "forward": COUNTS["fluent"]}
        try:
            wait_for(lambda: agent.proc.poll() is not None or all(
                metric_by_label(agent.metrics(), "hostlog_records_in_total", "source").get(s, 0) >= n
                for s, n in expect_in.items()), timeout=40, interval=0.2, what="the records counted")
        except AssertionError:
            pass  # the spool's own report below says what is missing
        assert_alive(agent)
        got: dict[str, Counter] = {}
        rows: list[dict] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = agent.query_json()
            got = markers(rows)
            if complete(got) and (len(got.get("limited", ())) + suppressed_by(rows, "limited")
                                  >= LIMITED):
                break
            time.sleep(0.5)

        # Each check below is independent: all of them are gathered, so one
        # run says everything that is wrong, not only the first thing.
        problems: list[str] = []

        # -- the rules ran on every record of every source
        untagged = Counter(r["_HOSTLOG_SOURCE"] for r in rows if r.get("e2e_rules") != "on"
                           and MARKER.search(str(r.get("MESSAGE", ""))))
        if untagged:
            problems.append(f"records the tag-all rule did not reach, by source: {dict(untagged)}")

        # -- the miner ran on every record of every source (mining drops nothing: the
        # records-in check below still holds)
        unmined = Counter(r["_HOSTLOG_SOURCE"] for r in rows
                          if not re.fullmatch(r"[0-9a-f]{16}", str(r.get("PATTERN_ID", ""))))
        if unmined:
            problems.append(f"records without a PATTERN_ID, by source: {dict(unmined)}")

        # -- exactly once, every stream
        if not all(len(got.get(s, ())) == n and sum(got[s].values()) == n and max(got[s]) == n - 1
                   for s, n in COUNTS.items()):
            problems.append("not every record exactly once:\n" + report(got) + "\n(datagrams "
                            f"the kernel dropped on the UDP socket: {udp_queue(ports['syslog'])[1]})")

        # -- the rate limit: what was not stored was said to be suppressed, and counted
        stored = got.get("limited", Counter())
        suppressed = suppressed_by(rows, "limited")
        if not (all(k == 1 for k in stored.values()) and set(stored) <= set(range(LIMITED))
                and LIMITED_BURST <= len(stored) and len(stored) + suppressed == LIMITED):
            problems.append(f"rate limit: {len(stored)} stored ({sum(stored.values())} records) + "
                            f"{suppressed} said suppressed, of {LIMITED} sent")

        # -- the control socket answers, and both apps run (the reload added one)
        status = subprocess.run([*HOSTLOG, "ctl", "-c", str(agent.config), "--json", "status"],
                                capture_output=True, timeout=60)
        if status.returncode != 0:
            problems.append(f"ctl status: {status.stderr.decode()}")
        else:
            apps = {a["name"]: a["state"] for a in json.loads(status.stdout)["apps"]}
            if apps != {"e2eapp": "RUNNING", "e2eapp2": "RUNNING"}:
                problems.append(f"ctl status: apps {apps}")

        # -- metrics agree with the spool, source by source, once nothing moves
        def spool_by_source() -> dict[str, int]:
            return dict(Counter(r["_HOSTLOG_SOURCE"] for r in agent.query_json()))

        def agree() -> tuple[dict[str, int], dict[str, float]] | None:
            samples = agent.metrics()
            held = spool_by_source()
            counted = metric_by_label(samples, "hostlog_records_in_total", "source")
            return (held, samples) if counted == held else None

        try:
            held, samples = wait_for(agree, timeout=10, interval=0.5,
                                     what="metrics to agree with the spool")
        except AssertionError:
            samples, held = agent.metrics(), spool_by_source()
            problems.append("hostlog_records_in_total "
                            f"{metric_by_label(samples, 'hostlog_records_in_total', 'source')} "
                            f"but the spool holds {held}")
        if samples.get("hostlog_spool_records_written_total") != sum(held.values()):
            problems.append(f"hostlog_spool_records_written_total "
                            f"{samples.get('hostlog_spool_records_written_total')} but the spool "
                            f"holds {sum(held.values())}")
        dropped = metric_by_label(samples, "hostlog_records_dropped_total", "collector")
        if dropped.get("limited", 0) != suppressed or any(
                v for k, v in dropped.items() if k != "limited"):
            problems.append(f"hostlog_records_dropped_total {dropped or '{}'}, but the rate "
                            f"limit of 'limited' suppressed {suppressed} (and nothing else was "
                            f"dropped)")
        errors = {k: v for k, v in samples.items() if k.startswith("hostlog_errors_total") and v}
        if errors:
            problems.append(f"errors counted: {errors}")

        # -- the central node holds what the agent holds, each record once
        def forwarded() -> bool:
            lag = metric_by_label(agent.metrics(), "hostlog_forward_lag_records", "destination")
            return lag.get("central") == 0
        try:
            wait_for(forwarded, timeout=30, interval=0.3, what="the central to acknowledge everything")
        except AssertionError:
            lag = metric_by_label(agent.metrics(), "hostlog_forward_lag_records", "destination")
            problems.append(f"forwarding: lag {lag}")
        edge_rows = agent.query_json()
        origin = edge_rows[0]["__CURSOR"].rpartition(":")[0]
        held_at_central = [r for r in central.query_json() if r["__CURSOR"].startswith(origin + ":")]
        edge_ids = [r["__CURSOR"] for r in edge_rows]
        central_ids = [r["__CURSOR"] for r in held_at_central]
        if central_ids != edge_ids:
            problems.append(f"the central holds {len(central_ids)} records of the agent "
                            f"({len(set(central_ids))} distinct), the agent {len(edge_ids)}")
        elif markers(held_at_central) != markers(edge_rows):
            problems.append("the central's records differ from the agent's")

        # -- the live tail was given what the spool holds (audit records aside), in order
        assert follower is not None
        tail_expected = [r["__CURSOR"] for r in edge_rows if r["_HOSTLOG_SOURCE"] != "audit"]
        try:
            wait_for(lambda: len(follower.rows) + follower.dropped >= len(tail_expected), timeout=20,
                     interval=0.2, what="the live tail to catch up")
        except AssertionError:
            pass  # said below
        follower.stop()
        tail_ids = [r["cursor"] for r in follower.rows]
        if follower.error is not None:
            problems.append(f"the live tail failed: {follower.error!r}")
        elif follower.dropped == 0 and tail_ids != tail_expected:
            problems.append(f"the live tail gave {len(tail_ids)} records ({len(set(tail_ids))} distinct), "
                            f"the spool holds {len(tail_expected)}:\n" + report(follower.markers()))
        elif follower.dropped and (len(set(tail_ids)) != len(tail_ids) or not set(tail_ids) <= set(tail_expected)
                                   or tail_ids != sorted(tail_ids, key={c: i for i, c in
                                                                        enumerate(tail_expected)}.__getitem__)
                                   or len(tail_ids) + follower.dropped != len(tail_expected)):
            problems.append(f"the live tail gave {len(tail_ids)} records and said it missed "
                            f"{follower.dropped}, of {len(tail_expected)}")

        code = agent.stop()
        stopped = True
        if code != 0:
            problems.append(f"the agent exited with {code}")
        if central.stop() != 0:
            problems.append("the central agent did not exit cleanly")
        bad = bad_log_lines(central.log_text())
        if bad:
            problems.append("the central's log:\n" + "\n".join(bad[:20]))
    finally:
        if follower is not None:
            follower.stop()
        if not stopped:
            agent.stop(signal.SIGKILL)
        if central.proc is not None and central.proc.poll() is None:
            central.stop(signal.SIGKILL)

    # after the stop: nothing more, nothing less, and an intact spool
    final = markers(agent.query_json())
    if {s: sorted(c.items()) for s, c in final.items()} != \
            {s: sorted(c.items()) for s, c in got.items()}:
        problems.append("the spool changed after the stop:\n" + report(final))
    verify = agent.hostlog("spool", "verify", check=False)
    if verify.returncode != 0:
        problems.append(f"spool verify: {verify.stdout.decode()} {verify.stderr.decode()}")
    bad = bad_log_lines(agent.log_text())
    if bad:
        problems.append("the agent's log:\n" + "\n".join(bad[:20]))
    assert problems == [], "\n\n".join(problems)
