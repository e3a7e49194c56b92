"""``hostlog report``: what a period of the spool looked like, as one set of
figures (docs/report.md).

Every count comes from the engine of ``hostlog stats``
(:func:`hostlog.query.stats.compute`), over the same :class:`Query`:

* **volume**: one count by source, app and level per time bucket; the
  totals by source, by app and by level are that count summed over the
  other fields, as :func:`hostlog.query.stats.rows` orders and rates them,
  so each equals ``hostlog stats --by FIELD`` over the period;
* **anomalies**: the records of source ``detect`` in the period;
* **drops and rate limits**: the agent's own notices (source ``hostlog``)
  that carry ``dropped`` (a syslog listener: the kernel's receive buffer or
  a full spool), ``DROPPED`` (retention with ``on_full = "drop_oldest"``) or
  ``suppressed`` (a rate limit: syslog per peer, HTTP ingest per key or
  source), summed per kind and place;
* **restarts**: the supervisor's lifecycle records (source ``process``,
  field ``event``) per app.

The templates are mined from the selected records by the project's miner
(``hostlog.patterns.Miner``, default settings, per app), as ``hostlog
patterns`` mines them: the error templates from the records of level err or
worse in the period, the new ones from the period and the ``baseline``
before it (a template is new when its first record is in the period).

The spool's size and compression are ``hostlog spool stats``'
(:func:`hostlog.spool.inspect.collect_stats`); the forwarding lag is each
cursor file's acknowledged seq against the spool's last seq, and the age of
the first frame after it, as the sender measures it.

The agent's own sections (anomalies, drops, restarts) take only the time
range and ``--host`` of the selection; the other filters choose the records
whose volume and templates are reported.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from hostlog.query import stats
from hostlog.query.filters import Query
from hostlog.record import SEVERITY_NAMES, Record
from hostlog.spool.inspect import SpoolStats, collect_stats
from hostlog.spool.reader import SpoolReader
from hostlog.spool.state import read_json

__all__ = ["DEFAULT_BASELINE_NS", "DEFAULT_PERIOD_NS", "Report", "build", "chart_every", "iso",
           "level_name", "period_query", "to_json"]

DEFAULT_PERIOD_NS = 86400 * 10**9  # the last 24 hours
DEFAULT_BASELINE_NS = 7 * 86400 * 10**9  # how far before the period a template counts as seen
DEFAULT_TOP = 10
MAX_ANOMALIES = 50  # anomaly records listed (all are counted)
#: At most this many buckets in the chart over time.
CHART_BUCKETS = 48
_NICE_SPANS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
                 7 * 86400, 30 * 86400, 365 * 86400)

SOURCE, APP, LEVEL, HOST = "_HOSTLOG_SOURCE", "SYSLOG_IDENTIFIER", "PRIORITY", "_HOSTNAME"
#: The fields of the agent's drop and rate-limit notices (collectors/syslog, http/api,
#: agent/forwarding): where, and how many.
DROP_PLACES = ("reason", "listen", "peer", "key", "limit", "ingest_source")
DROP_SUMS = ("dropped", "DROPPED", "suppressed")
#: The supervisor's lifecycle events (collectors/process/supervisor.py).
LIFECYCLE = ("started", "restarting", "exited", "stopped", "gave_up", "spawn_error")


def level_name(value: Any) -> str:
    """A PRIORITY group value as a level name (``"3"`` -> ``err``); anything
    else (a raw ``06``, none) as it is shown."""
    if isinstance(value, str) and len(value) == 1 and value in "01234567":
        return SEVERITY_NAMES[int(value)]
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def iso(ns: int) -> str:
    """RFC 3339 in UTC, as ``hostlog stats -o json`` writes times."""
    return stats._rfc3339(ns)


def chart_every(span_ns: int) -> int:
    """The bucket (ns) of the chart over time: the shortest of 1 s, 5 s, ...
    1 d, 7 d that fits the span in :data:`CHART_BUCKETS` buckets."""
    for s in _NICE_SPANS_S:
        if span_ns <= s * 10**9 * CHART_BUCKETS:
            return s * 10**9
    return _NICE_SPANS_S[-1] * 10**9


def period_query(query: Query, *, now_ns: int, period_ns: int = DEFAULT_PERIOD_NS) -> Query:
    """The query with its time range made explicit: ``-U`` or now, ``-S`` or
    ``period_ns`` before the end."""
    until = query.until_ns if query.until_ns is not None else now_ns
    since = query.since_ns if query.since_ns is not None else until - period_ns
    return dataclasses.replace(query, since_ns=since, until_ns=until)


@dataclass
class Report:
    """The figures of one period, as plain data (:func:`to_json`)."""

    since_ns: int
    until_ns: int
    generated_ns: int
    spool_dir: str
    every_ns: int
    total: int = 0
    rate: float | None = None
    by_source: list[dict[str, Any]] = field(default_factory=list)
    by_app: list[dict[str, Any]] = field(default_factory=list)
    by_level: list[dict[str, Any]] = field(default_factory=list)
    over_time: list[dict[str, Any]] = field(default_factory=list)  # PRIORITY, time, count
    chart_cells: list[tuple[Any, int, int]] = field(default_factory=list)  # PRIORITY, start ns, count
    error_templates: list[dict[str, Any]] = field(default_factory=list)
    error_records: int = 0  # records of level err or worse the templates were mined from
    new_templates: list[dict[str, Any]] = field(default_factory=list)
    baseline_since_ns: int = 0
    anomalies: int = 0
    anomaly_apps: list[dict[str, Any]] = field(default_factory=list)
    anomaly_records: list[dict[str, Any]] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    rate_limits: list[dict[str, Any]] = field(default_factory=list)
    dropped_total: int = 0
    suppressed_total: int = 0
    spool: dict[str, Any] = field(default_factory=dict)
    forwarding: list[dict[str, Any]] = field(default_factory=list)
    apps: list[dict[str, Any]] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """Records of level emerg..err in the volume."""
        return sum(r["count"] for r in self.by_level if r.get(LEVEL) in ("0", "1", "2", "3"))


def build(reader: SpoolReader, query: Query, *, now_ns: int | None = None,
          period_ns: int = DEFAULT_PERIOD_NS, baseline_ns: int = DEFAULT_BASELINE_NS,
          top: int = DEFAULT_TOP, workers: int | None = None) -> Report:
    """The report of what ``query`` selects in the period (its ``-S``/``-U``,
    else the ``period_ns`` before now). ``workers``: as for ``stats.compute``
    (1 in a process with threads, such as the agent)."""
    now = time.time_ns() if now_ns is None else now_ns
    q = period_query(query, now_ns=now, period_ns=period_ns)
    assert q.since_ns is not None and q.until_ns is not None
    every = chart_every(max(1, q.until_ns - q.since_ns))
    report = Report(q.since_ns, q.until_ns, now, str(reader.directory), every,
                    baseline_since_ns=q.since_ns - baseline_ns)
    _volume(report, reader, q, workers)
    _templates(report, reader, q, baseline_ns, top)
    agent_query = Query(since_ns=q.since_ns, until_ns=q.until_ns, hosts=list(q.hosts))
    _anomalies(report, reader, agent_query, workers)
    _drops(report, reader, agent_query, workers)
    _restarts(report, reader, agent_query, workers)
    spool = collect_stats(reader)
    report.spool = _spool(spool)
    report.forwarding = _forwarding(reader, spool, now)
    seen: dict[str, None] = dict.fromkeys(report.damage)
    for d in list(spool.damage) + list(reader.damage):
        seen.setdefault(str(d), None)
    report.damage = list(seen)
    return report


# --- volume ------------------------------------------------------------------------

def _volume(report: Report, reader: SpoolReader, q: Query, workers: int | None) -> None:
    by = (SOURCE, APP, LEVEL)
    result = stats.compute(reader, q, stats.StatsSpec(by=by, every_ns=report.every_ns), workers=workers)
    report.damage += [str(d) for d in result.damage]
    report.total = sum(result.counts.values())
    span_s = (report.until_ns - report.since_ns) / 1e9
    report.rate = report.total / span_s if span_s > 0 else None
    report.by_source = _marginal(result, by, (SOURCE,))
    report.by_app = _marginal(result, by, (APP,))
    report.by_level = _marginal(result, by, (LEVEL,))
    for row in report.by_level:
        row["level"] = level_name(row[LEVEL])
    report.over_time = _marginal(result, by, (LEVEL,), buckets=True)
    level = by.index(LEVEL)
    cells: dict[tuple[tuple[bytes, ...], int], int] = {}
    for (group, bucket), n in result.counts.items():
        assert bucket is not None
        key = (group[level], bucket * report.every_ns)
        cells[key] = cells.get(key, 0) + n
    report.chart_cells = [(stats.group_value(raw), start, n) for (raw, start), n in cells.items()]


def _marginal(result: stats.StatsResult, by: tuple[str, ...], keep: tuple[str, ...], *,
              buckets: bool = False) -> list[dict[str, Any]]:
    """``result``'s counts summed over the fields not in ``keep`` (and over
    the buckets unless ``buckets``), as ``hostlog stats --by KEEP`` rows."""
    pick = [by.index(name) for name in keep]
    every = result.spec.every_ns if buckets else None
    spec = stats.StatsSpec(by=keep, every_ns=every)
    out = stats.StatsResult(spec, range_ns=result.range_ns)
    for (group, bucket), n in result.counts.items():
        cell = (tuple(group[i] for i in pick), bucket if buckets else None)
        out.counts[cell] = out.counts.get(cell, 0) + n
    return [_row_obj(row, spec) for row in stats.rows(out)]


def _row_obj(row: stats.Row, spec: stats.StatsSpec) -> dict[str, Any]:
    obj: dict[str, Any] = {name: stats.group_value(v) for name, v in zip(spec.by, row.group)}
    if spec.every_ns is not None and row.time_ns is not None:
        obj["time"] = iso(row.time_ns)
    obj["count"] = row.count
    obj["rate"] = row.rate
    for name, v in zip(spec.sum_fields, row.sums):
        obj[f"sum_{name}"] = v
    return obj


# --- templates ---------------------------------------------------------------------

class _Mined:
    """What ``hostlog patterns`` keeps per pattern, for one miner."""

    def __init__(self) -> None:
        from hostlog.patterns import Miner

        self.miner = Miner()
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}
        self.records = 0

    def add(self, record: Record) -> None:
        msg = record.msg if isinstance(record.msg, str) else record.msg.decode("utf-8", "replace")
        app = record.app or "-"
        match = self.miner.add(app, msg)
        self.records += 1
        key = (app, match.pattern_id)
        s = self.seen.get(key)
        if s is None:
            self.seen[key] = {"app": app, "pattern_id": match.pattern_id, "count": 1,
                              "first_ns": record.ts, "last_ns": record.ts, "example": msg}
            return
        s["count"] += 1
        s["first_ns"] = min(s["first_ns"], record.ts)
        s["last_ns"] = max(s["last_ns"], record.ts)

    def rows(self, *, new_since: int | None = None) -> list[dict[str, Any]]:
        templates = {(app, pid): t for app in self.miner.apps()
                     for pid, t in self.miner.patterns(app).items()}
        found = sorted(self.seen.values(), key=lambda s: (-s["count"], s["app"], s["pattern_id"]))
        if new_since is not None:
            found = [s for s in found if s["first_ns"] >= new_since]
        return [{"app": s["app"], "pattern_id": s["pattern_id"],
                 "template": templates.get((s["app"], s["pattern_id"]), s["example"]),
                 "count": s["count"], "first": _second(s["first_ns"]), "last": _second(s["last_ns"]),
                 "example": s["example"]} for s in found]


def _second(ns: int) -> str:
    """A template's first or last time, to the second, as ``hostlog patterns`` writes it."""
    import datetime as dt
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ERROR_LEVELS = frozenset(range(4))  # emerg, alert, crit, err: -p err


