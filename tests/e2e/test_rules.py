"""Rules at ingest, end to end: a real agent with syslog (logger), a tailed
file and a supervised app, metrics and the control socket on, forwarding to
a central agent; each action on real input; secrets in no file the agent
wrote; a SIGHUP reload that changes the rules in the middle of a stream.

One agent (and its central) for the module; every wait is bounded; every
process is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostlog.record import Record
from hostlog.rules import PARSE_ERROR, ROUTE_FIELD
from hostlog.spool.reader import SpoolReader
from tests.agentproc import HOSTLOG, AgentProcess, free_port, metric_by_label, wait_for
from tests.conftest import need

SECRETS = ["hunter2secret", "AKIAIOSFODNN7EXAMPLE", "4111 1111 1111 1111", "4111111111111111", "filesecret99",
           "apptokensecret", "abcSECRETtoken", "apiSECRETbearer"]

APP = """\
import sys, time
print("2026-01-01 app starting")
print("Traceback (most recent call last):")
print('  File "job.py", line 7, in <module>')
print("    run()")
print("ValueError: E2E boom")
print("<7>2026-01-01 debug from the app")
print("2026-01-01 calling with token=apptokensecret and Bearer abcSECRETtoken")
print("2026-01-01 app done", flush=True)
time.sleep(3600)
"""

RULES = r"""
[[rule]]
name = "no-debug"
match = { priority = "debug..debug" }
drop = true

[[rule]]
name = "health-checks"
match = { identifier = "e2eweb", grep = "GET /healthz" }
sample = 10

[[rule]]
name = "secrets"
redact = ["@builtin", '(?i)password=\S+']

[[rule]]
name = "api"
match = { identifier = "e2eapi" }
parse = "json"
set = { env = "prod" }
priority_from = "level"
to = ["central"]

[[rule]]
name = "audit"
match = { identifier = "e2eaudit" }
to = ["vault"]

[[rule]]
name = "files"
match = { source = "file" }
parse = "logfmt"
priority_from = "level"
rename = { msg = "MSG" }
remove = ["user"]

