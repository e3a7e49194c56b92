"""The agent takes its spool key from a systemd credential when one is passed."""

import os
import shutil
import signal
import subprocess

from hostlog.spool.keys import create_key_file
from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need


def test_agent_uses_the_spool_key_credential(tmp_path):
    need(shutil.which("logger") is not None, "logger (util-linux)")
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    create_key_file(creds / "spool.key")
    os.chmod(creds / "spool.key", 0o400)  # as systemd leaves a credential
    port = free_port()
    agent = AgentProcess(tmp_path, f"""
[agent]
hostname = "cred-host"
state_dir = "{tmp_path}/state"

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{port}"]
""", env={"CREDENTIALS_DIRECTORY": str(creds)})
    agent.start()
    try:
        subprocess.run(["logger", "--tcp", "--server", "127.0.0.1", "--port", str(port), "-t", "cred",
                        "sealed with the credential key"], check=True, timeout=60)
        rows = wait_for(lambda: agent.query_json("--key-file", str(creds / "spool.key")),
                        what="the record, read with the credential key")
        assert [r["MESSAGE"] for r in rows] == ["sealed with the credential key"]
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    # The config's key file was neither created nor used.
    assert not (tmp_path / "state" / "spool.key").exists()
    # Another key cannot read the spool: it really is encrypted with the credential.
    other = tmp_path / "other.key"
    create_key_file(other)
    res = agent.hostlog("query", "--no-pager", "--key-file", str(other), check=False)
    assert res.returncode != 0 and b"sealed with the credential key" not in res.stdout
