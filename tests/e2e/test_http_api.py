"""/api/v1/logs end to end: a real `hostlog agent` with ``[http]``, records
sent with `logger`, keys made with `hostlog key`, and `curl` as the client.

One agent for the module (its HTTP server, a syslog TCP listener, a per-key
ingest quota); every process started here is stopped by its PID; every wait
is bounded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need

QUOTA = 20  # records each key may send at once (the burst; the rate is next to nothing)


def _config(tmp: Path, syslog_port: int, http_port: int) -> str:
    return f"""
[agent]
hostname = "api-host"
state_dir = "{tmp}/state"

[spool]
fsync = "batch"
fsync_interval = "20ms"

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{syslog_port}"]

[http]
listen = ["127.0.0.1:{http_port}"]
ingest_rate_limit = {{ rate = 0.001, burst = {QUOTA} }}
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    need(shutil.which("curl") is not None, "curl")
    need(shutil.which("logger") is not None, "logger (util-linux)")
    tmp = tmp_path_factory.mktemp("http-api")
    syslog_port, http_port = free_port(), free_port()
    a = AgentProcess(tmp, _config(tmp, syslog_port, http_port))
    a.syslog_port, a.url = syslog_port, f"http://127.0.0.1:{http_port}"
    a.start()
    try:
        wait_for(lambda: "http: serving" in a.log_text(), what="the HTTP server")
        _send(a, "pager", "user.info", [f"page line {i}" for i in range(25)])
        _send(a, "pager", "user.err", [f"boom {i}" for i in range(5)])
        _send(a, "other", "user.warning", [f"other warning {i}" for i in range(5)])
        wait_for(lambda: len(a.query_json("--source", "syslog")) == 35, what="35 syslog records")
        yield a
    finally:
        status = a.stop()
    log = a.log_text()
    assert status == 0 and " ERROR " not in log and "Traceback" not in log, log


def _send(agent: AgentProcess, tag: str, prio: str, lines: list[str]) -> None:
    path = agent.tmp / f"{tag}-{prio}.txt"
    path.write_text("".join(line + "\n" for line in lines))
    subprocess.run(["logger", "--tcp", "--server", "127.0.0.1", "--port", str(agent.syslog_port),
                    "-t", tag, "-p", prio, "-f", str(path)], check=True, timeout=60)


def _key(agent: AgentProcess, name: str, *scopes: str) -> str:
    args = ["key", "create", name, *(a for s in scopes for a in ("--scope", s)), "-c", str(agent.config)]
    out = agent.hostlog(*args).stdout.decode()
    return out.strip().splitlines()[-1]  # the secret is the last line


