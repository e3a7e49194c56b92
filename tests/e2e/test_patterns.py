"""Template mining at ingest, end to end: a real agent (syslog over TCP)
forwarding to a real central agent.

* every stored record carries ``PATTERN_ID`` and ``PATTERN``, shown by
  ``hostlog query -o json`` / ``-o export`` / ``-o verbose``, and the central
  holds the same ids;
* the ids of patterns whose template generalised on a word (``user <*>``,
  which a miner without its state would not give again) are equal before and
  after a kill -9 and a restart;
* a damaged state file is said in the log, set aside, mining restarts, and no
  record is lost.

Every wait is bounded; every process is stopped by its PID.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import textwrap
import time
from pathlib import Path

from hostlog.patterns import Miner
from hostlog.patterns.sink import open_state
from hostlog.record import Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from tests.agentproc import AgentProcess, free_port, wait_for

USERS_1 = ["alice", "bob", "carol", "dave"]
USERS_2 = ["erin", "frank", "grace"]


def edge_config(tmp: Path, syslog: int, central: int) -> str:
    return textwrap.dedent(f"""
        [agent]
        hostname = "patterns-edge"
        state_dir = "{tmp}/state"

        [spool]
        fsync_interval = "20ms"

        [patterns]
        checkpoint_interval = "200ms"

        [[source]]
        type = "syslog"
        name = "syslog"
        listen = ["tcp://127.0.0.1:{syslog}"]

        [[forward]]
        name = "central"
        targets = ["tcp://127.0.0.1:{central}"]
        """)


def central_config(home: Path, central: int) -> str:
    return textwrap.dedent(f"""
        [agent]
        hostname = "patterns-central"
        state_dir = "{home}/state"

        [spool]
        fsync_interval = "20ms"

        [receiver]
        listen = "tcp://127.0.0.1:{central}"
        """)


def send(port: int, lines: list[tuple[str, str]]) -> None:
    """RFC 3164 lines over TCP, one a line (app, message)."""
    data = "".join(f"<14>Jan  1 00:00:00 h {app}: {msg}\n" for app, msg in lines).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)


def spool(state: Path) -> list[Record]:
    return [r for _, r in SpoolReader.open(state / "spool").records()]


def phase(users: list[str], tag: str) -> list[tuple[str, str]]:
    return ([("e2elogin", f"session opened for user {u} by uid {i}") for i, u in enumerate(users)]
            + [("e2edisk", f"disk sda{i} is {i}0% full") for i in range(3)]
            + [("e2edone", f"phase {tag} done")])


def ids_of(records: list[Record], app: str) -> set[str]:
    return {str(r.fields["PATTERN_ID"]) for r in records if r.app == app}


def test_pattern_ids_at_ingest_survive_kill9_and_reach_the_central(tmp_path: Path) -> None:
    syslog, central_port = free_port(), free_port()
    (tmp_path / "central").mkdir()
    central = AgentProcess(tmp_path / "central", central_config(tmp_path / "central", central_port))
    edge = AgentProcess(tmp_path, edge_config(tmp_path, syslog, central_port))
    state_file = tmp_path / "state" / "patterns" / "miner.state"
    central.start()
    try:
        edge.start()
        try:
            send(syslog, phase(USERS_1, "one"))
            wait_for(lambda: any(r.msg == "phase one done" for r in spool(edge.state)),
                     what="phase one stored")
            before = spool(edge.state)
            assert all("PATTERN_ID" in r.fields and "PATTERN" in r.fields for r in before)
            login = ids_of(before, "e2elogin")
            assert len(login) == 1 and len(ids_of(before, "e2edisk")) == 1
            assert ids_of(before, "e2elogin") != ids_of(before, "e2edisk")
            last = [r for r in before if r.app == "e2elogin"][-1]
            assert last.fields["PATTERN"] == "session opened for user <*> by uid <NUM>"

            # the state saved holds the patterns of what is stored: then kill -9
            def saved() -> bool:
                try:  # (sealed with the spool's key: the templates are record text)
                    keyring = Keyring.load(tmp_path / "state" / "spool.key")
                    miner = Miner.from_bytes(open_state(state_file.read_bytes(), keyring))
                except (OSError, ValueError):
                    return False
                return login <= set(miner.patterns("e2elogin"))
            wait_for(saved, what="the miner's state saved")
            edge.stop(signal.SIGKILL)

            edge.start()
            send(syslog, phase(USERS_2, "two"))
            wait_for(lambda: any(r.msg == "phase two done" for r in spool(edge.state)),
                     what="phase two stored")
            after = spool(edge.state)
            assert ids_of(after, "e2elogin") == login
            assert ids_of(after, "e2edisk") == ids_of(before, "e2edisk")

            # shown by hostlog query
            rows = edge.query_json("-t", "e2elogin")
            assert {row["PATTERN_ID"] for row in rows} == login, rows[:1]
            assert rows[-1]["PATTERN"] == "session opened for user <*> by uid <NUM>"
            for mode in ("export", "verbose"):
                out = edge.hostlog("query", "-o", mode, "--no-pager", "-t", "e2elogin").stdout.decode()
                assert f"PATTERN_ID={next(iter(login))}" in out, (mode, out[:500])

            # hostlog patterns counts the records under the ids they carry
            out = edge.hostlog("patterns", "-c", str(edge.config), "-o", "json", "-t", "e2elogin").stdout
            listed = [json.loads(line) for line in out.decode().splitlines() if line]
            assert [(p["pattern_id"], p["count"]) for p in listed] == [(next(iter(login)), 7)]
            assert listed[0]["template"] == "session opened for user <*> by uid <NUM>"

            # the central holds them as the edge mined them
            wait_for(lambda: any(r.msg == "phase two done" for r in spool(central.state)),
                     what="forwarded")
            got = spool(central.state)
            assert ids_of(got, "e2elogin") == login
            assert {(r.msg, r.fields["PATTERN_ID"]) for r in got if r.app != "hostlog"} >= \
                {(r.msg, r.fields["PATTERN_ID"]) for r in after if r.app != "hostlog"}

            # a damaged state: said, set aside, mining restarts, nothing else lost
            edge.stop()
            data = bytearray(state_file.read_bytes())
            data[len(data) // 2] ^= 0xFF
            state_file.write_bytes(bytes(data))
            stored = len(spool(edge.state))
            edge.start()
            assert "the miner's state" in edge.log_text() and "is damaged" in edge.log_text()
            assert state_file.with_name("miner.state.damaged").exists()
            send(syslog, phase(["heidi"], "three"))
            wait_for(lambda: any(r.msg == "phase three done" for r in spool(edge.state)),
                     what="phase three stored")
            final = spool(edge.state)
            assert len(final) >= stored + 5
            assert all("PATTERN_ID" in r.fields for r in final)
        finally:
            edge.stop()
    finally:
        central.stop()


def test_a_new_template_after_warmup_is_one_detect_record(tmp_path: Path) -> None:
    syslog = free_port()
    config = textwrap.dedent(f"""
        [agent]
        hostname = "detect-host"
        state_dir = "{tmp_path}/state"

        [spool]
        fsync_interval = "20ms"

        [patterns]
        warmup = "2s"

        [[source]]
        type = "syslog"
        name = "syslog"
        listen = ["tcp://127.0.0.1:{syslog}"]
        """)
    agent = AgentProcess(tmp_path, config)
    agent.start()
    try:
        send(syslog, [("e2eweb", f"GET /items/{i} 200") for i in range(50)])
        wait_for(lambda: len(spool(agent.state)) >= 50, what="the first records")
        assert not [r for r in spool(agent.state) if r.source == "detect"]
        time.sleep(2.5)  # the warm-up passes (the agent's clock: no faster way to pass it)
        send(syslog, [("e2eweb", f"disk sda{i} failed with EIO") for i in range(5)]
             + [("e2eweb", f"GET /items/{i} 200") for i in range(50)])
        rows = wait_for(lambda: agent.query_json("--source", "detect"), what="the anomaly record")
        time.sleep(0.5)  # (anything more would be said by now)
        rows = agent.query_json("--source", "detect")
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["DETECT_KIND"] == "new_pattern"
        assert row["DETECT_PATTERN"] == "disk sda0 failed with EIO"  # (the template of its first message)
        assert row["_HOSTLOG_SOURCE"] == "detect" and row["SYSLOG_IDENTIFIER"] == "e2eweb"
        assert "never seen" in row["MESSAGE"] and re.fullmatch(r"[0-9a-f]{16}", row["PATTERN_ID"])
        mined = {r.fields["PATTERN_ID"] for r in spool(agent.state) if r.source == "syslog" and "disk" in str(r.msg)}
        assert mined == {row["DETECT_PATTERN_ID"]}
        samples = agent.metrics()
        assert samples.get('hostlog_anomalies_total{kind="new_pattern"}') == 1
        assert samples.get('hostlog_records_in_total{source="detect"}') == 1  # counted in like any
    finally:
        agent.stop()
