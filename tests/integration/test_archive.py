"""The archive tier and compaction over real spools: several days of records
(generated timestamps), archived and compacted, read once each and in order,
verified by ``hostlog spool verify``, expired after ``keep`` unless a forward
destination has not acknowledged them; readers across a rewrite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from hostlog.record import Columns, Record
from hostlog.spool.archive import ArchivePolicy, Archiver
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.state import write_json
from tests.agentproc import HOSTLOG

DAY_NS = 86400 * 10**9
DAYS = 10
PER_DAY = 600  # records, in batches of 15: small frames, as a quiet host writes them
BATCH = 15


def line(n: int) -> str:
    return f"line {n:06d} user=u{n % 17} path=/api/v{n % 3}/items/{n % 101} took {n % 97}ms"


def build(tmp: Path, *, now_ns: int) -> tuple[Spool, int]:
    """A spool of DAYS days, one sealed segment a day, the newest day active."""
    keyring = Keyring.load_or_create(tmp / "spool.key")
    spool = Spool.open(tmp / "spool", keyring, max_age=0)
    n = 0
    for day in range(DAYS, 0, -1):
        for b in range(PER_DAY // BATCH):
            spool.append(Columns.of([
                Record(ts=now_ns - day * DAY_NS + (b * BATCH + i) * 10**9, msg=line(n + i),
                       host="h", app=f"app{(n + i) % 5}", source="syslog", severity=(n + i) % 8)
                for i in range(BATCH)]))
            n += BATCH
        if day > 1:
            spool.rotate()
    spool.sync()
    return spool, n


def policy(**kw: object) -> ArchivePolicy:
    base: dict[str, object] = dict(archive=True, after_s=3 * 86400, keep_s=8 * 86400, level=19,
                                   frame_records=4096, frame_bytes=1 << 20)
    base.update(kw)
    return ArchivePolicy(**base)  # type: ignore[arg-type]


def messages(spool_dir: Path, **kw: object) -> list[tuple[int, str]]:
    reader = SpoolReader.open(spool_dir, **kw)  # type: ignore[arg-type]
    out = [(seq, str(r.msg)) for seq, r in reader.records()]
    assert not reader.damage, reader.damage
    return out


def hostlog(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOSTLOG, *args], capture_output=True, text=True, timeout=120,
                          check=check)


def test_archive_and_compact_several_days(tmp_path: Path) -> None:
    now = time.time_ns()
    spool, n = build(tmp_path, now_ns=now)
    spool_dir = tmp_path / "spool"
    before = messages(spool_dir)
    assert [m for _, m in before] == [line(i) for i in range(n)]
    ratio_before = collect_stats(SpoolReader.open(spool_dir)).compression_ratio

    archiver = Archiver(spool, policy(keep_s=30 * 86400))
    report = archiver.run_once(now)
    # days 10..4 are older than 3 days: archived; days 3 and 2 sealed: compacted
    assert sorted(r.name for r in report.archived) == sorted(
        f"{1 + i * PER_DAY:020d}.seg" for i in range(DAYS - 3))
    assert len(report.compacted) == 2 and not report.refused and not report.expired
    assert all(r.frames_out == 1 and r.frames_in == PER_DAY // BATCH for r in report.compacted)
    archived = sorted(os.listdir(spool_dir / "archive"))
    assert len(archived) == DAYS - 3
    assert not set(archived) & set(os.listdir(spool_dir / "segments"))
    assert [s.path.name for s in spool.segments] == sorted(os.listdir(spool_dir / "segments"))

    # every record once, in order, with the archive; the spool alone without it
    assert messages(spool_dir) == before
    assert messages(spool_dir, archive=False) == before[(DAYS - 3) * PER_DAY:]
    stats = collect_stats(SpoolReader.open(spool_dir), verify=True)
    assert (stats.records, stats.damage, stats.gaps) == (n, [], [])
    assert stats.compression_ratio > 2 * ratio_before, (stats.compression_ratio, ratio_before)
    spool.close()
    done = hostlog("spool", "verify", "-D", str(spool_dir))
    assert done.stdout.rstrip().endswith("OK") and f"{n} records verified" in done.stdout

    # hostlog query reads the archive; --no-archive does not
    out = hostlog("query", "-D", str(spool_dir), "-o", "json", "--no-pager").stdout.splitlines()
    assert [json.loads(x)["MESSAGE"] for x in out] == [m for _, m in before]
    out = hostlog("query", "-D", str(spool_dir), "-o", "json", "--no-archive").stdout.splitlines()
    assert len(out) == 3 * PER_DAY
    # a second pass does nothing more
    spool = Spool.open(spool_dir, Keyring.load(tmp_path / "spool.key"), max_age=0)
    again = Archiver(spool, policy(keep_s=30 * 86400)).run_once(now)
    assert not (again.archived or again.compacted or again.expired)
    spool.close()


def test_keep_deletes_but_an_unacked_destination_holds_back(tmp_path: Path) -> None:
    now = time.time_ns()
    spool, n = build(tmp_path, now_ns=now)
    spool_dir = tmp_path / "spool"
    Archiver(spool, policy(keep_s=30 * 86400)).run_once(now)
    # a destination has acknowledged only the first day and a half
    cursor = spool_dir / "state" / "cursors" / "central.json"
    write_json(cursor, {"acked_seq": PER_DAY + PER_DAY // 2})
    report = Archiver(spool, policy(keep_s=7.5 * 86400)).run_once(now)
    # days 10, 9 and 8 are past keep: only day 10 is acknowledged whole
    assert report.expired == [f"{1:020d}.seg"]
    assert report.held == [f"{1 + PER_DAY:020d}.seg", f"{1 + 2 * PER_DAY:020d}.seg"]
    write_json(cursor, {"acked_seq": n})
    report = Archiver(spool, policy(keep_s=7.5 * 86400)).run_once(now)
    assert len(report.expired) == 2 and not report.held
    spool.close()
    left = messages(spool_dir)
    assert [s for s, _ in left] == list(range(3 * PER_DAY + 1, n + 1))


def test_an_interrupted_archiving_is_read_once_and_finished(tmp_path: Path) -> None:
    """Both copies (a crash between the archive's rename and the original's
    unlink), and a temporary rewrite left behind: read once, then tidied."""
    now = time.time_ns()
    spool, n = build(tmp_path, now_ns=now)
    spool_dir = tmp_path / "spool"
    before = messages(spool_dir)
    keep_aside = tmp_path / "aside"
    keep_aside.mkdir()
    first = spool.segments[0].path
    shutil.copy(first, keep_aside / first.name)  # the original, as it was
    Archiver(spool, policy(after_s=9.5 * 86400, keep_s=30 * 86400, compact=False)).run_once(now)
    assert not first.exists() and (spool_dir / "archive" / first.name).exists()
    spool.close()
    shutil.copy(keep_aside / first.name, first)  # back: as if the unlink never happened
    (spool_dir / "archive" / f".{first.name}.rewrite").write_bytes(b"half a segment")
    assert messages(spool_dir) == before  # the archive's copy only
    spool = Spool.open(spool_dir, Keyring.load(tmp_path / "spool.key"), max_age=0)
    Archiver(spool, policy(after_s=9.5 * 86400, keep_s=30 * 86400, compact=False))  # its start tidies up
    assert not first.exists() and not (spool_dir / "archive" / f".{first.name}.rewrite").exists()
    assert first not in [s.path for s in spool.segments]
    spool.close()
    assert messages(spool_dir) == before


def test_readers_across_a_compaction(tmp_path: Path) -> None:
    """A reader that listed frames before a rewrite (the parallel query)
    reads them from the file it listed; a follower by seq sees each record
    once; the forwarder's chunks of an archived segment are LZ4 blocks."""
    from hostlog.chunk import decode_columns
    from hostlog.forward.sender import ChunkSource
    from hostlog.spool.frame import decompress_chunk

    now = time.time_ns()
    spool, n = build(tmp_path, now_ns=now)
    spool_dir = tmp_path / "spool"
    reader = SpoolReader.open(spool_dir)
    follower_seen = [s for s, _ in reader.records(after_seq=0)][:PER_DAY // 2]
    with reader.pinned():
        listed = [(seg.path, entry) for seg, entry in reader.frames_quick()]
        Archiver(spool, policy(after_s=8.5 * 86400, keep_s=30 * 86400)).run_once(now)  # archive 2 days, compact 7
        got = []
        for path, entry in listed:
            seg = reader.open_segment(path)
            assert seg is not None
            with seg:
                records = seg.read_frame(entry)
            assert isinstance(records, list), records
            got.extend(str(r.msg) for r in records)
    assert got == [line(i) for i in range(n)]
    # the follower goes on after the last seq it saw
    rest = [s for s, _ in SpoolReader.open(spool_dir).records(after_seq=follower_seen[-1])]
    assert follower_seen + rest == list(range(1, n + 1))
    # what the forwarder would send of the archive
    source = ChunkSource(SpoolReader.open(spool_dir), spool.agent_id)
    chunks, reached = source.read(0, n, max_frames=10_000, max_bytes=1 << 30)
    seqs = [s for chunk, _ in chunks
            for s in decode_columns(decompress_chunk(chunk.data, chunk.chunk_len)).seq]
    assert reached == n and seqs == list(range(1, n + 1))
    spool.close()


def test_the_agent_compacts_in_the_background(tmp_path: Path) -> None:
    """A real agent at a low rate with small segments: each sealed segment is
    compacted shortly after (its frames filled), no record lost or doubled."""
    from tests.agentproc import AgentProcess, wait_for

    log = tmp_path / "app.log"
    log.write_text("")
    agent = AgentProcess(tmp_path, f"""
[agent]
hostname = "h"
state_dir = "{tmp_path}/state"

[spool]
segment_bytes = "64KiB"
fsync_interval = "10ms"

[[source]]
type = "file"
name = "f"
paths = ["{log}"]
start = "beginning"
poll_interval = "50ms"
""")
    agent.start()
    try:
        written = 0
        with log.open("a") as f:
            deadline = time.monotonic() + 60
            while written < 6000 and time.monotonic() < deadline:
                for _ in range(20):
                    f.write(f"{line(written)} {os.urandom(8).hex()}\n")
                    written += 1
                f.flush()
                time.sleep(0.02)  # a frame per sync: small frames
        spool_dir = tmp_path / "state" / "spool"

        def compacted() -> bool:
            reader = SpoolReader.open(spool_dir)
            paths = reader.segment_paths()
            if len(paths) < 3:
                return False
            sealed = []
            for p in paths[:-1]:
                seg = reader.open_segment(p)
                assert seg is not None
                with seg:
                    sealed.append(len(seg.index().entries))
            return all(frames <= 2 for frames in sealed)

        wait_for(compacted, timeout=60, interval=0.5, what="every sealed segment compacted")
        msgs = [m for _, m in messages(spool_dir) if m.startswith("line ")]
        assert [m.rsplit(" ", 1)[0] for m in msgs] == [line(i) for i in range(written)]
        # the archiver's counts on the metrics endpoint: as many compactions as
        # ctl status says, at least one per sealed segment, nothing refused
        samples = agent.metrics()
        status = json.loads(agent.hostlog("ctl", "-c", str(agent.config), "--json", "status").stdout)
        assert samples['hostlog_spool_rewrites_total{kind="compacted"}'] == status["agent"]["archive"]["compacted"]
        assert samples['hostlog_spool_rewrites_total{kind="compacted"}'] >= len(SpoolReader.open(
            spool_dir).segment_paths()) - 1 >= 2
        assert samples['hostlog_spool_rewrites_total{kind="archived"}'] == 0
        assert samples["hostlog_spool_rewrites_refused"] == 0
        assert samples["hostlog_spool_archiver_failed_passes_total"] == 0
    finally:
        agent.stop()
    assert "archiver: compacted" in agent.log_text()


def test_seal_after_seals_a_quiet_segment_sooner(tmp_path: Path) -> None:
    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    quiet = Spool.open(tmp_path / "spool", keyring, seal_after=3600)
    quiet.append(Columns.of([Record(ts=time.time_ns(), msg="one", app="a")]))
    quiet.maintain(time.time_ns() + 3000 * 10**9)
    assert len(quiet.segments) == 1  # not an hour old yet
    quiet.maintain(time.time_ns() + 3601 * 10**9)
    assert len(quiet.segments) == 2 and quiet.segments[0].sealed_ns is not None
    quiet.close()
    default = Spool.open(tmp_path / "other", keyring)
    assert default.segment_age == 86400.0  # a quarter of max_age (30 days), at most a day
    default.close()


def test_one_archiver_archives_a_segment_once_it_is_old_enough(tmp_path: Path) -> None:
    """The agent's archiver runs pass after pass: a segment compacted (or
    passed over) while young is archived by a later pass, once old enough."""
    now = time.time_ns()
    spool, n = build(tmp_path, now_ns=now)
    archiver = Archiver(spool, policy(after_s=8.5 * 86400, keep_s=30 * 86400))
    first = archiver.run_once(now)
    assert len(first.archived) == 2 and len(first.compacted) == DAYS - 3
    later = archiver.run_once(now + 2 * DAY_NS)  # two days on: two more are old enough
    assert [r.name for r in later.archived] == [f"{1 + i * PER_DAY:020d}.seg" for i in (2, 3)]
    assert not later.compacted
    spool.close()
    assert [s for s, _ in messages(tmp_path / "spool")] == list(range(1, n + 1))


def test_an_archive_elsewhere_from_the_config(tmp_path: Path) -> None:
    """``[spool.archive] dir`` outside the spool: ``hostlog spool archive -c``
    puts the segments there, and readers find them (archive.json)."""
    now = time.time_ns()
    spool, n = build(tmp_path / "state", now_ns=now)
    spool.close()
    elsewhere = tmp_path / "cold"
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"

[spool]
max_age = 0

[spool.archive]
after = "5d"
keep = "0"
dir = "{elsewhere}"
""")
    done = hostlog("spool", "archive", "-c", str(config))
    assert done.stdout.count("archived ") == DAYS - 5, done.stdout
    assert len(os.listdir(elsewhere)) == DAYS - 5
    assert not (tmp_path / "state" / "spool" / "archive").exists()
    assert messages(tmp_path / "state" / "spool") == [(i + 1, line(i)) for i in range(n)]
    out = hostlog("spool", "verify", "-c", str(config)).stdout
    assert out.rstrip().endswith("OK")
