"""hostlog report: its figures are those of `hostlog stats`, `hostlog patterns`,
`hostlog spool stats` and of the records `hostlog query -o json` writes, over
the same spool; and its three renderings say them, whatever the text."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.cli.patterns_cmd import mine
from hostlog.query import report as rp
from hostlog.query import report_html, report_text, stats
from hostlog.query.build import build_query
from hostlog.query.filters import Query
from hostlog.query.run import iter_selected
from hostlog.record import Columns, Record
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.state import write_json
from tests.unit.query.test_stats import T0, build_spool, canon, from_query_json

S = 10**9


def write_spool(directory: Path, batches: list[list[Record]], *, segment_bytes: int = 6000) -> SpoolReader:
    keyring = Keyring.load_or_create(directory / "spool.key")
    spool = Spool.open(directory / "spool", keyring, segment_bytes=segment_bytes)
    try:
        for batch in batches:
            spool.append(Columns.of(batch))
    finally:
        spool.close()
    return SpoolReader.open(directory / "spool")


def rec(ts: int, msg: str, *, app: str = "web", severity: int = 6, source: str = "syslog",
        host: str = "h1", **fields: str) -> Record:
    return Record(ts=ts, msg=msg, host=host, source=source, app=app, severity=severity, fields=dict(fields))


def period(lo: int, hi: int) -> Query:
    return Query(since_ns=lo, until_ns=hi)


# --- volume ---------------------------------------------------------------------------------

def stats_rows(directory: Path, query: Query, by: tuple[str, ...], every: int | None = None) -> list[dict]:
    """What `hostlog stats -o json --by BY [--every]` prints, as objects."""
    result = stats.compute(SpoolReader.open(directory / "spool"), query,
                           stats.StatsSpec(by=by, every_ns=every), workers=1)
    return [json.loads(line) for line in stats.render_json(stats.rows(result), result.spec)]


def test_volume_is_hostlog_stats_by_source_app_and_level(tmp_path: Path) -> None:
    build_spool(tmp_path, 7, frames=40, seal=True)
    lo, hi = T0 + 30 * S, T0 + 700 * S
    query = period(lo, hi)
    built = rp.build(SpoolReader.open(tmp_path / "spool"), query, now_ns=hi + S, workers=1)
    assert built.by_source == stats_rows(tmp_path, query, (rp.SOURCE,))
    assert built.by_app == stats_rows(tmp_path, query, (rp.APP,))
    assert [{k: v for k, v in r.items() if k != "level"} for r in built.by_level] == \
        stats_rows(tmp_path, query, (rp.LEVEL,))
    assert built.over_time == stats_rows(tmp_path, query, (rp.LEVEL,), built.every_ns)
    assert built.every_ns == 30 * S  # 670 s in at most 48 buckets
    # and what hostlog query -o json writes for the same period, counted
    for name, rows in ((rp.SOURCE, built.by_source), (rp.APP, built.by_app), (rp.LEVEL, built.by_level)):
        counted = from_query_json(tmp_path, query, [name], None)
        assert {((canon(r[name]),), None): r["count"] for r in rows} == dict(counted)
    assert built.total == sum(from_query_json(tmp_path, query, [], None).values())
    assert built.errors == sum(1 for _ in iter_selected(SpoolReader.open(tmp_path / "spool"),
                                                        build_query(priority="err", since=f"@{lo / S}",
                                                                    until=f"@{hi / S}")))
    assert built.rate == built.total / ((hi - lo) / S)
    # the chart: per level, the buckets of the period, summing to the level's count
    starts, series = rp.chart(built)
    assert starts[0] <= lo < starts[0] + built.every_ns and starts[-1] <= hi < starts[-1] + built.every_ns
    assert {name: sum(c) for name, c in series.items()} == {r["level"]: r["count"] for r in built.by_level}


def test_the_period_is_the_last_24_hours_unless_given() -> None:
    now = T0 + 10**15
    q = rp.period_query(Query(), now_ns=now)
    assert (q.since_ns, q.until_ns) == (now - 86400 * S, now)
    q = rp.period_query(Query(until_ns=now - 5 * S), now_ns=now)
    assert (q.since_ns, q.until_ns) == (now - 5 * S - 86400 * S, now - 5 * S)
    q = rp.period_query(Query(since_ns=now - 60 * S), now_ns=now)
    assert (q.since_ns, q.until_ns) == (now - 60 * S, now)
    assert rp.chart_every(86400 * S) == 1800 * S and rp.chart_every(60 * S) == 5 * S
    assert rp.chart_every(10 * 365 * 86400 * S) == 365 * 86400 * S


# --- templates --------------------------------------------------------------------------------

def test_error_and_new_templates_are_hostlog_patterns(tmp_path: Path) -> None:
    t = T0
    old = [rec(t + i * S, f"connection from 10.0.0.{i} closed", severity=6) for i in range(20)]
    old += [rec(t + (20 + i) * S, f"disk /dev/sd{i % 3} full", app="db", severity=3) for i in range(5)]
    since = t + 100 * S
    new = [rec(since + i * S, f"connection from 10.0.1.{i} closed", severity=6) for i in range(10)]
    new += [rec(since + (10 + i) * S, f"disk /dev/sd{i % 3} full", app="db", severity=3) for i in range(4)]
    new += [rec(since + (20 + i) * S, f"payment {i} refused by bank", app="pay", severity=2) for i in range(6)]
    new += [rec(since + 30 * S, "cache warmed in 12 ms", app="web", severity=5)]
    reader = write_spool(tmp_path, [old[:12], old[12:], new[:9], new[9:]])
    until = since + 60 * S
    built = rp.build(reader, period(since, until), now_ns=until, baseline_ns=200 * S, workers=1)
    # hostlog patterns -p err -S since -U until
    seen, templates = mine(iter_selected(SpoolReader.open(tmp_path / "spool"),
                                         Query(since_ns=since, until_ns=until, priorities=frozenset(range(4)))))
    want = sorted(seen.values(), key=lambda s: (-s.count, s.app, s.pattern_id))
    assert [(t["app"], t["pattern_id"], t["template"], t["count"], t["example"]) for t in built.error_templates] == \
        [(s.app, s.pattern_id, templates[(s.app, s.pattern_id)], s.count, s.example) for s in want]
    assert [t["app"] for t in built.error_templates] == ["pay", "db"]
    assert built.error_templates[0]["count"] == 6 and built.error_records == 10
    # hostlog patterns -S since-baseline -U until --new since: what the baseline had is not new
    assert sorted((t["app"], t["count"]) for t in built.new_templates) == [("pay", 6), ("web", 1)]
    assert "payment <" in built.new_templates[0]["template"]
    # a -p that selects no error level: no error templates, still the new ones
    built = rp.build(reader, Query(since_ns=since, until_ns=until, priorities=frozenset({5, 6})),
                     now_ns=until, baseline_ns=200 * S, workers=1)
    assert built.error_templates == [] and [t["app"] for t in built.new_templates] == ["web"]


# --- the agent's records --------------------------------------------------------------------------

def notice(ts: int, msg: str, **fields: str) -> Record:
    """A record the agent says itself (CollectorContext.notice)."""
    return rec(ts, msg, app="hostlog", severity=4, source="hostlog", **fields)


def lifecycle(ts: int, app: str, event: str, **fields: str) -> Record:
    """A supervisor's lifecycle record (ProcessSupervisor._lifecycle_record)."""
    return rec(ts, f"{event}: '{app}'", app=app, severity=5, source="process", event=event, **fields)


