"""Chunk v2 against v1: compression and speed on the loghub samples.

    .venv/bin/python bench/chunk_v2.py --corpus DIR [--runs 5] [--spool] [--ingest N]

``--corpus`` (or the environment variable HOSTLOG_CORPORA) names a directory
of loghub samples (``*_2k.log``). Each sample is handed over as the file
source hands over a file's lines (one batch: read time, the file's tag as
app, ``{"path": ...}``, the agent's id, seqs counting up) and encoded as one
frame (a frame holds up to 4,096 records; a sample's 2,000 lines are one
frame; repeating them to fill 4,096 would make the second copy nearly free).

Ratio = the sample's bytes / (compressed chunk + the 89 bytes a frame adds:
its 73-byte header and the 16-byte GCM tag). Columns:

* ``LZ4 HC raw`` / ``zstd -19 raw``: the sample's text compressed whole
  (LZ4 HC level 9, as ``lz4 -9``; zstd level 19), no frame;
* ``v1+LZ4``: what the spool writes today (chunk v1, LZ4 HC level 3);
* ``v2+LZ4``: chunk v2, LZ4 HC level 3 (the spool's compressor);
* ``v2+zstd 3`` / ``v2+zstd 19``: chunk v2 under zstd;
* ``half: zstd 3 / +dict``: the sample's second 1,000 lines as one v2 frame,
  under zstd 3 without and with a dictionary (8 KiB) trained on v2 chunks of
  64 records each of its first 1,000 lines (a dictionary per app, trained on
  what that app wrote before).

Speeds (all samples, MB of log text per second, one core; medians of
``--runs``): encode and decode (``decode_columns``) of v1 and v2, and the
compressors over the v2 chunks. ``--spool``: the same samples written
through a real spool (SpoolWriter, AES-GCM, segment on disk) with
``chunk = "v1"`` and ``"v2"``; ratio = sample bytes / segment bytes.
``--ingest N``: records/s of N syslog-shaped records through the spool
writer with each version (what decides the default for syslog ingest).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lz4.block

from hostlog.chunk import decode_columns, encode_columns
from hostlog.collectors.files.lines import decode_messages
from hostlog.record import Columns

try:
    import zstandard
except ImportError:  # measured where it is installed; the table says so
    zstandard = None

FRAME_OVERHEAD = 73 + 16
AGENT = "0123456789abcdef0123456789abcdef"


def samples(directory: Path) -> dict[str, tuple[bytes, list[str | bytes]]]:
    out = {}
    for path in sorted(directory.glob("*_2k.log")):
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        out[path.name.split("_")[0]] = (data, decode_messages(lines))
    if not out:
        sys.exit(f"no *_2k.log samples in {directory}")
    return out


def file_batch(app: str, msgs: list[str | bytes], first_seq: int = 1) -> Columns:
    """The columns the file source hands over for a file's lines, stamped as
    the spool stamps them (origin, seq)."""
    n = len(msgs)
    fields = {"path": f"/var/log/{app}.log"}
    return Columns([[time.time_ns()] * n, ["bench-host"] * n, ["file"] * n, [app] * n, [None] * n,
                    [6] * n, [None] * n, list(msgs), [fields] * n, [AGENT] * n,
                    range(first_seq, first_seq + n)])  # type: ignore[list-item]


def lz4hc(data: bytes, level: int = 3) -> bytes:
    out: bytes = lz4.block.compress(data, mode="high_compression", compression=level,
                                    store_size=False)
    return out


def zstd(data: bytes, level: int, dictionary: Any = None) -> bytes:
    assert zstandard is not None
    c = zstandard.ZstdCompressor(level=level, dict_data=dictionary)
    out: bytes = c.compress(data)
    return out


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ratios(corpus: dict[str, tuple[bytes, list[str | bytes]]]) -> list[list[Any]]:
    rows = []
    for app, (data, msgs) in corpus.items():
        raw = len(data)
        v1 = encode_columns(file_batch(app, msgs).columns, 1)
        v2 = encode_columns(file_batch(app, msgs).columns, 2)
        assert decode_columns(v2).msg == msgs, app  # lossless, or no figure
        row: list[Any] = [app, raw, raw / len(lz4hc(data, 9))]
        row.append(raw / len(zstd(data, 19)) if zstandard else None)
        row += [raw / (len(lz4hc(v1)) + FRAME_OVERHEAD), raw / (len(lz4hc(v2)) + FRAME_OVERHEAD)]
        if zstandard:
            row += [raw / (len(zstd(v2, 3)) + FRAME_OVERHEAD), raw / (len(zstd(v2, 19)) + FRAME_OVERHEAD)]
            half = len(msgs) // 2
            head, tail = msgs[:half], msgs[half:]
            tail_raw = sum(len(m.encode() if isinstance(m, str) else m) + 1 for m in tail)
            chunk = encode_columns(file_batch(app, tail, half + 1).columns, 2)
            training = [encode_columns(file_batch(app, head[i:i + 64], i + 1).columns, 2)
                        for i in range(0, len(head), 64)]
            dictionary = zstandard.train_dictionary(8192, training)
            row += [tail_raw / (len(zstd(chunk, 3)) + FRAME_OVERHEAD),
                    tail_raw / (len(zstd(chunk, 3, dictionary)) + FRAME_OVERHEAD)]
        else:
            row += [None] * 4
        rows.append(row)
    return rows


def speeds(corpus: dict[str, tuple[bytes, list[str | bytes]]], runs: int) -> dict[str, float]:
    total = sum(len(d) for d, _ in corpus.values()) / 1e6
    batches = [file_batch(app, msgs) for app, (_, msgs) in corpus.items()]
    chunks = {v: [encode_columns(b.columns, v) for b in batches] for v in (1, 2)}
    out = {}
    for v in (1, 2):
        out[f"encode v{v}"] = total / median_time(
            lambda v=v: [encode_columns(b.columns, v) for b in batches], runs)
        out[f"decode v{v}"] = total / median_time(
            lambda v=v: [decode_columns(c) for c in chunks[v]], runs)
    lz = [lz4hc(c) for c in chunks[2]]
    out["LZ4 HC 3 compress (v2)"] = total / median_time(lambda: [lz4hc(c) for c in chunks[2]], runs)
    out["LZ4 decompress (v2)"] = total / median_time(
        lambda: [lz4.block.decompress(z, uncompressed_size=len(c)) for z, c in zip(lz, chunks[2])],
        runs)
    if zstandard:
        for level in (3, 19):
            zs = [zstd(c, level) for c in chunks[2]]
            out[f"zstd {level} compress (v2)"] = total / median_time(
                lambda level=level: [zstd(c, level) for c in chunks[2]], max(1, runs // 2)
                if level == 19 else runs)
            d = zstandard.ZstdDecompressor()
            out[f"zstd {level} decompress (v2)"] = total / median_time(
                lambda zs=zs, d=d: [d.decompress(z) for z in zs], runs)
    return out


def through_spool(corpus: dict[str, tuple[bytes, list[str | bytes]]]) -> dict[str, tuple[float, float]]:
    """(v1 ratio, v2 ratio) of each sample written through a real spool."""
    import asyncio
    import tempfile

    from hostlog.spool.keys import Keyring
    from hostlog.spool.spool import Spool
    from hostlog.spool.writer import SpoolWriter

    async def write(directory: Path, batch: Columns, version: int) -> int:
        spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"))
        spool.chunk_version = version
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, frame_records=4096,
                             max_pending=len(batch) + 1)
        writer.start()
        writer.submit(batch)
        await writer.flush()
        await writer.stop()
        spool.close()
        return sum(p.stat().st_size for p in (directory / "spool" / "segments").glob("*.seg"))

    out = {}
    for app, (data, msgs) in corpus.items():
        got = []
        for version in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                n = len(msgs)
                batch = file_batch(app, msgs)
                batch.origin, batch.seq = [""] * n, [0] * n  # the spool stamps them
                got.append(len(data) / asyncio.run(write(Path(tmp), batch, version)))
        out[app] = (got[0], got[1])
    return out


def ingest(n: int, runs: int) -> dict[int, float]:
    """Records/s through the spool writer (encode, LZ4, AES-GCM, write,
    fsync = batch) of n syslog-shaped records (bench/syslog_tcp.py's load:
    five apps, a counter and a request path in each message), by chunk
    version; runs alternate between the versions."""
    import asyncio
    import tempfile

    from hostlog.spool.keys import Keyring
    from hostlog.spool.spool import Spool
    from hostlog.spool.writer import SpoolWriter

    apps = ("sshd", "nginx", "cron", "postfix", "kernel")
    t0 = 1_714_557_600 * 10**9
    cols = Columns([[t0 + i * 1000 for i in range(n)], ["bench-host"] * n, ["syslog"] * n,
                    [apps[i % 5] for i in range(n)], [1000 + i % 97 for i in range(n)],
                    [i % 8 for i in range(n)], [1] * n,
                    [f"message number {i:07d} from the load generator with some ordinary text "
                     f"like a request path /api/v1/items?id={i % 5000}" for i in range(n)],
                    [{"MSGID": f"ID{i % 10}"} for i in range(n)], [""] * n, [0] * n])

    async def write(directory: Path, version: int) -> float:
        spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"))
        spool.chunk_version = version
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, max_pending=n + 1)
        writer.start()
        batch = cols.slice(0, n)
        start = time.perf_counter()
        for i in range(0, n, 1000):  # batches of 1,000, as a busy TCP connection hands over
            writer.submit(batch.slice(i, min(i + 1000, n)))
        await writer.flush()
        elapsed = time.perf_counter() - start
        await writer.stop()
        spool.close()
        return n / elapsed

    got: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(runs):
        for version in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                got[version].append(asyncio.run(write(Path(tmp), version)))
    return {v: statistics.median(r) for v, r in got.items()}


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}:1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=os.environ.get("HOSTLOG_CORPORA"),
                    help="directory of loghub *_2k.log samples (or HOSTLOG_CORPORA)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--spool", action="store_true", help="also write through a real spool")
    ap.add_argument("--ingest", type=int, default=0, metavar="N",
                    help="also: records/s of N syslog-shaped records into a spool, by version")
    args = ap.parse_args()
    if args.corpus is None:
        sys.exit("--corpus DIR (or HOSTLOG_CORPORA) is needed")
    corpus = samples(Path(args.corpus))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"zstandard {zstandard.__version__ if zstandard else 'not installed'}")
    rows = ratios(corpus)
    print("\n| sample | raw bytes | LZ4 HC raw | zstd -19 raw | v1+LZ4 | v2+LZ4 | v2+zstd 3 | "
          "v2+zstd 19 | half: zstd 3 | half: zstd 3+dict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]:,} | " + " | ".join(fmt(x) for x in row[2:]) + " |")
    cols = list(zip(*rows))
    for name, pick in (("mean", statistics.mean), ("median", statistics.median),
                       ("min", min)):
        print(f"| **{name}** | | " + " | ".join(
            fmt(pick(c)) if None not in c else "n/a" for c in cols[2:]) + " |")
    print("\n| speed (MB of log text/s, one core) | median |")
    print("|---|---|")
    for name, value in speeds(corpus, args.runs).items():
        print(f"| {name} | {value:.1f} |")
    if args.ingest:
        rates = ingest(args.ingest, args.runs)
        print("\n| spool writer, syslog-shaped records | chunk v1 | chunk v2 | v2 / v1 |")
        print("|---|---|---|---|")
        print(f"| records/s (median of {args.runs}) | {rates[1]:,.0f} | {rates[2]:,.0f} | "
              f"{rates[2] / rates[1]:.2f} |")
    if args.spool:
        print("\n| sample | spool, chunk v1 | spool, chunk v2 |")
        print("|---|---|---|")
        got = through_spool(corpus)
        for app, (a, b) in got.items():
            print(f"| {app} | {fmt(a)} | {fmt(b)} |")
        print(f"| **mean** | {fmt(statistics.mean(a for a, _ in got.values()))} | "
              f"{fmt(statistics.mean(b for _, b in got.values()))} |")
        print(f"| **min** | {fmt(min(a for a, _ in got.values()))} | "
              f"{fmt(min(b for _, b in got.values()))} |")


if __name__ == "__main__":
    main()
