"""The OTLP/HTTP logs output (forward/otlp.py): what a record becomes in an
ExportLogsServiceRequest (decoded back with opentelemetry-proto), the JSON
and gzip bodies, and how responses are handled (order of acks, retries,
skips, refusals), with the HTTP request replaced by a script."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import lz4.block
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from hostlog import __version__
from hostlog.chunk import encode_columns
from hostlog.config.endpoints import Endpoint
from hostlog.forward import otlp
from hostlog.forward.otlp import OtlpOutput, OtlpStats, build_request, encode_request, retry_after
from hostlog.forward.output import Identity, Refused
from hostlog.forward.protocol import Chunk
from hostlog.record import Columns, Record

T = TypeVar("T")

ORIGIN = "0123456789abcdef0123456789abcdef"
TS = 1_764_756_000_123_456_789


def plain(value: AnyValue) -> Any:
    """An AnyValue as the Python value it holds."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attrs(record: LogRecord) -> dict[str, Any]:
    keys = [kv.key for kv in record.attributes]
    assert len(keys) == len(set(keys)), f"duplicate attribute keys: {keys}"
    return {kv.key: plain(kv.value) for kv in record.attributes}


def decode(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    return request


def flat(request: ExportLogsServiceRequest) -> list[tuple[dict[str, Any], LogRecord]]:
    """(resource attributes, record) for every record, in request order."""
    out: list[tuple[dict[str, Any], LogRecord]] = []
    for rl in request.resource_logs:
        resource = {kv.key: plain(kv.value) for kv in rl.resource.attributes}
        assert len(rl.scope_logs) == 1
        scope = rl.scope_logs[0]
        assert (scope.scope.name, scope.scope.version) == ("hostlog", __version__)
        out.extend((resource, r) for r in scope.log_records)
    return out


def chunk_of(records: list[Record]) -> Chunk:
    raw = encode_columns(Columns.of(records).columns)
    return Chunk(ORIGIN, records[0].seq, len(records), len(raw), lz4.block.compress(raw, store_size=False))


def rows(first: int, n: int) -> list[Record]:
    return [Record(ts=TS + i, msg=f"line {i}", host="web-1", source="syslog", app="shop", origin=ORIGIN, seq=i)
            for i in range(first, first + n)]


# --- the mapping --------------------------------------------------------------------

def test_every_column_and_field_maps_to_its_place() -> None:
    records = [
        Record(ts=TS, msg="disk full", host="web-1", source="journal", app="nginx", pid=4242, severity=3,
               facility=4, fields={"_SYSTEMD_UNIT": "nginx.service", "RAW": b"\xff\x00",
                                   "MULTI": ["a", b"\xfe"], "EMPTY": []},
               origin=ORIGIN, seq=17),
        Record(ts=TS + 1, msg=b"\xffnot utf-8", host="web-1", source="syslog", app="nginx", pid=None,
               severity=6, facility=None, fields={}, origin=ORIGIN, seq=18),
    ]
    request = decode(encode_request(build_request(Columns.of(records)), "protobuf"))
    (res1, r1), (res2, r2) = flat(request)
    assert len(request.resource_logs) == 1  # same host and app: one resource
    assert res1 == res2 == {"host.name": "web-1", "service.name": "nginx"}

    assert (r1.time_unix_nano, r1.observed_time_unix_nano) == (TS, TS)
    assert (r1.severity_number, r1.severity_text) == (17, "err")
    assert r1.body.string_value == "disk full"
    assert attrs(r1) == {
        "_SYSTEMD_UNIT": "nginx.service", "RAW": b"\xff\x00", "MULTI": ["a", b"\xfe"], "EMPTY": [],
        "log.source": "journal", "process.pid": 4242, "syslog.facility": 4,
        "hostlog.origin": ORIGIN, "hostlog.seq": 17,
    }
    # typed as OTLP types them, not as strings
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in r1.attributes}
    assert kinds["process.pid"] == kinds["syslog.facility"] == kinds["hostlog.seq"] == "int_value"
    assert kinds["RAW"] == "bytes_value" and kinds["EMPTY"] == "array_value"

    assert (r2.time_unix_nano, r2.severity_number, r2.severity_text) == (TS + 1, 9, "info")
    assert r2.body.WhichOneof("value") == "bytes_value" and r2.body.bytes_value == b"\xffnot utf-8"
    # no pid, no facility: no attribute for them
    assert attrs(r2) == {"log.source": "syslog", "hostlog.origin": ORIGIN, "hostlog.seq": 18}
    assert not r1.trace_id and not r1.span_id


