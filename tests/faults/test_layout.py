"""Frames moved or replayed, segments cut in the middle, garbage in the spool,
missing or stale checkpoints: no crash, a clear report, nothing wrong read.

`hostlog spool verify` and `hostlog query` run as real child processes with a
timeout; recovery is Spool.open.
"""

from __future__ import annotations

import os

import pytest

from hostlog.errors import FrameAuthError
from hostlog.spool import frame as F
from hostlog.spool.checkpoints import CheckpointFiles
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from tests.faults.campaigns import check_read, layout, read_all, write_spool
from tests.faults.helpers import hostlog


def spool_with_segments(tmp_path):
    directory = tmp_path / "spool"
    # small batches last: the active segment holds several frames
    sent = write_spool(directory, [40, 60, 80, 30] * 4 + [10] * 8, segment_bytes=12 * 1024)
    regions = layout(directory)
    return directory, dict(enumerate(sent, 1)), regions


def frames_of(regions, segment):
    return [r for r in regions if r.kind == "frame" and r.segment == segment]


def verify(directory):
    return hostlog("spool", "verify", "-D", str(directory))


def query_msgs(directory):
    proc = hostlog("query", "-D", str(directory), "-o", "cat", "--no-pager", "-q")
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()), proc.stderr


def recover(directory):
    spool = Spool.open(directory, Keyring.load(directory.parent / "spool.key"))
    report = spool.recovery
    spool.close()
    return report


def test_aad_binds_the_salt_and_the_offset():
    # the same key, so only the associated data can tell the places apart
    key, salt = os.urandom(32), os.urandom(32)
    data = F.seal_frame(b"chunk " * 50, key=key, key_id=1, salt=salt, offset=4096,
                        first_seq=1, count=1, ts_min=0, ts_max=0, severity_mask=0, app_bloom=0)
    header_bytes = data[:F.FRAME_HEADER_SIZE]
    h = F.unpack_frame_header(header_bytes)
    payload = data[F.FRAME_HEADER_SIZE:]
    assert F.open_frame(h, header_bytes, payload, key=key, salt=salt, offset=4096) == b"chunk " * 50
    for other_salt, other_offset in ((os.urandom(32), 4096), (salt, 4097), (salt, 0)):
        with pytest.raises(FrameAuthError):
            F.open_frame(h, header_bytes, payload, key=key, salt=other_salt, offset=other_offset)


def test_a_frame_copied_into_another_segment_fails_authentication(tmp_path):
    directory, expected, regions = spool_with_segments(tmp_path)
    segs = sorted({r.segment for r in regions})
    sealed, active = segs[0], segs[-1]
    src, dst = frames_of(regions, sealed)[0], frames_of(regions, active)
    # the sealed segment's first frame at the very offset it was written for,
    # in place of the active segment's frames (whose first frame starts there too)
    assert src.start == dst[0].start == F.SEGMENT_HEADER_SIZE
    sdata = (directory / "segments" / sealed).read_bytes()
    apath = directory / "segments" / active
    adata = apath.read_bytes()
    apath.write_bytes(adata[:dst[0].start] + sdata[src.start:src.end])
    got, damage = read_all(directory)
    check_read(got, expected)
    assert any(d.segment == active and d.offset == src.start and "authentication" in d.reason
               for d in damage), damage
    assert not any(s in got for s in range(src.first_seq, src.first_seq + src.count)
                   if s >= dst[0].first_seq)
    proc = verify(directory)
    assert proc.returncode == 1 and f"{active} @ {src.start}" in proc.stdout, proc.stdout
    msgs, err = query_msgs(directory)
    assert "skipped damaged data" in err and f"{active} @ {src.start}" in err
    assert msgs == set(got.values())
    report = recover(directory)  # the active segment is cut at the moved frame
    assert report.damage or report.truncated_bytes
    after, _ = read_all(directory)
    check_read(after, expected)
    assert set(range(1, dst[0].first_seq)) <= set(after)  # the sealed segments whole
    print(f"\nFAULTS moved across segments: faults 1, detected by reader/verify/query, "
          f"records lost {len(expected) - len(after)} (the active segment from the moved frame)")


