"""`hostlog report` over a real agent's spool, and the agent's own reports.

One agent for the module makes a spool with everything a report speaks of:
records of several apps and levels over syslog TCP (``logger``), a
retention drop (``on_full = "drop_oldest"`` with a destination that never
answers), a rate limit that suppresses, a supervised app that fails,
restarts and is given up on, and one that runs. Then the agent is stopped
and every number of ``hostlog report -o json`` is checked against
``hostlog stats -o json``, ``hostlog patterns -o json``, ``hostlog spool
stats`` and the records ``hostlog query -o json`` prints over the same spool
and period. The HTML report is opened in the real headless Chromium (the
viewer's fixture) and read as a person sees it; its screenshot is kept.

Another agent writes its report every 2 s (``[report] every = "2s"``).
Every process started here is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hostlog.query import report as rp
from hostlog.query import stats
from hostlog.query.filters import Query
from hostlog.spool.reader import SpoolReader
from tests.agentproc import HOSTLOG, AgentProcess, free_port, wait_for
from tests.e2e.test_agent import logger
from tests.e2e.test_http_viewer import browser  # noqa: F401  (the headless Chromium fixture)

BASELINE = "7d"


@dataclass
class Made:
    agent: AgentProcess
    since: int  # the period, in whole seconds since the epoch
    until: int

    def run(self, *args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([*HOSTLOG, *args], env=self.agent.env, capture_output=True, timeout=180)
        assert res.returncode == 0, (args, res.stderr.decode())
        return res

    @property
    def where(self) -> list[str]:
        return ["-c", str(self.agent.config)]

    @property
    def period(self) -> list[str]:
        return ["-S", f"@{self.since}", "-U", f"@{self.until}"]

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.run(*args).stdout.decode().splitlines() if line]

    def report(self, *args: str) -> dict[str, Any]:
        return json.loads(self.run("report", *self.where, *self.period, "-o", "json", *args).stdout)


def _config(tmp: Path, syslog_port: int, limited_port: int, dead_port: int) -> str:
    return f"""
[agent]
hostname = "report-host"
state_dir = "{tmp}/state"

[spool]
fsync = "batch"
fsync_interval = "20ms"
segment_bytes = "64KiB"
max_bytes = "192KiB"
on_full = "drop_oldest"

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{syslog_port}"]

[[source]]
type = "syslog"
name = "limited"
listen = ["tcp://127.0.0.1:{limited_port}"]
rate_limit = {{ rate = 1, burst = 10 }}

[[app]]
name = "crashy"
command = ["sh", "-c", "echo starting up; echo 'fatal: config file 42 unreadable' >&2; exit 3"]
restart = "on-failure"
backoff_initial = "100ms"
backoff_max = "200ms"
start_retries = 3
autostart = false

[[app]]
name = "steady"
command = ["sh", "-c", "echo ready to serve; exec sleep 600"]

