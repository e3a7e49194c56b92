"""/api/v1/logs: its parsers (pure, with properties), and its handlers against
an in-process server on a real spool (tests/support/http.py)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import json
import re
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.cli import query_cmd
from hostlog.collectors.ratelimit import TokenBucket
from hostlog.http import api, ingest
from hostlog.http.api import MAX_LIMIT, NEXT_CURSOR_HEADER, Paging, Quotas, paging_from_params, wants_json
from hostlog.http.ingest import field_name, parse_body, parse_level, parse_time
from hostlog.http.keys import KeyStore, keys_path
from hostlog.http.params import ParamError
from hostlog.http.records import record_json
from hostlog.query import engine
from hostlog.query.run import select
from hostlog.record import Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.integration.helpers import wait_until
from tests.support.http import ServedSpool

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BASE_NS = (BASE - EPOCH) // dt.timedelta(microseconds=1) * 1000


def run(coro):
    return asyncio.run(coro)


# -- times ------------------------------------------------------------------------------

def _ns(stamp: dt.datetime) -> int:
    return (stamp - EPOCH) // dt.timedelta(microseconds=1) * 1000


@given(st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2190, 12, 30)),
       st.integers(0, 999_999_999), st.integers(-23 * 60 - 59, 23 * 60 + 59),
       st.integers(0, 9), st.sampled_from(["T", "t", " "]))
def test_an_rfc3339_time_is_read_to_the_nanosecond(when, nanos, offset_min, digits, sep) -> None:
    when = when.replace(microsecond=0)
    fraction = f"{nanos:09d}"[:digits]
    if offset_min == 0:
        zone = "Z"
    else:
        sign = "-" if offset_min < 0 else "+"
        zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    text = when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{fraction}" if digits else "") + zone
    local = when.replace(tzinfo=dt.UTC) - dt.timedelta(minutes=offset_min)
    expected = _ns(local) + (int(fraction.ljust(9, "0")) if digits else 0)
    assert parse_time(text) == expected


@given(st.integers(0, 4_000_000_000), st.integers(0, 999_999_999))
def test_an_epoch_number_is_seconds_ms_us_or_ns_by_its_size(seconds, nanos) -> None:
    ns = seconds * 10**9 + nanos
    assert parse_time(seconds) == seconds * 10**9
    assert parse_time(str(seconds)) == seconds * 10**9
    if seconds >= 10**8:  # from 1973 on, every unit is told apart by its size
        assert parse_time(seconds * 1000 + nanos // 10**6) == seconds * 10**9 + nanos // 10**6 * 10**6
        assert parse_time(seconds * 10**6 + nanos // 1000) == ns // 1000 * 1000
        assert parse_time(ns) == ns
        assert parse_time(float(seconds)) == seconds * 10**9
    assert parse_time(f"{seconds}.{nanos:09d}") == ns


@given(st.one_of(st.text(max_size=40), st.floats(), st.integers(), st.none(), st.booleans(),
                 st.lists(st.integers(), max_size=2)))
def test_any_time_value_is_a_time_in_range_or_a_value_error(value) -> None:
    try:
        ns = parse_time(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert ingest.MIN_TS <= ns <= ingest.MAX_TS


@pytest.mark.parametrize("bad", ["2026-02-30T00:00:00Z", "2026-01-01T00:00:60Z", "2026-01-01T00:00:00",
                                 "2026-01-01T00:00:00+24:00", "1800-01-01T00:00:00Z", "yesterday",
                                 "1e99999999", True, float("nan"), -(10**30)])
def test_a_bad_time_is_refused(bad) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)


def test_levels_are_names_or_numbers() -> None:
    assert [parse_level(v) for v in ("emerg", "ALERT", "crit", "error", "warn", "notice", "info", "debug")] \
        == list(range(8))
    assert parse_level(3) == parse_level("3") == parse_level(" Err ") == 3
    assert parse_level("fatal") == 2 and parse_level("trace") == 7
    for bad in (8, -1, "loud", True, 2.5, None):
        with pytest.raises(ValueError):
            parse_level(bad)


# -- field names ----------------------------------------------------------------------

FIELD_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


@given(st.text(max_size=80))
def test_every_key_becomes_a_journal_field_name_a_client_cannot_forge(key) -> None:
    name = field_name(key)
    assert FIELD_RE.fullmatch(name), name  # valid for journald, and never a trusted _NAME
    assert name not in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY")
    assert field_name(name) == name or name.startswith("FIELD_")


def test_field_names_as_documented() -> None:
    assert field_name("user-id") == "USER_ID"
    assert field_name("_SYSTEMD_UNIT") == "SYSTEMD_UNIT"
    assert field_name("__CURSOR") == "CURSOR"
    assert field_name("priority") == "FIELD_PRIORITY"
    assert field_name("2fa") == "FIELD_2FA"
    assert field_name("") == field_name("___") == "FIELD_"


# -- lines -> records -------------------------------------------------------------------

def _parse(body: bytes, now_ns: int = 42):
    return parse_body(body, hostname="here", key="shipper", now_ns=now_ns)


def test_a_line_maps_onto_the_record() -> None:
    line = {"ts": "2026-01-01T00:00:01.5Z", "level": "warn", "host": "web-1", "app": "shop", "pid": "812",
            "source": "api", "message": "paid", "fields": {"order-id": "A1", "tags": ["x", "y"]},
            "user": "bob", "amount": 12.5, "meta": {"a": 1}, "nothing": None}
    parsed = _parse(json.dumps(line).encode())
    assert not parsed.errors
    (r,) = parsed.records
    assert (r.ts, r.severity, r.host, r.app, r.pid, r.source, r.msg) == \
        (BASE_NS + 1_500_000_000, 4, "web-1", "shop", 812, "api", "paid")
    assert r.fields == {"ORDER_ID": "A1", "TAGS": ["x", "y"], "USER": "bob", "AMOUNT": "12.5",
                        "META": '{"a":1}', "NOTHING": "null", "_HTTP_KEY": "shipper"}


def test_defaults_and_aliases() -> None:
    parsed = _parse(b'{"msg": "a"}\r\n{"log": "b", "hostname": "h2", "severity": 3}\n'
                    b'{"message": "c", "msg": "also", "time": 1767225600}\n')
    a, b, c = parsed.records
    assert (a.ts, a.host, a.source, a.severity, a.app, a.pid) == (42, "here", "http", 6, "", None)
    assert (b.msg, b.host, b.severity) == ("b", "h2", 3)
    assert c.msg == "c" and c.ts == BASE_NS and c.fields["MSG"] == "also"  # a second message is kept


@pytest.mark.parametrize("line, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "a JSON object, not a list"),
    (b'{"level": "info"}', "no message"),
    (b'{"message": "x", "ts": "soon"}', "not RFC 3339"),
    (b'{"message": "x", "level": "loud"}', "unknown level"),
    (b'{"message": "x", "source": "audit"}', "the agent's own"),
    (b'{"message": "x", "source": "hostlog"}', "the agent's own"),
    (b'{"message": "x", "source": "has space"}', "is not a name"),
    (b'{"message": "x", "pid": -3}', "not a process id"),
    (b'{"message": "x", "fields": [1]}', "fields is an object"),
    (b'{"message": {"base64": "!!"}}', "bad base64"),
    (b"\xff\xfe{", "not JSON"),
    (b"[" * 100_000, "not JSON"),
])
def test_a_line_that_cannot_be_read_is_kept_raw_with_a_parse_error(line, why) -> None:
    parsed = _parse(b'{"message": "fine"}\n' + line + b'\n{"message": "fine too"}\n')
    ok, bad, ok2 = parsed.records
    assert ok.msg == "fine" and ok2.msg == "fine too"
    assert why in bad.fields["parse_error"]
    assert bad.msg == (line.decode() if line.isascii() else line)
    assert (bad.ts, bad.host, bad.source, bad.fields["_HTTP_KEY"]) == (42, "here", "http", "shipper")
    assert parsed.errors == [(2, bad.fields["parse_error"])]
    assert parsed.line_numbers == [1, 2, 3]


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_any_body_gives_one_record_per_line_that_is_not_blank(lines) -> None:
    body = b"\n".join(lines)
    parsed = _parse(body)
    expected = [i + 1 for i, line in enumerate(body.split(b"\n")) if line.strip()]
    assert parsed.line_numbers == expected
    assert all(r.fields["_HTTP_KEY"] == "shipper" for r in parsed.records)
    assert len(parsed.errors) <= len(parsed.records)


_names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10)
_texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_values = st.one_of(_texts, st.binary(max_size=8).filter(lambda b: not _utf8(b)),
                    st.lists(_texts, min_size=2, max_size=3))


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
        return True
    except UnicodeDecodeError:
        return False


@given(st.integers(ingest.MIN_TS // 1000, ingest.MAX_TS // 1000), st.one_of(_texts, st.binary(max_size=12)),
       st.integers(0, 7), _names, _names, st.one_of(st.none(), st.integers(0, 2**31 - 1)),
       st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True), _values, max_size=4))
def test_a_record_the_api_wrote_reads_back_as_the_same_record(us, msg, severity, host, app, pid, fields) -> None:
    """What GET writes, POSTed again, is the record it was (codec round trip)."""
    fields = {k: v for k, v in fields.items() if k not in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER",
                                                            "SYSLOG_FACILITY")}
    if isinstance(msg, bytes) and _utf8(msg):
        msg = msg.decode()
    record = Record(ts=us * 1000, msg=msg, host=host, source="api", app=app, pid=pid, severity=severity,
                    fields=dict(fields))
    line = json.dumps(record_json(record, "node:7", {"region": "eu"}))
    (back,) = _parse(line.encode()).records
    assert (back.ts, back.msg, back.host, back.source, back.app, back.pid, back.severity) == \
        (record.ts, record.msg, record.host, record.source, record.app, record.pid, record.severity)
    assert back.fields == {**fields, "CURSOR": "node:7", "REGION": "eu", "_HTTP_KEY": "shipper"}


# -- parameters ---------------------------------------------------------------------------

def test_paging_parameters() -> None:
    assert paging_from_params([]) == Paging()
    assert paging_from_params([("n", "")]).lines == 10
    assert paging_from_params([("n", "all")]).lines is None
    got = paging_from_params([("n", "5"), ("reverse", ""), ("cursor", "a:1"), ("limit", "20"), ("unit", "x")])
    assert got == Paging(lines=5, reverse=True, cursor="a:1", limit=20)
    for bad, name in ([("limit", "x")], "limit"), ([("limit", str(MAX_LIMIT + 1))], "limit"), \
                     ([("n", "-1")], "n"), ([("cursor", "")], "cursor"), ([("n", "1"), ("n", "2")], "n"):
        with pytest.raises(ParamError, match=repr(name)):
            paging_from_params(bad)


@pytest.mark.parametrize("accept, as_object", [
    ("", False), ("*/*", False), ("application/json", True), ("application/x-ndjson", False),
    ("application/x-ndjson, application/json", False), ("application/json, application/x-ndjson", True),
    ("application/x-ndjson;q=0.5, application/json", True), ("application/json;q=0", False),
    ("text/html, application/json;q=0.9", True), ("application/json;q=x", False),
])
def test_accept_chooses_the_form(accept, as_object) -> None:
    assert wants_json(accept) is as_object


# -- quotas ------------------------------------------------------------------------------

@given(st.lists(st.tuples(st.sampled_from(["k1", "k2"]), st.lists(st.sampled_from("abc"), max_size=12),
                          st.floats(0, 3)), max_size=25))
def test_quotas_never_grant_more_than_the_buckets_hold(requests) -> None:
    rate_k, burst_k, rate_s, burst_s = 2.0, 10.0, 3.0, 6.0
    quotas = Quotas(per_key=(rate_k, burst_k), per_source=(rate_s, burst_s))
    now = 0.0
    granted_k: dict[str, int] = {}
    granted_s: dict[str, int] = {}
    for key, sources, step in requests:
        now += step
        got = quotas.admit(key, sources, now)
        assert 0 <= got.allowed <= len(sources)
        if got.allowed < len(sources):
            assert got.limit in ("key", "source") and got.retry_after >= 1
            assert (got.source == sources[got.allowed]) == (got.limit == "source")
        else:
            assert got.limit is None
        granted_k[key] = granted_k.get(key, 0) + got.allowed
        for s in sources[:got.allowed]:
            granted_s[s] = granted_s.get(s, 0) + 1
    for n in granted_k.values():
        assert n <= burst_k + rate_k * now
    for n in granted_s.values():
        assert n <= burst_s + rate_s * now


def test_a_record_refused_by_its_source_costs_its_key_nothing() -> None:
    quotas = Quotas(per_key=(1e-9, 10.0), per_source=(1e-9, 2.0))
    got = quotas.admit("k", ["a", "a", "a", "b"], 0.0)
    assert (got.allowed, got.limit, got.source) == (2, "source", "a")
    assert quotas.keys["k"].tokens == pytest.approx(8.0)
    assert quotas.admit("k", ["b"] * 3, 0.0).allowed == 2  # "b" has its own bucket
    assert isinstance(quotas.sources["b"], TokenBucket)


# -- the handlers, on a real spool ----------------------------------------------------------

APPS = ("web", "db", "cron")


def _data(n: int, start: int = 0) -> list[Record]:
    return [Record(ts=BASE_NS + i * 10**9, msg=f"msg {i}" + (" error happened" if i % 7 == 0 else ""),
                   host=("h1", "h2")[i % 2], source=("syslog", "file")[i % 3 == 0], app=APPS[i % 3],
                   severity=i % 8, fields={"REQ": "a" if i % 5 == 0 else "b"})
            for i in range(start, start + n)]


async def _fill(served: ServedSpool, records: list[Record], batch: int = 300) -> None:
    """Records into the spool through the agent's sink (the metrics count them), durable on return."""
    assert served.harness.context is not None
    for i in range(0, len(records), batch):
        await served.harness.context.sink.write(Columns.of(records[i:i + batch]))
    await served.flush()


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, key: str) -> None:
        self.session, self.url, self.key = session, url, key

    async def get(self, params: list[tuple[str, str]] | dict | None = None, accept: str | None = None):
        headers = {"Authorization": "Bearer " + self.key}
        if accept:
            headers["Accept"] = accept
        async with self.session.get(self.url + "/api/v1/logs", params=params or {}, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers

    async def lines(self, params=None) -> tuple[list[dict], str]:
        status, body, headers = await self.get(params)
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in body.splitlines()], headers[NEXT_CURSOR_HEADER]

    async def post(self, body: bytes, key: str | None = None):
        headers = {"Authorization": "Bearer " + (key or self.key), "Content-Type": "application/x-ndjson"}
        async with self.session.post(self.url + "/api/v1/logs", data=body, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers


def _cli_pairs(reader: SpoolReader, argv: list[str]) -> list[int]:
    """The spool seqs `hostlog query ARGV` shows, in its order (its own code)."""
    parser = argparse.ArgumentParser()
    query_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["query", *argv])
    query = query_cmd.build_query(args)
    lines, reverse = engine.effective(lines=args.lines, reverse=args.reverse, follow=False,
                                      grep=query.grep is not None)
    pieces, _ = select(reader, query, lines=lines, reverse=reverse)
    return [seq for piece in pieces for seq, _ in piece]


