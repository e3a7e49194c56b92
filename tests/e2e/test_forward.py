"""Forwarding end to end: an edge and two central agents over mutual TLS,
``replicate`` with ``min_acks = 2``, through the failures of a fleet.

Real ``hostlog agent`` processes on loopback, certificates made with the
cryptography package. The edge runs with everything on (syslog TCP, a tailed
file, a supervised app, metrics, the control socket) and forwards to both
centrals, the second one through a TCP relay of this test's that can cut the
link. While 100,000 syslog records and a file of 20,000 lines stream in:

* central 1 is killed with SIGKILL and started again;
* the link to central 2 is cut (every connection closed, new ones refused)
  and restored;
* the edge itself is killed with SIGKILL and started again.

At the end each central holds every record the edge's spool holds, exactly
once by (origin, seq), in seq order, under the edge's host name; and the
file's lines (a replayable source) all arrived, across the edge's kill.

Every wait is bounded; every process started here is stopped by its PID.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

from tests.agentproc import AgentProcess, free_port, metric_by_label, wait_for
from tests.support.pki import make_test_pki

RECORDS = 100_000
FILE_LINES = 20_000
APP_LINES = 2_000


class LinkCutter:
    """A TCP relay on loopback that the test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.open.is_set():
                client.close()  # cut: refused
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.stopped = True
        self.cut()
        self.listener.close()
        self.thread.join(timeout=5)


def central_config(tmp: Path, pki: dict[str, Path], name: str, port: int, syslog_port: int) -> str:
    return textwrap.dedent(f"""
        [agent]
        hostname = "{name}"
        state_dir = "{tmp}/state"

        [spool]
        fsync_interval = "20ms"

        [[source]]
        type = "syslog"
        name = "local"
        listen = ["tcp://127.0.0.1:{syslog_port}"]

        [receiver]
        listen = "tls://127.0.0.1:{port}"

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['server']}"
        key = "{pki['server_key']}"
        """)


def edge_config(tmp: Path, pki: dict[str, Path], ports: dict[str, int]) -> str:
    app = tmp / "app.py"
    app.write_text(textwrap.dedent(f"""\
        import sys, time
        for i in range({APP_LINES}):
            print(f"FWD:app:{{i}}", flush=i % 100 == 99)
            if i % 100 == 99:
                time.sleep(0.05)
        sys.stdout.flush()
        time.sleep(3600)
        """))
    return textwrap.dedent(f"""
        [agent]
        hostname = "web-1"
        state_dir = "{tmp}/state"

        [spool]
        fsync_interval = "20ms"

        [[source]]
        type = "syslog"
        name = "syslog"
        listen = ["tcp://127.0.0.1:{ports['syslog']}"]

        [[source]]
        type = "file"
        name = "files"
        paths = ["{tmp}/logs/*.log"]

        [[app]]
        name = "app"
        command = [{json.dumps(sys.executable)}, "{app}"]
        restart = "never"

        [[forward]]
        name = "central"
        targets = ["tls://localhost:{ports['c1']}", "tls://localhost:{ports['relay']}"]
        mode = "replicate"
        min_acks = 2
        window = 16

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['client']}"
        key = "{pki['client_key']}"
        """)


def send_syslog(port: int, first: int, count: int, stop: threading.Event, sent: list[int]) -> None:
    """RFC 5424 lines over TCP, reconnecting while the edge is down (a line
    the dead edge did not take is lost: syslog over TCP cannot replay)."""
    i = first
    while i < first + count and not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                while i < first + count and not stop.is_set():
                    batch = b"".join(
                        f"<14>1 2026-12-03T10:00:00Z web-1 gen {j} - - FWD:syslog:{j}\n".encode()
                        for j in range(i, min(i + 500, first + count)))
                    s.sendall(batch)
                    i = min(i + 500, first + count)
                    sent[0] = i
                    time.sleep(0.01)
        except OSError:
            time.sleep(0.1)


def cursors(agent: AgentProcess, *args: str) -> list[tuple[str, int]]:
    out = []
    for entry in agent.query_json(*args):
        origin, _, seq = entry["__CURSOR"].rpartition(":")
        out.append((origin, int(seq)))
    return out


