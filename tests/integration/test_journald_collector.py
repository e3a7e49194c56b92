"""The journald collector against real journals: files written by
systemd-journal-remote, and a standalone systemd-journald it follows."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from hostlog.collectors.events import Counted
from hostlog.collectors.journald.collector import JournaldCollector
from hostlog.config import JournaldSource
from hostlog.journal.fields import journal_to_record, parse_export
from hostlog.record import Record
from tests.conftest import need
from tests.integration.helpers import SpoolHarness, StandaloneJournald, build_journal, export_entry, wait_until

try:
    from systemd import journal
except ImportError:  # pragma: no cover - need() decides whether that fails or skips
    journal = None

BOOT = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000_000  # µs


@pytest.fixture(autouse=True)
def _systemd_python() -> None:
    need(journal is not None, "systemd-python")


def entries(start: int, count: int, app: str = "gen", **extra: str) -> bytes:
    """Export stream of ``count`` numbered entries, one second apart."""
    return b"".join(export_entry({
        "__REALTIME_TIMESTAMP": str(T0 + i * 1_000_000),
        "__MONOTONIC_TIMESTAMP": str(1_000_000 + i * 1_000_000),
        "_BOOT_ID": BOOT, "_HOSTNAME": "genhost", "PRIORITY": str(i % 8),
        "SYSLOG_IDENTIFIER": app, "MESSAGE": f"entry {i}", **extra,
    }) for i in range(start, start + count))


def source(directory: Path, **kw: Any) -> JournaldSource:
    return JournaldSource(name="journal", directory=directory, **kw)


def cursors(directory: Path) -> list[str]:
    reader = journal.Reader(path=str(directory))
    out = []
    while reader._next():
        out.append(reader._get_cursor())
    reader.close()
    return out


def messages(directory: Path) -> list[str]:
    reader = journal.Reader(path=str(directory))
    out = [entry.get("MESSAGE") for entry in reader]
    reader.close()
    return out


async def collect(tmp: Path, config: JournaldSource, want: int, *,
                  harness: SpoolHarness | None = None, settle: float = 0.0) -> list[Record]:
    """Run a collector until the spool holds ``want`` records from this run;
    then stop it and the writer as the agent does. Returns this run's records."""
    harness = harness or SpoolHarness(tmp)
    context = harness.open()
    before = len(harness.records())
    collector = JournaldCollector(config, context)
    await collector.start()
    try:
        await wait_until(lambda: len(harness.records()) - before >= want, what=f"{want} records")
        await asyncio.sleep(settle)  # room for records that should not come
    finally:
        await collector.stop()
        await harness.close()
    return harness.records()[before:]


def comparable(r: Record) -> tuple:
    return (r.ts, r.msg, r.host, r.source, r.app, r.pid, r.severity, r.facility, r.fields)


# -- journal files ---------------------------------------------------------------------------

def test_fixture_entries_arrive_as_journal_to_record_maps_them(tmp_path: Path, corpora: Path) -> None:
    export = (corpora / "journald" / "fixture" / "fixture.export").read_bytes()
    build_journal(export, tmp_path / "j" / "fixture.journal")
    got = asyncio.run(collect(tmp_path, source(tmp_path / "j", start="beginning"), 14, settle=0.3))
    expected = [journal_to_record(e) for e in parse_export(export)]
    assert [comparable(r) for r in got] == [comparable(r) for r in expected]
    by_app = {r.app: r for r in got}
    assert by_app["binary"].msg == b"bytes \x00\x01\xff not utf8"      # kept as bytes
    assert by_app["multivalue"].fields["TAG"] == ["one", "two"]          # repeated field
    assert by_app["multiline"].msg == "first line\nsecond line\n\tindented third"
    assert all(r.origin and r.seq for r in got)
    saved = SpoolHarness(tmp_path).checkpoints.load("journal")
    assert saved == {"cursor": cursors(tmp_path / "j")[-1]}


