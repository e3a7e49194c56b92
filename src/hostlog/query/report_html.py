"""``hostlog report -o html``: one self-contained page, charts in inline SVG.

No script, no font, no image, nothing fetched: the file reads the same
opened from a disk, a mail attachment or a browser without network. Every
text of the report is escaped; every chart element carries its figure in
``data-count`` (and a ``<title>``, the tooltip) so the numbers on the page
can be read back.

Pure: a :class:`~hostlog.query.report.Report` in, text out.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

from hostlog.query import report as rp
from hostlog.query.report_text import number, size, where_text

__all__ = ["LEVEL_COLORS", "render_html"]

#: The colour of a level in the charts (err and worse share one, as on a terminal).
LEVEL_COLORS = {"emerg": "#b3001b", "alert": "#c8102e", "crit": "#d7263d", "err": "#e4572e",
                "warning": "#e0a800", "notice": "#3a7bd5", "info": "#4f9d69", "debug": "#9e9e9e"}
OTHER_COLOR = "#8e6bbf"
BAR_COLOR = "#3a7bd5"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f6f7f9;
margin:0;padding:24px 32px;max-width:1180px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d8dce3;
padding-bottom:4px}h3{font-size:14px;margin:16px 0 6px;color:#4a5163}
.sub{color:#5b6272;margin:0 0 18px}
.totals{display:flex;flex-wrap:wrap;gap:12px}
.figure{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:10px 16px;min-width:130px}
.figure .value{display:block;font-size:24px;font-weight:600}
.figure .label{color:#5b6272;font-size:12px}
.figure.bad .value{color:#c8102e}
.chart{background:#fff;border:1px solid #d8dce3;border-radius:6px;display:block;max-width:100%;height:auto}
.chart text{font-size:11px;fill:#4a5163}
.legend{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:14px}
.legend .swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
.row3{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
table{border-collapse:collapse;background:#fff;border:1px solid #d8dce3;margin:4px 0;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.d{white-space:nowrap}
td.t{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.none{color:#5b6272}
"""


