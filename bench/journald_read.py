"""journald collector: entries/s from journal files into the spool.

    .venv/bin/python bench/journald_read.py [--entries 200000] [--runs 5]

1. Builds one journal file with the real systemd-journal-remote from an export
   stream of ``--entries`` entries shaped like a busy system journal: the
   trusted fields journald adds (_PID, _UID, _COMM, _EXE, _CMDLINE,
   _SYSTEMD_UNIT, _BOOT_ID, ...), SYSLOG_IDENTIFIER, PRIORITY and a MESSAGE
   taken from the loghub Linux sample (real lines, read in place).
2. The journald collector reads it (``directory =``, ``start = "beginning"``)
   into a real spool (SpoolWriter, fsync = "batch" every 50 ms) until every
   entry is durable: the time from start() to that point.
3. Beside it, ``journalctl -D DIR -o export > /dev/null`` over the same file:
   what systemd's own reader needs to read and format the same entries; the
   collector once more with its Python reader and mapper (``compiled =
   False``: what runs without the compiled ``_journald_read``); and
   systemd-python's raw reader alone (no mapping, no spool).

The collector runs as the agent runs it: on uvloop (when installed), with the
agent's GC setting (``hostlog.agent.agent.tune_gc``: ``gc.freeze()`` after
start-up and a gen-0 threshold of 50,000); ``--default-gc`` leaves Python's
default thresholds, ``--asyncio`` takes asyncio's own loop.

Prints the medians of ``--runs`` runs and the machine; bench/RESULTS.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostlog.agent.agent import tune_gc
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.journald.collector import JournaldCollector
from hostlog.config import JournaldSource
from hostlog.spool.checkpoints import CheckpointFiles
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "loghub"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
UNITS = ("sshd.service", "cron.service", "nginx.service", "systemd-logind.service")


def export_stream(n: int) -> bytes:
    text = (CORPORA / "Linux_2k.log").read_bytes().decode("utf-8", "replace")
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]
    t0 = 1_700_000_000_000_000
    out = []
    for i in range(n):
        unit = UNITS[i % len(UNITS)]
        comm = unit.split(".")[0]
        pid = 1000 + i % 97
        out.append(
            f"__REALTIME_TIMESTAMP={t0 + i * 1000}\n__MONOTONIC_TIMESTAMP={1_000_000 + i * 1000}\n"
            f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_MACHINE_ID=fedcba9876543210fedcba9876543210\n"
            f"_HOSTNAME=bench-host\n_TRANSPORT=syslog\n_UID=0\n_GID=0\n_PID={pid}\n_COMM={comm}\n"
            f"_EXE=/usr/sbin/{comm}\n_CMDLINE=/usr/sbin/{comm} -D\n_SYSTEMD_UNIT={unit}\n"
            f"_SYSTEMD_CGROUP=/system.slice/{unit}\nPRIORITY={i % 8}\nSYSLOG_FACILITY=3\n"
            f"SYSLOG_IDENTIFIER={comm}\nSYSLOG_PID={pid}\nMESSAGE={lines[i % len(lines)]}\n\n")
    return "".join(out).encode()


def build(directory: Path, n: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "bench.journal"
    res = subprocess.run([JOURNAL_REMOTE, f"--output={out}", "-"], input=export_stream(n),
                         capture_output=True, timeout=600)
    if res.returncode != 0:
        sys.exit(f"systemd-journal-remote failed: {res.stderr.decode(errors='replace')}")
    return out


TUNE_GC = True  # the agent's GC setting (--default-gc: Python's)


async def collect(journal_dir: Path, state: Path, n: int, compiled: bool = True) -> float:
    keyring = Keyring.load_or_create(state / "spool.key")
    spool = Spool.open(state / "spool", keyring)
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
    writer.start()
    context = CollectorContext(hostname="bench", sink=writer,
                               checkpoints=CheckpointFiles(state / "spool" / "state" / "checkpoints"))
    collector = JournaldCollector(JournaldSource(name="bench", directory=journal_dir, start="beginning"),
                                  context)
    collector.compiled = compiled  # False: the Python reader and mapper (journald_map)
    gc.collect()
    if TUNE_GC:
        tune_gc()  # as the agent does once it has started
    t0 = time.perf_counter()
    await collector.start()
    while writer.durable_seq < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    await collector.stop()
    await writer.stop()
    spool.close()
    return elapsed


def raw_read(journal_dir: Path) -> float:
    """The reader alone (the calls the collector makes), without mapping or spool."""
    from systemd import journal
    reader = journal.Reader(path=str(journal_dir))
    reader.seek_head()
    t0 = time.perf_counter()
    while reader._next():
        entry = reader._get_all()
        entry["__REALTIME_TIMESTAMP"] = reader._get_realtime()
        entry["__MONOTONIC_TIMESTAMP"] = reader._get_monotonic()[0]
    elapsed = time.perf_counter() - t0
    reader.close()
    return elapsed


def journalctl(journal_dir: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["journalctl", "-D", str(journal_dir), "-o", "export"], stdout=subprocess.DEVNULL,
                   check=True, timeout=600)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--default-gc", action="store_true", help="Python's GC thresholds, not the agent's")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's loop, not uvloop")
    args = parser.parse_args()
    global TUNE_GC
    TUNE_GC = not args.default_gc
    run_loop = asyncio.run
    if not args.asyncio:
        try:
            import uvloop
            run_loop = uvloop.run  # what the agent runs on
        except ImportError:
            pass
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        jdir = Path(d) / "journal"
        t0 = time.perf_counter()
        build(jdir, args.entries)
        size = sum(f.stat().st_blocks * 512 for f in jdir.iterdir())
        print(f"built {args.entries} entries ({size / 2**20:.0f} MiB on disk) "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        ours, pythons, theirs, raws, ratios = [], [], [], [], []
        for run in range(args.runs):
            ours.append(run_loop(collect(jdir, Path(d) / f"state{run}", args.entries)))
            theirs.append(journalctl(jdir))
            pythons.append(run_loop(collect(jdir, Path(d) / f"py{run}", args.entries, False)))
            raws.append(raw_read(jdir))
            ratios.append(theirs[-1] / ours[-1])
            print(f"run {run + 1}: collector {ours[-1]:.2f}s, journalctl {theirs[-1]:.2f}s "
                  f"(collector/journalctl rate {ratios[-1]:.2f}), python reader {pythons[-1]:.2f}s",
                  file=sys.stderr)
    mo, mt, mr = statistics.median(ours), statistics.median(theirs), statistics.median(raws)
    mp = statistics.median(pythons)
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.machine()}, {platform.system()} {platform.release()}")
    print(f"entries: {args.entries}, runs: {args.runs} (medians); loop: "
          f"{'asyncio' if run_loop is asyncio.run else 'uvloop'}, GC: "
          f"{'the agent' if TUNE_GC else 'Python default'}\n")
    print("| reader | time | entries/s |")
    print("|---|---|---|")
    print(f"| journald collector → spool (durable) | {mo:.2f} s | {args.entries / mo:,.0f} |")
    print(f"| the same, Python reader and mapper (no `_journald_read`) | {mp:.2f} s "
          f"| {args.entries / mp:,.0f} |")
    print(f"| systemd.journal.Reader alone (read fields, no mapping, no spool) | {mr:.2f} s "
          f"| {args.entries / mr:,.0f} |")
    print(f"| `journalctl -D DIR -o export > /dev/null` | {mt:.2f} s | {args.entries / mt:,.0f} |")
    print(f"\ncollector rate / journalctl rate, per run (same run): "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
