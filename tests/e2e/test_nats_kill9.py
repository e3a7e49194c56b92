"""Edge agent -> nats-server -js -> central agent, all real processes, with a
kill -9 of each of the three in the middle of the stream.

The edge tails a file (a replayable source) and forwards with ``[[forward]]
type = "nats"``; the central consumes the stream with ``[[source]] type =
"nats"``. 100,000 numbered lines: most of them in the file before anything
starts, the rest appended while the three processes run. Each process is
killed once (nats-server, then the edge, then the central) while records
flow, and started again on its own state. At the end the central's spool
must hold every record of the edge's spool exactly once, in the edge's order
(by seq), and every line written.

Waits poll counters (the agents' metrics and control sockets, the edge's
file checkpoint), never queries; every wait is bounded; every process is
stopped by its PID in a ``finally``. In CI a missing nats-server fails.
Random but reproducible: HOSTLOG_TEST_SEED=<n> replays a run.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostlog.cli.ctl_cmd import AgentNotRunning, request
from hostlog.spool.reader import SpoolReader
from tests.agentproc import HOSTLOG, AgentProcess, metric_by_label, wait_for
from tests.integration.test_nats import NatsServer

SEED = int(os.environ.get("HOSTLOG_TEST_SEED") or time.time_ns() % 2**32)
TOTAL = 100_000
PREFILL = 60_000  # in the file before the agents start: read at full speed
BURST, BURST_EVERY = 500, 0.04  # the rest: 12,500 lines/s while the kills happen
LINE = re.compile(r"line (\d{6})")
SOURCE = "js-in"


def edge_config(tmp: Path, log: Path, nats_url: str) -> str:
    return f"""
[agent]
hostname = "edge-1"
state_dir = "{tmp}/state"

[spool]
fsync = "batch"
fsync_interval = "20ms"

[[source]]
type = "file"
name = "app"
paths = ["{log}"]
start = "beginning"
poll_interval = "100ms"

[[forward]]
name = "js"
type = "nats"
targets = ["{nats_url}"]
"""


def central_config(tmp: Path, nats_url: str) -> str:
    return f"""
[agent]
hostname = "central-1"
state_dir = "{tmp}/state"

# a longer group commit than the edge's: a message is acked only once its
# records are synced, so the kill -9 finds some in the spool and not acked,
# and JetStream delivers them again to the restarted central
[spool]
fsync = "batch"
fsync_interval = "250ms"

[[source]]
type = "nats"
name = "{SOURCE}"
servers = ["{nats_url}"]
"""


class Writer(threading.Thread):
    """Appends the numbered lines after the prefill, in bursts."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="line-writer", daemon=True)
        self.path = path
        self.n = PREFILL
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self.path, "a") as fh:
                while self.n < TOTAL:
                    stop = min(TOTAL, self.n + BURST)
                    fh.write("".join(f"line {i:06d}\n" for i in range(self.n, stop)))
                    fh.flush()
                    self.n = stop
                    time.sleep(BURST_EVERY)
        except BaseException as exc:  # seen by the test, which fails with it
            self.error = exc


def status(agent: AgentProcess) -> dict[str, Any] | None:
    """The agent's ``ctl status`` result through its control socket; None while it does not answer."""
    try:
        response = request(agent.tmp / "control.sock", "status", timeout=5)
    except (OSError, AgentNotRunning, ValueError):  # not started yet, or killed
        return None
    return response.get("result") if response.get("ok") else None


def nats_input(agent: AgentProcess) -> dict[str, Any] | None:
    result = status(agent)
    if result is None:
        return None
    return next((i for i in result.get("inputs", []) if i.get("name") == SOURCE), None)


def stored_by_central(central: AgentProcess) -> int:
    """Records the central's NATS input stored since it (last) started; 0 while it does not answer."""
    try:
        return metric_by_label(central.metrics(), "hostlog_nats_records_total", "source").get(SOURCE, 0)
    except (OSError, AssertionError):
        return 0


def kill9(agent: AgentProcess) -> None:
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGKILL)
    agent.proc.wait(timeout=10)


def read_to_end(edge: AgentProcess, log: Path) -> bool:
    """The edge's file checkpoint (durable position) is at the end of the file."""
    path = edge.state / "spool" / "state" / "checkpoints" / "app.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    size = log.stat().st_size
    return any(f.get("path") == str(log) and f.get("offset") == size for f in saved.get("files", []))


def everything_forwarded(edge: AgentProcess, central: AgentProcess, log: Path) -> bool:
    """The edge read its file to the end, the stream acked everything, and the
    central's marks for the edge's records reach what the edge acked, durably."""
    if not read_to_end(edge, log):
        return False
    result = status(edge)
    if result is None or not result.get("forward"):
        return False
    link = result["forward"][0]["links"][0]
    if link["lag_records"] or not link["acked_seq"]:
        return False
    source = nats_input(central)
    if source is None or source["awaiting_durability"]:
        return False
    return bool(source["origins"]) and max(source["origins"].values()) >= link["acked_seq"]


def consumer_info_since(central: AgentProcess, since: float) -> bool:
    """The central's status holds consumer info fetched after ``since`` (time.time())."""
    source = nats_input(central)
    consumer = source.get("consumer") if source else None
    return bool(consumer) and consumer["at"] > since


