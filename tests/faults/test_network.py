"""Network faults between an edge and two central agents (issue 20, item 4).

Real ``hostlog agent`` processes on loopback: an edge with a tailed file and
a syslog TCP listener under a steady load, forwarding with ``replicate``
(``min_acks = 2``) over mutual TLS to two centrals, each link through a
:class:`~tests.support.fault_proxy.FaultProxy` of this test's. One fault at a
time, while the load runs:

* a central down (SIGKILL, started again later) for a long time;
* a link flapping (cut, restored, again and again);
* one-way loss each way (the proxy reads and forwards nothing one way);
* a half-open connection (nothing either way, and nobody told): the edge
  must find out by itself, while the fault lasts (``ack_timeout``);
* a slow link (latency and a bandwidth limit).

After each: every record of the edge's spool in each central's spool exactly
once by (origin, seq), every line sent (syslog) and written (file) there
exactly once by its line number, the edge's RSS bounded, and the rate the
faulted link caught up at next to the rate the edge took records in (both
printed). Short in CI; ``HOSTLOG_FAULTS_LONG=1`` (``make faults``) holds each
fault for minutes.

Waits poll the edge's metrics endpoint, never queries; every wait is
bounded; every process started here is stopped by its PID.
"""

from __future__ import annotations

import signal
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.agentproc import AgentProcess, free_port, metric_by_label, wait_for
from tests.faults.conftest import LONG
from tests.support.fault_proxy import FaultProxy
from tests.support.pki import make_test_pki

#: Syslog lines a second, and lines a second appended to the tailed file.
SYSLOG_RATE = 1000
FILE_RATE = 100
#: How long each fault lasts (seconds).
HOLD = {"down": 180.0, "flap": 120.0, "oneway": 60.0, "halfopen": 60.0, "slow": 120.0} if LONG else \
    {"down": 12.0, "flap": 8.0, "oneway": 6.0, "halfopen": 6.0, "slow": 6.0}
ACK_TIMEOUT_S = 3.0
#: Bytes a second each way on the slow link: less than the load needs on the wire.
SLOW_RATE = 5_000
#: The edge's resident memory may not pass this, whatever the fault.
RSS_LIMIT = 400 << 20
HOST = "web-net"


def central_config(home: Path, pki: dict[str, Path], name: str, port: int) -> str:
    return textwrap.dedent(f"""
        [agent]
        hostname = "{name}"
        state_dir = "{home}/state"

        [spool]
        fsync_interval = "20ms"

        [receiver]
        listen = "tls://127.0.0.1:{port}"

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['server']}"
        key = "{pki['server_key']}"
        """)


def edge_config(home: Path, pki: dict[str, Path], syslog_port: int, proxies: list[int]) -> str:
    targets = ", ".join(f'"tls://localhost:{p}"' for p in proxies)
    return textwrap.dedent(f"""
        [agent]
        hostname = "{HOST}"
        state_dir = "{home}/state"

        [spool]
        fsync_interval = "20ms"

        [[source]]
        type = "syslog"
        name = "syslog"
        listen = ["tcp://127.0.0.1:{syslog_port}"]

        [[source]]
        type = "file"
        name = "files"
        paths = ["{home}/logs/*.log"]

        [[forward]]
        name = "central"
        targets = [{targets}]
        mode = "replicate"
        min_acks = 2
        window = 16
        ack_timeout = "{ACK_TIMEOUT_S:g}s"

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['client']}"
        key = "{pki['client_key']}"
        """)