def test_syslog_severities_map_as_the_otel_data_model_says() -> None:
    records = [Record(ts=TS, msg="m", severity=s, origin=ORIGIN, seq=s + 1) for s in range(8)]
    records.append(Record(ts=TS, msg="m", severity=12, origin=ORIGIN, seq=9))  # not a syslog severity
    got = [(r.severity_number, r.severity_text) for _, r in flat(build_request(Columns.of(records)))]
    assert got == [(21, "emerg"), (19, "alert"), (18, "crit"), (17, "err"), (13, "warning"), (10, "notice"),
                   (9, "info"), (5, "debug"), (0, "12")]


def test_one_resource_per_host_and_app_in_the_order_they_first_appear() -> None:
    pairs = [("a", "x"), ("b", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("", "")]
    records = [Record(ts=TS + i, msg=str(i), host=h, app=a, origin=ORIGIN, seq=i + 1)
               for i, (h, a) in enumerate(pairs)]
    request = build_request(Columns.of(records))
    resources = [{kv.key: plain(kv.value) for kv in rl.resource.attributes} for rl in request.resource_logs]
    assert resources == [{"host.name": "a", "service.name": "x"}, {"host.name": "b", "service.name": "x"},
                         {"host.name": "a", "service.name": "y"}, {}]  # (empty host and app: left out)
    bodies = [[r.body.string_value for r in rl.scope_logs[0].log_records] for rl in request.resource_logs]
    assert bodies == [["0", "2"], ["1", "4"], ["3"], ["5"]]


def test_a_field_named_like_an_identity_attribute_gives_way_to_the_record_s_own() -> None:
    r = Record(ts=TS, msg="m", source="files", pid=7, facility=1, origin=ORIGIN, seq=99,
               fields={"hostlog.seq": "1", "hostlog.origin": "forged", "process.pid": "8", "keep": "yes"})
    (_, record), = flat(build_request(Columns.of([r])))
    assert attrs(record) == {"keep": "yes", "log.source": "files", "process.pid": 7, "syslog.facility": 1,
                             "hostlog.origin": ORIGIN, "hostlog.seq": 99}


def test_strings_that_are_not_utf_8_go_as_bytes_and_negative_times_as_zero() -> None:
    r = Record(ts=-5, msg="ok", fields={"bad": "x\udcff", "bad\udcfekey": "v"}, origin=ORIGIN, seq=1)
    (_, record), = flat(decode(encode_request(build_request(Columns.of([r])), "protobuf")))
    assert record.time_unix_nano == 0
    got = attrs(record)
    assert got["bad"] == b"x\xff"
    assert got["bad\ufffdkey"] == "v"


def test_json_is_otlp_json_and_says_the_same_as_the_protobuf() -> None:
    records = [Record(ts=TS, msg="hello", host="h", app="a", source="s", pid=1, severity=4, facility=3,
                      fields={"k": "v", "b": b"\x01\x02"}, origin=ORIGIN, seq=5),
               Record(ts=TS, msg=b"\xff", host="h", app="a", origin=ORIGIN, seq=6)]
    request = build_request(Columns.of(records))
    body = encode_request(request, "json")
    doc = json.loads(body)
    record = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    # lowerCamelCase keys, enums as integers (OTLP/JSON), 64-bit integers as decimal strings
    assert record["timeUnixNano"] == str(TS) and record["observedTimeUnixNano"] == str(TS)
    assert record["severityNumber"] == 13 and record["severityText"] == "warning"
    assert record["body"] == {"stringValue": "hello"}
    assert {"key": "process.pid", "value": {"intValue": "1"}} in record["attributes"]
    assert {"key": "b", "value": {"bytesValue": "AQI="}} in record["attributes"]
    assert "traceId" not in record and "spanId" not in record
    assert doc["resourceLogs"][0]["scopeLogs"][0]["scope"] == {"name": "hostlog", "version": __version__}
    assert doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["body"] == {"bytesValue": "/w=="}
    back = json_format.Parse(body, ExportLogsServiceRequest())
    assert back == request == decode(encode_request(request, "protobuf"))


# --- the output, its request replaced by a script ----------------------------------

Answer = tuple[int, Mapping[str, str], bytes]


class Scripted(OtlpOutput):
    """An OtlpOutput whose HTTP request is ``answer(attempt, body)``; waits are recorded, not slept."""

    def __init__(self, answer: Callable[[int, bytes], Awaitable[Answer]], *, path: str | None = None,
                 encoding: otlp.Encoding = "protobuf", gzip: bool = False) -> None:
        super().__init__(Endpoint("http", "127.0.0.1", 4318, path), Identity(ORIGIN, "web-1"), None,
                         encoding=encoding, gzip=gzip, headers={"X-Scope-OrgID": "tenant-1"},
                         stats=OtlpStats())
        self.answer = answer
        self.bodies: list[bytes] = []
        self.waits: list[float] = []
        self._sleep = self._record_wait

    async def _record_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def _post(self, body: bytes) -> Answer:
        self.bodies.append(body)
        return await self.answer(len(self.bodies) - 1, body)

    def seqs(self, attempt: int) -> list[int]:
        body = self.bodies[attempt]
        body = gzip.decompress(body) if self.gzip else body
        return [attrs(r)["hostlog.seq"] for _, r in flat(decode(body))]


def ok(status: int = 200, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
    return status, headers or {}, body


def answers(*script: Answer) -> Callable[[int, bytes], Awaitable[Answer]]:
    """The script's answers in turn (the last one again once it runs out)."""
    async def answer(attempt: int, body: bytes) -> Answer:
        return script[min(attempt, len(script) - 1)]
    return answer


async def collect(out: OtlpOutput, n: int, timeout: float = 5.0) -> list[int]:
    got: list[int] = []

    async def take() -> None:
        async for seq in out.acks():
            got.append(seq)
            if len(got) == n:
                return
    await asyncio.wait_for(take(), timeout)
    return got


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_url_headers_and_gzip_body() -> None:
    async def main() -> None:
        out = Scripted(answers(ok()), gzip=True)
        assert out.url == "http://127.0.0.1:4318/v1/logs"
        assert out.headers["Content-Type"] == "application/x-protobuf"
        assert out.headers["Content-Encoding"] == "gzip"
        assert out.headers["X-Scope-OrgID"] == "tenant-1"
        await out.send(chunk_of(rows(1, 3)))
        assert await collect(out, 1) == [3]
        assert out.seqs(0) == [1, 2, 3]  # (gunzipped, then decoded)
        await out.close()
        custom = Scripted(answers(ok()), path="/otlp/v1/logs", encoding="json")
        assert custom.url == "http://127.0.0.1:4318/otlp/v1/logs"
        assert custom.headers["Content-Type"] == "application/json" and "Content-Encoding" not in custom.headers
        await custom.send(chunk_of(rows(1, 2)))
        assert await collect(custom, 1) == [2]
        assert json.loads(custom.bodies[0])["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["body"] == \
            {"stringValue": "line 2"}
        await custom.close()
    run(main())


def test_acks_come_in_order_when_requests_finish_out_of_order() -> None:
    async def main() -> None:
        gates = {first: asyncio.Event() for first in (1, 11, 21)}

        async def answer(attempt: int, body: bytes) -> Answer:
            (_, first), *_ = flat(decode(body))
            await gates[attrs(first)["hostlog.seq"]].wait()
            return ok()

        out = Scripted(answer)
        got: list[int] = []

        async def take() -> None:
            async for seq in out.acks():
                got.append(seq)

        taker = asyncio.create_task(take())
        for first in (1, 11, 21):
            await out.send(chunk_of(rows(first, 10)))
        gates[21].set()
        gates[11].set()
        await asyncio.sleep(0.2)
        assert got == []  # the first chunk is not done: nothing after it is acked
        assert len(out.bodies) == 3  # (all three in flight at once)
        gates[1].set()
        for _ in range(100):
            if len(got) == 3:
                break
            await asyncio.sleep(0.01)
        assert got == [10, 20, 30]
        taker.cancel()
        await out.close()
    run(main())


def test_429_and_503_send_the_same_request_again_after_retry_after_or_a_backoff() -> None:
    async def main() -> None:
        out = Scripted(answers(ok(429, {"Retry-After": "1"}), ok(503), ok(502), ok(200)))
        await out.send(chunk_of(rows(1, 5)))
        assert await collect(out, 1) == [5]
        assert len(out.bodies) == 4 and len(set(out.bodies)) == 1  # the same request each time
        assert out.waits[0] == 1.0  # Retry-After
        assert 0.5 <= out.waits[1] <= 1.0 and 1.0 <= out.waits[2] <= 2.0  # 0.5 s doubling, jittered
        assert out.stats.retries == 3 and out.stats.requests == 1
        await out.close()
    run(main())


def test_the_backoff_stops_doubling_at_30_seconds() -> None:
    async def main() -> None:
        out = Scripted(answers(*[ok(504)] * 10, ok()))
        await out.send(chunk_of(rows(1, 1)))
        assert await collect(out, 1) == [1]
        assert len(out.waits) == 10
        assert all(15.0 <= w <= 30.0 for w in out.waits[7:]), out.waits
        await out.close()
    run(main())


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = 1_764_756_000.0
    assert retry_after("1") == 1.0
    assert retry_after(" 7 ") == 7.0
    assert retry_after("3600") == otlp.RETRY_AFTER_MAX_S
    assert retry_after(email.utils.formatdate(now + 5, usegmt=True), now=now) == 5.0
    assert retry_after(email.utils.formatdate(now - 50, usegmt=True), now=now) == 0.0
    assert retry_after("soon") is None and retry_after("") is None and retry_after(None) is None


def test_a_400_is_logged_with_its_body_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Scripted:
        out = Scripted(answers(ok(400, {}, b"field 'x' is not valid\n"), ok()))
        await out.send(chunk_of(rows(1, 4)))
        await out.send(chunk_of(rows(5, 4)))
        assert await collect(out, 2) == [4, 8]  # the skipped chunk is acknowledged: the rest goes on
        await out.close()
        return out

    with caplog.at_level(logging.ERROR, logger="hostlog.forward.otlp"):
        out = run(main())
    assert len(out.bodies) == 2  # not sent again
    assert (out.stats.skipped_chunks, out.stats.skipped_records, out.stats.requests) == (1, 4, 1)
    assert any("answered 400" in m and "field 'x' is not valid" in m and "4 records" in m
               for m in caplog.messages), caplog.messages


def test_a_413_sends_the_chunk_again_in_halves() -> None:
    async def main() -> None:
        async def answer(attempt: int, body: bytes) -> Answer:
            return ok(413) if len(flat(decode(body))) > 2 else ok()

        out = Scripted(answer)
        await out.send(chunk_of(rows(1, 5)))
        assert await collect(out, 1) == [5]
        assert [out.seqs(i) for i in range(len(out.bodies))] == [[1, 2, 3, 4, 5], [1, 2], [3, 4, 5], [3], [4, 5]]
        assert out.stats.skipped_records == 0
        await out.close()
    run(main())


@pytest.mark.parametrize(("status", "rejected"), [(401, True), (403, True), (404, True), (500, False),
                                                  (301, False)])
def test_other_answers_refuse_and_the_chunk_is_not_acked(status: int, rejected: bool) -> None:
    async def main() -> None:
        out = Scripted(answers(ok(status, {}, b"no")))
        await out.send(chunk_of(rows(1, 2)))
        with pytest.raises(Refused) as info:
            await collect(out, 1)
        assert info.value.rejected is rejected
        assert f"answered {status}" in str(info.value)
        assert len(out.bodies) == 1
        await out.close()
    run(main())


def test_a_partial_success_is_counted_and_the_chunk_acked(caplog: pytest.LogCaptureFixture) -> None:
    response = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
        rejected_log_records=2, error_message="too old"))

    async def main() -> tuple[OtlpOutput, OtlpOutput]:
        out = Scripted(answers(ok(200, {"Content-Type": "application/x-protobuf"}, response.SerializeToString())))
        await out.send(chunk_of(rows(1, 3)))
        assert await collect(out, 1) == [3]
        await out.close()
        as_json = json_format.MessageToJson(response).encode()
        out_json = Scripted(answers(ok(200, {"Content-Type": "application/json; charset=utf-8"}, as_json)),
                            encoding="json")
        await out_json.send(chunk_of(rows(1, 3)))
        assert await collect(out_json, 1) == [3]
        await out_json.close()
        return out, out_json

    with caplog.at_level(logging.WARNING, logger="hostlog.forward.otlp"):
        result = run(main())
    for out in result:
        assert out.stats.rejected_records == 2 and out.stats.requests == 1
    assert sum("rejected 2 of its records: too old" in m for m in caplog.messages) == 2


def test_a_failed_connection_ends_a_session_that_never_delivered_and_is_retried_in_one_that_did() -> None:
    async def main() -> None:
        down = Scripted(answers(ok()))

        async def refused(attempt: int, body: bytes) -> Answer:
            raise ConnectionRefusedError(111, "Connection refused")
        down.answer = refused
        await down.send(chunk_of(rows(1, 1)))
        with pytest.raises(ConnectionError, match="refused"):
            await collect(down, 1)
        assert down._pending[0][1].exception().__cause__.errno == 111  # type: ignore[union-attr]
        assert len(down.bodies) == 1  # the sender's backoff and failover take over
        await down.close()

        script: list[Answer | BaseException] = [ok(), ConnectionResetError(104, "reset"), TimeoutError(), ok()]

        async def flaky(attempt: int, body: bytes) -> Answer:
            step = script[attempt]
            if isinstance(step, BaseException):
                raise step
            return step
        up = Scripted(flaky)
        # one after the other: the script's attempts are counted across requests
        await up.send(chunk_of(rows(1, 1)))
        assert await collect(up, 1) == [1]
        await up.send(chunk_of(rows(2, 1)))
        assert await collect(up, 1) == [2]
        assert up.seqs(1) == up.seqs(2) == up.seqs(3) == [2]
        assert up.stats.retries == 2

        async def slow(attempt: int, body: bytes) -> Answer:
            raise TimeoutError()
        up.answer = slow
        up._delivered = False
        await up.send(chunk_of(rows(3, 1)))
        with pytest.raises(ConnectionError, match="TimeoutError"):  # (says what, when the error says nothing)
            await collect(up, 1)
        up._pending.clear()
        up._delivered = True

        async def gone(attempt: int, body: bytes) -> Answer:
            raise ConnectionRefusedError(111, "Connection refused")
        up.answer = gone
        up.bodies.clear()
        await up.send(chunk_of(rows(4, 1)))
        with pytest.raises(ConnectionError):
            await collect(up, 1)
        assert len(up.bodies) == otlp.CONNECT_ATTEMPTS  # then the session ends
        await up.close()
    run(main())


def test_close_cancels_what_is_in_flight() -> None:
    async def main() -> None:
        never = asyncio.Event()

        async def hang(attempt: int, body: bytes) -> Answer:
            await never.wait()
            return ok()
        out = Scripted(hang)
        await out.open()
        await out.send(chunk_of(rows(1, 1)))
        await asyncio.sleep(0.05)
        tasks = [task for _, task in out._pending]
        await asyncio.wait_for(out.close(), 5)
        assert all(task.cancelled() for task in tasks)
        assert out.session is None
    run(main())