ODD_ENTRIES = [  # each sends its entry off the fast path, to journal_to_record
    {"MESSAGE": "plain", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "fast", "_PID": "42",
     "SYSLOG_FACILITY": "3", "_HOSTNAME": "h1", "_SYSTEMD_UNIT": "a.service"},
    {"MESSAGE": "no priority", "SYSLOG_IDENTIFIER": "odd"},
    {"MESSAGE": "leading zero", "PRIORITY": "06", "SYSLOG_IDENTIFIER": "odd"},
    {"MESSAGE": "pid text", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd", "_PID": "abc"},
    {"MESSAGE": "facility 24", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd", "SYSLOG_FACILITY": "24"},
    {"MESSAGE": "empty host", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd", "_HOSTNAME": ""},
    {"MESSAGE": "comm only", "PRIORITY": "5", "_COMM": "fromcomm"},
    {"MESSAGE": "empty ident", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "", "_COMM": "c"},
    {"PRIORITY": "4", "SYSLOG_IDENTIFIER": "odd"},  # no MESSAGE
    {"MESSAGE": b"not utf8 \xff", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd"},
    {"MESSAGE": "field not utf8", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd", "BLOB": b"\x00\xff"},
    {"MESSAGE": "nul inside", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd", "BLOB": b"a\x00b"},
    {"MESSAGE": "reserved", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "odd", "_HOSTLOG_SEQ": "9"},
    {"MESSAGE": "multi\nline", "PRIORITY": "2", "SYSLOG_IDENTIFIER": "odd", "_SYSTEMD_UNIT": "b.service"},
    {"MESSAGE": "caf\u00e9 \u2603", "PRIORITY": "7", "SYSLOG_IDENTIFIER": "fast", "_PID": "0"},
]


def odd_export() -> bytes:
    out = []
    for i, fields in enumerate(ODD_ENTRIES):
        head = {"__REALTIME_TIMESTAMP": str(T0 + i), "__MONOTONIC_TIMESTAMP": str(7 + i),
                "_BOOT_ID": BOOT}
        out.append(export_entry({**head, **fields}))
    # repeated fields: export_entry takes a dict, so write the repeats by hand
    out.append(export_entry({"__REALTIME_TIMESTAMP": str(T0 + 99), "_BOOT_ID": BOOT,
                             "MESSAGE": "first", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "rep",
                             "_SYSTEMD_UNIT": "x.service"})[:-1]
               + b"MESSAGE=second\n_SYSTEMD_UNIT=y.service\nTAG=1\nTAG=2\n\n")
    return b"".join(out)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_both_readers_map_every_shape_as_journal_to_record(tmp_path: Path, corpora: Path,
                                                            compiled: bool) -> None:
    """The compiled reader and the Python one, over a real journal file with
    entries of every odd shape and the shared fixture, against
    journal_to_record of each entry as systemd-python reads it."""
    from hostlog.collectors.journald import collector as journald_module
    if compiled:
        need(journald_module._journald_read is not None,
             "hostlog.collectors.journald._journald_read (the package built with libsystemd-dev)")
    fixture = (corpora / "journald" / "fixture" / "fixture.export").read_bytes()
    jdir = tmp_path / "j"
    build_journal(odd_export() + fixture, jdir / "odd.journal")
    # what the collector stored before it read in batches: each entry as
    # systemd-python's raw reader gives it, through journal_to_record
    reader = journal.Reader(path=str(jdir))
    want = []
    while reader._next():
        entry = reader._get_all()
        entry["__REALTIME_TIMESTAMP"] = reader._get_realtime()
        entry["__MONOTONIC_TIMESTAMP"] = reader._get_monotonic()[0]
        want.append(journal_to_record(entry))
    reader.close()
    for r in want:
        r.host = r.host or "test-host"
    assert len(want) == len(ODD_ENTRIES) + 1 + 14

    async def run() -> list[Record]:
        harness = SpoolHarness(tmp_path)
        collector = JournaldCollector(source(jdir, start="beginning"), harness.open())
        collector.compiled = compiled
        await collector.start()
        try:
            await wait_until(lambda: len(harness.records()) >= len(want), what="every entry")
            await asyncio.sleep(0.2)
        finally:
            await collector.stop()
            await harness.close()
        return harness.records()

    got = asyncio.run(run())
    # fields compared with their order too (the journal view lists them so)
    assert [comparable(r) + (list(r.fields),) for r in got] == \
        [comparable(r) + (list(r.fields),) for r in want]
    assert {r.app for r in got if r.msg == "comm only"} == {"fromcomm"}
    rep, = [r for r in got if r.app == "rep"]
    assert rep.msg == "second" and rep.fields["TAG"] == ["1", "2"]
    assert rep.fields["_SYSTEMD_UNIT"] == ["x.service", "y.service"]


def test_a_restart_resumes_after_the_saved_cursor(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    build_journal(entries(0, 50), jdir / "a.journal")
    first = asyncio.run(collect(tmp_path, source(jdir, start="beginning"), 50))
    assert [r.msg for r in first] == [f"entry {i}" for i in range(50)]
    # more entries, in a second file as after a journal rotation
    build_journal(entries(50, 30), jdir / "b.journal")
    second = asyncio.run(collect(tmp_path, source(jdir, start="beginning"), 30, settle=0.3))
    assert [r.msg for r in second] == [f"entry {i}" for i in range(50, 80)]


def test_the_entry_the_cursor_names_is_skipped_and_the_next_one_read(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    build_journal(entries(0, 20), jdir / "a.journal")
    SpoolHarness(tmp_path).save_checkpoint("journal", {"cursor": cursors(jdir)[6]})
    got = asyncio.run(collect(tmp_path, source(jdir, start="beginning"), 13, settle=0.3))
    assert [r.msg for r in got] == [f"entry {i}" for i in range(7, 20)]


def test_first_start_now_reads_only_later_entries_and_saves_its_position(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    build_journal(entries(0, 10), jdir / "a.journal")

    async def run() -> tuple[list[Record], Any]:
        harness = SpoolHarness(tmp_path)
        collector = JournaldCollector(source(jdir), harness.open())  # start = "now"
        await collector.start()
        # the position is saved before any entry arrives: a crash now must not
        # turn "now" into a later "now"
        saved = await wait_until(lambda: harness.checkpoints.load("journal"), what="checkpoint")
        await asyncio.to_thread(build_journal, entries(10, 5), jdir / "b.journal")
        await wait_until(lambda: len(harness.records()) >= 5, what="5 records")
        await collector.stop()
        await harness.close()
        return harness.records(), saved

    got, saved = asyncio.run(run())
    assert saved == {"cursor": cursors(jdir)[9]}
    assert [r.msg for r in got] == [f"entry {i}" for i in range(10, 15)]


def test_start_now_on_an_empty_journal_reads_what_comes_later(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    jdir.mkdir()

    async def run() -> list[Record]:
        harness = SpoolHarness(tmp_path)
        collector = JournaldCollector(source(jdir), harness.open())  # start = "now"
        await collector.start()
        try:
            await asyncio.to_thread(build_journal, entries(0, 5), jdir / "a.journal")
            await wait_until(lambda: len(harness.records()) >= 5, what="5 records")
        finally:
            await collector.stop()
            await harness.close()
        return harness.records()

    assert [r.msg for r in asyncio.run(run())] == [f"entry {i}" for i in range(5)]


def test_matches_select_entries_and_a_cursor_outside_them_is_still_found(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    build_journal(entries(0, 10, app="a") + entries(10, 10, app="b"), jdir / "a.journal")
    # the saved cursor names an entry of app a, which the matches now exclude
    SpoolHarness(tmp_path).save_checkpoint("journal", {"cursor": cursors(jdir)[3]})
    got = asyncio.run(collect(tmp_path, source(jdir, matches=["SYSLOG_IDENTIFIER=b"]), 10, settle=0.3))
    assert [r.msg for r in got] == [f"entry {i}" for i in range(10, 20)]
    assert {r.app for r in got} == {"b"}  # and no "cursor lost" notice


def test_a_vacuumed_cursor_restarts_at_the_oldest_entry_and_says_so(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "j"
    build_journal(entries(0, 5), old / "a.journal")
    SpoolHarness(tmp_path).save_checkpoint("journal", {"cursor": cursors(old)[-1]})
    build_journal(entries(100, 5), new / "b.journal")  # the old file is gone from this journal
    got = asyncio.run(collect(tmp_path, source(new), 6, settle=0.3))
    notice, *rest = got
    assert notice.source == "hostlog" and "no longer in the journal" in notice.msg
    assert notice.severity == 4
    assert [r.msg for r in rest] == [f"entry {i}" for i in range(100, 105)]
    # the notice is said once: the next start finds its cursor
    build_journal(entries(105, 2), new / "c.journal")
    again = asyncio.run(collect(tmp_path, source(new), 2, settle=0.3))
    assert [r.msg for r in again] == ["entry 105", "entry 106"]


def test_the_cursor_is_saved_only_once_the_records_are_durable(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    build_journal(entries(0, 30), jdir / "a.journal")

    async def run() -> tuple[Any, Any]:
        # a group commit that never comes by itself: nothing becomes durable
        # until the writer stops
        harness = SpoolHarness(tmp_path, fsync="batch", fsync_interval=3600)
        context = harness.open()
        collector = JournaldCollector(source(jdir, start="beginning"), context)
        collector.stop_wait = 0.1  # durability will not come before the writer stops
        await collector.start()
        # handed to the writer (which may hold them until its next sync)
        await wait_until(lambda: context.counters.get(("journal", Counted.RECORDS), 0) >= 30,
                         what="30 records handed over")
        await asyncio.sleep(0.2)
        before = harness.checkpoints.load("journal")
        await collector.stop()
        await harness.close()  # syncs: now durable, now saved
        return before, harness.checkpoints.load("journal")

    before, after = asyncio.run(run())
    assert before is None
    assert after == {"cursor": cursors(jdir)[-1]}


def test_a_source_restarted_while_the_writer_runs_repeats_nothing(tmp_path: Path) -> None:
    """As a config reload does: stop, start again at once, the same spool writer.
    stop() waits for its last batch to be durable, so the cursor is saved."""
    jdir = tmp_path / "j"
    build_journal(entries(0, 200), jdir / "a.journal")

    async def run() -> list[Record]:
        harness = SpoolHarness(tmp_path, fsync_interval=0.5)
        context = harness.open()
        first = JournaldCollector(source(jdir, start="beginning"), context)
        await first.start()
        await wait_until(lambda: harness.writer.accepted_seq >= 200, what="200 accepted")
        await first.stop()
        await asyncio.to_thread(build_journal, entries(200, 10), jdir / "b.journal")
        second = JournaldCollector(source(jdir, start="beginning"), context)
        await second.start()
        await wait_until(lambda: harness.writer.accepted_seq >= 210, what="210 accepted")
        await asyncio.sleep(0.3)
        await second.stop()
        await harness.close()
        return harness.records()

    assert [r.msg for r in asyncio.run(run())] == [f"entry {i}" for i in range(210)]


def test_a_backlog_larger_than_a_batch_is_read_in_batches(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    build_journal(entries(0, 12_000), jdir / "a.journal")
    got = asyncio.run(collect(tmp_path, source(jdir, start="beginning"), 12_000, settle=0.2))
    assert [r.msg for r in got] == [f"entry {i}" for i in range(12_000)]


def test_a_directory_that_does_not_exist_fails_start(tmp_path: Path) -> None:
    async def run() -> None:
        harness = SpoolHarness(tmp_path)
        collector = JournaldCollector(source(tmp_path / "missing"), harness.open())
        try:
            with pytest.raises(OSError):
                await collector.start()
        finally:
            await harness.close()
    asyncio.run(run())


# -- a live journald ---------------------------------------------------------------------------

def test_entries_written_to_a_running_journald_are_followed(tmp_path: Path) -> None:
    with StandaloneJournald(tmp_path / "jd") as jd:
        jd.logger({"MESSAGE": "written before the start", "SYSLOG_IDENTIFIER": "hl-follow"})
        # journald writes it when it gets to it: wait until it is in the file,
        # so that it is really older than the collector's start
        asyncio.run(wait_until(lambda: "written before the start" in messages(jd.journal_dir),
                               what="the first entry in the journal"))

        async def run() -> list[Record]:
            harness = SpoolHarness(tmp_path)
            config = source(jd.journal_dir, matches=["SYSLOG_IDENTIFIER=hl-follow"])  # start = now
            collector = JournaldCollector(config, harness.open())
            await collector.start()
            try:
                await asyncio.to_thread(jd.logger, {
                    "MESSAGE": "native entry", "SYSLOG_IDENTIFIER": "hl-follow", "PRIORITY": "3",
                    "SYSLOG_FACILITY": "16", "CUSTOM_FIELD": "custom value"})
                await wait_until(lambda: len(harness.records()) >= 1, what="the native entry")
                # following again after the reader went back to waiting
                await asyncio.to_thread(jd.cat, "hl-follow", [f"stream line {i}" for i in range(100)],
                                        "warning")
                await wait_until(lambda: len(harness.records()) >= 101, what="100 stream lines")
                await asyncio.sleep(0.3)
            finally:
                await collector.stop()
                await harness.close()
            return harness.records()

        got = asyncio.run(run())
    native, *stream = got
    assert native.msg == "native entry" and native.app == "hl-follow"
    assert (native.severity, native.facility) == (3, 16)
    assert native.fields["CUSTOM_FIELD"] == "custom value"
    assert native.fields["_TRANSPORT"] == "journal"
    assert native.pid is not None and native.pid > 0
    assert native.host == os.uname().nodename
    assert abs(native.ts / 1e9 - __import__("time").time()) < 60
    assert [r.msg for r in stream] == [f"stream line {i}" for i in range(100)]
    assert {(r.severity, r.fields["_TRANSPORT"]) for r in stream} == {(4, "stdout")}