def _templates(report: Report, reader: SpoolReader, q: Query, baseline_ns: int, top: int) -> None:
    from hostlog.query.run import iter_selected

    assert q.since_ns is not None
    wide = dataclasses.replace(q, since_ns=q.since_ns - baseline_ns)
    allowed = ERROR_LEVELS if q.priorities is None else ERROR_LEVELS & q.priorities
    errors_q = dataclasses.replace(q, priorities=frozenset(allowed))
    everything, errors = _Mined(), _Mined()
    if allowed:
        for _, record in iter_selected(reader, wide, identity=False):
            everything.add(record)
            if errors_q.record_test(record):
                errors.add(record)
    else:  # a -p that selects no error level: only the new templates
        for _, record in iter_selected(reader, wide, identity=False):
            everything.add(record)
    report.error_records = errors.records
    report.error_templates = errors.rows()[:top]
    report.new_templates = everything.rows(new_since=q.since_ns)[:2 * top]


# --- the agent's own records ------------------------------------------------------------

def _anomalies(report: Report, reader: SpoolReader, agent_query: Query, workers: int | None) -> None:
    from hostlog.query.run import iter_selected

    q = dataclasses.replace(agent_query, sources=["detect"])
    result = stats.compute(reader, q, stats.StatsSpec(by=(APP,)), workers=workers)
    report.damage += [str(d) for d in result.damage]
    report.anomalies = sum(result.counts.values())
    report.anomaly_apps = [_row_obj(row, result.spec) for row in stats.rows(result)]
    if report.anomalies:
        for _, r in iter_selected(reader, q, identity=False):
            if len(report.anomaly_records) >= MAX_ANOMALIES:
                break
            report.anomaly_records.append(_record_obj(r))