[[rule]]
name = "app"
match = { identifier = "e2eapp" }
set = { team = "core" }
"""

PHASE2 = """
[[rule]]
name = "phase2"
match = { identifier = "e2estream" }
set = { PHASE = "2" }
"""


def agent_config(tmp: Path, ports: dict[str, int], extra: str = "") -> str:
    return textwrap.dedent(f"""
        [agent]
        hostname = "rules-host"
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
        app = "e2efile"
        start = "beginning"
        poll_interval = "100ms"

        [[app]]
        name = "e2eapp"
        command = [{json.dumps(sys.executable)}, "{tmp}/app.py"]
        multiline_start = '^(\\d{{4}}-|Traceback)'

        [[forward]]
        name = "central"
        targets = ["tcp://127.0.0.1:{ports['central']}"]

        [[forward]]
        name = "vault"
        targets = ["tcp://127.0.0.1:{ports['vault']}"]
        """) + RULES + extra


def central_config(home: Path, ports: dict[str, int]) -> str:
    return textwrap.dedent(f"""
        [agent]
        hostname = "rules-central"
        state_dir = "{home}/state"

        [spool]
        fsync_interval = "20ms"

        [receiver]
        listen = "tcp://127.0.0.1:{ports['central']}"
        """)


def logger(port: int, tmp: Path, tag: str, lines: list[str], priority: str = "user.info") -> None:
    f = tmp / f"in-{tag}-{time.monotonic_ns()}.txt"
    f.write_text("".join(line + "\n" for line in lines))
    subprocess.run(["logger", "--tcp", "--rfc5424", "--server", "127.0.0.1", "--port", str(port), "-t", tag,
                    "-p", priority, "-f", str(f)], check=True, timeout=30)


def rule_drops(samples: dict[str, float]) -> dict[str, int]:
    """``hostlog_records_dropped_total{reason="rule",rule=NAME}`` by rule."""
    pattern = re.compile(r'hostlog_records_dropped_total\{reason="rule",rule="([^"]*)"\}$')
    return {m.group(1): int(v) for k, v in samples.items() if (m := pattern.match(k))}


def spool(directory: Path) -> list[Record]:
    reader = SpoolReader.open(directory / "state" / "spool")
    return [r for _, r in reader.records()]


class World:
    def __init__(self, tmp: Path, ports: dict[str, int], agent: AgentProcess, central: AgentProcess) -> None:
        self.tmp, self.ports, self.agent, self.central = tmp, ports, agent, central

    def records(self) -> list[Record]:
        return spool(self.tmp)

    def by_app(self, app: str) -> list[Record]:
        return [r for r in self.records() if r.app == app]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need(shutil.which("logger") is not None, "logger (util-linux)")
    tmp = tmp_path_factory.mktemp("rules")
    ports = {"syslog": free_port(), "central": free_port(), "vault": free_port()}
    (tmp / "app.py").write_text(APP)
    (tmp / "logs").mkdir()
    (tmp / "central").mkdir()
    central = AgentProcess(tmp / "central", central_config(tmp / "central", ports))
    agent = AgentProcess(tmp, agent_config(tmp, ports))
    central.start()
    try:
        agent.start()
        try:
            port = ports["syslog"]
            logger(port, tmp, "e2edebug", [f"E2E debug {i}" for i in range(5)], "user.debug")
            logger(port, tmp, "e2eweb", [f"GET /healthz 200 {i}" for i in range(30)] + ["GET /items 200"])
            logger(port, tmp, "e2eauth", ["login ok password=hunter2secret", "key AKIAIOSFODNN7EXAMPLE in use"])
            logger(port, tmp, "e2eapi", ['{"level":"error","msg":"api call","n":1,"auth":"Bearer apiSECRETbearer"}',
                                        '{"level":"info","msg":"api call","n":2}', "not json at all"])
            logger(port, tmp, "e2eaudit", ["audit one", "audit two"])
            (tmp / "logs" / "app.log").write_text(
                'level=warn msg="payment with card 4111 1111 1111 1111" user=bob\n'
                "level=error msg=login password=filesecret99 user=eve\n"
                "just words here\n")
            logger(port, tmp, "e2edone", ["E2E all sent"])

            def arrived() -> bool:
                got = spool(tmp)
                return (any(r.app == "e2edone" for r in got) and sum(r.app == "e2efile" for r in got) == 3
                        and any(r.app == "e2eapp" and "app done" in str(r.msg) for r in got)
                        and sum(r.app == "e2eapi" for r in spool(tmp / "central")) == 3)
            wait_for(lambda: agent.proc.poll() is not None or arrived(), timeout=15, interval=0.1,
                     what="every input stored and forwarded")
            assert agent.proc.poll() is None, agent.log_text()
            yield World(tmp, ports, agent, central)
        finally:
            agent.stop()
    finally:
        central.stop()


def test_drop_counts_what_it_drops(world: World) -> None:
    records = world.records()
    assert not [r for r in records if r.severity == 7], "a debug record was stored"
    assert not world.by_app("e2edebug")
    dropped = rule_drops(world.agent.metrics())
    assert dropped.get("no-debug") == 6  # five over syslog, one line of the app


def test_sample_keeps_one_in_ten(world: World) -> None:
    web = [str(r.msg) for r in world.by_app("e2eweb")]
    assert web == ["GET /healthz 200 0", "GET /healthz 200 10", "GET /healthz 200 20", "GET /items 200"]
    samples = world.agent.metrics()
    assert rule_drops(samples)["health-checks"] == 27
    # the collectors' own drops are still labelled by collector, and none happened
    assert not any(metric_by_label(samples, "hostlog_records_dropped_total", "collector").values())


def test_parse_set_priority_and_route(world: World) -> None:
    api = world.by_app("e2eapi")
    assert [r.fields.get("n") for r in api] == ["1", "2", None]
    first, second, bad = api
    assert first.severity == 3 and first.fields["env"] == "prod" and first.fields["level"] == "error"
    assert first.fields["auth"] == "Bearer [REDACTED]"
    assert second.severity == 6 and bad.fields[PARSE_ERROR].startswith("json:") and bad.msg == "not json at all"
    assert {r.fields[ROUTE_FIELD] for r in api} == {"central"}
    # the central holds the api records, without the route, and not the audit ones (routed to vault)
    held = spool(world.tmp / "central")
    central_api = [r for r in held if r.app == "e2eapi"]
    assert [r.fields.get("n") for r in central_api] == ["1", "2", None]
    assert all(ROUTE_FIELD not in r.fields for r in held)
    assert not [r for r in held if r.app == "e2eaudit"]
    assert [r.msg for r in world.by_app("e2eaudit")] == ["audit one", "audit two"]
    assert {r.fields[ROUTE_FIELD] for r in world.by_app("e2eaudit")} == {"vault"}
    # unrouted records reach the central too
    assert any(r.app == "e2eweb" for r in held)


def test_file_lines_parsed_renamed_and_trimmed(world: World) -> None:
    lines = world.by_app("e2efile")
    assert [r.fields.get("MSG") for r in lines] == ["payment with card [REDACTED]", "login", None]
    assert [r.severity for r in lines] == [4, 3, 6]
    assert all("user" not in r.fields and "msg" not in r.fields for r in lines)
    # the built-in pattern leaves "password=[REDACTED]", the rule's own takes the rest
    assert lines[1].msg == "level=error msg=login [REDACTED] user=eve" and "password" not in lines[1].fields
    assert lines[2].fields[PARSE_ERROR] == "logfmt: no key=value pair"


def test_app_output_joined_by_multiline_start_and_tagged(world: World) -> None:
    out = [r for r in world.by_app("e2eapp") if r.fields.get("stream") == "stdout"]
    assert [str(r.msg) for r in out] == [
        "2026-01-01 app starting",
        'Traceback (most recent call last):\n  File "job.py", line 7, in <module>\n    run()\nValueError: E2E boom',
        "2026-01-01 calling with token=[REDACTED] and Bearer [REDACTED]",
        "2026-01-01 app done",
    ]
    assert all(r.fields["team"] == "core" for r in out)


def test_no_secret_in_any_file_the_agent_wrote(world: World) -> None:
    for home in (world.tmp, world.tmp / "central"):
        for r in spool(home):
            text = repr((r.msg, r.fields, r.app, r.host))
            assert not [s for s in SECRETS if s in text], r
        for path in (home / "state").rglob("*"):
            if path.is_file() and not path.is_socket():
                data = path.read_bytes()
                assert not [s for s in SECRETS if s.encode() in data], path
        log = (home / "agent.log").read_bytes()
        assert not [s for s in SECRETS if s.encode() in log]
    # what was redacted was there to redact
    assert "[REDACTED]" in repr([r.msg for r in world.by_app("e2eauth")])


def test_records_in_is_what_the_spool_holds_plus_what_the_rules_dropped(world: World) -> None:
    samples = world.agent.metrics()
    records_in = sum(metric_by_label(samples, "hostlog_records_in_total", "source").values())
    dropped = sum(rule_drops(samples).values())
    assert records_in == len(world.records()) + dropped
    assert not {k: v for k, v in samples.items() if k.startswith("hostlog_errors_total") and v}
    status = subprocess.run([*HOSTLOG, "ctl", "-c", str(world.agent.config), "--json", "status"],
                            capture_output=True, timeout=30, env=dict(os.environ))
    assert status.returncode == 0, status.stderr.decode()
    answer = json.loads(status.stdout)
    assert answer["agent"]["pid"] == world.agent.proc.pid
    # each rule's drops, as the metrics count them
    by_rule = {r["name"]: r.get("dropped", 0) + r.get("sampled_out", 0) for r in answer["rules"]}
    assert {name: n for name, n in by_rule.items() if n} == {k: v for k, v in rule_drops(samples).items() if v}


def test_a_reload_changes_the_rules_without_loss_or_duplicates(world: World) -> None:
    port, agent = world.ports["syslog"], world.agent
    chunks = [[f"E2E:stream:{n}" for n in range(k * 100, k * 100 + 100)] for k in range(10)]
    for k, chunk in enumerate(chunks):
        logger(port, world.tmp, "e2estream", chunk)
        if k == 4:
            agent.write_config(agent_config(world.tmp, world.ports, PHASE2))
            agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "rules: 8 in use" in agent.log_text() or agent.proc.poll() is not None, timeout=10,
             what="the reload")
    wait_for(lambda: sum(r.app == "e2estream" for r in world.records()) >= 1000 or agent.proc.poll() is not None,
             timeout=10, interval=0.1, what="the stream stored")
    assert agent.proc.poll() is None, agent.log_text()
    stream = [r for r in world.records() if r.app == "e2estream"]
    numbers = Counter(int(str(r.msg).rsplit(":", 1)[1]) for r in stream)
    assert sorted(numbers) == list(range(1000)) and set(numbers.values()) == {1}, "lost or repeated records"
    tagged = [r.fields.get("PHASE") == "2" for r in stream]
    first = tagged.index(True)
    assert not any(tagged[:100]) and all(tagged[first:]), "the new rules apply from one batch on"
    assert all(tagged[-100:])