# (API parameters, the same words for `hostlog query`)
SAME_AS_QUERY = [
    ([("limit", "10000")], []),
    ([("n", "5")], ["-n", "5"]),
    ([("n", "7"), ("reverse", "1")], ["-n", "7", "-r"]),
    ([("n", "4"), ("since", "2026-01-01 00:10:00")], ["-n", "4", "-S", "2026-01-01 00:10:00"]),
    ([("n", "4"), ("until", "2026-01-01 00:41:37")], ["-n", "4", "-U", "2026-01-01 00:41:37"]),
    ([("since", "2026-01-01 00:05:00"), ("until", "2026-01-01 00:06:00")],
     ["-S", "2026-01-01 00:05:00", "-U", "2026-01-01 00:06:00"]),
    ([("unit", "web"), ("priority", "err")], ["-u", "web", "-p", "err"]),
    ([("identifier", "db"), ("host", "h1")], ["-t", "db", "--host", "h1"]),
    ([("grep", "err.r h"), ("n", "3")], ["-g", "err.r h", "-n", "3"]),
    ([("grep", "error"), ("source", "file"), ("reverse", "")], ["-g", "error", "--source", "file", "-r"]),
    ([("REQ", "a"), ("priority", "warning..err")], ["REQ=a", "-p", "warning..err"]),
    ([("unit", "cron"), ("unit", "db"), ("n", "9")], ["-u", "cron", "-u", "db", "-n", "9"]),
]