[[forward]]
name = "central"
targets = ["tcp://127.0.0.1:{dead_port}"]
"""


def found(agent: AgentProcess, *args: str) -> list[dict[str, Any]]:
    """The records ``hostlog query -o json ARGS`` prints (none: it exits 1 with -g)."""
    res = agent.hostlog("query", "-o", "json", "--no-pager", *args, check=False)
    return [json.loads(line) for line in res.stdout.decode().splitlines() if line]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    tmp = tmp_path_factory.mktemp("report-agent")
    syslog_port, limited_port, dead_port = free_port(), free_port(), free_port()
    agent = AgentProcess(tmp, _config(tmp, syslog_port, limited_port, dead_port))
    since = int(time.time()) - 2
    agent.start()
    try:
        # 1. more than max_bytes: retention drops what "central" never acknowledged
        bulk = tmp / "bulk.txt"
        bulk.write_text("".join(f"bulk record {i} {os.urandom(40).hex()}\n" for i in range(6000)))
        logger("--tcp", "--server", "127.0.0.1", "--port", str(syslog_port), "-t", "bulk", "-p", "user.info",
               "-f", str(bulk))
        wait_for(lambda: found(agent, "--source", "hostlog", "-g", "retention dropped"), timeout=60,
                 interval=0.3, what="the retention drop's notice")
        # 2. apps and levels
        for tag, prio, lines in (
                ("web", "user.err", [f"upstream 10.0.0.{i} timed out after {i * 7} ms" for i in range(6)]),
                ("web", "user.warning", [f"slow request /api/{i} took {i * 100} ms" for i in range(4)]),
                ("db", "daemon.crit", [f"checkpoint {i} failed: disk full" for i in range(3)]),
                ("cron", "cron.info", [f"job {i} done" for i in range(5)]),
                ("web", "user.notice", ["config reloaded"])):
            path = tmp / f"{tag}-{prio}.txt"
            path.write_text("".join(line + "\n" for line in lines))
            logger("--tcp", "--server", "127.0.0.1", "--port", str(syslog_port), "-t", tag, "-p", prio,
                   "-f", str(path))
        # 3. a rate limit that suppresses
        burst = tmp / "burst.txt"
        burst.write_text("".join(f"noisy line {i}\n" for i in range(200)))
        logger("--tcp", "--server", "127.0.0.1", "--port", str(limited_port), "-t", "noisy", "-f", str(burst))
        wait_for(lambda: found(agent, "--source", "hostlog", "-g", "^Suppressed"), timeout=30,
                 interval=0.3, what="the rate limit's notice")
        # 4. an app that fails, is restarted and given up on
        agent.hostlog("ctl", "-c", str(agent.config), "start", "crashy", check=False)
        wait_for(lambda: found(agent, "--source", "process", "-g", "gave up"), timeout=60, interval=0.3,
                 what="crashy given up on")
        wait_for(lambda: len(found(agent, "-g", "config reloaded")) == 1, timeout=30, interval=0.3,
                 what="the last logger lines")
    finally:
        status = agent.stop()
    assert status == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
    yield Made(agent, since, int(time.time()) + 1)


def _counts(objs: list[dict[str, Any]]) -> dict[str, int]:
    out = {}
    for obj in objs:
        obj = dict(obj)
        count = obj.pop("count")
        obj.pop("rate", None)
        obj.pop("level", None)
        out[json.dumps(obj, sort_keys=True)] = count
    return out


def test_every_number_of_the_json_report_is_hostlog_stats_query_and_spool_stats(made: Made) -> None:
    got = made.report()
    volume = got["volume"]
    # volume: hostlog stats over the same period, rates included
    for key, field in (("by_source", "_HOSTLOG_SOURCE"), ("by_app", "SYSLOG_IDENTIFIER"),
                       ("by_level", "PRIORITY")):
        want = made.json_lines("stats", *made.where, *made.period, "--by", field, "-o", "json")
        assert [{k: v for k, v in row.items() if k != "level"} for row in volume[key]] == want, key
    every = volume["over_time"]["every"]
    assert volume["over_time"]["buckets"] == made.json_lines(
        "stats", *made.where, *made.period, "--by", "PRIORITY", "--every", every, "-o", "json")
    (everything,) = made.json_lines("stats", *made.where, *made.period, "-o", "json")
    assert volume["total"] == everything["count"] and volume["rate"] == pytest.approx(everything["rate"])
    errors = made.json_lines("stats", *made.where, *made.period, "-p", "err", "-o", "json")
    assert volume["errors"] == errors[0]["count"] >= 6 + 3 + 4  # web, db, crashy's stderr
    # ... and the records hostlog query -o json prints, counted
    objs = made.agent.query_json("--all", *made.period)
    assert len(objs) == volume["total"]
    assert _counts(volume["by_app"]) == {json.dumps({"SYSLOG_IDENTIFIER": k}): n for k, n in
                                         Counter(o.get("SYSLOG_IDENTIFIER") for o in objs).items()}
    apps = {row["SYSLOG_IDENTIFIER"] for row in volume["by_app"]}
    assert {"bulk", "web", "db", "cron", "noisy", "crashy", "steady", "hostlog"} <= apps
    assert {row["level"] for row in volume["by_level"]} >= {"crit", "err", "warning", "notice", "info"}

    # templates: hostlog patterns, over the same records
    pat = made.json_lines("patterns", *made.where, *made.period, "-p", "err", "-o", "json", "--top", "10")
    keys = ("app", "pattern_id", "template", "count", "first", "last", "example")
    assert [{k: t[k] for k in keys} for t in got["error_templates"]["templates"]] == \
        [{k: t[k] for k in keys} for t in pat]
    assert {t["app"] for t in pat} >= {"web", "db", "crashy"}
    baseline_since = made.since - 7 * 86400
    new = made.json_lines("patterns", *made.where, "-S", f"@{baseline_since}", "-U", f"@{made.until}",
                          "--new", f"@{made.since}", "-o", "json", "--top", "20")
    assert [{k: t[k] for k in keys} for t in got["new_templates"]["templates"]] == \
        [{k: t[k] for k in keys} for t in new]

    # drops and rate limits: the agent's notices as hostlog query -o json shows them
    notices = made.agent.query_json("--all", "--source", "hostlog", *made.period)
    retention = sum(int(o["DROPPED"]) for o in notices if "DROPPED" in o)
    suppressed = sum(int(o["suppressed"]) for o in notices if "suppressed" in o)
    dropped = sum(int(o["dropped"]) for o in notices if "dropped" in o)
    assert retention > 0 and suppressed > 0
    drops = got["drops"]
    assert drops["dropped"] == retention + dropped
    assert sum(d["records"] for d in drops["drops"] if d["kind"] == "retention") == retention
    assert drops["suppressed"] == suppressed
    (limit,) = drops["rate_limits"]
    assert limit["host"] == "report-host" and limit["where"] == {"peer": "127.0.0.1"}
    assert limit["notices"] == sum(1 for o in notices if "suppressed" in o)
    # 200 lines against a bucket of 10 (and 1 a second): most were suppressed
    noisy = sum(1 for o in objs if o.get("SYSLOG_IDENTIFIER") == "noisy")
    assert noisy + suppressed == 200

    # restarts: the supervisor's lifecycle records
    lifecycle = [o for o in made.agent.query_json("--all", "--source", "process", *made.period) if "event" in o]
    by_app = {a["app"]: a for a in got["apps"]}
    crashy = by_app["crashy"]
    events = Counter(o["event"] for o in lifecycle if o["SYSLOG_IDENTIFIER"] == "crashy")
    assert crashy["restarts"] == events["restarting"] >= 2
    assert crashy["started"] == events["started"] == crashy["restarts"] + 1
    assert crashy["exits"] == crashy["failed_exits"] == events["exited"] and crashy["gave_up"] == 1
    # steady's start went with the segments retention dropped; its stop at the agent's end is there
    steady = Counter(o["event"] for o in lifecycle if o["SYSLOG_IDENTIFIER"] == "steady")
    assert (by_app["steady"]["started"], by_app["steady"]["stopped"]) == (steady["started"], steady["stopped"])
    assert by_app["steady"]["stopped"] == 1 and by_app["steady"]["restarts"] == 0
    assert got["apps"][0]["app"] == "crashy"

    # the spool: hostlog spool stats
    text = made.run("spool", "stats", *made.where).stdout.decode()
    figures = dict(re.findall(r"^([a-z ]+):\s+(.*)$", text, re.M))
    spool = got["spool"]
    assert str(spool["records"]) == figures["records"]
    assert figures["bytes on disk"].startswith(f"{spool['bytes_on_disk']} ")
    assert figures["compression"] == f"{spool['compression_ratio']:.2f}:1"
    first, last = figures["seq range"].split("..")
    assert (spool["first_seq"], spool["last_seq"]) == (int(first), int(last)) and int(first) > 1  # dropped

    # forwarding: the cursor file against the spool's last seq
    (central,) = got["forwarding"]
    cursor = json.loads((made.agent.state / "spool" / "state" / "cursors" / "central.json").read_text())
    assert central["destination"] == "central" and central["acked_seq"] == cursor["acked_seq"] == 0
    assert central["lag_records"] == spool["last_seq"] and central["lag_seconds"] > 0

    assert got["anomalies"] == {"count": 0, "by_app": [], "records": []}  # no source "detect" here
    assert got["damage"] == []
    assert got["period"]["since"] == rp.iso(made.since * 10**9)


def test_markdown_and_the_output_file(made: Made, tmp_path: Path) -> None:
    got = made.report()
    md = made.run("report", *made.where, *made.period).stdout.decode()
    assert f"| records | {got['volume']['total']} |" in md
    assert f"| retention | - | {sum(d['records'] for d in got['drops']['drops'] if d['kind'] == 'retention')} |" \
        in md.replace("| report-host ", "|")
    out = tmp_path / "day.html"
    res = made.run("report", *made.where, *made.period, "--output-file", str(out))
    assert res.stdout == b"" and out.read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary file is gone
    bad = subprocess.run([*HOSTLOG, "report", *made.where, "--baseline", "lots"], capture_output=True,
                         timeout=60, env=made.agent.env)
    assert bad.returncode == 1 and b"--baseline" in bad.stderr


def test_the_html_report_as_a_person_sees_it(made: Made, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    got = made.report()
    page = tmp_path / "report.html"
    made.run("report", *made.where, *made.period, "-o", "html", "--output-file", str(page))
    browser.get(page.as_uri())
    shot = tmp_path / "report.png"
    try:
        seen = browser.execute_script("""
