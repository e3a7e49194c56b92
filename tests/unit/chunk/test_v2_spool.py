"""A spool that holds chunks of both versions (written with ``[spool] chunk``
"v1", then "v2"): query, ``spool verify`` and ``spool stats`` read all of it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hostlog.chunk import chunk_version
from hostlog.config import parse_config
from hostlog.query.build import build_query
from hostlog.query.run import select
from hostlog.record import Columns, Record
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from tests.faults.helpers import hostlog
from tests.support.config import only_problem


def _batch(k: int) -> list[Record]:
    return [Record(ts=(k * 100 + i) * 10**9, msg=f"job {k} step {i:03d} took {i * 7} ms",
                   host="h", source="file", app=f"app{k % 3}", severity=3 if i % 10 == 0 else 6,
                   fields={"path": f"/var/log/{k % 3}.log"})
            for i in range(50)]


def _write(directory: Path, version: int, batches: range) -> list[Record]:
    spool = Spool.open(directory, Keyring.load_or_create(directory.parent / "spool.key"),
                       segment_bytes=64 << 10)
    spool.chunk_version = version
    sent = []
    try:
        for k in batches:
            rows = _batch(k)
            spool.append(Columns.of(rows))
            sent += rows
    finally:
        spool.close()
    return sent


def test_a_spool_of_v1_and_v2_chunks_reads_whole(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    sent = _write(directory, 1, range(0, 30)) + _write(directory, 2, range(30, 60))
    reader = SpoolReader.open(directory)
    versions = set()
    for seg, entry in reader.frames():
        chunk = reader.read_chunk(seg, entry)
        assert chunk is not None
        versions.add(chunk_version(chunk))
    assert versions == {1, 2}

    pieces, _ = select(reader, build_query())
    got = [r for piece in pieces for _, r in piece]
    assert [(r.ts, r.msg, r.app, r.severity, r.fields) for r in got] == \
        [(r.ts, r.msg, r.app, r.severity, r.fields) for r in sent]
    assert [r.seq for r in got] == list(range(1, len(sent) + 1))
    for words, test in (({"priority": "err"}, lambda r: r.severity <= 3),
                        ({"units": ["app1"]}, lambda r: r.app == "app1"),
                        ({"grep": "step 007 took"}, lambda r: "step 007 took" in r.msg),
                        ({"matches": ["MESSAGE=job 40 step 001 took 7 ms"]},
                         lambda r: r.msg == "job 40 step 001 took 7 ms")):
        pieces, _ = select(reader, build_query(**words))
        assert [r.msg for piece in pieces for _, r in piece] == [r.msg for r in sent if test(r)], words

    stats = collect_stats(reader, verify=True)
    assert not stats.damage and not stats.gaps and stats.records == len(sent)

    verify = hostlog("spool", "verify", "-D", str(directory))
    assert verify.returncode == 0 and f"{len(sent)} records verified" in verify.stdout, verify
    shown = hostlog("spool", "stats", "-D", str(directory))
    assert shown.returncode == 0 and str(len(sent)) in shown.stdout, shown
    cat = hostlog("query", "-D", str(directory), "-o", "cat", "--no-pager", "-q", "-g", "step 049")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.splitlines() == [r.msg for r in sent if "step 049" in r.msg]


def test_the_chunk_key_names_a_layout() -> None:
    assert parse_config("").spool.chunk == "v1"
    assert parse_config('[spool]\nchunk = "v2"\n').spool.chunk == "v2"
    key, message = only_problem('[spool]\nchunk = "v3"\n')
    assert key == "spool.chunk" and "v2" in message


#: Tests of the spool, its readers and forwarding, run again with chunk v2 as
#: the writer's layout.
#: (The forward protocol carries chunk bytes as the spool holds them; the
#: edge-to-central test with a v2 edge is test_v2_agent.py.)
WITH_V2 = ["tests/unit/spool/test_spool.py", "tests/unit/spool/test_reader.py",
           "tests/unit/spool/test_writer.py", "tests/unit/query/test_filters.py",
           "tests/unit/query/test_stats.py"]


def test_spool_query_and_forward_tests_pass_with_v2_as_the_writers_chunk() -> None:
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "tests.support.chunk_v2", *WITH_V2],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    written = re.search(r"spool frames encoded: (.*)", proc.stdout)
    assert written and "v2" in written.group(1) and "v1" not in written.group(1), proc.stdout[-2000:]