def test_get_selects_what_hostlog_query_selects_and_pages_through_all(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[api], unix=False,
                               extra_config='[agent.tags]\nregion = "eu"\n') as served:
            await _fill(served, _data(2500))
            reader = SpoolReader.open(tmp_path / "spool", tmp_path / "spool.key")
            expected = {i: _cli_pairs(reader, argv + ["--utc"]) for i, (_, argv) in enumerate(SAME_AS_QUERY)}
            node = served.harness.spool.agent_id
            secret = KeyStore(keys_path(tmp_path)).create("ops", ["read"])
            async with aiohttp.ClientSession() as session:
                client = Client(session, served.url, secret)
                for i, (params, argv) in enumerate(SAME_AS_QUERY):
                    got, _ = await client.lines(params)
                    assert [r["cursor"] for r in got] == [f"{node}:{seq}" for seq in expected[i]], argv
                    assert expected[i], argv  # each case selects something

                # a page that is not full was looked at to the end: its cursor is the newest position
                got, cursor = await client.lines([("unit", "db")])
                assert got[-1]["message"] == "msg 2497" and got[-1]["cursor"] == f"{node}:2498"
                assert int(cursor.rpartition(":")[2]) >= 2500

                # forward paging: three pages give every record once, in order
                seen: list[dict] = []
                cursor = None
                for _ in range(3):
                    got, cursor = await client.lines([("limit", "1000")] + ([("cursor", cursor)] if cursor else []))
                    seen += got
                assert [r["message"] for r in seen] == [f"msg {i}" + (" error happened" if i % 7 == 0 else "")
                                                        for i in range(2500)]
                assert seen[0]["region"] == "eu" and seen[0]["host"] == "h1" and seen[0]["fields"] == {"REQ": "a"}
                # the end: an empty page still says where to go on from; audit records are not shown
                got, end = await client.lines([("cursor", cursor)])
                assert got == [] and int(end.rpartition(":")[2]) >= int(cursor.rpartition(":")[2])
                await _fill(served, _data(3, start=2500))
                got, _ = await client.lines([("cursor", end)])
                assert [r["message"] for r in got] == ["msg 2500", "msg 2501", "msg 2502"]

                # backward paging, and the JSON object form with the same cursor
                back: list[str] = []
                cursor = None
                for _ in range(4):
                    status, body, headers = await client.get(
                        [("limit", "1000"), ("reverse", "true")] + ([("cursor", cursor)] if cursor else []),
                        accept="application/json")
                    assert status == 200 and headers["Content-Type"].startswith("application/json")
                    page = json.loads(body)
                    assert page["next_cursor"] == headers[NEXT_CURSOR_HEADER]
                    cursor = page["next_cursor"]
                    back += [r["message"] for r in page["records"]]
                assert back == [r.msg for r in reversed(_data(2503))]

                # the audit trail is there for who asks for it
                got, _ = await client.lines([("source", "audit"), ("n", "1")])
                assert got[0]["source"] == "audit" and got[0]["fields"]["AUDIT_ENDPOINT"] == "/api/v1/logs"

    run(main())