def test_drops_rate_limits_anomalies_and_restarts(tmp_path: Path) -> None:
    t = T0
    batches = [
        [rec(t + i * S, f"line {i}") for i in range(30)],
        [notice(t + 31 * S, "Dropped 7 datagrams on udp://127.0.0.1:5514 (syslog source s): the socket's "
                "receive buffer was full", dropped="7", listen="udp://127.0.0.1:5514", reason="kernel"),
         notice(t + 32 * S, "Dropped 3 datagrams ...", dropped="3", listen="udp://127.0.0.1:5514",
                reason="kernel"),
         notice(t + 33 * S, "Dropped 5 messages ... the spool was full", dropped="5",
                listen="udp://127.0.0.1:5514", reason="spool_full"),
         notice(t + 34 * S, "retention dropped 120 records no destination had acknowledged", DROPPED="120"),
         notice(t + 35 * S, "Suppressed 40 messages from 10.1.1.1 (syslog source s: rate limit)",
                suppressed="40", peer="10.1.1.1"),
         notice(t + 36 * S, "Suppressed 2 messages from 10.1.1.1", suppressed="2", peer="10.1.1.1"),
         notice(t + 37 * S, "Suppressed 9 records from key k (HTTP ingest: the rate limit of key k)",
                suppressed="9", key="k", limit="key", ingest_source="ci"),
         notice(t + 38 * S, "source x did not start: port in use"),
         notice(t + 999 * S, "Dropped 1000 datagrams, after the period", dropped="1000", reason="kernel",
                listen="udp://127.0.0.1:5514")],
        [lifecycle(t + 40 * S, "worker", "started"), lifecycle(t + 41 * S, "worker", "exited", exit="3"),
         lifecycle(t + 42 * S, "worker", "restarting", delay="1"), lifecycle(t + 43 * S, "worker", "started"),
         lifecycle(t + 44 * S, "worker", "exited", exit="0"), lifecycle(t + 45 * S, "web", "started"),
         rec(t + 46 * S, "restarting the cache", app="web", source="process", event="restarting-not"),
         rec(t + 47 * S, "spike of 500s", app="web", severity=4, source="detect", DETECT_KIND="spike"),
         rec(t + 48 * S, "new pattern", app="db", severity=5, source="detect", DETECT_KIND="new_template")],
    ]
    reader = write_spool(tmp_path, batches)
    built = rp.build(reader, period(t, t + 100 * S), now_ns=t + 100 * S, workers=1)
    kinds = {(d["kind"], d["records"], d["notices"]) for d in built.drops}
    assert kinds == {("kernel", 10, 2), ("spool_full", 5, 1), ("retention", 120, 1)}
    assert built.dropped_total == 135 and built.suppressed_total == 51
    assert {(tuple(sorted(d["where"].items())), d["records"]) for d in built.rate_limits} == {
        ((("peer", "10.1.1.1"),), 42), ((("ingest_source", "ci"), ("key", "k"), ("limit", "key")), 9)}
    # the same sums from the records `hostlog query -o json --source hostlog` shows
    notices = [r for _, r in iter_selected(SpoolReader.open(tmp_path / "spool"),
                                           Query(sources=["hostlog"], since_ns=t, until_ns=t + 100 * S))]
    assert sum(int(r.fields.get("dropped", 0)) + int(r.fields.get("DROPPED", 0)) for r in notices) == 135
    assert built.anomalies == 2 and [a["message"] for a in built.anomaly_records] == ["spike of 500s", "new pattern"]
    assert [a["kind"] for a in built.anomaly_records] == ["spike", "new_template"]
    assert {a[rp.APP]: a["count"] for a in built.anomaly_apps} == {"web": 1, "db": 1}
    apps = {a["app"]: a for a in built.apps}
    assert apps["worker"] | {} == {"host": "h1", "app": "worker", "started": 2, "restarts": 1, "exits": 2,
                                   "failed_exits": 1, "stopped": 0, "gave_up": 0, "spawn_errors": 0}
    assert apps["web"]["started"] == 1 and apps["web"]["restarts"] == 0
    assert built.apps[0]["app"] == "worker"  # the most restarted first
    # --host narrows the agent's sections too
    other = rp.build(reader, Query(since_ns=t, until_ns=t + 100 * S, hosts=["h2"]), now_ns=t, workers=1)
    assert (other.drops, other.rate_limits, other.apps, other.anomalies) == ([], [], [], 0)