class Load:
    """A steady load on the edge: syslog lines over one TCP connection and
    lines appended to a tailed file, each numbered from 0 under a tag."""

    def __init__(self, tag: str, syslog_port: int, logfile: Path, pid: int) -> None:
        self.tag = tag
        self.port = syslog_port
        self.logfile = logfile
        self.proc = psutil.Process(pid)
        self.stop_event = threading.Event()
        self.sent = 0
        self.written = 0
        self.rss_peak = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the load did not stop"
        if self.error is not None:
            raise AssertionError(f"the load failed: {self.error!r}")

    def _run(self) -> None:
        tick = 0.05
        per_tick, file_per_tick = int(SYSLOG_RATE * tick), max(1, int(FILE_RATE * tick))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s, \
                    open(self.logfile, "a") as f:
                next_at = time.monotonic()
                while not self.stop_event.is_set():
                    s.sendall(b"".join(
                        f"<14>1 2026-12-03T10:00:00Z {HOST} gen - - - NET:{self.tag}:syslog:{i}\n".encode()
                        for i in range(self.sent, self.sent + per_tick)))
                    self.sent += per_tick
                    f.write("".join(f"NET:{self.tag}:file:{i} a line of the tailed file\n"
                                    for i in range(self.written, self.written + file_per_tick)))
                    f.flush()
                    self.written += file_per_tick
                    if self.sent % (per_tick * 10) == 0:
                        self.rss_peak = max(self.rss_peak, self.proc.memory_info().rss)
                    next_at += tick
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except (OSError, psutil.Error) as exc:  # the test fails on it (stop())
            self.error = exc


@dataclass
class Fleet:
    edge: AgentProcess
    centrals: list[AgentProcess]
    proxies: list[FaultProxy]
    syslog_port: int
    logfile: Path

    def link(self, i: int) -> str:
        """The metrics label of the link to central ``i``."""
        return f"central@localhost_{self.proxies[i].port}"

    def forward(self, metric: str) -> dict[str, int]:
        return metric_by_label(self.edge.metrics(), f"hostlog_forward_{metric}", "destination")

    def written(self) -> int:
        return int(self.edge.metrics()["hostlog_spool_records_written_total"])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("net")
    pki = make_test_pki(tmp / "pki")
    centrals, proxies = [], []
    edge: AgentProcess | None = None
    try:
        for n in (1, 2):
            home = tmp / f"central{n}"
            home.mkdir()
            port = free_port()
            centrals.append(AgentProcess(home, central_config(home, pki, f"central-{n}", port)))
            centrals[-1].start()
            proxies.append(FaultProxy(port))
        home = tmp / "edge"
        (home / "logs").mkdir(parents=True)
        syslog_port = free_port()
        edge = AgentProcess(home, edge_config(home, pki, syslog_port, [p.port for p in proxies]))
        edge.start()
        fleet = Fleet(edge, centrals, proxies, syslog_port, home / "logs" / "net.log")
        wait_for(lambda: fleet.forward("connected") == {fleet.link(0): 1, fleet.link(1): 1},
                 timeout=30, interval=0.2, what="both links up")
        yield fleet
        assert "ERROR" not in edge.log_text(), edge.log_text()[-3000:]
    finally:
        for agent in (edge, *centrals):
            if agent is not None and agent.proc is not None:
                agent.stop()
        for p in proxies:
            p.close()


def catch_up(fleet: Fleet, i: int, timeout: float) -> tuple[float, float] | None:
    """After a fault on link ``i``, with the load still on: the rate (records/s)
    the link's cursor moved at from its first move until it was within 0.2 s of
    ingest, and the rate the edge took records in meanwhile (None: the fault
    left no backlog to catch up)."""
    name = fleet.link(i)
    deadline = time.monotonic() + timeout
    if fleet.forward("lag_records")[name] <= 0.2 * SYSLOG_RATE:
        return None
    start_acked = fleet.forward("acked_seq")[name]
    while True:  # until the link moves again (reconnect backoff)
        assert time.monotonic() < deadline, f"link {i} never moved again"
        acked = fleet.forward("acked_seq")[name]
        if acked > start_acked:
            break
        time.sleep(0.1)
    t0, a0, w0 = time.monotonic(), acked, fleet.written()
    while True:
        assert time.monotonic() < deadline, f"link {i} did not catch up within {timeout} s"
        lag = fleet.forward("lag_records")[name]
        if lag <= 0.2 * SYSLOG_RATE:
            break
        time.sleep(0.1)
    t1, a1, w1 = time.monotonic(), fleet.forward("acked_seq")[name], fleet.written()
    span = max(t1 - t0, 1e-3)
    return (a1 - a0) / span, (w1 - w0) / span


