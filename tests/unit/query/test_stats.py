"""hostlog stats: the counts are those of `hostlog query -o json` over the same spool.

The property test generates spools (sealed segments with footer counts, an
active one without, frames left without counts by a writer restart) of
records with every quirk the index must get right: raw PRIORITY,
SYSLOG_IDENTIFIER and _HOSTNAME fields, _HOSTLOG_ABSENT markers, units that
are lists or bytes, systemd's reports about units; then counts them with
`hostlog stats` (from the index, from the columns, from records, in one
process and in two) and from the JSON lines `hostlog query -o json --all`
writes for the same query, and compares every group and bucket.
"""

from __future__ import annotations

import io
import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostlog.journal.fields import journal_to_record
from hostlog.query import engine, stats
from hostlog.query.build import build_query
from hostlog.query.output import Formatter
from hostlog.query.run import Printer
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import SegmentReader
from hostlog.spool.spool import Spool

T0 = 1_700_000_000 * 10**9
APPS = ["nginx", "sshd", "systemd", "systemd-coredump", "", "cron"]
UNITS = ["nginx.service", "ssh.service", "init.scope", "cron.service"]
COREDUMP_ID = "fc2e22bc6ee647b6b90729ab34a250b1"


def make_record(rnd: random.Random, ts: int) -> Record:
    """A journald record (an entry with journald's quirks, mapped as the
    collector maps it) or a syslog-like one."""
    r = rnd.random
    app = rnd.choice(APPS)
    if r() < 0.4:
        fields = {}
        if r() < 0.5:
            fields["_SYSTEMD_UNIT"] = rnd.choice(UNITS)
        if app.startswith("systemd") and r() < 0.5:
            fields["UNIT"] = rnd.choice(UNITS)
        if r() < 0.4:
            fields["DURATION_MS"] = rnd.choice(["12", "3.5", "oops", "100", "7"])
        return Record(ts=ts, msg=rnd.choice(["GET /", "error: disk"]), host=rnd.choice(["web-1", "web-2"]),
                      source="syslog", app=app, pid=rnd.choice([1, 42, None]), severity=rnd.randrange(8),
                      fields=fields)
    entry: dict[str, list[bytes]] = {"__REALTIME_TIMESTAMP": [str(ts // 1000).encode()]}

    def put(name, *values):
        entry[name] = [v if isinstance(v, bytes) else v.encode() for v in values]

    pick = r()
    if pick < 0.8:
        put("PRIORITY", str(rnd.randrange(8)))
    elif pick < 0.85:
        put("PRIORITY", "06")
    elif pick < 0.9:
        put("PRIORITY", "2", "5")
    elif pick < 0.95:
        put("PRIORITY", "x")
    pick = r()
    if pick < 0.8:
        if app:
            put("SYSLOG_IDENTIFIER", app)
    elif pick < 0.85:
        put("SYSLOG_IDENTIFIER", b"raw\xff")
    elif pick < 0.9:
        put("SYSLOG_IDENTIFIER", "a", "b")
    put("_COMM", rnd.choice(["comm", "java"]))
    pick = r()
    if pick < 0.85:
        put("_HOSTNAME", rnd.choice(["web-1", "web-2"]))
    elif pick < 0.9:
        put("_HOSTNAME", b"\xffhost")
    elif pick < 0.95:
        put("_HOSTNAME", "h1", "h9")
    pick = r()
    if pick < 0.6:
        put("_SYSTEMD_UNIT", rnd.choice(UNITS))
    elif pick < 0.65:
        put("_SYSTEMD_UNIT", rnd.choice(UNITS), rnd.choice(UNITS))
    elif pick < 0.7:
        put("_SYSTEMD_UNIT", b"bad\xffunit.service")
    put("_PID", rnd.choice(["1", "42", "abc"]))
    put("_UID", rnd.choice(["0", "1000"]))
    if app.startswith("systemd") and r() < 0.7:
        put(rnd.choice(["UNIT", "COREDUMP_UNIT", "OBJECT_SYSTEMD_UNIT"]), rnd.choice(UNITS))
        if r() < 0.5:
            put("MESSAGE_ID", COREDUMP_ID)
    if r() < 0.5:
        put("DURATION_MS", rnd.choice(["12", "3.5", "oops", "100", "7"]))
    if r() < 0.95:
        put("MESSAGE", rnd.choice(["GET /", "Started x", "error: disk", b"\xff bin"]))
    return journal_to_record(entry)


def build_spool(directory: Path, seed: int, *, frames: int = 24, restart_at: int | None = None,
                segment_bytes: int = 6000, seal: bool = False) -> list[Record]:
    """Frames of 1..40 records, 1 s apart (a few out of order), in small
    segments; with ``restart_at``, the writer is closed and reopened there
    (the active segment's frames before it get no counts)."""
    rnd = random.Random(seed)
    keyring = Keyring.load_or_create(directory / "spool.key")
    spool = Spool.open(directory / "spool", keyring, segment_bytes=segment_bytes)
    written = []
    t = T0
    try:
        for f in range(frames):
            if f == restart_at:
                spool.close()
                spool = Spool.open(directory / "spool", keyring, segment_bytes=segment_bytes)
            batch = []
            for _ in range(rnd.randint(1, 40)):
                t += 10**9
                batch.append(make_record(rnd, t - (5 * 10**9 if rnd.random() < 0.05 else 0)))
            written += batch
            spool.append(Columns.of(batch))
        if seal:
            spool.rotate()
    finally:
        spool.close()
    return written


def canon(value):
    return json.dumps(value, sort_keys=True)


def from_query_json(directory: Path, query, by, every_ns) -> Counter:
    """The counts, from what `hostlog query -o json --all` writes."""
    reader = SpoolReader.open(directory / "spool")
    out = io.BytesIO()
    formatter = Formatter("json", all_fields=True)
    engine.write(out, reader, query, lines=None, reverse=False, identity=True,
                 make_printer=lambda: Printer(formatter.format), columnar=False, parallel=False)
    counts: Counter = Counter()
    for line in out.getvalue().splitlines():
        obj = json.loads(line)
        bucket = None if every_ns is None else int(obj["__REALTIME_TIMESTAMP"]) * 1000 // every_ns
        counts[(tuple(canon(obj.get(f)) for f in by), bucket)] += 1
    return counts


def from_stats(directory: Path, query, spec, workers: int) -> tuple[Counter, stats.StatsResult]:
    reader = SpoolReader.open(directory / "spool")
    result = stats.compute(reader, query, spec, workers=workers)
    counts: Counter = Counter()
    for (group, bucket), n in result.counts.items():
        counts[(tuple(canon(stats.group_value(v)) for v in group), bucket)] += n
    return counts, result


QUERIES = [
    {}, {"units": ["nginx"]}, {"units": ["nginx", "cron.service"]}, {"units": ["ssh*"]},
    {"identifiers": ["sshd"]}, {"priority": "err"}, {"priority": "2..5"}, {"priority": "info"},
    {"hosts": ["web-1"]}, {"sources": ["journald"]}, {"units": ["init.scope"], "priority": "notice"},
    {"since": f"@{T0 // 10**9 + 100}"}, {"until": f"@{T0 // 10**9 + 300}"},
    {"since": f"@{T0 // 10**9 + 50}", "until": f"@{T0 // 10**9 + 400}", "units": ["nginx"]},
    {"grep": "disk"}, {"grep": "q*"}, {"matches": ["_UID=0"]},
    {"matches": ["DURATION_MS=12", "+", "_SYSTEMD_UNIT=init.scope"]},
]
GROUPINGS = [(), ("SYSLOG_IDENTIFIER", "PRIORITY"), ("PRIORITY",), ("_HOSTNAME", "_HOSTLOG_SOURCE"),
             ("_SYSTEMD_UNIT",), ("SYSLOG_IDENTIFIER", "UNIT"), ("DURATION_MS",), ("MESSAGE",)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), queries=st.lists(st.sampled_from(QUERIES), min_size=2, max_size=2),
       groupings=st.lists(st.sampled_from(GROUPINGS), min_size=2, max_size=2),
       every=st.sampled_from([None, 1, 7, 60, 3600]), use_index=st.booleans(),
       workers=st.sampled_from([1, 2]), restart=st.sampled_from([None, 5, 20]))
def test_counts_equal_those_of_query_json(seed, queries, groupings, every, use_index, workers,
                                          restart):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        written = build_spool(directory, seed, restart_at=restart)
        every_ns = None if every is None else every * 10**9
        for query in queries:
            for by in groupings:
                expected = from_query_json(directory, build_query(**query, now_ns=T0), by, every_ns)
                spec = stats.StatsSpec(by=by, every_ns=every_ns, use_index=use_index)
                got, result = from_stats(directory, build_query(**query, now_ns=T0), spec, workers)
                assert got == expected, (query, by)
                assert not result.damage
                if not query:
                    assert sum(got.values()) == len(written)


def test_every_query_counted_from_the_index_equals_query_json(tmp_path):
    # the property test samples; this walks every filter with every grouping
    # the footer counts can answer, over one spool of sealed segments
    build_spool(tmp_path, 2024, frames=36)
    for query in QUERIES:
        for by in [g for g in GROUPINGS if stats.INDEX_FIELDS.issuperset(g)]:
            expected = from_query_json(tmp_path, build_query(**query, now_ns=T0), by, None)
            got, result = from_stats(tmp_path, build_query(**query, now_ns=T0),
                                     stats.StatsSpec(by=by), 1)
            assert got == expected, (query, by)
            if "grep" not in query and "matches" not in query:
                assert result.frames_counted > result.frames_read, (query, by)


def test_a_plain_count_reads_no_frame_of_a_sealed_segment(tmp_path):
    written = build_spool(tmp_path, 7, frames=40)
    reader = SpoolReader.open(tmp_path / "spool")
    sealed = [seg.index() for seg in reader.open_segments()]
    assert len(sealed) > 2 and all(i.sealed for i in sealed[:-1])
    active_frames = len(sealed[-1].entries) if not sealed[-1].sealed else 0
    for query, by in [({}, ("SYSLOG_IDENTIFIER", "PRIORITY")),
                      ({"units": ["nginx"], "priority": "warning"}, ("SYSLOG_IDENTIFIER",)),
                      ({"identifiers": ["cron"], "hosts": ["web-2"]}, ("_HOSTNAME", "_HOSTLOG_SOURCE")),
                      ({"since": f"@{T0 // 10**9}"}, ("PRIORITY",))]:
        result = stats.compute(SpoolReader.open(tmp_path / "spool"), build_query(**query, now_ns=T0),
                               stats.StatsSpec(by=by), workers=1)
        # only the active segment's frames are read: every sealed one is counted
        assert result.frames_read <= active_frames, (query, result.frames_read)
        assert result.frames_counted >= sum(len(i.entries) for i in sealed[:-1])
    total = stats.compute(SpoolReader.open(tmp_path / "spool"), build_query(now_ns=T0),
                          stats.StatsSpec(), workers=1)
    assert total.counts == {((), None): len(written)}


def test_a_frame_partly_in_the_range_or_across_buckets_is_read(tmp_path):
    build_spool(tmp_path, 3, frames=30)
    reader = SpoolReader.open(tmp_path / "spool")
    entries = [e for seg in reader.open_segments() for e in seg.index().entries]
    middle = entries[len(entries) // 3]
    cut = (middle.ts_min + middle.ts_max) // 2 // 10**9  # inside that frame's time range
    q = build_query(since=f"@{cut}", now_ns=T0)
    by = ("PRIORITY",)
    got, result = from_stats(tmp_path, q, stats.StatsSpec(by=by), 1)
    assert result.frames_read >= 1 and result.frames_counted > 0
    assert got == from_query_json(tmp_path, q, by, None)
    # buckets: a frame across a bucket's edge is read, one inside a bucket is not
    spec = stats.StatsSpec(by=by, every_ns=7 * 10**9)
    got, result = from_stats(tmp_path, build_query(now_ns=T0), spec, 1)
    across = sum(1 for e in entries if e.ts_min // spec.every_ns != e.ts_max // spec.every_ns)
    assert 0 < across <= result.frames_read < len(entries)
    assert got == from_query_json(tmp_path, build_query(now_ns=T0), by, spec.every_ns)


def test_rates_are_per_second_over_the_bucket_or_the_range(tmp_path):
    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    spool = Spool.open(tmp_path / "spool", keyring)
    # 120 records one second apart: 0..119 s
    spool.append(Columns.of([Record(ts=T0 + i * 10**9, msg="m", app="a" if i % 3 else "b",
                                    source="syslog", fields={"MS": str(i)}) for i in range(120)]))
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    q = build_query(now_ns=T0)
    result = stats.compute(reader, q, stats.StatsSpec(by=("SYSLOG_IDENTIFIER",)), workers=1)
    assert result.range_ns == (T0, T0 + 119 * 10**9)
    lines = {r.group: r for r in stats.rows(result)}
    assert lines[((b"a",),)].count == 80 and lines[((b"a",),)].rate == pytest.approx(80 / 119)
    # with -S/-U the range is theirs
    q = build_query(since=f"@{T0 // 10**9}", until=f"@{T0 // 10**9 + 200}", now_ns=T0)
    result = stats.compute(SpoolReader.open(tmp_path / "spool"), q, stats.StatsSpec(), workers=1)
    assert stats.rows(result)[0].rate == pytest.approx(120 / 200)
    # per bucket: the count over the bucket's length
    spec = stats.StatsSpec(by=("SYSLOG_IDENTIFIER",), every_ns=60 * 10**9, sum_fields=("MS",),
                           p99_fields=("MS",))
    result = stats.compute(SpoolReader.open(tmp_path / "spool"), build_query(now_ns=T0), spec, workers=1)
    got = {(r.group, r.time_ns): r for r in stats.rows(result)}
    bucket0 = T0 // (60 * 10**9) * 60 * 10**9
    first = got[(((b"a",),), bucket0)]
    in_first = [i for i in range(120) if i % 3 and (T0 + i * 10**9) // (60 * 10**9) == T0 // (60 * 10**9)]
    assert first.count == len(in_first) and first.rate == pytest.approx(len(in_first) / 60)
    assert first.sums == (float(sum(in_first)),)
    assert first.p99s == (float(sorted(in_first)[-1]),)  # nearest rank: the largest of < 100 values
    lines = list(stats.render_json(stats.rows(result, top=1), spec))
    assert len(lines) == 3 and all(json.loads(x)["SYSLOG_IDENTIFIER"] == "a" for x in lines)  # 0..119 s from :20
    assert json.loads(lines[0])["time"].endswith("Z") and "sum_MS" in json.loads(lines[0])


def test_p99_is_the_nearest_rank():
    from array import array
    assert stats._p99(array("d", range(1, 101))) == 99
    assert stats._p99(array("d", range(1, 1001))) == 990
    assert stats._p99(array("d", [5.0])) == 5.0 and stats._p99(array("d")) is None


def test_a_damaged_frame_is_reported_not_silently_skipped(tmp_path):
    build_spool(tmp_path, 11, frames=30)
    reader = SpoolReader.open(tmp_path / "spool")
    paths = reader.segment_paths()
    with SegmentReader(paths[0], reader.keyring) as seg:
        victim = seg.index().entries[1]
    data = bytearray(paths[0].read_bytes())
    data[victim.offset + victim.size - 30] ^= 0x04  # in the payload: authentication fails
    paths[0].write_bytes(bytes(data))
    by = ("SYSLOG_IDENTIFIER", "PRIORITY")
    q = build_query(now_ns=T0)
    expected = from_query_json(tmp_path, q, by, None)
    # reading every frame: the counts are query's, and the damaged frame is reported
    got, result = from_stats(tmp_path, q, stats.StatsSpec(by=by, use_index=False), 1)
    assert got == expected
    assert any(d.segment == paths[0].name and d.offset == victim.offset for d in result.damage)
    # a count that reads that frame reports it too (-g reads every frame's messages)
    qg = build_query(grep="e", now_ns=T0)
    got, result = from_stats(tmp_path, qg, stats.StatsSpec(by=by), 2)
    assert got == from_query_json(tmp_path, qg, by, None)
    assert any(str(victim.offset) in str(d) for d in result.damage)
    # from the index, the frame's records are counted as they were written
    got, result = from_stats(tmp_path, q, stats.StatsSpec(by=by), 1)
    assert sum(got.values()) == sum(expected.values()) + victim.count


def test_damaged_footer_counts_are_reported_and_the_frames_read(tmp_path):
    build_spool(tmp_path, 5, frames=30)
    reader = SpoolReader.open(tmp_path / "spool")
    path = reader.segment_paths()[0]
    with SegmentReader(path, reader.keyring) as seg:
        index = seg.index()
        footer = index.footer
        assert footer is not None and footer.counts is not None
        wrong_key = Keyring.load_or_create(tmp_path / "other.key")
    # the same counts block, bound elsewhere: authentication fails, the CRC does not
    from hostlog.spool import frame as F
    data = path.read_bytes()
    start = index.end
    plain = None
    with SegmentReader(path, reader.keyring) as seg:
        plain = F.open_counts(footer, key=seg.keys.data_key, salt=seg.header.salt,
                              segment_size=len(data))
    forged = F.pack_footer(footer.entries, footer.sealed_ns, plain, key=wrong_key.current,
                           salt=b"x" * 32, offset=start)
    path.write_bytes(data[:start] + forged)
    by = ("PRIORITY",)
    q = build_query(now_ns=T0)
    got, result = from_stats(tmp_path, q, stats.StatsSpec(by=by), 1)
    assert got == from_query_json(tmp_path, q, by, None)
    assert any("counts" in d.reason and d.segment == path.name for d in result.damage)
    assert result.frames_read >= len(footer.entries)


def test_arguments():
    assert stats.parse_by("app,PRIORITY,app") == ("SYSLOG_IDENTIFIER", "PRIORITY")
    assert stats.parse_by(None) == ()
    with pytest.raises(ValueError, match="not a field name"):
        stats.parse_by("nginx.service")
    assert stats.parse_every("1m") == 60 * 10**9 and stats.parse_every("1h 30min") == 5400 * 10**9
    for bad in ("0", "-1m", "soon", ""):
        with pytest.raises(ValueError, match="--every"):
            stats.parse_every(bad)


def test_sparkline_and_table():
    assert stats.sparkline([0, 1, 2, 4, 8]) == " ▁▂▄█"
    assert len(stats.sparkline(list(range(100)), width=10)) == 10
    assert stats.sparkline([0, 0]) == "  "
    spec = stats.StatsSpec(by=("SYSLOG_IDENTIFIER",), every_ns=60 * 10**9)
    result = stats.StatsResult(spec, counts={(((b"a",),), 0): 3, (((b"a",),), 2): 6,
                                             (((b"b\xff",),), 1): 1},
                               range_ns=(0, 180 * 10**9))
    table = stats.render_table(result, spark=True)
    lines = table.splitlines()
    assert lines[0].split() == ["SYSLOG_IDENTIFIER", "COUNT", "RATE/S", "PER", "1min"]
    assert lines[1].split()[:3] == ["a", "9", "0.05"] and lines[1].endswith("▄ █")
    assert lines[2].startswith("[98, 255]")  # not printable UTF-8: its bytes, as JSON shows them
    csv_text = stats.render_csv(stats.rows(result), spec)
    assert csv_text.splitlines()[0] == "SYSLOG_IDENTIFIER,time,count,rate"
    assert csv_text.splitlines()[1] == "a,1970-01-01T00:00:00Z,3,0.05"


def test_counts_survive_in_a_segment_sealed_after_a_restart(tmp_path):
    # frames the reopened writer did not write have no counts: they are read,
    # the others are counted, and the totals are left out
    build_spool(tmp_path, 9, frames=12, restart_at=6, segment_bytes=1 << 20, seal=True)
    reader = SpoolReader.open(tmp_path / "spool")
    with SegmentReader(reader.segment_paths()[0], reader.keyring) as seg:
        counts = seg.counts()
    assert counts is not None and counts.totals is None
    assert [f is None for f in counts.frames] == [True] * 6 + [False] * 6
    by = ("SYSLOG_IDENTIFIER", "PRIORITY")
    q = build_query(now_ns=T0)
    got, result = from_stats(tmp_path, q, stats.StatsSpec(by=by), 1)
    assert got == from_query_json(tmp_path, q, by, None)
    assert result.frames_read == 6 and result.frames_counted == 6


def test_no_frames_means_no_counts(tmp_path):
    Keyring.load_or_create(tmp_path / "spool.key")
    Spool.open(tmp_path / "spool", Keyring.load(tmp_path / "spool.key")).close()
    result = stats.compute(SpoolReader.open(tmp_path / "spool"), build_query(now_ns=T0),
                           stats.StatsSpec(by=("PRIORITY",)), workers=1)
    assert result.counts == {} and result.range_ns is None and stats.rows(result) == []