const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
const fig = (id) => { const el = document.querySelector('#' + id + ' .value');
  return {text: el.innerText, size: box(el), shown: getComputedStyle(el).visibility}; };
const bars = (id) => [...document.querySelectorAll('#' + id + ' rect.bar')].map((r) =>
  ({count: Number(r.dataset.count), level: r.dataset.level || null, label: r.dataset.label || null,
    size: box(r), fill: getComputedStyle(r).fill}));
return {scripts: document.scripts.length, fetched: performance.getEntriesByType('resource').length,
        total: fig('total-records'), errors: fig('total-errors'), dropped: fig('total-dropped'),
        suppressed: fig('total-suppressed'), restarts: fig('total-restarts'),
        time: bars('chart-time'), source: bars('chart-source'), app: bars('chart-app'),
        level: bars('chart-level'), chart: box(document.getElementById('chart-time')),
        legend: document.getElementById('legend-time').innerText,
        text: document.body.innerText};
""")
        browser.set_window_size(1400, int(browser.execute_script("return document.body.scrollHeight")) + 40)
        browser.save_screenshot(str(shot))
    except Exception:
        browser.save_screenshot(str(shot))
        raise
    finally:
        print(f"report screenshot: {shot}")
    volume = got["volume"]
    assert seen["scripts"] == 0 and seen["fetched"] == 0
    for name, want in (("total", volume["total"]), ("errors", volume["errors"]),
                       ("dropped", got["drops"]["dropped"]), ("suppressed", got["drops"]["suppressed"]),
                       ("restarts", sum(a["restarts"] for a in got["apps"]))):
        assert seen[name]["text"] == str(want), name
        assert seen[name]["size"][0] > 0 and seen[name]["size"][1] > 0 and seen[name]["shown"] == "visible"
    assert seen["chart"][0] >= 600 and seen["chart"][1] >= 200
    assert seen["time"] and all(b["size"][0] > 0 and b["size"][1] > 0 for b in seen["time"])
    assert sum(b["count"] for b in seen["time"]) == volume["total"]
    per_level = Counter()
    for b in seen["time"]:
        per_level[b["level"]] += b["count"]
    assert dict(per_level) == {row["level"]: row["count"] for row in volume["by_level"]}
    red = {b["fill"] for b in seen["time"] if b["level"] in ("crit", "err")}
    assert red and red.isdisjoint({b["fill"] for b in seen["time"] if b["level"] == "info"})
    assert {b["label"]: b["count"] for b in seen["source"]} == {r["_HOSTLOG_SOURCE"]: r["count"]
                                                                 for r in volume["by_source"]}
    assert sum(b["count"] for b in seen["app"]) == volume["total"]  # the top apps and "(N more)"
    assert all(b["size"][0] > 0 for b in seen["source"] + seen["app"] + seen["level"])
    for row in volume["by_level"]:
        assert f"{row['level']} {row['count']}" in seen["legend"]
    for words in ("Top error templates", "New templates", "Drops and rate limits", "Forwarding", "central",
                  "Supervised apps", "crashy", "retention"):
        assert words in seen["text"], words
    assert shot.stat().st_size > 10_000


def test_the_agent_writes_its_report_at_the_end_of_each_period(tmp_path: Path) -> None:
    port = free_port()
    reports = tmp_path / "reports"
    agent = AgentProcess(tmp_path, f"""