def _record_obj(r: Record) -> dict[str, Any]:
    msg = r.msg if isinstance(r.msg, str) else r.msg.decode("utf-8", "replace")
    kind = (r.fields or {}).get("DETECT_KIND")  # hostlog.patterns.sink.anomaly_record
    return {"time": iso(r.ts), "host": r.host, "app": r.app, "level": SEVERITY_NAMES[r.severity]
            if 0 <= r.severity < 8 else str(r.severity), "kind": kind if isinstance(kind, str) else None,
            "message": msg}


def _drops(report: Report, reader: SpoolReader, agent_query: Query, workers: int | None) -> None:
    q = dataclasses.replace(agent_query, sources=["hostlog"])
    # grouped by the counts' fields too, so that a notice without them (a
    # source that did not start) is told apart from one with them
    spec = stats.StatsSpec(by=(HOST,) + DROP_PLACES + DROP_SUMS, sum_fields=DROP_SUMS)
    result = stats.compute(reader, q, spec, workers=workers)
    report.damage += [str(d) for d in result.damage]
    places = len(DROP_PLACES) + 1
    drops: dict[tuple[Any, ...], dict[str, Any]] = {}
    limits: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in stats.rows(result):
        obj = {name: stats.group_value(v) for name, v in zip(spec.by[:places], row.group[:places])}
        host = obj.pop(HOST)
        for name, raw, total in zip(DROP_SUMS, row.group[places:], row.sums):
            if not raw:
                continue  # the notice does not carry this count
            where = {k: v for k, v in obj.items() if v is not None}
            if name == "suppressed":
                kind, into = "rate limit", limits
            else:
                kind = "retention" if name == "DROPPED" else str(where.pop("reason", "dropped"))
                into = drops
            key = (json.dumps(host), kind, json.dumps(where, sort_keys=True))
            cell = into.setdefault(key, {"host": host, "kind": kind, "where": where, "records": 0,
                                         "notices": 0})
            cell["records"] += int(total or 0)
            cell["notices"] += row.count
    report.drops = sorted(drops.values(), key=lambda d: (-d["records"], json.dumps(d["host"]), d["kind"]))
    report.rate_limits = sorted(limits.values(), key=lambda d: (-d["records"], json.dumps(d["host"]),
                                                                json.dumps(d["where"], sort_keys=True)))
    for d in report.rate_limits:
        del d["kind"]
    report.dropped_total = sum(d["records"] for d in report.drops)
    report.suppressed_total = sum(d["records"] for d in report.rate_limits)


