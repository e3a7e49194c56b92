"""What an agent leaves on disk gives nothing away, and its unit is confined.

* No plaintext: a real agent with a syslog listener, a tailed file, a
  supervised app, metrics, the control socket and the HTTP server on takes
  records whose message, app name, host name and a field value each carry a
  marker, and one HTTP request whose filter does (its audit record); after
  it stopped, no file under its state directory (spool segments, indexes,
  checkpoints, positions, keys of the HTTP server, state files) holds a
  marker, as is, as UTF-16 or in hex. The same records read back with the
  key: the markers were there to find.
* Key rotation: ``hostlog spool rotate-key`` killed in the middle leaves the
  key file whole; after a rotation every frame of either key reads back.
* The unit: ``systemd-analyze security --offline=true`` rates the shipped
  unit's exposure 2.0 or lower.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.agentproc import HOSTLOG as HOSTLOG_CLI
from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "hostlog.service"


def _forms(marker: str) -> list[bytes]:
    """The ways a marker's text could sit in a file: as is, as UTF-16, in hex."""
    raw = marker.encode()
    return [raw, marker.encode("utf-16-le"), raw.hex().encode()]


def test_no_record_text_in_any_file_the_agent_wrote(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    markers = {"message": f"msg-secret-{tag}", "app": f"appsecret{tag}", "host": f"hostsecret{tag}",
               "field": f"fieldsecret-{tag}", "file": f"filesecret-{tag}", "child": f"childsecret-{tag}",
               "filter": f"filtersecret{tag}"}
    port, http_port = free_port(), free_port()
    tailed = tmp_path / "tailed.log"
    tailed.write_text("")
    agent = AgentProcess(tmp_path, textwrap.dedent(f"""
        [agent]
        state_dir = "{tmp_path}/state"

        [[source]]
        type = "syslog"
        listen = ["tcp://127.0.0.1:{port}"]

        [[source]]
        type = "file"
        paths = ["{tailed}"]

        [[app]]
        name = "child"
        command = ["{sys.executable}", "-c", "import time; print('{markers['child']}', flush=True); time.sleep(60)"]

        [http]
        listen = ["127.0.0.1:{http_port}"]
        """))
    agent.start()
    try:
        # one RFC 5424 message: the host, the app and an SD field carry markers too
        line = (f'<13>1 2026-12-03T10:00:00Z {markers["host"]} {markers["app"]} 7 - '
                f'[x@32473 k="{markers["field"]}"] {markers["message"]}\n')
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(line.encode())
        with tailed.open("a") as f:
            f.write(markers["file"] + "\n")
        key = agent.hostlog("key", "create", "reader", "--scope", "read", "-c", str(agent.config)).stdout
        secret = key.decode().strip().splitlines()[-1]
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/logs?grep={markers['filter']}",
                                         headers={"Authorization": f"Bearer {secret}"})
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10).read()

        def stored() -> set[str]:
            text = agent.hostlog("query", "-o", "json", "--no-pager").stdout.decode()
            return {name for name, m in markers.items() if m in text}

        wait_for(lambda: stored() == set(markers), timeout=20, what="every marker stored")
    finally:
        assert agent.stop() == 0, agent.log_text()

    files = [p for p in agent.state.rglob("*") if p.is_file()]
    assert any(p.parent.name == "segments" for p in files), sorted(map(str, files))
    leaks = []
    for path in files:
        data = path.read_bytes()
        for name, marker in markers.items():
            if any(form in data for form in _forms(marker)):
                leaks.append(f"{path.relative_to(agent.state)}: the {name} marker")
    assert not leaks, leaks
    # and the agent's own log names no record's content either
    log = agent.log.read_bytes()
    assert not [name for name, m in markers.items() if m.encode() in log]


def test_the_shipped_unit_is_confined() -> None:
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze (systemd)")
    assert analyze is not None
    res = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SYSTEMD_COLORS="0"))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    assert found, res.stdout + res.stderr
    assert float(found.group(1)) <= 2.0, res.stdout


def _send(port: int, lines: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("".join(f"<13>1 2026-12-03T10:00:00Z h rot - - - {line}\n" for line in lines).encode())


def test_key_rotation_with_a_crash_in_the_middle_leaves_every_frame_readable(tmp_path: Path) -> None:
    """`hostlog spool rotate-key` killed just before its rename leaves the key
    file as it was; done, the agent's next start writes new segments with the
    new key, and every record of both keys reads back and verifies."""
    from hostlog.spool.keys import Keyring
    from hostlog.spool.reader import SpoolReader
    from hostlog.spool.segment import SegmentReader

    port = free_port()
    agent = AgentProcess(tmp_path, textwrap.dedent(f"""
        [agent]
        state_dir = "{tmp_path}/state"

        [[source]]
        type = "syslog"
        listen = ["tcp://127.0.0.1:{port}"]
        """))

    def stored() -> list[str]:
        rows = agent.query_json()
        return [r["MESSAGE"] for r in rows if r.get("SYSLOG_IDENTIFIER") == "rot"]

    agent.start()
    try:
        _send(port, [f"before {i}" for i in range(100)])
        wait_for(lambda: len(stored()) == 100, timeout=20, what="the first records")
    finally:
        assert agent.stop() == 0, agent.log_text()
    key_file = agent.state / "spool.key"
    before = key_file.read_bytes()

    # a whole rotation appends one line ...
    assert agent.hostlog("spool", "rotate-key").returncode == 0
    rotated = key_file.read_bytes()
    assert rotated.startswith(before) and len(rotated.splitlines()) == len(before.splitlines()) + 1
    key_file.write_bytes(before)  # back, to rotate again with a crash in the middle
    env = dict(agent.env, HOSTLOG_CRASHPOINT="state-before-rename:1")
    res = subprocess.run([*HOSTLOG_CLI, "spool", "rotate-key", "-c", str(agent.config)], env=env,
                         capture_output=True, timeout=60)
    assert res.returncode == -9, (res.returncode, res.stderr.decode())
    assert key_file.read_bytes() == before  # the old file whole, not half of the new one
    assert agent.hostlog("spool", "verify").returncode == 0

    assert agent.hostlog("spool", "rotate-key").returncode == 0
    ring = Keyring.load(key_file)
    assert len(ring.keys) == 2 and ring.current_id == max(ring.keys)
    agent.start()
    try:
        _send(port, [f"after {i}" for i in range(100)])
        wait_for(lambda: len(stored()) == 200, timeout=20, what="the records after the rotation")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert stored() == [f"before {i}" for i in range(100)] + [f"after {i}" for i in range(100)]
    verify = agent.hostlog("spool", "verify")
    assert b"OK" in verify.stdout
    reader = SpoolReader.open(agent.state / "spool", key_file)
    used = {SegmentReader(path, reader.keyring).header.key_id for path in reader.segment_paths()}
    assert used == set(ring.keys)  # the old segment kept its key, the new one took the new key