# --- spool and forwarding ------------------------------------------------------------------------

def test_spool_figures_and_the_lag_of_each_cursor(tmp_path: Path) -> None:
    records = [rec(T0 + i * S, f"line {i}") for i in range(100)]
    reader = write_spool(tmp_path, [records[i:i + 10] for i in range(0, 100, 10)], segment_bytes=64 * 1024)
    cursors = tmp_path / "spool" / "state" / "cursors"
    cursors.mkdir(parents=True, exist_ok=True)
    write_json(cursors / "central.json", {"acked_seq": 100})
    write_json(cursors / "backup@10.0.0.2_7514.json", {"acked_seq": 35})
    (cursors / "torn.json").write_text('{"acked_')
    now = T0 + 500 * S
    built = rp.build(reader, period(T0, now), now_ns=now, workers=1)
    spool = collect_stats(SpoolReader.open(tmp_path / "spool"))
    assert built.spool["records"] == spool.records == 100
    assert built.spool["bytes_on_disk"] == spool.bytes_on_disk
    assert built.spool["compression_ratio"] == round(spool.compression_ratio, 4) > 1
    lag = {f["destination"]: f for f in built.forwarding}
    assert (lag["central"]["lag_records"], lag["central"]["lag_seconds"]) == (0, 0.0)
    # seq 36 is in the frame of records 31..40 (ts T0+30 s): lag is its age
    assert lag["backup@10.0.0.2_7514"]["lag_records"] == 65
    assert lag["backup@10.0.0.2_7514"]["lag_seconds"] == 470.0
    assert lag["torn"]["lag_records"] is None and "unreadable" in lag["torn"]["error"]


# --- renderings ---------------------------------------------------------------------------------