def spool(agent: AgentProcess) -> list[tuple[str, int, Any]]:
    reader = SpoolReader.open(agent.state / "spool")
    return [(r.origin, r.seq, r.msg) for _, r in reader.records()]


def test_edge_nats_central_each_killed_once_every_record_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i:06d}\n" for i in range(PREFILL)))
    server = NatsServer(tmp_path / "nats")
    server.start()  # (fails in CI without nats-server, skips elsewhere)
    edge = AgentProcess(tmp_path / "edge-home", None)
    central = AgentProcess(tmp_path / "central-home", None)
    for agent, text in ((edge, edge_config(tmp_path / "edge-home", log, server.url)),
                        (central, central_config(tmp_path / "central-home", server.url))):
        agent.tmp.mkdir()
        agent.write_config(text)
    writer = Writer(log)
    kills: list[tuple[str, int]] = []  # what was killed, and the lines written by then
    try:
        central.start()
        edge.start()

        def kill_when_central_holds(what: str, n: int, kill: Callable[[], None]) -> None:
            wait_for(lambda: stored_by_central(central) >= n, timeout=30, interval=0.02,
                     what=f"the central to hold {n} records before killing {what} (seed {SEED})")
            time.sleep(rng.uniform(0.0, 0.05))
            kill()
            kills.append((what, writer.n))
            time.sleep(rng.uniform(0.1, 0.3))  # the others go on meanwhile

        # 1. the server, while the prefill streams through it
        kill_when_central_holds("nats-server", 20_000, server.kill)
        server.start()
        writer.start()
        # 2. the edge, while it reads the appended lines and publishes
        kill_when_central_holds("the edge", PREFILL + 2_000, lambda: kill9(edge))
        edge.start()
        # 3. the central, while the stream delivers
        kill_when_central_holds("the central", PREFILL + 12_000, lambda: kill9(central))
        central.start()
        writer.join(timeout=60)
        assert not writer.is_alive() and writer.error is None, writer.error
        wait_for(lambda: everything_forwarded(edge, central, log), timeout=60, interval=0.1,
                 what=f"every record at the central (seed {SEED}; kills {kills})")
        # the consumer's own numbers, fetched after that: nothing left in the stream for it
        done_at = time.time()
        wait_for(lambda: consumer_info_since(central, done_at), timeout=10, interval=0.1,
                 what="the central's consumer info")
        text = subprocess.run([*HOSTLOG, "ctl", "--socket", str(central.tmp / "control.sock"), "status"],
                              capture_output=True, timeout=30, env=central.env)
        assert text.returncode == 0, text.stderr.decode()
        shown = text.stdout.decode()
        final = nats_input(central)
        samples = central.metrics()
        assert edge.stop() == 0, edge.log_text()[-3000:]
        assert central.stop() == 0, central.log_text()[-3000:]
    finally:
        for agent in (edge, central):
            if agent.proc is not None:
                agent.stop(signal.SIGKILL)
        server.stop()

    assert [k[0] for k in kills] == ["nats-server", "the edge", "the central"]
    assert all(k[1] < TOTAL for k in kills[1:]), f"seed {SEED}: a kill after the last line: {kills}"

    # what ctl status and the metrics show of the NATS input
    line = next((x for x in shown.splitlines() if x.startswith(f"source {SOURCE} (nats):")), None)
    assert line is not None, shown
    m = re.match(rf"source {SOURCE} \(nats\): connected to {re.escape(server.url)}, stream HOSTLOG "
                 r"consumer hostlog, (\d+) messages acked, (\d+) records stored, (\d+) duplicates dropped, "
                 r"pending 0 \(ack pending 0\)", line)
    assert m, line
    assert final is not None and final["connected"] and final["bad_messages"] == 0
    assert int(m[2]) == final["records"] > 0  # (since the central's restart)
    assert metric_by_label(samples, "hostlog_nats_connected", "source") == {SOURCE: 1}
    assert metric_by_label(samples, "hostlog_nats_records_total", "source")[SOURCE] == final["records"]

    # the central holds every record of the edge's spool once, in its order
    edge_records = spool(edge)
    origin = edge_records[0][0]
    central_records = [r for r in spool(central) if r[0] == origin]
    counts = collections.Counter((o, s) for o, s, _ in central_records)
    repeated = [k for k, c in counts.items() if c > 1]
    assert not repeated, f"seed {SEED}: {len(repeated)} records twice at the central, e.g. {repeated[:5]}"
    missing = set((o, s) for o, s, _ in edge_records) - set(counts)
    assert not missing, f"seed {SEED}: {len(missing)} records lost, e.g. {sorted(missing)[:5]}"
    assert central_records == edge_records, f"seed {SEED}: not in the edge's order"
    # ... and every line written, once (the file source replays nothing either)
    lines = collections.Counter(int(hit[1]) for _, _, msg in central_records
                                if isinstance(msg, str) and (hit := LINE.fullmatch(msg)))
    assert sorted(lines) == list(range(TOTAL)), f"seed {SEED}: {TOTAL - len(lines)} lines missing"
    assert max(lines.values()) == 1, f"seed {SEED}: lines read twice by the edge"