def esc(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return html.escape(text, quote=True)


def level_color(name: str) -> str:
    return LEVEL_COLORS.get(name, OTHER_COLOR)


def _table(table_id: str, header: list[str], rows: list[list[Any]], numeric: set[int] | None = None,
           mono: set[int] | None = None, dates: set[int] | None = None) -> str:
    numeric, mono, dates = numeric or set(), mono or set(), dates or set()
    head = "".join(f'<th class="n">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            cls = ' class="n"' if i in numeric else ' class="t"' if i in mono else ' class="d"' if i in dates else ""
            cells.append(f"<td{cls}>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


def _tick_label(ns: int, span_ns: int) -> str:
    when = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    if span_ns > 3 * 86400 * 10**9:
        return when.strftime("%m-%d")
    if span_ns > 3600 * 10**9:
        return when.strftime("%H:%M")
    return when.strftime("%H:%M:%S")


def time_chart(report: rp.Report, width: int = 1000, height: int = 260) -> str:
    """Stacked bars: records per bucket, by level, over the period."""
    starts, series = rp.chart(report)
    left, right, top, bottom = 56, 12, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(starts))
    totals = [sum(c[i] for c in series.values()) for i in range(len(starts))]
    peak = max(totals, default=0)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.82)
    parts = [f'<svg id="chart-time" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="records per {esc(rp.stats._span_text(report.every_ns))}, by level">']
    # axes and the peak
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
                 'stroke="#9aa1ae"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#9aa1ae"/>')
    parts.append(f'<text class="y-max" x="{left - 6}" y="{top + 9}" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    for i, start in enumerate(starts):
        x = left + i * slot + (slot - bar_w) / 2
        y = float(top + plot_h)
        for name, counts in series.items():
            c = counts[i]
            if not c or not peak:
                continue
            h = max(1.0, plot_h * c / peak)
            y -= h
            parts.append(f'<rect class="bar" data-level="{esc(name)}" data-count="{c}" '
                         f'data-time="{esc(rp.iso(start))}" x="{x:.2f}" y="{y:.2f}" width="{bar_w:.2f}" '
                         f'height="{h:.2f}" fill="{level_color(name)}"><title>{esc(rp.iso(start))}: {c} '
                         f'{esc(name)}</title></rect>')
    ticks = min(len(starts), 8)
    span = report.until_ns - report.since_ns
    for k in range(ticks):
        i = round(k * (len(starts) - 1) / max(1, ticks - 1))
        x = left + i * slot + slot / 2
        parts.append(f'<text class="x-tick" x="{x:.2f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f"{esc(_tick_label(starts[i], span))}</text>")
    if not peak:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
                     "no records in the period</text>")
    parts.append("</svg>")
    legend = "".join(f'<li data-level="{esc(name)}" data-count="{sum(c)}"><span class="swatch" '
                     f'style="background:{level_color(name)}"></span>{esc(name)} {sum(c)}</li>'
                     for name, c in series.items())
    return "".join(parts) + f'<ul class="legend" id="legend-time">{legend}</ul>'


def bar_chart(chart_id: str, rows: list[tuple[str, int, str]], width: int = 360) -> str:
    """Horizontal bars: a label, a bar scaled to the largest, the count."""
    row_h, label_w, count_w = 22, 130, 70
    height = max(1, len(rows)) * row_h + 8
    peak = max((n for _, n, _ in rows), default=0)
    plot_w = width - label_w - count_w
    parts = [f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, n, color) in enumerate(rows):
        y = 4 + i * row_h
        w = max(1.0, plot_w * n / peak) if peak and n else 0.0
        shown = label if len(label) <= 20 else label[:19] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(shown)}</text>')
        parts.append(f'<rect class="bar" data-label="{esc(label)}" data-count="{n}" x="{label_w}" '
                     f'y="{y + 3}" width="{w:.2f}" height="{row_h - 6}" fill="{color}" rx="2">'
                     f"<title>{esc(label)}: {n}</title></rect>")
        parts.append(f'<text class="count" x="{label_w + w + 6:.2f}" y="{y + 15}">{n}</text>')
    if not rows:
        parts.append('<text x="10" y="18">no records</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(fig_id: str, value: str, label: str, bad: bool = False) -> str:
    return (f'<div class="figure{" bad" if bad else ""}" id="{fig_id}"><span class="value">{esc(value)}'
            f'</span><span class="label">{esc(label)}</span></div>')


def render_html(report: rp.Report, *, top: int = rp.DEFAULT_TOP) -> str:
    r = report
    title = f"hostlog report: {rp.iso(r.since_ns)} to {rp.iso(r.until_ns)}"
    restarts = sum(a["restarts"] for a in r.apps)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1>",
           f'<p class="sub">Spool {esc(r.spool_dir)}, written {esc(rp.iso(r.generated_ns))}.</p>',
           '<section id="summary"><div class="totals">',
           _figure("total-records", str(r.total), "records"),
           _figure("total-rate", number(r.rate), "records per second"),
           _figure("total-errors", str(r.errors), "errors (err or worse)", r.errors > 0),
           _figure("total-anomalies", str(r.anomalies), "anomalies", r.anomalies > 0),
           _figure("total-dropped", str(r.dropped_total), "records dropped", r.dropped_total > 0),
           _figure("total-suppressed", str(r.suppressed_total), "suppressed by rate limits",
                   r.suppressed_total > 0),
           _figure("total-restarts", str(restarts), "app restarts", restarts > 0),
           _figure("total-spool", size(r.spool.get("bytes_on_disk", 0)),
                   f"spool, {r.spool.get('compression_ratio', 0):.2f}:1 compression"),
           "</div></section>",
           f'<section id="volume"><h2>Volume over time (per {esc(rp.stats._span_text(r.every_ns))})</h2>',
           time_chart(r), '<div class="row3">']
    apps = r.by_app[:top]
    app_rows = [(esc_label(a[rp.APP]), a["count"], BAR_COLOR) for a in apps]
    rest = r.by_app[len(apps):]
    if rest:
        app_rows.append((f"({len(rest)} more)", sum(a["count"] for a in rest), "#9aa1ae"))
    for heading, chart_id, rows in (
            ("By source", "chart-source", [(esc_label(s[rp.SOURCE]), s["count"], BAR_COLOR) for s in r.by_source]),
            ("By app", "chart-app", app_rows),
            ("By level", "chart-level", [(lv["level"], lv["count"], level_color(lv["level"]))
                                         for lv in sorted(r.by_level, key=lambda x: rp._level_order(x[rp.LEVEL]))])):
        out.append(f"<div><h3>{heading}</h3>{bar_chart(chart_id, rows)}</div>")
    out.append("</div></section>")
    out.append(f'<section id="error-templates"><h2>Top error templates</h2><p class="sub">Mined from '
               f"{r.error_records} records of level err or worse.</p>")
    out.append(_templates("table-error-templates", r.error_templates))
    out.append(f'</section><section id="new-templates"><h2>New templates</h2><p class="sub">First seen in '
               f"the period (looked for since {esc(rp.iso(r.baseline_since_ns))}).</p>")
    out.append(_templates("table-new-templates", r.new_templates))
    out.append('</section><section id="anomalies"><h2>Anomalies</h2>')
    if r.anomalies:
        out.append(f'<p class="sub">{r.anomalies} anomaly records (source detect).</p>')
        out.append(_table("table-anomalies", ["time", "host", "app", "level", "kind", "message"],
                          [[a["time"], a["host"], a["app"], a["level"], a["kind"], a["message"]]
                           for a in r.anomaly_records],
                          mono={5}, dates={0}))
    else:
        out.append('<p class="none">None.</p>')
    out.append('</section><section id="drops"><h2>Drops and rate limits</h2>')
    if r.drops or r.rate_limits:
        drop_rows: list[list[Any]] = [[d["host"], d["kind"], where_text(d["where"]), d["records"], d["notices"]]
                                      for d in r.drops]
        drop_rows += [[d["host"], "rate limit", where_text(d["where"]), d["records"], d["notices"]]
                 for d in r.rate_limits]
        out.append(_table("table-drops", ["host", "what", "where", "records", "notices"], drop_rows, {3, 4}))
    else:
        out.append('<p class="none">None.</p>')
    s = r.spool
    out.append('</section><section id="spool"><h2>Spool</h2>')
    out.append(_table("table-spool", ["segments", "frames", "records", "bytes on disk", "chunk bytes",
                                      "compression", "first record", "last record"],
                      [[f"{s.get('segments', 0)} ({s.get('sealed', 0)} sealed)", s.get("frames", 0),
                        s.get("records", 0), f"{s.get('bytes_on_disk', 0)} ({size(s.get('bytes_on_disk', 0))})",
                        s.get("chunk_bytes", 0), f"{s.get('compression_ratio', 0):.2f}:1", s.get("first"),
                        s.get("last")]], {1, 2, 4}))
    out.append('</section><section id="forwarding"><h2>Forwarding</h2>')
    if r.forwarding:
        out.append(_table("table-forwarding", ["destination", "acked seq", "spool's last seq",
                                               "lag (records)", "lag (s)"],
                          [[f["destination"], f["acked_seq"], f["last_seq"], f["lag_records"],
                            f.get("error") or number(f["lag_seconds"])] for f in r.forwarding], {1, 2, 3, 4}))
    else:
        out.append('<p class="none">No destinations.</p>')
    out.append('</section><section id="apps"><h2>Supervised apps</h2>')
    if r.apps:
        out.append(_table("table-apps", ["host", "app", "started", "restarts", "exits", "failed exits",
                                         "gave up", "spawn errors"],
                          [[a["host"], a["app"], a["started"], a["restarts"], a["exits"], a["failed_exits"],
                            a["gave_up"], a["spawn_errors"]] for a in r.apps], {2, 3, 4, 5, 6, 7}))
    else:
        out.append('<p class="none">None in the period.</p>')
    out.append("</section>")
    if r.damage:
        out.append('<section id="damage"><h2>Damage</h2><ul>' + "".join(f"<li>{esc(d)}</li>" for d in r.damage)
                   + "</ul></section>")
    out.append("</body></html>\n")
    return "".join(out)


def esc_label(value: Any) -> str:
    """A group value as a chart label (text, not yet escaped)."""
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _templates(table_id: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="none">None.</p>'
    return _table(table_id, ["count", "app", "template", "first", "last"],
                  [[t["count"], t["app"], t["template"], t["first"], t["last"]] for t in rows], {0}, {2}, {3, 4})