[agent]
hostname = "daily-host"
state_dir = "{tmp_path}/state"

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{port}"]

[report]
dir = "{reports}"
every = "2s"
formats = ["json", "html", "md"]
keep = 2
""")
    agent.start()
    try:
        deadline = time.monotonic() + 30
        sent = 0
        while time.monotonic() < deadline and len(list(reports.glob("*.json"))) < 2:
            logger("--tcp", "--server", "127.0.0.1", "--port", str(port), "-t", "tick", "-p", "user.err",
                   f"tick {sent}")
            sent += 1
            time.sleep(0.2)
        # a third period ends: the oldest report of each format goes (keep = 2)
        first = sorted(reports.glob("*.json"))[0]
        wait_for(lambda: not first.exists(), timeout=15, interval=0.1, what="the oldest report pruned")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert "Traceback" not in agent.log_text() and "not written" not in agent.log_text(), agent.log_text()
    names = sorted(p.name for p in reports.iterdir())
    stamps = sorted({n.split(".")[0] for n in names})
    assert len(stamps) == 2 and names == sorted(f"{s}.{ext}" for s in stamps for ext in ("html", "json", "md"))
    reader = SpoolReader.open(tmp_path / "state" / "spool")
    for stamp in stamps:
        obj = json.loads((reports / f"{stamp}.json").read_text())
        end = calendar.timegm(time.strptime(stamp[len("hostlog-report-"):], "%Y%m%dT%H%M%SZ")) * 10**9
        assert end % (2 * 10**9) == 0
        assert obj["period"]["since"] == rp.iso(end - 2 * 10**9) and obj["period"]["until"] == rp.iso(end - 1)
        # the counts of that period, by the stats engine over the spool
        result = stats.compute(reader, Query(since_ns=end - 2 * 10**9, until_ns=end - 1), stats.StatsSpec(),
                               workers=1)
        assert obj["volume"]["total"] == sum(result.counts.values())
        assert (reports / f"{stamp}.md").read_text().startswith("# hostlog report: ")
        assert "<svg id=\"chart-time\"" in (reports / f"{stamp}.html").read_text()
    assert sum(json.loads((reports / f"{s}.json").read_text())["volume"]["errors"] for s in stamps) > 0