class Page(HTMLParser):
    """Tags, attributes and text of a page, checking that every tag closes."""

    VOID = {"meta", "br", "line", "rect", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert not page.errors and page.stack == [], (page.errors, page.stack)
    return page


def sample_report(tmp_path: Path) -> rp.Report:
    build_spool(tmp_path, 11, frames=30, seal=True)
    return rp.build(SpoolReader.open(tmp_path / "spool"), period(T0, T0 + 2000 * S), now_ns=T0 + 2000 * S,
                    workers=1)


def test_html_is_one_page_with_its_charts_and_nothing_to_fetch(tmp_path: Path) -> None:
    built = sample_report(tmp_path)
    text = report_html.render_html(built)
    page = parse_page(text)
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    urls = re.findall(r"""(?:src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)""", text)
    assert urls == []
    bars = [a for t, a in page.tags if t == "rect" and "bar" in (a.get("class") or "")]
    time_bars = [a for a in bars if a.get("data-time")]
    assert sum(int(a["data-count"] or 0) for a in time_bars) == built.total
    by_level = Counter()
    for a in time_bars:
        by_level[a["data-level"]] += int(a["data-count"] or 0)
    assert dict(by_level) == {r["level"]: r["count"] for r in built.by_level}
    assert all(float(a["height"] or 0) > 0 and float(a["width"] or 0) > 0 for a in time_bars)
    ids = {a.get("id") for _, a in page.tags}
    assert {"chart-time", "chart-source", "chart-app", "chart-level", "total-records"} <= ids
    words = " ".join(page.text)
    assert f"{built.total}" in words and "records" in words
    source_bars = [a for t, a in page.tags if t == "rect" and a.get("data-label") is not None
                   and a.get("data-count") is not None]
    assert sum(int(a["data-count"] or 0) for a in source_bars if a["data-label"] in {"syslog", "journald"}) \
        == built.total


def test_markdown_has_a_table_per_section(tmp_path: Path) -> None:
    built = sample_report(tmp_path)
    text = report_text.render_markdown(built, top=3)
    for heading in ("## Summary", "## Volume", "### By source", "### By app", "### By level", "### Over time",
                    "## Top error templates", "## New templates", "## Anomalies", "## Drops and rate limits",
                    "## Spool", "## Forwarding", "## Supervised apps"):
        assert f"\n{heading}" in text, heading
    assert f"| records | {built.total} |" in text
    app_rows = text.split("### By app")[1].split("###")[0]
    assert app_rows.count("\n|") == 2 + 3 + 1  # header and rule, the top 3, "(N more)"
    assert "| (none) | " in app_rows  # the records without SYSLOG_IDENTIFIER
    assert f"| ({len(built.by_app) - 3} more) | {sum(a['count'] for a in built.by_app[3:])} |" in app_rows
    obj = json.loads(report_text.render_json(built))
    assert obj["volume"]["total"] == built.total and obj["volume"]["by_app"] == built.by_app
    assert obj["period"]["since"] == rp.iso(T0) and obj["volume"]["over_time"]["every"] == "1min"


def table_cells(line: str) -> list[str]:
    """A Markdown table row's cells, unescaped: a backslash takes the next
    character as it is, a | not so taken ends a cell (GFM's rule)."""
    assert line.startswith("| ") and line.endswith(" |")
    cells, cur, i, body = [], [], 0, line[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            cur.append(body[i + 1])
            i += 2
            continue
        if c == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_any_text_stays_in_its_cell_and_is_escaped_in_html(app: str, message: str) -> None:
    line = report_text.table(["a", "b"], [[app, message]]).splitlines()[2]
    cells = table_cells(line)
    assert len(cells) == 2 and len(line.splitlines()) == 1
    assert not any(unicodedata.category(c) == "Cc" for c in line)
    if not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in app + message):
        assert cells[1] == message.strip() and cells[0] == app.strip()
    row = report_html._table("t", ["a", "b"], [[app, message]])
    page = parse_page(row)
    assert "".join(page.text) == "ab" + app + message
    assert not any(t not in ("table", "thead", "tbody", "tr", "th", "td") for t, _ in page.tags)


def test_a_message_with_markup_is_text_on_the_page(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)> & | pipes'
    reader = write_spool(tmp_path, [[rec(T0 + i * S, evil, app="evil<b>", severity=3) for i in range(3)]])
    built = rp.build(reader, period(T0, T0 + 10 * S), now_ns=T0 + 10 * S, workers=1)
    text = report_html.render_html(built)
    page = parse_page(text)
    assert not any(t in ("script", "img", "b") for t, _ in page.tags)
    template = built.error_templates[0]["template"]
    assert "<script>" in template and template in "".join(page.text)
    assert "evil<b>" in "".join(page.text)
    md = report_text.render_markdown(built)
    assert "\\| pipes" in md


def test_an_empty_period_renders(tmp_path: Path) -> None:
    reader = write_spool(tmp_path, [[rec(T0, "x")]])
    now = time.time_ns()
    built = rp.build(reader, Query(), now_ns=now, workers=1)
    assert built.total == 0 and built.since_ns == now - 86400 * S
    parse_page(report_html.render_html(built))
    assert "No records." in report_text.render_markdown(built)
    assert json.loads(report_text.render_json(built))["volume"]["by_level"] == []
