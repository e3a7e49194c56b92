"""``hostlog report -o md``: the report as Markdown tables (and ``-o json``).

Pure: a :class:`~hostlog.query.report.Report` in, text out.
"""

from __future__ import annotations

import json
from typing import Any

from hostlog.query import report as rp
from hostlog.query.stats import sparkline

__all__ = ["render_json", "render_markdown"]


def render_json(report: rp.Report) -> str:
    """One JSON object (docs/report.md, "JSON"), with a final newline."""
    return json.dumps(rp.to_json(report), ensure_ascii=False, indent=1) + "\n"


#: What would end a table row (or a line, for str.splitlines()): a newline shown as ⏎,
#: every other control character and line separator as a space.
_CONTROLS = {c: " " for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]} | {0x0A: "⏎"}


def cell(value: Any) -> str:
    """A table cell: ``-`` for none, a value that is not text as JSON, and
    the characters that would break a Markdown table row escaped."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\\", "\\\\").replace("|", "\\|").translate(_CONTROLS)
    return text or " "


def table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def number(v: float | None) -> str:
    if v is None:
        return "-"
    if v == int(v):
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 0.01 else f"{v:.2f}"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def where_text(where: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(where.items())) or "-"


def render_markdown(report: rp.Report, *, top: int = rp.DEFAULT_TOP) -> str:
    r = report
    out = [f"# hostlog report: {rp.iso(r.since_ns)} to {rp.iso(r.until_ns)}\n",
           f"Spool `{r.spool_dir}`, written {rp.iso(r.generated_ns)}.\n",
           "## Summary\n",
           table(["figure", "value"], [
               ["records", str(r.total)],
               ["records per second", number(r.rate)],
               ["errors (err or worse)", str(r.errors)],
               ["anomalies", str(r.anomalies)],
               ["records dropped", str(r.dropped_total)],
               ["records suppressed by rate limits", str(r.suppressed_total)],
               ["app restarts", str(sum(a["restarts"] for a in r.apps))],
               ["spool", f"{size(r.spool.get('bytes_on_disk', 0))}, "
                         f"{r.spool.get('compression_ratio', 0):.2f}:1 compression"],
           ], {1})]
    out.append("## Volume\n")
    for title, name, rows in (("By source", rp.SOURCE, r.by_source), ("By app", rp.APP, r.by_app),
                              ("By level", "level", r.by_level)):
        shown = rows[:top] if name == rp.APP else rows
        out.append(f"### {title}\n")
        body = [["(none)" if row.get(name) is None else row[name], str(row["count"]), number(row["rate"])]
                for row in shown]
        rest = rows[len(shown):]
        if rest:
            body.append([f"({len(rest)} more)", str(sum(x["count"] for x in rest)), ""])
        out.append(table([name if name != "level" else "level", "count", "per second"], body, {1, 2})
                   if body else "No records.\n")
    out.append(f"### Over time (per {rp.stats._span_text(r.every_ns)})\n")
    starts, series = rp.chart(r)
    if series:
        out.append(f"From {rp.iso(starts[0])} to {rp.iso(starts[-1] + r.every_ns)}, "
                   f"{len(starts)} buckets.\n")
        out.append(table(["level", "count", "over time"],
                         [[name, str(sum(c)), "`" + sparkline(c, width=rp.CHART_BUCKETS) + "`"]
                          for name, c in series.items()], {1}))
    else:
        out.append("No records.\n")
    out.append(f"## Top error templates\n\nMined from {r.error_records} records of level err or worse.\n")
    out.append(_templates(r.error_templates))
    out.append(f"## New templates\n\nFirst seen in the period (looked for since "
               f"{rp.iso(r.baseline_since_ns)}).\n")
    out.append(_templates(r.new_templates))
    out.append("## Anomalies\n")
    if r.anomalies:
        out.append(f"{r.anomalies} anomaly records (source `detect`).\n")
        out.append(table(["time", "host", "app", "level", "kind", "message"],
                         [[a["time"], a["host"], a["app"], a["level"], a["kind"], a["message"]]
                          for a in r.anomaly_records]))
    else:
        out.append("None.\n")
    out.append("## Drops and rate limits\n")
    if r.drops or r.rate_limits:
        drop_rows: list[list[Any]] = [[d["host"], d["kind"], where_text(d["where"]), str(d["records"]),
                                       str(d["notices"])] for d in r.drops]
        drop_rows += [[d["host"], "rate limit", where_text(d["where"]), str(d["records"]), str(d["notices"])]
                 for d in r.rate_limits]
        out.append(table(["host", "what", "where", "records", "notices"], drop_rows, {3, 4}))
    else:
        out.append("None.\n")
    out.append("## Spool\n")
    s = r.spool
    out.append(table(["figure", "value"], [
        ["segments", f"{s.get('segments', 0)} ({s.get('sealed', 0)} sealed)"],
        ["frames", str(s.get("frames", 0))],
        ["records", str(s.get("records", 0))],
        ["seq range", f"{s.get('first_seq')}..{s.get('last_seq')}" if s.get("records") else "-"],
        ["bytes on disk", f"{s.get('bytes_on_disk', 0)} ({size(s.get('bytes_on_disk', 0))})"],
        ["chunk bytes", f"{s.get('chunk_bytes', 0)} ({size(s.get('chunk_bytes', 0))})"],
        ["compression", f"{s.get('compression_ratio', 0):.2f}:1"],
        ["first record", s.get("first")],
        ["last record", s.get("last")],
    ], {1}))
    out.append("## Forwarding\n")
    if r.forwarding:
        out.append(table(["destination", "acked seq", "spool's last seq", "lag (records)", "lag (s)"],
                         [[f["destination"], f["acked_seq"], f["last_seq"], f["lag_records"],
                           f.get("error") or number(f["lag_seconds"])] for f in r.forwarding],
                         {1, 2, 3, 4}))
    else:
        out.append("No destinations.\n")
    out.append("## Supervised apps\n")
    if r.apps:
        out.append(table(["host", "app", "started", "restarts", "exits", "failed exits", "gave up",
                          "spawn errors"],
                         [[a["host"], a["app"], str(a["started"]), str(a["restarts"]), str(a["exits"]),
                           str(a["failed_exits"]), str(a["gave_up"]), str(a["spawn_errors"])]
                          for a in r.apps], {2, 3, 4, 5, 6, 7}))
    else:
        out.append("None in the period.\n")
    if r.damage:
        out.append("## Damage\n")
        out.append("".join(f"* {cell(d)}\n" for d in r.damage))
    return "\n".join(out)


def _templates(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "None.\n"
    return table(["count", "app", "template", "first", "last"],
                 [[str(t["count"]), t["app"], t["template"], t["first"], t["last"]] for t in rows], {0})