def verify(fleet: Fleet, load: Load) -> dict[str, int]:
    """Stop nothing; wait for both links to hold everything; then compare the
    spools. Returns the scenario's figures."""
    wait_for(lambda: fleet.forward("lag_records") == {fleet.link(0): 0, fleet.link(1): 0},
             timeout=120, interval=0.2, what="both centrals caught up")

    def read(agent: AgentProcess) -> tuple[list[tuple[str, int]], list[int], list[int]]:
        cursors: list[tuple[str, int]] = []
        syslog: list[int] = []
        files: list[int] = []
        for entry in agent.query_json("--host", HOST, "-g", f"NET:{load.tag}:"):
            origin, _, seq = entry["__CURSOR"].rpartition(":")
            cursors.append((origin, int(seq)))
            _, _, kind, n = entry["MESSAGE"].split()[0].split(":")
            (syslog if kind == "syslog" else files).append(int(n))
        return cursors, syslog, files

    held, syslog, files = read(fleet.edge)
    assert sorted(syslog) == list(range(load.sent)), "the edge lost or doubled a syslog line"
    assert sorted(files) == list(range(load.written)), "the edge lost or doubled a file line"
    held_set = set(held)
    figures = {"sent": load.sent + load.written, "edge": len(held)}
    for n, central in enumerate(fleet.centrals, 1):
        got, c_syslog, c_files = read(central)
        dups = len(got) - len(set(got))
        lost = len(held_set - set(got))
        figures[f"central{n}_received"] = len(got)
        figures[f"central{n}_lost"] = lost
        figures[f"central{n}_duplicated"] = dups
        assert dups == 0, f"central {n} stored {dups} records twice"
        assert lost == 0, f"central {n} misses {lost} records of the edge's spool"
        assert sorted(got, key=lambda r: r[1]) == sorted(held, key=lambda r: r[1])
        assert sorted(c_syslog) == list(range(load.sent)), f"central {n}: syslog lines lost or doubled"
        assert sorted(c_files) == list(range(load.written)), f"central {n}: file lines lost or doubled"
    return figures


def report(name: str, load: Load, figures: dict[str, int], rates: tuple[float, float] | None,
           hold: float) -> None:
    line = (f"[network {name}] fault held {hold:.0f} s; records sent {figures['sent']}, in the edge's spool "
            f"{figures['edge']}; central 1 received {figures['central1_received']} "
            f"(lost {figures['central1_lost']}, duplicated {figures['central1_duplicated']}); central 2 received "
            f"{figures['central2_received']} (lost {figures['central2_lost']}, duplicated "
            f"{figures['central2_duplicated']}); edge RSS peak {load.rss_peak / 2**20:.1f} MiB")
    if rates is None:
        line += "; no backlog to catch up"
    else:
        line += f"; catch-up {rates[0]:.0f} records/s vs ingest {rates[1]:.0f} records/s " \
                f"({rates[0] / max(rates[1], 1e-9):.1f}x)"
    print(line)
    assert load.rss_peak < RSS_LIMIT, f"edge RSS {load.rss_peak / 2**20:.0f} MiB"


def scenario(fleet: Fleet, tag: str) -> Load:
    assert fleet.edge.proc is not None
    return Load(tag, fleet.syslog_port, fleet.logfile, fleet.edge.proc.pid)


def test_central_down_under_load(fleet: Fleet) -> None:
    hold = HOLD["down"]
    with scenario(fleet, "down") as load:
        time.sleep(1.0)
        fleet.centrals[1].stop(signal.SIGKILL)
        wait_for(lambda: fleet.forward("connected")[fleet.link(1)] == 0, timeout=10, what="link 2 down")
        time.sleep(hold)
        lag = fleet.forward("lag_records")[fleet.link(1)]
        assert lag > 0
        fleet.centrals[1].start()
        rates = catch_up(fleet, 1, timeout=120 + hold)
    figures = verify(fleet, load)
    report("central down", load, figures, rates, hold)