@pytest.mark.parametrize("which", ["sealed", "active"])
def test_frames_swapped_or_replayed_in_a_segment_fail_authentication(tmp_path, which):
    directory, expected, regions = spool_with_segments(tmp_path)
    segs = sorted({r.segment for r in regions})
    name = segs[0] if which == "sealed" else segs[-1]
    fr = frames_of(regions, name)
    assert len(fr) >= 3
    path = directory / "segments" / name
    data = path.read_bytes()
    a, b = fr[0], fr[1]
    # swap the first two frames; then replay the third over the last frame's place
    swapped = data[:a.start] + data[b.start:b.end] + data[a.start:a.end] + data[b.end:]
    path.write_bytes(swapped)
    got, damage = read_all(directory)
    check_read(got, expected)
    hit = {a.first_seq, b.first_seq}
    lost_frames = [r for r in fr if any(s not in got for s in range(r.first_seq, r.first_seq + r.count))]
    assert {r.first_seq for r in lost_frames} == hit  # exactly the two swapped frames
    # sealed: read at the footer's offsets; active: walked frame by frame
    where = {a.start, b.start} if which == "sealed" else {a.start, a.start + b.end - b.start}
    assert len(damage) == 2 and {d.offset for d in damage} == where, damage
    proc = verify(directory)
    assert proc.returncode == 1 and proc.stdout.count("damaged:") == 2, proc.stdout
    msgs, err = query_msgs(directory)
    assert err.count("skipped damaged data") == 2 and msgs == set(got.values())
    # a replay: a copy of a frame appended at the end of the active segment
    path.write_bytes(data)
    if which == "active":
        path.write_bytes(data + data[fr[2].start:fr[2].end])
        got, damage = read_all(directory)
        assert got == expected  # the copy never reads as records a second time
        assert [d.offset for d in damage] == [len(data)], damage
        proc = verify(directory)
        assert proc.returncode == 1 and f"@ {len(data)}" in proc.stdout, proc.stdout
        report = recover(directory)
        assert report.damage and report.next_seq == len(expected) + 1
        after, damage = read_all(directory)
        assert after == expected and not damage
    print(f"\nFAULTS swapped frames in the {which} segment: faults 1, frames damaged 2, "
          f"detected 2, records lost {sum(r.count for r in lost_frames)}, other frames readable")


def test_a_segment_cut_in_the_middle_is_reported(tmp_path):
    directory, expected, regions = spool_with_segments(tmp_path)
    segs = sorted({r.segment for r in regions})
    victim = segs[1]
    path = directory / "segments" / victim
    fr = frames_of(regions, victim)
    cut = (fr[0].end + fr[-1].end) // 2
    os.truncate(path, cut)
    got, damage = read_all(directory)
    check_read(got, expected)
    whole = [r for r in fr if r.end <= cut]
    lost = len(expected) - len(got)
    assert lost == sum(r.count for r in fr if r.end > cut)  # the frames past the cut
    proc = verify(directory)
    assert proc.returncode == 1 and "gap: records" in proc.stdout, proc.stdout
    report = recover(directory)
    assert any(d.segment == victim and "no footer" in d.reason for d in report.damage), report.lines()
    after, _ = read_all(directory)
    assert after == got
    print(f"\nFAULTS segment cut in the middle: frames {len(fr)}, kept {len(whole)}, "
          f"records lost {lost} (past the cut), reported by verify (gap) and recovery")


def test_garbage_in_the_segments_directory(tmp_path):
    directory, expected, regions = spool_with_segments(tmp_path)
    segments = directory / "segments"
    (segments / "README").write_text("not a segment\n")
    (segments / "00000000000000000000.seg").write_bytes(os.urandom(5000))
    (segments / "99999999999999999999.seg.bak").write_bytes(os.urandom(100))
    (segments / ".00000000000000000001.seg.tmp").write_bytes(b"")
    got, damage = read_all(directory)
    assert got == expected
    assert [d.segment for d in damage] == ["00000000000000000000.seg"], damage
    proc = verify(directory)
    assert proc.returncode == 1 and "00000000000000000000.seg" in proc.stdout, proc.stdout
    msgs, err = query_msgs(directory)
    assert msgs == set(expected.values()) and "00000000000000000000.seg" in err
    report = recover(directory)
    assert any("moved aside" in d.reason for d in report.damage), report.lines()
    assert report.next_seq == len(expected) + 1
    assert (segments / "00000000000000000000.seg.damaged").exists()
    after, damage = read_all(directory)
    assert after == expected and not damage
    proc = verify(directory)
    assert proc.returncode == 0, proc.stdout
    print("\nFAULTS garbage files: files 4, crashes 0, reported 1 (the one named like a "
          "segment), records lost 0")