def _restarts(report: Report, reader: SpoolReader, agent_query: Query, workers: int | None) -> None:
    q = dataclasses.replace(agent_query, sources=["process"],
                            matches=[{"event": {e.encode() for e in LIFECYCLE}}])
    spec = stats.StatsSpec(by=(HOST, APP, "event", "exit"))
    result = stats.compute(reader, q, spec, workers=workers)
    report.damage += [str(d) for d in result.damage]
    apps: dict[tuple[Any, Any], dict[str, Any]] = {}
    for row in stats.rows(result):
        host, app, event, code = (stats.group_value(v) for v in row.group)
        a = apps.setdefault((host, app), {"host": host, "app": app, "started": 0, "restarts": 0,
                                          "exits": 0, "failed_exits": 0, "stopped": 0, "gave_up": 0,
                                          "spawn_errors": 0})
        if event == "started":
            a["started"] += row.count
        elif event == "restarting":
            a["restarts"] += row.count
        elif event == "exited":
            a["exits"] += row.count
            if code != "0":
                a["failed_exits"] += row.count
        elif event == "stopped":
            a["stopped"] += row.count
        elif event == "gave_up":
            a["gave_up"] += row.count
        elif event == "spawn_error":
            a["spawn_errors"] += row.count
    report.apps = sorted(apps.values(), key=lambda a: (-a["restarts"], -a["failed_exits"], str(a["host"]),
                                                       str(a["app"])))


# --- the spool and forwarding ---------------------------------------------------------------

