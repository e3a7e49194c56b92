"""A record as JSON: what the API, the tail and the viewer show."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from hostlog.http.records import record_json
from hostlog.record import Record


def test_a_record_with_a_unit_text_and_binary_fields() -> None:
    record = Record(ts=1_764_767_966_123_456_789, msg="GET / 200", host="web-1", source="journald", app="nginx",
                    pid=812, severity=4, fields={"_SYSTEMD_UNIT": "nginx.service", "RAW": b"\xff\x00",
                                                 "TAG": ["a", b"b"]})
    out = record_json(record, "node:7", {"instance": "i-1", "host": "not-over-the-record's"})
    assert out == {"ts": "2025-12-03T13:19:26.123456Z", "ts_ns": 1_764_767_966_123_456_789,
                   "level": "warning", "priority": 4, "host": "web-1", "unit": "nginx.service",
                   "identifier": "nginx", "pid": 812, "source": "journald", "message": "GET / 200",
                   "fields": {"_SYSTEMD_UNIT": "nginx.service", "RAW": {"base64": "/wA="}, "TAG": ["a", "b"]},
                   "cursor": "node:7", "instance": "i-1"}


def test_without_a_unit_the_app_is_the_unit_and_times_before_1970_work() -> None:
    out = record_json(Record(ts=-1_500_000_000, msg=b"\xfe", app="cron"), "n:1")
    assert out["unit"] == "cron" and out["ts"] == "1969-12-31T23:59:58.500000Z"
    assert out["message"] == {"base64": base64.b64encode(b"\xfe").decode()}


@given(st.binary(max_size=40), st.integers(min_value=-2**62, max_value=2**62), st.integers(0, 7))
def test_every_record_is_json_and_its_message_comes_back(msg: bytes, ts: int, severity: int) -> None:
    out = json.loads(json.dumps(record_json(Record(ts=ts, msg=msg, severity=severity), "n:1")))
    message = out["message"]
    back = base64.b64decode(message["base64"]) if isinstance(message, dict) else message.encode()
    assert back == msg and out["ts_ns"] == ts and out["priority"] == severity
