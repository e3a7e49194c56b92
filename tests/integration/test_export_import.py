"""``hostlog spool export`` and ``hostlog spool import`` between real spools:
every record moved without loss (exactly: identity, time, fields), and
none twice when the same file, or an overlapping one, is imported again."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hostlog.record import Columns, Record
from hostlog.spool.archive import ArchivePolicy, Archiver
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from tests.agentproc import HOSTLOG
from tests.integration.test_archive import build


def hostlog(*args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([*HOSTLOG, *args], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done


def records(spool_dir: Path) -> list[Record]:
    reader = SpoolReader.open(spool_dir)
    out = [r for _, r in reader.records()]
    assert not reader.damage
    return out


def key(r: Record) -> tuple:
    return (r.origin, r.seq, r.ts, r.msg, r.host, r.source, r.app, r.pid, r.severity,
            r.facility, r.fields)


@pytest.mark.parametrize("fmt", ["export", "json"])
def test_export_import_round_trip(tmp_path: Path, fmt: str) -> None:
    now = time.time_ns()
    spool, n = build(tmp_path / "a", now_ns=now)
    # part of it archived: the export reads the archive too
    Archiver(spool, ArchivePolicy(archive=True, after_s=6 * 86400, keep_s=1e9, frame_records=4096,
                                  frame_bytes=1 << 20)).run_once(now)
    spool.append(Columns.of([
        Record(ts=now + 123, msg=b"\xff not utf-8", host="h", source="file", app="bin",
               fields={"K": [b"\x00", "two"], "T": "t"})]))
    spool.close()
    src = tmp_path / "a" / "spool"
    want = records(src)
    assert len(want) == n + 1
    dump = tmp_path / f"all.{fmt}"
    dump.write_bytes(hostlog("spool", "export", "-D", str(src), "-o", fmt).stdout)

    dst = tmp_path / "b" / "spool"
    out = hostlog("spool", "import", "-D", str(dst), str(dump)).stdout.decode()
    assert f"{n + 1} imported, 0 held already" in out
    got = records(dst)
    assert [key(r) for r in got] == [key(r) for r in want]
    # again: nothing twice
    out = hostlog("spool", "import", "-D", str(dst), str(dump)).stdout.decode()
    assert f"0 imported, {n + 1} held already" in out
    assert len(records(dst)) == n + 1
    # into the spool it came from: held there already
    out = hostlog("spool", "import", "-D", str(src), str(dump)).stdout.decode()
    assert "0 imported" in out


def test_filtered_exports_overlapping_lose_nothing(tmp_path: Path) -> None:
    """An export of one app, then of all: the second import adds exactly the
    others (a per-origin mark would drop those below the first's seqs)."""
    spool, n = build(tmp_path / "a", now_ns=time.time_ns())
    spool.close()
    src = tmp_path / "a" / "spool"
    app2 = tmp_path / "app2.export"
    app2.write_bytes(hostlog("spool", "export", "-D", str(src), "-u", "app2").stdout)
    everything = tmp_path / "all.export"
    everything.write_bytes(hostlog("spool", "export", "-D", str(src)).stdout)
    dst = tmp_path / "b" / "spool"
    out = hostlog("spool", "import", "-D", str(dst), str(app2)).stdout.decode()
    assert f"{n // 5} imported" in out
    out = hostlog("spool", "import", "-D", str(dst), str(everything)).stdout.decode()
    assert f"{n - n // 5} imported, {n // 5} held already" in out
    got = sorted((r.origin, r.seq) for r in records(dst))
    assert got == sorted((r.origin, r.seq) for r in records(src))
    # the importing spool keeps its own numbering; the records keep theirs
    target = Spool.open(dst, Keyring.load(tmp_path / "b" / "spool.key"))
    target.close()
    assert target.agent_id != got[0][0]