def test_link_flapping(fleet: Fleet) -> None:
    hold = HOLD["flap"]
    with scenario(fleet, "flap") as load:
        time.sleep(1.0)
        before = fleet.forward("connects_total")[fleet.link(0)]
        down, up = 1.0, 1.5
        times = max(1, int(hold / (down + up)))
        fleet.proxies[0].flap(down, up, times)
        wait_for(lambda: fleet.proxies[0].stats.flaps == times and fleet.proxies[0].mode == "pass",
                 timeout=hold + 30, interval=0.2, what="the flapping to end")
        rates = catch_up(fleet, 0, timeout=120)
        assert fleet.forward("connects_total")[fleet.link(0)] > before
    figures = verify(fleet, load)
    report(f"link flapping ({times} cuts)", load, figures, rates, hold)


@pytest.mark.parametrize("way", ["up", "down"])
def test_one_way_loss(fleet: Fleet, way: str) -> None:
    """``up``: the edge's chunks are lost, the acks would come; ``down``: the
    central stores the chunks, their acks are lost (it gets them again)."""
    hold = HOLD["oneway"]
    with scenario(fleet, f"oneway{way}") as load:
        time.sleep(1.0)
        before = fleet.forward("connects_total")[fleet.link(1)]
        fleet.proxies[1].blackhole(way)  # type: ignore[arg-type]
        # the edge gives the connection up by itself, the fault still on
        wait_for(lambda: fleet.forward("connected")[fleet.link(1)] == 0, timeout=ACK_TIMEOUT_S * 3 + 5,
                 interval=0.1, what="the edge to give up the lossy link")
        time.sleep(max(0.0, hold - ACK_TIMEOUT_S))
        fleet.proxies[1].set_pass()
        rates = catch_up(fleet, 1, timeout=120)
        assert fleet.forward("connects_total")[fleet.link(1)] > before
    figures = verify(fleet, load)
    report(f"one-way loss {way}", load, figures, rates, hold)


def test_half_open_connection(fleet: Fleet) -> None:
    """Nothing either way and no RST or FIN: the socket says all is well; the
    sender must see it from the acks that stop (``ack_timeout``)."""
    hold = HOLD["halfopen"]
    with scenario(fleet, "halfopen") as load:
        time.sleep(1.0)
        fleet.proxies[0].blackhole("both")
        started = time.monotonic()
        wait_for(lambda: fleet.forward("connected")[fleet.link(0)] == 0, timeout=ACK_TIMEOUT_S * 3 + 5,
                 interval=0.1, what="the edge to find the half-open link dead")
        detected = time.monotonic() - started
        assert fleet.proxies[0].mode == "blackhole"  # found while the fault was on
        time.sleep(max(0.0, hold - detected))
        fleet.proxies[0].set_pass()
        rates = catch_up(fleet, 0, timeout=120)
    figures = verify(fleet, load)
    print(f"[network half-open] detected after {detected:.1f} s (ack_timeout {ACK_TIMEOUT_S:g} s)")
    report("half-open", load, figures, rates, hold)


def test_slow_link(fleet: Fleet) -> None:
    """100 ms each way and less bandwidth than the load needs: a backlog
    builds, the link stays up (acks keep coming: slow is not dead), and it
    catches up once the link is fast again."""
    hold = HOLD["slow"]
    with scenario(fleet, "slow") as load:
        time.sleep(1.0)
        before = fleet.forward("connects_total")[fleet.link(1)]
        wire = fleet.proxies[1].stats.bytes_up
        fleet.proxies[1].slow(delay=0.1, rate=SLOW_RATE)
        time.sleep(hold)
        lag = fleet.forward("lag_records")[fleet.link(1)]
        assert lag > 0.2 * SYSLOG_RATE, f"the slow link built no backlog ({lag} records)"
        assert fleet.forward("connects_total")[fleet.link(1)] == before, "the slow link was taken for a dead one"
        wire = fleet.proxies[1].stats.bytes_up - wire
        fleet.proxies[1].set_pass()
        rates = catch_up(fleet, 1, timeout=120)
    figures = verify(fleet, load)
    print(f"[network slow link] {wire / hold / 1000:.1f} kB/s on the wire while slow; backlog {lag} records")
    report(f"slow link (100 ms each way, {SLOW_RATE // 1000} kB/s)", load, figures, rates, hold)
