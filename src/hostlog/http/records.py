"""One record as the native API, the live tail and the viewer show it: a JSON
object (docs/http.md, "Records as JSON").

    {"ts": "2026-12-03T13:19:26.123456Z", "ts_ns": 1764767966123456789,
     "level": "info", "priority": 6, "host": "web-1", "unit": "nginx",
     "identifier": "nginx", "pid": 812, "source": "syslog",
     "message": "GET / 200", "fields": {"SYSLOG_FACILITY": "3", ...},
     "cursor": "<node id>:<n>", "instance": "i-1", "region": "eu"}

``unit`` is the systemd unit when the record has one, else the app;
``fields`` are the record's own fields (a value that is not UTF-8 is given as
``{"base64": "..."}``, a repeated field as a list); ``cursor`` is the
record's position in this node's spool (``follow.position_cursor``); the
``[agent] tags`` are added as top-level keys (never over a key above).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from hostlog.record import SEVERITY_NAMES, FieldValue, Record

__all__ = ["record_json"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


_SECOND_TEXT: dict[int, str] = {}  # "YYYY-MM-DDThh:mm:ss" of a second: records come in runs of one second


def _iso(ts_ns: int) -> str:
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        if len(_SECOND_TEXT) >= 4096:
            _SECOND_TEXT.clear()
        stamp = (dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds >= 0
                 else _EPOCH + dt.timedelta(seconds=seconds))
        text = _SECOND_TEXT[seconds] = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ns // 1000:06d}Z"


def _value(value: FieldValue) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    return [_value(v) for v in value]


def record_json(record: Record, cursor: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON object of ``record`` at position ``cursor``."""
    fields = record.fields
    unit = fields.get("_SYSTEMD_UNIT") if fields else None
    out: dict[str, Any] = {
        "ts": _iso(record.ts),
        "ts_ns": record.ts,
        "level": SEVERITY_NAMES[record.severity] if 0 <= record.severity < 8 else str(record.severity),
        "priority": record.severity,
        "host": record.host,
        "unit": unit if isinstance(unit, str) and unit else record.app,
        "identifier": record.app,
        "pid": record.pid,
        "source": record.source,
        "message": _value(record.msg),
        "fields": {name: _value(v) for name, v in fields.items()} if fields else {},
        "cursor": cursor,
    }
    if tags:
        for name, value in tags.items():
            out.setdefault(name, value)
    return out