@pytest.mark.parametrize("params, named", [
    ([("unti", "x")], "unti"), ([("limit", "many")], "limit"), ([("n", "-3")], "n"),
    ([("priority", "loud")], "loud"), ([("cursor", "garbage")], "cursor"),
    ([("cursor", "othernode:5")], "cursor"), ([("since", "2026-01-02"), ("until", "2026-01-01")], "--since"),
])
def test_a_bad_parameter_is_a_400_that_names_it(tmp_path: Path, params, named) -> None:
    async def main() -> tuple[int, bytes]:
        async with ServedSpool(tmp_path, modules=[api], unix=False) as served:
            await _fill(served, _data(3))
            secret = KeyStore(keys_path(tmp_path)).create("ops", ["read"])
            async with aiohttp.ClientSession() as session:
                status, body, _ = await Client(session, served.url, secret).get(params)
                return status, body

    status, body = run(main())
    assert status == 400 and named in body.decode()


def test_post_stores_lines_and_answers_counts(tmp_path: Path) -> None:
    body = (b'{"message": "checkout ok", "level": "info", "app": "shop", "source": "api", "user": "bob"}\n'
            b'\n'
            b'this is not json\n'
            b'{"msg": "payment failed", "level": "err", "ts": "2026-01-01T00:00:01Z", "host": "web-9"}\n')

    async def main():
        async with ServedSpool(tmp_path, modules=[api], unix=False) as served:
            keys = KeyStore(keys_path(tmp_path))
            ingest, read = keys.create("shipper", ["ingest"]), keys.create("ops", ["read"])
            async with aiohttp.ClientSession() as session:
                client = Client(session, served.url, ingest)
                status, answer, _ = await client.post(body)
                refused_read = (await client.post(body, key=read))[0]
                auth = {"Authorization": "Bearer " + ingest}
                async with session.post(served.url + "/api/v1/logs?unit=x", data=b"{}", headers=auth) as resp:
                    bad_param = resp.status
                async with session.post(served.url + "/api/v1/logs", data=b" " * (17 << 20), headers=auth) as resp:
                    too_big = resp.status
                empty = await client.post(b"")
                async with session.post(served.url + "/api/v1/logs", data=gzip.compress(b'{"msg": "zipped"}\n'),
                                        headers={**auth, "Content-Encoding": "gzip"}) as resp:
                    zipped = resp.status, await resp.json()
                reader = Client(session, served.url, read)
                await served.flush()
                listed, _ = await reader.lines([("source", "api"), ("source", "http")])
            await served.flush()
            return (status, json.loads(answer), refused_read, bad_param, too_big, empty, zipped,
                    listed, served.stored())

    status, answer, refused_read, bad_param, too_big, empty, zipped, listed, stored = run(main())
    assert status == 200
    assert answer == {"accepted": 3, "refused": 0, "errors": 1,
                      "error_lines": [{"line": 3, "error": answer["error_lines"][0]["error"]}]}
    assert answer["error_lines"][0]["error"].startswith("not JSON")
    assert refused_read == 403 and bad_param == 400 and too_big == 413
    assert empty[0] == 200 and json.loads(empty[1]) == {"accepted": 0, "refused": 0, "errors": 0}
    assert zipped == (200, {"accepted": 1, "refused": 0, "errors": 0})
    sent = [r for r in stored if r.source in ("api", "http")]
    assert [r.msg for r in sent] == ["checkout ok", "this is not json", "payment failed", "zipped"]
    ok, raw, failed, _ = sent
    assert (ok.app, ok.source, ok.host, ok.severity, ok.fields) == \
        ("shop", "api", "test-host", 6, {"USER": "bob", "_HTTP_KEY": "shipper"})
    assert raw.fields["parse_error"].startswith("not JSON") and raw.source == "http"
    assert (failed.severity, failed.host, failed.ts) == (3, "web-9", BASE_NS + 10**9)
    assert [r["message"] for r in listed] == ["checkout ok", "this is not json", "payment failed", "zipped"]
    audit = [r for r in stored if r.source == "audit" and r.fields["AUDIT_METHOD"] == "POST"]
    assert [r.fields["AUDIT_STATUS"] for r in audit] == ["200", "403", "400", "413", "200", "200"]
    assert audit[0].fields["AUDIT_RECORDS"] == "3" and audit[0].fields["AUDIT_PRINCIPAL"] == "shipper"


