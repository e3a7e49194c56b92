"""Supervised apps under a real agent: kill -9, restart, ``hostlog ctl``, SIGTERM.

Each app carries ``HOSTLOG_TEST`` (this test's directory) in its environment,
so the test finds exactly its own processes with psutil, whatever else runs.
"""

from __future__ import annotations

import json
import signal
import sys

import psutil
import pytest

from tests.agentproc import AgentProcess, wait_for

SLEEPER = "import os, time; print('sleeper up', os.getpid(), flush=True); time.sleep(300)"
# The main process forks a grandchild: it gets no parent-death signal of its own.
FORKER = """
import os, time
if os.fork() == 0:
    time.sleep(300)
    os._exit(0)
print('forker up', os.getpid(), flush=True)
time.sleep(300)
"""


def config(tmp_path) -> str:
    apps = ""
    for name, code in (("sleeper", SLEEPER), ("forker", FORKER)):
        apps += f"""
[[app]]
name = "{name}"
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}]
env = {{ HOSTLOG_TEST = "{tmp_path}" }}
stop_timeout = "2s"
"""
    return f"""
[agent]
hostname = "test-host"
state_dir = "{tmp_path}/state"

[spool]
fsync_interval = "20ms"

[control]
socket = "{tmp_path}/ctl.sock"
{apps}"""


def app_processes(tmp_path) -> dict[str, dict[int, str]]:
    """Live (non-zombie) processes of this test's apps: app name -> {pid: invocation}."""
    found: dict[str, dict[int, str]] = {}
    for proc in psutil.process_iter(["environ", "status"]):
        env = proc.info["environ"] or {}
        if env.get("HOSTLOG_TEST") == str(tmp_path) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.setdefault(env["HOSTLOG_APP"], {})[proc.pid] = env.get("HOSTLOG_INVOCATION")
    return found


def running(tmp_path, expected: dict[str, int], not_from: dict | None = None):
    """The app processes once every app has the expected number of them (and,
    with ``not_from``, none of that earlier snapshot's runs)."""
    procs = app_processes(tmp_path)
    if {name: len(p) for name, p in procs.items()} != expected:
        return None
    if not_from and any(set(p.values()) & set(not_from.get(n, {}).values()) for n, p in procs.items()):
        return None
    return procs


def pids(snapshot: dict[str, dict[int, str]]) -> set[int]:
    return {pid for procs in snapshot.values() for pid in procs}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, its reaper's business
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(tmp_path, config(tmp_path))
    yield a
    if a.proc is not None:
        a.stop(signal.SIGKILL)
    for pid in pids(app_processes(tmp_path)):  # nothing of ours outlives the test
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


EXPECTED = {"sleeper": 1, "forker": 2}  # the forker: main process + grandchild


def test_kill_9_leaves_no_child_and_a_restarted_agent_runs_each_app_exactly_once(agent, tmp_path):
    agent.start()
    first = wait_for(lambda: running(tmp_path, EXPECTED), what="both apps running")
    children = {c.pid for c in psutil.Process(agent.proc.pid).children()}
    mains = pids(first) & children
    assert len(mains) == 2, (children, first)
    # The first run's line is in the spool before the kill: what a pipe gave
    # and the spool had not yet written is lost with the agent (a pipe cannot
    # replay; docs/guarantees.md), and this test is about the processes.
    wait_for(lambda: any(r["MESSAGE"].startswith("forker up")
                         for r in agent.query_json("-u", "forker")), what="the first run's line stored")

    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=10)
    # PR_SET_PDEATHSIG: the agent's children die with it
    wait_for(lambda: all(gone(pid) for pid in mains), timeout=10, what="the apps to die with the agent")

    agent.start()
    second = wait_for(lambda: running(tmp_path, EXPECTED, not_from=first), what="both apps running again")
    for name, procs in second.items():
        assert len(set(procs.values())) == 1, f"{name} runs more than once: {procs}"
    assert all(gone(pid) for pid in pids(first)), "a process of the previous run survived"

    # the whole story is in the spool: started twice, and the leftover killed
    events = [r["MESSAGE"] for r in agent.query_json("-u", "forker")]
    assert sum(m.startswith("started: 'forker' with pid") for m in events) == 2
    assert any(m.startswith("killing leftover: 'forker' process group") for m in events)
    assert sum(m.startswith("forker up") for m in events) == 2

    # ctl status shows each app once, running, with the pid that runs
    status = agent.hostlog("ctl", "-c", str(agent.config), "status").stdout.decode().splitlines()
    assert status[0].startswith("hostlog ") and "records in" in status[0]
    rows = {line.split()[0]: line.split() for line in status[2:]}
    assert rows.keys() == {"sleeper", "forker"}
    for name, row in rows.items():
        assert row[1] == "RUNNING" and int(row[2]) in second[name]

    # SIGTERM stops the apps with the agent: nothing is left, the last records are written
    assert agent.stop(signal.SIGTERM) == 0
    assert app_processes(tmp_path) == {}
    events = [r["MESSAGE"] for r in agent.query_json("-u", "sleeper")]
    assert events[-1] == "stopped: 'sleeper' (terminated by SIGTERM)"


def test_ctl_starts_stops_and_restarts_apps_of_a_running_agent(agent, tmp_path):
    agent.start()
    wait_for(lambda: running(tmp_path, EXPECTED), what="both apps running")
    ctl = lambda *args: agent.hostlog("ctl", "-c", str(agent.config), *args, check=False)  # noqa: E731

    res = ctl("stop", "sleeper")
    assert (res.returncode, res.stdout.decode().strip()) == (0, "sleeper: STOPPED (terminated by SIGTERM)")
    assert "sleeper" not in app_processes(tmp_path)
    res = ctl("start", "sleeper")
    assert res.returncode == 0 and res.stdout.decode().startswith("sleeper: RUNNING (pid ")
    before = app_processes(tmp_path)
    assert ctl("restart", "forker").returncode == 0
    after = wait_for(lambda: running(tmp_path, EXPECTED, not_from={"forker": before["forker"]}),
                     what="the restarted forker")
    assert not set(before["forker"]) & set(after["forker"])
    res = ctl("stop", "nope")
    assert res.returncode == 1 and "no such app 'nope'" in res.stderr.decode()

    agent.stop(signal.SIGTERM)
    res = ctl("status")
    assert res.returncode == 1
    assert res.stderr.decode().strip() == f"hostlog agent is not running (no control socket at {tmp_path}/ctl.sock)"