def test_a_directory_named_like_a_segment(tmp_path):
    directory, expected, regions = spool_with_segments(tmp_path)
    (directory / "segments" / "00000000000000000000.seg").mkdir()
    proc = verify(directory)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "00000000000000000000.seg" in proc.stdout, (proc.stdout, proc.stderr)
    msgs, err = query_msgs(directory)
    assert msgs == set(expected.values())
    report = recover(directory)
    assert report.damage and report.next_seq == len(expected) + 1


def test_missing_stale_or_garbage_checkpoints(tmp_path):
    directory, expected, regions = spool_with_segments(tmp_path)
    last = len(expected)
    cp = directory / "state" / "checkpoints"
    # missing: nothing saved, the source starts by its own rule
    assert CheckpointFiles(cp, last).load("journald") is None
    # stale: a written pair past the spool (its frame never reached the disk)
    (cp / "files.json").write_text('{"offset": 100}')
    (cp / "files.written.json").write_text(
        '[{"seq": %d, "position": {"offset": 200}}, {"seq": %d, "position": {"offset": 300}}]'
        % (last, last + 50))
    assert CheckpointFiles(cp, last).load("files") == {"offset": 200}
    # torn written pairs: the durable checkpoint decides
    (cp / "files.written.json").write_text('[{"seq": 1')
    assert CheckpointFiles(cp, last).load("files") == {"offset": 100}
    # a garbage durable checkpoint: read as none (the source replays from its
    # start: duplicates, no loss) or refused with a clear error naming the file
    (cp / "app.json").write_bytes(b"\x00\xffgarbage")
    try:
        value = CheckpointFiles(cp, last).load("app")
    except Exception as exc:  # noqa: BLE001 - any error will do, if it says which file
        assert "app.json" in str(exc), f"unclear error for a garbage checkpoint: {exc!r}"
    else:
        assert value is None
    # a torn destination cursor keeps everything for that destination
    (directory / "state" / "cursors" / "central.json").write_text('{"acked_')
    spool = Spool.open(directory, Keyring.load(directory.parent / "spool.key"))
    try:
        assert spool.acked_seq() == 0 and spool.recovery.next_seq == last + 1
    finally:
        spool.close()


def test_verify_reports_a_damaged_footer(tmp_path):
    # a footer costs no records (the frames are walked instead), but it is
    # damage on disk: verify must say so, as recovery does
    directory, expected, regions = spool_with_segments(tmp_path)
    footer = next(r for r in regions if r.kind == "footer")
    path = directory / "segments" / footer.segment
    data = bytearray(path.read_bytes())
    data[footer.start + 1] ^= 0x10
    path.write_bytes(bytes(data))
    got, _ = read_all(directory)
    assert got == expected
    proc = verify(directory)
    assert proc.returncode == 1 and footer.segment in proc.stdout, proc.stdout
    report = recover(directory)
    assert any(d.segment == footer.segment and "no footer" in d.reason for d in report.damage)


def test_seqs_of_a_segment_moved_aside_are_never_given_again(tmp_path):
    # (origin, seq) is a record's identity and dedup downstream keeps a
    # high-water mark per origin: a seq given twice would drop the new record
    directory, expected, regions = spool_with_segments(tmp_path)
    active = sorted({r.segment for r in regions})[-1]
    held = max(r.first_seq + r.count - 1 for r in frames_of(regions, active))
    path = directory / "segments" / active
    data = bytearray(path.read_bytes())
    data[60] ^= 0x01  # in the segment header (salt): the segment cannot be read
    path.write_bytes(bytes(data))
    spool = Spool.open(directory, Keyring.load(directory.parent / "spool.key"))
    try:
        assert any("moved aside" in d.reason for d in spool.recovery.damage)
        from hostlog.record import Columns, Record
        first, _ = spool.append(Columns.of([Record(ts=1, msg="after the damage", app="app")]))
    finally:
        spool.close()
    assert first > held, f"seq {first} given again: the damaged segment held seqs up to {held}"