def _spool(s: SpoolStats) -> dict[str, Any]:
    return {"segments": s.segments, "sealed": s.sealed, "frames": s.frames, "records": s.records,
            "bytes_on_disk": s.bytes_on_disk, "chunk_bytes": s.chunk_bytes,
            "payload_bytes": s.payload_bytes, "compression_ratio": round(s.compression_ratio, 4),
            "first_seq": s.first_seq, "last_seq": s.last_seq,
            "first": iso(s.ts_min) if s.ts_min is not None else None,
            "last": iso(s.ts_max) if s.ts_max is not None else None}


def _forwarding(reader: SpoolReader, spool: SpoolStats, now_ns: int) -> list[dict[str, Any]]:
    """Per cursor file (a ``[[forward]]``, or one target of a replicated one):
    the acknowledged seq, and how far the spool is ahead of it."""
    last = spool.last_seq or 0
    out: list[dict[str, Any]] = []
    for path in sorted((reader.directory / "state" / "cursors").glob("*.json")):
        try:
            value = read_json(path, None)
        except (ValueError, OSError) as exc:  # shown in the report: retention keeps all for it
            out.append({"destination": path.stem, "acked_seq": None, "last_seq": last,
                        "lag_records": None, "lag_seconds": None, "error": f"unreadable: {exc}"})
            continue
        acked = value.get("acked_seq") if isinstance(value, dict) else None
        if not isinstance(acked, int):
            out.append({"destination": path.stem, "acked_seq": None, "last_seq": last,
                        "lag_records": None, "lag_seconds": None, "error": "no acked_seq in it"})
            continue
        behind = max(0, last - acked)
        lag_s = 0.0
        if behind:
            oldest = _oldest_after(reader, acked)
            if oldest is not None:
                lag_s = max(0.0, (now_ns - oldest) / 1e9)
        out.append({"destination": path.stem, "acked_seq": acked, "last_seq": last,
                    "lag_records": behind, "lag_seconds": round(lag_s, 3)})
    return out


def _oldest_after(reader: SpoolReader, seq: int) -> int | None:
    """The earliest time of the first frame after ``seq`` (as the sender's lag)."""
    frames = reader.frames_quick(after_seq=seq)
    try:
        for _, entry in frames:
            return entry.ts_min
    finally:
        frames.close()
    return None


# --- JSON --------------------------------------------------------------------------------------

def to_json(report: Report) -> dict[str, Any]:
    """One object with every figure of the report (docs/report.md, "JSON")."""
    return {
        "period": {"since": iso(report.since_ns), "until": iso(report.until_ns),
                   "generated": iso(report.generated_ns), "spool": report.spool_dir},
        "volume": {"total": report.total, "rate": report.rate, "errors": report.errors,
                   "by_source": report.by_source, "by_app": report.by_app, "by_level": report.by_level,
                   "over_time": {"every": _span_text(report.every_ns), "every_seconds": report.every_ns / 1e9,
                                 "buckets": report.over_time}},
        "error_templates": {"records": report.error_records, "templates": report.error_templates},
        "new_templates": {"baseline_since": iso(report.baseline_since_ns), "templates": report.new_templates},
        "anomalies": {"count": report.anomalies, "by_app": report.anomaly_apps,
                      "records": report.anomaly_records},
        "drops": {"dropped": report.dropped_total, "suppressed": report.suppressed_total,
                  "drops": report.drops, "rate_limits": report.rate_limits},
        "spool": report.spool,
        "forwarding": report.forwarding,
        "apps": report.apps,
        "damage": report.damage,
    }


def _span_text(ns: int) -> str:
    return stats._span_text(ns)


def chart(report: Report) -> tuple[list[int], dict[str, list[int]]]:
    """The chart over time: the bucket starts (ns) from the period's first
    bucket to its last, and per level name the counts in each (levels in
    order of importance, then the raw values)."""
    every = report.every_ns
    first, last = report.since_ns // every, report.until_ns // every
    starts = [b * every for b in range(first, last + 1)]
    series: dict[str, list[int]] = {}
    for value, start, n in sorted(report.chart_cells, key=lambda c: _level_order(c[0])):
        counts = series.setdefault(level_name(value), [0] * len(starts))
        b = start // every - first
        if 0 <= b < len(starts):
            counts[b] += n
    return starts, series


def _level_order(value: Any) -> tuple[int, str]:
    if isinstance(value, str) and len(value) == 1 and value in "01234567":
        return int(value), ""
    return 8, str(value)
