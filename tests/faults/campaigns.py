"""Fault campaigns on real spools, run in a child process by the tests so a
hang becomes a timeout instead of a stuck suite.

    python -m tests.faults.campaigns NAME JSON-ARGS

prints one JSON object (the campaign's figures) on its last stdout line;
progress goes to stderr so a timeout shows where it stopped. Every campaign
writes its spool with the real writer (SpoolWriter over Spool), damages the
files, and checks what the real readers make of them: SpoolReader (what
`hostlog query` reads through), collect_stats(verify=True) (what `hostlog
spool verify` prints) and Spool.open (recovery).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostlog.record import Columns, Record
from hostlog.spool import frame as F
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import SegmentReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter


# -- building a spool ---------------------------------------------------------
def make_records(n: int, start: int, size: int = 40) -> list[Record]:
    # random text: frames do not all compress alike, and every message is unique
    rnd = random.Random(start)
    return [Record(ts=1_700_000_000_000_000_000 + start + i,
                   msg=f"r{start + i:07d} " + rnd.randbytes(size // 2).hex(), app="app")
            for i in range(n)]


def write_spool(directory: Path, batches: list[int], *, frame_records: int = 4096,
                frame_bytes: int = 1 << 20, segment_bytes: int = 64 << 20,
                msg_size: int = 40, seal_last: bool = False) -> list[str]:
    """Write ``batches`` (record counts) with the real writer; returns the
    messages in the order written. The last segment stays active (unsealed)
    unless ``seal_last``."""
    key = Keyring.load_or_create(directory.parent / "spool.key")
    sent: list[str] = []

    async def main() -> None:
        spool = Spool.open(directory, key, segment_bytes=segment_bytes)
        writer = SpoolWriter(spool, fsync="never", frame_records=frame_records,
                             frame_bytes=frame_bytes)
        writer.start()
        for n in batches:
            batch = make_records(n, len(sent), msg_size)
            sent.extend(r.msg for r in batch)
            await writer.write(Columns.of(batch))
            # one flush per batch: frames end where batches do (unless split)
            await writer.flush()
        await writer.stop()
        if seal_last:
            spool.rotate()
        spool.close()

    asyncio.run(main())
    return sent


@dataclass
class Region:
    segment: str
    kind: str  # "header", "frame", "footer"
    start: int
    end: int
    first_seq: int = 0
    count: int = 0


def layout(directory: Path) -> list[Region]:
    """Where every byte of every segment belongs, from a pristine spool."""
    reader = SpoolReader.open(directory)
    regions: list[Region] = []
    for path in reader.segment_paths():
        with SegmentReader(path, reader.keyring) as seg:
            index = seg.index()
            assert not index.damage
            regions.append(Region(path.name, "header", 0, F.SEGMENT_HEADER_SIZE))
            for e in index.entries:
                regions.append(Region(path.name, "frame", e.offset, e.offset + e.size,
                                      e.first_seq, e.count))
            if index.sealed:
                regions.append(Region(path.name, "footer", index.end, seg.size()))
    return regions


def read_all(directory: Path) -> tuple[dict[int, str], list[Any]]:
    """Every record SpoolReader yields (seq -> msg), and the damage it reported."""
    reader = SpoolReader.open(directory)
    got: dict[int, str] = {}
    for seq, record in reader.records():
        assert seq not in got, f"seq {seq} read twice"
        got[seq] = record.msg  # type: ignore[assignment]
    return got, list(reader.damage)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (directory / "segments").iterdir()}


def restore(directory: Path, files: dict[str, bytes]) -> None:
    segs = directory / "segments"
    for p in segs.iterdir():
        if p.name not in files:
            p.unlink()
    for name, data in files.items():
        (segs / name).write_bytes(data)


def check_read(got: dict[int, str], expected: dict[int, str]) -> None:
    """Whatever a reader yields after damage must be exactly what was written."""
    for seq, msg in got.items():
        if expected.get(seq) != msg:
            raise AssertionError(f"seq {seq} read as {msg!r}, written as {expected.get(seq)!r}")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- campaigns ------------------------------------------------------------------
def frame_limit(work: Path, *, batch: int, frame_records: int, frame_bytes: int,
                msg_size: int, victims: int, seed: int) -> dict[str, Any]:
    """One batch far larger than the frame limits; flip one bit in one frame
    at a time (in sealed and active segments): what is lost is that frame."""
    directory = work / "spool"
    sent = write_spool(directory, [batch], frame_records=frame_records,
                       frame_bytes=frame_bytes, segment_bytes=64 * 1024, msg_size=msg_size)
    expected = dict(enumerate(sent, 1))
    regions = layout(directory)
    frames = [r for r in regions if r.kind == "frame"]
    pristine = snapshot(directory)
    got, damage = read_all(directory)
    assert got == expected and not damage, "the pristine spool does not read back whole"
    rnd = random.Random(seed)
    worst = 0
    results = []
    for victim in rnd.sample(frames, min(victims, len(frames))):
        # a bit in the payload, past the frame header: the header stays intact
        pos = rnd.randrange(victim.start + F.FRAME_HEADER_SIZE, victim.end)
        data = bytearray(pristine[victim.segment])
        data[pos] ^= 1 << rnd.randrange(8)
        (directory / "segments" / victim.segment).write_bytes(bytes(data))
        got, damage = read_all(directory)
        check_read(got, expected)
        lost = len(expected) - len(got)
        missing = set(expected) - set(got)
        results.append({"segment": victim.segment, "offset": victim.start,
                        "frame_records": victim.count, "lost": lost,
                        "reported": [str(d) for d in damage],
                        "missing_is_the_frame": missing == set(range(
                            victim.first_seq, victim.first_seq + victim.count))})
        worst = max(worst, lost)
        restore(directory, pristine)
    counts = [r.count for r in frames]
    text = {}  # message bytes per frame, as the frame_bytes limit counts them
    for r in frames:
        text[r.start, r.segment] = sum(len(expected[s].encode())
                                       for s in range(r.first_seq, r.first_seq + r.count))
    return {"records": len(sent), "frames": len(frames),
            "segments": len({r.segment for r in regions}),
            "max_frame_records": max(counts), "max_frame_text": max(text.values()),
            "faults": len(results), "worst_lost": worst, "results": results}


def torn_tail(work: Path, *, frames: int, stride: int, deadline_s: float) -> dict[str, Any]:
    """Cut the active segment at every offset (every ``stride``-th) across its
    last two frames: recovery cuts exactly the torn frame."""
    directory = work / "spool"
    sent = write_spool(directory, [50] * frames, segment_bytes=1 << 30)
    expected = dict(enumerate(sent, 1))
    regions = [r for r in layout(directory) if r.kind == "frame"]
    segment = regions[-1].segment
    path = directory / "segments" / segment
    pristine = path.read_bytes()
    start, end = regions[-2].start, regions[-1].end
    assert end == len(pristine)
    deadline = time.monotonic() + deadline_s
    cuts = 0
    offsets = sorted(set(range(start, end + 1, stride)) | {start, regions[-1].start, end,
                                                             regions[-1].start + 1,
                                                             regions[-1].start + F.FRAME_HEADER_SIZE})
    for cut in offsets:
        if time.monotonic() > deadline:
            raise AssertionError(f"torn tail: deadline passed after {cuts} cuts")
        path.write_bytes(pristine[:cut])
        whole = [r for r in regions if r.end <= cut]
        boundary = whole[-1].end
        want = {s: expected[s] for s in range(1, whole[-1].first_seq + whole[-1].count)}
        # a reader (no lock, no recovery) sees the whole frames, no damage
        got, damage = read_all(directory)
        assert got == want, f"cut at {cut}: reader saw {len(got)} records, want {len(want)}"
        assert not damage, f"cut at {cut}: a torn tail reported as damage: {damage}"
        # recovery cuts exactly the torn frame and continues after the last whole one
        spool = Spool.open(directory, Keyring.load(directory.parent / "spool.key"))
        try:
            rep = spool.recovery
            assert rep.truncated_bytes == cut - boundary, (cut, rep.truncated_bytes, boundary)
            assert rep.next_seq == len(want) + 1, (cut, rep.next_seq)
            assert not rep.damage, (cut, rep.damage)
        finally:
            spool.close()
        assert path.stat().st_size == boundary
        got, damage = read_all(directory)
        assert got == want and not damage
        cuts += 1
    path.write_bytes(pristine)
    return {"frames_in_segment": len([r for r in regions if r.segment == segment]),
            "bytes_range": end - start, "cuts": cuts, "lost_beyond_torn_frame": 0}


def bit_flips(work: Path, *, flips: int, recover_every: int, seed: int,
              deadline_s: float, targeted: int = 0) -> dict[str, Any]:
    """Random single-bit flips across every byte of a spool of sealed and
    active segments; each checked by the reader and verify, and every
    ``recover_every``-th also by recovery (Spool.open); every ``targeted``-th
    flip is aimed at a segment header, a footer or the last frame header."""
    directory = work / "spool"
    # ~5 sealed segments of a few frames each, and an active one
    sent = write_spool(directory, [40, 60, 80, 30] * 6, segment_bytes=12 * 1024)
    expected = dict(enumerate(sent, 1))
    regions = layout(directory)
    pristine = snapshot(directory)
    sealed = {r.segment for r in regions if r.kind == "footer"}
    sizes = {name: len(data) for name, data in pristine.items()}
    names = sorted(sizes)
    total = sum(sizes.values())
    keyring = Keyring.load(directory.parent / "spool.key")
    special = [r for r in regions if r.kind != "frame"] + [
        [r for r in regions if r.kind == "frame"][-1]]
    rnd = random.Random(seed)
    deadline = time.monotonic() + deadline_s
    fig: dict[str, Any] = {"seed": seed, "records": len(sent), "bytes": total,
                           "segments": len(names), "sealed": len(sealed),
                           "frames": sum(r.kind == "frame" for r in regions),
                           "faults": 0, "hits": {}, "frames_damaged": 0,
                           "frames_detected_by_reader": 0, "frames_detected_by_verify": 0,
                           "tail_frame_header_taken_as_torn": 0,
                           "undamaged_frames_checked": 0, "undamaged_frames_unreadable": 0,
                           "segment_headers_damaged": 0, "segment_headers_reported": 0,
                           "records_lost_to_segment_headers": 0,
                           "footers_damaged": 0, "footers_reported_by_verify": 0,
                           "footers_reported_by_recovery": 0,
                           "max_records_lost_to_one_frame": 0, "recoveries": 0,
                           "recoveries_reporting": 0, "wrong_records": 0}
    for i in range(flips):
        if time.monotonic() > deadline:
            raise AssertionError(f"bit flips: deadline passed after {i} flips")
        if targeted and i % targeted == 0:
            # headers and footers are a few hundred bytes of a spool: aim at
            # them too, and at the active segment's last frame header
            aim = rnd.choice(special)
            name, pos = aim.segment, rnd.randrange(aim.start, min(aim.end, aim.start + 104))
        else:
            pos = rnd.randrange(total)
            for name in names:
                if pos < sizes[name]:
                    break
                pos -= sizes[name]
        bit = rnd.randrange(8)
        region = next(r for r in regions if r.segment == name and r.start <= pos < r.end)
        fig["faults"] += 1
        fig["hits"][region.kind] = fig["hits"].get(region.kind, 0) + 1
        path = directory / "segments" / name
        data = bytearray(pristine[name])
        data[pos] ^= 1 << bit
        path.write_bytes(bytes(data))
        where = f"flip {i}: {name} byte {pos} bit {bit} ({region.kind})"
        got, damage = read_all(directory)
        check_read(got, expected)
        stats = collect_stats(SpoolReader.open(directory), verify=True)
        reported = {(d.segment, d.offset) for d in damage}
        verified = {(d.segment, d.offset) for d in stats.damage}
        others = [r for r in regions if r.kind == "frame" and r is not region
                  and not (region.kind == "header" and r.segment == name)]
        for r in others:
            fig["undamaged_frames_checked"] += 1
            if any(s not in got for s in range(r.first_seq, r.first_seq + r.count)):
                fig["undamaged_frames_unreadable"] += 1
                progress(f"{where}: undamaged frame {r.segment} @ {r.start} unreadable")
        if region.kind == "frame":
            fig["frames_damaged"] += 1
            seqs = range(region.first_seq, region.first_seq + region.count)
            lost = sum(s not in got for s in seqs)
            fig["max_records_lost_to_one_frame"] = max(fig["max_records_lost_to_one_frame"], lost)
            last_of_active = (name not in sealed and region is [r for r in regions
                                                                 if r.segment == name][-1])
            if (name, region.start) in reported:
                fig["frames_detected_by_reader"] += 1
            if (name, region.start) in verified:
                fig["frames_detected_by_verify"] += 1
            if lost and (name, region.start) not in reported:
                if last_of_active and pos < region.start + F.FRAME_HEADER_SIZE:
                    # the last frame of the active segment with a broken header
                    # looks exactly like a frame still being written
                    fig["tail_frame_header_taken_as_torn"] += 1
                else:
                    progress(f"{where}: damaged frame not reported ({damage})")
        elif region.kind == "header":
            fig["segment_headers_damaged"] += 1
            lost = sum(1 for r in regions if r.kind == "frame" and r.segment == name
                       for s in range(r.first_seq, r.first_seq + r.count) if s not in got)
            fig["records_lost_to_segment_headers"] += lost
            if (name, 0) in reported and (name, 0) in verified:
                fig["segment_headers_reported"] += 1
            else:
                progress(f"{where}: damaged segment header not reported")
        else:
            fig["footers_damaged"] += 1
            if stats.damage:
                fig["footers_reported_by_verify"] += 1
        if region.kind in ("header", "footer") or (recover_every and i % recover_every == 0):
            fig["recoveries"] += 1
            spool = Spool.open(directory, keyring)
            try:
                rep = spool.recovery
                noticed = bool(rep.damage or rep.truncated_bytes)
                fig["recoveries_reporting"] += noticed
                if region.kind == "footer" and noticed:
                    fig["footers_reported_by_recovery"] += 1
            finally:
                spool.close()
            # what recovery kept reads back as written; in the active segment
            # it cuts at the damaged frame: what came before it stays
            after, _ = read_all(directory)
            check_read(after, expected)
            if region.kind == "frame" and name not in sealed:
                kept_before = all(s in after for s in range(1, region.first_seq))
                if not kept_before:
                    progress(f"{where}: recovery lost records before the damaged frame")
                    fig["recovery_lost_before_damage"] = fig.get("recovery_lost_before_damage", 0) + 1
                fig["records_cut_by_recovery"] = max(
                    fig.get("records_cut_by_recovery", 0), len(got) - len(after))
            elif len(after) < len(got):
                progress(f"{where}: recovery lost {len(got) - len(after)} readable records")
                fig["recovery_lost_readable"] = fig.get("recovery_lost_readable", 0) + 1
        restore(directory, pristine)
        if i % 200 == 0:
            progress(f"{where}: ok")
    return fig


CAMPAIGNS = {"frame_limit": frame_limit, "torn_tail": torn_tail, "bit_flips": bit_flips}


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    work = Path(args.pop("work"))
    result = CAMPAIGNS[name](work, **args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