def test_over_quota_records_are_refused_counted_and_said(tmp_path: Path) -> None:
    limits = ("ingest_rate_limit = { rate = 0.001, burst = 5 }\n"
              "per_source_rate_limit = { rate = 0.001, burst = 3 }\n")
    lines = [json.dumps({"message": f"m{i}", "source": "a" if i < 4 else "b"}).encode() for i in range(8)]

    async def main():
        async with ServedSpool(tmp_path, modules=[api], unix=False, extra_config=limits) as served:
            secret = KeyStore(keys_path(tmp_path)).create("shipper", ["ingest"])
            other = KeyStore(keys_path(tmp_path)).create("other", ["ingest"])
            async with aiohttp.ClientSession() as session:
                client = Client(session, served.url, secret)
                # source "a" may have 3: the 4th line is refused, and every one after it
                first = await client.post(b"\n".join(lines))
                # the key has 2 left: "b" takes them, the third is refused by the key's quota
                second = await client.post(b"\n".join(lines[4:]))
                # another key has its own quota, but source "b" has 1 left
                third = await client.post(b"\n".join(lines[4:6]), key=other)
                await served.flush()
                notices = await wait_until(lambda: len([r for r in served.stored("hostlog")
                                                        if "Suppressed" in str(r.msg)]) >= 3,
                                           what="three notices")
                assert notices
                assert served.server is not None
                counters = served.server.status()
            await served.flush()
            return first, second, third, served.stored(), counters

    first, second, third, stored, counters = run(main())
    status, body, headers = first
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert json.loads(body) == {"accepted": 3, "refused": 5, "errors": 0, "resend_from_line": 4,
                                "limit": "source", "source": "a", "retry_after": int(headers["Retry-After"])}
    assert second[0] == 429 and json.loads(second[1])["accepted"] == 2
    assert json.loads(second[1])["limit"] == "key" and json.loads(second[1])["resend_from_line"] == 3
    assert third[0] == 429 and json.loads(third[1])["accepted"] == 1
    kept = [r.msg for r in stored if r.source in ("a", "b")]
    assert kept == ["m0", "m1", "m2", "m4", "m5", "m4"]
    notices = [r for r in stored if r.source == "hostlog"]
    assert sorted((r.fields["key"], r.fields["limit"], r.fields["suppressed"]) for r in notices) == \
        [("other", "source", "1"), ("shipper", "key", "2"), ("shipper", "source", "5")]
    assert notices[0].msg == "Suppressed 5 records from key shipper (HTTP ingest: the rate limit of source a)"
    assert counters["ingest_refused"] == 8 and counters["ingest_records"] == 6