def test_replicate_through_kills_and_cuts(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    ports = {"c1": free_port(), "c2": free_port(), "syslog": free_port()}
    centrals = []
    for n, key in ((1, "c1"), (2, "c2")):
        home = tmp_path / f"central{n}"
        home.mkdir()
        centrals.append(AgentProcess(home, central_config(home, pki, f"central-{n}", ports[key], free_port())))
    relay = LinkCutter(ports["c2"])
    ports["relay"] = relay.port
    edge_home = tmp_path / "edge"
    (edge_home / "logs").mkdir(parents=True)
    edge = AgentProcess(edge_home, edge_config(edge_home, pki, ports))
    stop = threading.Event()
    sent = [0]
    sender = threading.Thread(target=send_syslog, args=(ports["syslog"], 0, RECORDS, stop, sent))
    try:
        for c in centrals:
            c.start()
        edge.start()
        sender.start()
        with open(edge_home / "logs" / "app.log", "w") as f:
            for i in range(FILE_LINES // 2):
                f.write(f"FWD:file:{i} a line of the tailed file\n")
        wait_for(lambda: sent[0] >= RECORDS * 0.2, timeout=60, what="20% sent")

        centrals[0].stop(signal.SIGKILL)  # central 1 dies mid-stream
        time.sleep(1.0)
        centrals[0].start()

        wait_for(lambda: sent[0] >= RECORDS * 0.4, timeout=60, what="40% sent")
        relay.cut()  # the link to central 2 goes down
        time.sleep(2.0)
        relay.restore()

        wait_for(lambda: sent[0] >= RECORDS * 0.6, timeout=60, what="60% sent")
        edge.stop(signal.SIGKILL)  # the edge itself dies
        with open(edge_home / "logs" / "app.log", "a") as f:  # written while it is down
            for i in range(FILE_LINES // 2, FILE_LINES):
                f.write(f"FWD:file:{i} a line of the tailed file\n")
        edge.start()

        sender.join(timeout=120)
        assert not sender.is_alive()

        def caught_up() -> bool:
            lag = metric_by_label(edge.metrics(), "hostlog_forward_lag_records", "destination")
            files = edge.hostlog("query", "--no-pager", "-g", "FWD:file:", "-o", "cat").stdout.count(b"\n")
            return len(lag) == 2 and not any(lag.values()) and files >= FILE_LINES
        wait_for(caught_up, timeout=120, interval=0.5, what="both centrals caught up")

        edge_records = cursors(edge, "--host", "web-1")
        assert len(edge_records) > RECORDS * 0.5
        origin = edge_records[0][0]
        assert {o for o, _ in edge_records} == {origin}
        held = sorted(edge_records, key=lambda r: r[1])
        for c in centrals:
            got = cursors(c, "--host", "web-1")
            assert len(got) == len(set(got)), "a record stored twice"
            by_origin = [r for r in got if r[0] == origin]
            assert by_origin == held, "a central does not hold exactly what the edge holds, in order"
        # the replayable file source lost nothing across the edge's kill
        lines = centrals[1].hostlog("query", "--no-pager", "--host", "web-1", "-g", "FWD:file:",
                                    "-o", "cat").stdout.decode().splitlines()
        assert sorted(int(line.split(":")[2].split()[0]) for line in lines) == list(range(FILE_LINES))
        # a central node shows the edge's records under the edge's host name, by -o json too
        entry = centrals[0].query_json("--host", "web-1", "-n", "1")[0]
        assert entry["_HOSTNAME"] == "web-1" and entry["__CURSOR"].startswith(origin + ":")
        status = json.loads(edge.hostlog("ctl", "--socket", str(edge_home / "control.sock"),
                                         "--json", "status").stdout)
        links = status["forward"][0]["links"]
        assert [link["connected"] for link in links] == [True, True], links
        assert status["forward"][0]["delivered_seq"] == max(r[1] for r in edge_records)
        assert "ERROR" not in edge.log_text(), edge.log_text()[-3000:]
    finally:
        stop.set()
        sender.join(timeout=10)
        for agent in (edge, *centrals):
            if agent.proc is not None:
                agent.stop()
        relay.close()