def curl(agent: AgentProcess, path: str, *args: str, key: str | None = None,
         data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers in lower case, body) of one request made by curl."""
    headers_file = agent.tmp / "curl-headers"
    cmd = ["curl", "-sS", "--globoff", "--max-time", "30", "-D", str(headers_file), "-o", "-", *args]
    if key is not None:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/x-ndjson", "--data-binary", "@-"]
    res = subprocess.run([*cmd, agent.url + path], input=data, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    lines = headers_file.read_bytes().decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return status, headers, res.stdout


def _get(agent: AgentProcess, key: str, query: str) -> tuple[list[dict], str]:
    status, headers, body = curl(agent, "/api/v1/logs?" + query, key=key)
    assert status == 200, body
    assert headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in body.splitlines()], headers["hostlog-next-cursor"]


@pytest.fixture(scope="module")
def reader_key(agent) -> str:
    return _key(agent, "ops", "read")


def test_three_pages_give_every_record_once(agent, reader_key) -> None:
    seen: list[dict] = []
    cursor = ""
    for _ in range(3):
        page, cursor = _get(agent, reader_key, "unit=pager&limit=12" + (f"&cursor={cursor}" if cursor else ""))
        assert len(page) == (12 if len(seen) < 24 else 6)
        seen += page
    assert _get(agent, reader_key, f"unit=pager&limit=12&cursor={cursor}")[0] == []
    expected = agent.query_json("-u", "pager")
    assert [r["message"] for r in seen] == [r["MESSAGE"] for r in expected]
    assert [r["cursor"] for r in seen] == [r["__CURSOR"] for r in expected]  # this node's own records
    assert len({r["cursor"] for r in seen}) == 30
    first = seen[0]
    assert (first["host"], first["identifier"], first["level"], first["source"]) == \
        (expected[0]["_HOSTNAME"], "pager", "info", "syslog")  # the host logger names


# (API query string, the same words for `hostlog query`)
CASES = [
    ("unit=pager&priority=err", ["-u", "pager", "-p", "err"]),
    ("source=syslog&n=7", ["--source", "syslog", "-n", "7"]),
    ("source=syslog&n=4&reverse=1", ["--source", "syslog", "-n", "4", "-r"]),
    ("identifier=other&identifier=pager&grep=%5E(boom|other)", ["-t", "other", "-t", "pager", "-g", "^(boom|other)"]),
    ("source=syslog&grep=line%201&n=3", ["--source", "syslog", "-g", "line 1", "-n", "3"]),
    ("source=syslog&priority=warning&since=-1h", ["--source", "syslog", "-p", "warning", "-S", "-1h"]),
    ("host=HOST&SYSLOG_IDENTIFIER=other", ["--host", "HOST", "SYSLOG_IDENTIFIER=other"]),
]


@pytest.mark.parametrize("query, argv", CASES)
def test_filters_select_what_hostlog_query_selects(agent, reader_key, query, argv) -> None:
    host = agent.query_json("-u", "other", "-n", "1")[0]["_HOSTNAME"]  # as logger sent it
    query, argv = query.replace("HOST", host), [a.replace("HOST", host) for a in argv]
    got, _ = _get(agent, reader_key, query)
    expected = agent.query_json(*argv)
    assert expected, argv
    assert [(r["cursor"], r["message"]) for r in got] == [(r["__CURSOR"], r["MESSAGE"]) for r in expected]


def test_the_json_object_form(agent, reader_key) -> None:
    status, headers, body = curl(agent, "/api/v1/logs?unit=other&limit=2", "-H", "Accept: application/json",
                                 key=reader_key)
    assert status == 200 and headers["content-type"].startswith("application/json")
    page = json.loads(body)
    assert [r["message"] for r in page["records"]] == ["other warning 0", "other warning 1"]
    assert page["next_cursor"] == headers["hostlog-next-cursor"] == page["records"][-1]["cursor"]


def test_post_then_read_back(agent, reader_key) -> None:
    key = _key(agent, "shipper", "ingest")
    body = (b'{"message": "order 1 paid", "level": "notice", "app": "shop", "source": "api", "order": "1"}\n'
            b'{"msg": "order 2 failed", "level": "error", "app": "shop", "source": "api", "host": "web-7",'
            b' "ts": "2026-03-01T10:00:00.250Z"}\n'
            b"a line that is not json\n")
    status, _, answer = curl(agent, "/api/v1/logs", key=key, data=body)
    assert status == 200 and json.loads(answer)["accepted"] == 3 and json.loads(answer)["errors"] == 1
    wait_for(lambda: len(agent.query_json("--source", "api")) == 2, what="the records sent")
    got, _ = _get(agent, reader_key, "source=api")
    assert [(r["message"], r["level"], r["host"], r["identifier"]) for r in got] == \
        [("order 1 paid", "notice", "api-host", "shop"), ("order 2 failed", "err", "web-7", "shop")]
    assert got[0]["fields"] == {"ORDER": "1", "_HTTP_KEY": "shipper",  # and the pattern mined at ingest
                                "PATTERN_ID": got[0]["fields"].get("PATTERN_ID"), "PATTERN": "order <NUM> paid"}
    assert got[1]["ts"] == "2026-03-01T10:00:00.250000Z"
    journal = agent.query_json("--source", "api")
    assert [(r["MESSAGE"], r["PRIORITY"], r["_HOSTNAME"], r["SYSLOG_IDENTIFIER"]) for r in journal] == \
        [("order 1 paid", "5", "api-host", "shop"), ("order 2 failed", "3", "web-7", "shop")]
    (raw,) = agent.query_json("--source", "http", "-g", "not json")
    assert raw["MESSAGE"] == "a line that is not json"
    assert raw["parse_error"] == json.loads(answer)["error_lines"][0]["error"]
    # a read key may not ingest
    assert curl(agent, "/api/v1/logs", key=reader_key, data=body)[0] == 403


def test_over_quota_is_a_429_and_a_notice(agent) -> None:
    key = _key(agent, "flood", "ingest")
    body = b"".join(json.dumps({"message": f"flood {i}", "source": "flood"}).encode() + b"\n"
                    for i in range(QUOTA + 5))
    status, headers, answer = curl(agent, "/api/v1/logs", key=key, data=body)
    assert status == 429 and int(headers["retry-after"]) >= 1
    said = json.loads(answer)
    assert (said["accepted"], said["refused"], said["resend_from_line"], said["limit"]) == \
        (QUOTA, 5, QUOTA + 1, "key")
    wait_for(lambda: agent.query_json("--source", "hostlog", "-g", "Suppressed 5 records from key flood"),
             what="the notice")
    assert [r["MESSAGE"] for r in agent.query_json("--source", "flood")] == [f"flood {i}" for i in range(QUOTA)]
    # the quota is the key's: another key may still send
    other = _key(agent, "flood-2", "ingest")
    assert curl(agent, "/api/v1/logs", key=other, data=b'{"message": "still room", "source": "flood"}\n')[0] == 200


def test_keys_decide_and_every_request_is_audited(agent) -> None:
    assert curl(agent, "/api/v1/logs")[0] == 401
    assert curl(agent, "/api/v1/logs", key="hlk_not-a-key")[0] == 401
    gone = _key(agent, "leaver", "read")
    assert curl(agent, "/api/v1/logs?unit=pager&n=1", key=gone)[0] == 200
    agent.hostlog("key", "revoke", "leaver", "-c", str(agent.config))
    assert curl(agent, "/api/v1/logs?unit=pager&n=1", key=gone)[0] == 401
    ingest_only = _key(agent, "ingest-only", "ingest")
    assert curl(agent, "/api/v1/logs", key=ingest_only)[0] == 403
    assert curl(agent, "/api/v1/logs?unti=x", key=gone.replace("hlk_", "hlk_x"))[0] == 401

    def audit() -> list[dict]:
        return [r for r in agent.query_json("--source", "audit") if r.get("AUDIT_ENDPOINT") == "/api/v1/logs"]

    wait_for(lambda: any(r["AUDIT_PRINCIPAL"] == "ingest-only" for r in audit()), what="the audit records")
    records = audit()
    by_leaver = [(r["AUDIT_STATUS"], r["AUDIT_RECORDS"]) for r in records if r["AUDIT_PRINCIPAL"] == "leaver"]
    assert by_leaver == [("200", "1")]
    statuses = [r["AUDIT_STATUS"] for r in records]
    assert statuses.count("401") >= 4 and "403" in statuses
    assert all("hlk_" not in json.dumps(r) for r in records)
    filtered = [r for r in records if r["AUDIT_FILTER"] == "unit=pager&n=1"]
    assert filtered and all(r["AUDIT_METHOD"] == "GET" for r in filtered)
