"""The spool: the one hand-off between collectors and everything that reads.

    <spool>/
      LOCK                       flock, held by the one writer (its pid inside)
      spool.json                 agent id, key file, format version (atomic replace)
      segments/<first-seq>.seg   append-only; the newest is the active one
      state/checkpoints/*.json   collectors' replay positions (atomic replace)
      state/cursors/*.json       per destination: last seq acknowledged
      state/group.json           where a group of frames is being written (see append_group)

Records are *accepted* once :meth:`Spool.append` (or :meth:`Spool.append_group`)
returns (written to the file) and *durable* once :meth:`Spool.sync` has
returned after it. Sequence numbers
are the spool's own (1, 2, 3, ... never reused); a record that arrives without
an origin gets this agent's id and its spool seq as its identity.

Not thread-safe: one thread owns a Spool (the agent's writer thread).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hostlog.chunk import encode_columns
from hostlog.crashpoint import crashpoint
from hostlog.errors import KeyFileError, SpoolError, SpoolFullError, SpoolLockedError
from hostlog.record import Batch
from hostlog.spool import frame as F
from hostlog.spool.index import frame_counts, frame_index
from hostlog.spool.keys import Keyring
from hostlog.spool.segment import Damage, SegmentIndex, SegmentReader, SegmentWriter, no_space, segment_first_seq
from hostlog.spool.state import fsync_dir, read_json, write_json

SPOOL_FORMAT = 1



@dataclass(slots=True)
class SegmentInfo:
    path: Path
    first_seq: int
    next_seq: int  # one past its last record
    size: int
    sealed_ns: int | None  # None while active


@dataclass(slots=True)
class RecoveryReport:
    segments: int = 0
    frames: int = 0
    next_seq: int = 1
    truncated_bytes: int = 0
    group_cut: int = 0  # records of an unfinished group of frames, in truncated_bytes
    damage: list[Damage] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"spool recovered: {self.segments} segments, {self.frames} frames in the "
               f"active segment, next seq {self.next_seq}"]
        if self.truncated_bytes:
            out.append(f"cut a torn tail of {self.truncated_bytes} bytes from the active segment")
        if self.group_cut:
            out.append(f"of which an unfinished write of {self.group_cut} records (one batch cut "
                       f"across frames; its source reads them again)")
        out.extend(f"damaged: {d}" for d in self.damage)
        return out


def spool_meta(directory: Path) -> dict | None:
    return read_json(directory / "spool.json")


class Spool:
    chunk_version = 1  # the layout of the chunks it writes ([spool] chunk; readers read both)

    def __init__(self, directory: Path, keyring: Keyring, *, segment_bytes: int = 64 << 20,
                 max_bytes: int = 10 << 30, max_age: float = 30 * 86400,
                 on_full: str = "block", key_file: Path | None = None,
                 seal_after: float = 0.0) -> None:
        self.directory = Path(directory)
        self.segments_dir = self.directory / "segments"
        self.keyring = keyring
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.on_full = on_full
        self.key_file = key_file or keyring.path
        # An active segment older than this is sealed, so age-based retention
        # can free it even on a quiet machine. max_age = 0 turns age-based
        # retention off (docs/config.md); segments are then sealed daily.
        self.segment_age = max(60.0, min(max_age / 4, 86400.0)) if max_age > 0 else 86400.0
        if seal_after > 0:  # [spool] seal_after: sooner (compaction then fills its frames)
            self.segment_age = min(self.segment_age, seal_after)
        self.lock_fd = -1
        self.agent_id = ""
        self.active: SegmentWriter | None = None
        self.segments: list[SegmentInfo] = []
        self.durable_seq = 0
        self.dropped_records = 0  # removed by retention before every destination had them
        self.dropped_segments = 0
        self.dropped_for_space = 0  # of dropped_records: deleted to make room on a full disk
        # a sync (fsync/fdatasync) of a segment failed: nothing is synced nor
        # trusted after it (the agent stops; see Spool.cut_untrusted)
        self.sync_failed: BaseException | None = None
        self._sync_in_flight = False  # begin_sync .. end_sync / fail_sync
        self._sealed_durable = 0  # sealed while a sync was in flight: durable if it succeeds
        self._next_first: int | None = None  # sealed, the next segment not created yet (disk full)
        self.recovery = RecoveryReport()
        self._group_mark = self.directory / "state" / "group.json"

    # -- open / close ----------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, keyring: Keyring, **options: object) -> Spool:
        spool = cls(directory, keyring, **options)  # type: ignore[arg-type]
        spool._open()
        return spool

    def _open(self) -> None:
        for d in (self.directory, self.segments_dir, self.directory / "state" / "checkpoints",
                  self.directory / "state" / "cursors"):
            d.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._lock()
        meta = spool_meta(self.directory)
        if meta is None:
            meta = {"format": SPOOL_FORMAT, "agent_id": uuid.uuid4().hex}
        if meta.get("format") != SPOOL_FORMAT:
            raise SpoolError(f"{self.directory}: spool format {meta.get('format')} is not supported")
        meta["key_file"] = str(self.key_file) if self.key_file else None
        if meta != spool_meta(self.directory):
            write_json(self.directory / "spool.json", meta)
        self.agent_id = meta["agent_id"]
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SpoolLockedError(
                f"spool {self.directory} is in use by another writer (pid {holder})") from None
        # over the old pid, then cut to length: on a full disk this needs no new block
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
        self.lock_fd = fd

    def _recover(self) -> None:
        """Index every segment; continue the newest unsealed one after cutting
        its torn tail; report (never die on) damage in sealed ones."""
        report = self.recovery
        floor = 1  # no seq below this may be given: a segment moved aside held them
        group = _read_group_mark(self._group_mark)
        paths = sorted((p for p in self.segments_dir.iterdir()
                        if segment_first_seq(p) is not None), key=lambda p: segment_first_seq(p) or 0)
        for i, path in enumerate(paths):
            last = i == len(paths) - 1
            try:
                reader = SegmentReader(path, self.keyring)
            except SpoolError as exc:
                if last and path.stat().st_size < F.SEGMENT_HEADER_SIZE:
                    # created but its header never reached the disk: nothing in it
                    path.unlink()
                    fsync_dir(self.segments_dir)
                    continue
                if isinstance(exc, KeyFileError):
                    raise
                # Unreadable without its header (salt, key id): keep it for
                # inspection under another name, so the seqs it held are not
                # taken for a new segment of the same name.
                floor = max(floor, _seq_floor(path))
                aside = path.with_name(path.name + ".damaged")
                path.rename(aside)
                fsync_dir(self.segments_dir)
                report.damage.append(Damage(path.name, 0, f"{exc}; moved aside to {aside.name}"))
                continue
            with reader:
                index = reader.index()
                if last and not index.sealed:
                    # The active segment: every frame authenticated, and cut at
                    # the first damage. After a power loss the unsynced tail
                    # may have holes; keeping frames past one would let a
                    # source resume after records that are not there.
                    index = reader.scan(verify=True, cut_at_damage=True)
                    index = _cut_unfinished_group(index, path.name, reader.size(), group, report)
                report.segments += 1
                first = reader.header.first_seq
                nxt = index.entries[-1].first_seq + index.entries[-1].count if index.entries else first
                if last and not index.sealed:
                    size = reader.size()
                    report.truncated_bytes = size - index.end
                    report.frames = len(index.entries)
                    report.damage.extend(index.damage)
                    self.active = SegmentWriter.reopen(reader, index)
                    self.segments.append(SegmentInfo(path, first, nxt, index.end, None))
                else:
                    if not index.sealed:
                        report.damage.append(Damage(path.name, index.end,
                                                    "segment has no footer (sealing was cut short)"))
                        index = reader.scan(verify=True)
                        report.damage.extend(index.damage)
                        nxt = (index.entries[-1].first_seq + index.entries[-1].count
                               if index.entries else first)
                    self.segments.append(SegmentInfo(path, first, nxt, reader.size(),
                                                     index.sealed_ns or time.time_ns()))
        next_seq = max(self.segments[-1].next_seq if self.segments else 1, floor)
        if self.active is None:
            try:
                self.active = SegmentWriter.create(self.segments_dir, agent_id=self._agent_id_bytes(),
                                                   keyring=self.keyring, first_seq=next_seq)
                self.segments.append(SegmentInfo(self.active.path, next_seq, next_seq,
                                                 self.active.size, None))
            except OSError as exc:
                if not no_space(exc):
                    raise
                self._next_first = next_seq  # a full disk: the first append creates it
        self.durable_seq = self.next_seq - 1
        report.next_seq = self.next_seq
        # The mark describes a write that is now either whole or cut (reopen
        # truncated and fsynced the segment): it must not cut anything again.
        self._group_mark.unlink(missing_ok=True)
        if self.active is not None and self.active.header.key_id != self.keyring.current_id:
            # the key file has a newer key (`hostlog spool rotate-key`): what
            # comes now goes into a new segment written with it
            self.rotate()

    def _agent_id_bytes(self) -> bytes:
        return uuid.UUID(self.agent_id).bytes

    def close(self) -> None:
        """Sync and release; the active segment stays unsealed and is continued
        by the next writer."""
        try:
            if self.active is not None:
                if self.sync_failed is None:  # after a failed sync, no sync is trusted
                    self.active.sync()
                    self.durable_seq = self.next_seq - 1
                self.active.close()
        finally:
            self.active = None
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1

    # -- writing ---------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        if self.active is None and self._next_first is not None:
            return self._next_first  # the next segment waits for room to be created
        assert self.active is not None, "spool is closed"
        return self.active.next_seq

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def append(self, batch: Batch, *, fast: bool = False) -> tuple[int, int]:
        """Write a batch as one frame; returns its (first, last) spool seq.
        Rows new here are stamped with this spool's origin and their seq, in
        place. ``fast``: compress the frame with LZ4's fast mode, not HC (for
        a writer that is behind)."""
        return self.append_group([batch], fast=fast)

    def append_group(self, batches: list[Batch], *, fast: bool = False) -> tuple[int, int]:
        """Write batches as consecutive frames, one frame each, in one pwrite;
        returns the (first, last) spool seq of them all. They are accepted
        together, when this returns.

        For a batch that carries a source position and was cut across frames
        (spool/writer.py): the position is noted only with the frame that ends
        the batch, so its other pieces must not stay in the spool without it.
        A kill -9 can still cut the pwrite short (the kernel stops a buffered
        write at a page when a fatal signal is pending), leaving whole frames
        of the group and a torn one; so before the write, ``state/group.json``
        says where the group goes, and recovery cuts a group found unfinished
        back to its start, as it cuts a torn frame (:func:`_cut_unfinished_group`)."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return self.next_seq, self.next_seq - 1
        if self.active is None and self._next_first is not None:
            self._create_active()  # a rotation that found the disk full (OSError: still full)
        active = self.active
        assert active is not None, "spool is closed"
        if self.total_bytes > self.max_bytes:
            self.enforce_retention()
            if self.total_bytes > self.max_bytes:
                raise SpoolFullError(f"spool {self.directory} is full ({self.total_bytes} bytes, "
                                     f"max_bytes {self.max_bytes}) and unacknowledged data "
                                     f"must be kept (on_full = block)")
        first = seq = active.next_seq
        origin = self.agent_id
        offset = active.end
        parts: list[bytes] = []
        entries = []
        counts = []
        for batch in batches:
            n = len(batch)
            origins, seqs = batch.origin, batch.seq
            if not any(origins):  # the usual case: every row is new here
                batch.origin = [origin] * n
                batch.seq = range(seq, seq + n)  # (the codec needs no delta pass)
            else:
                for i, o in enumerate(origins):
                    if not o:
                        origins[i] = origin
                        seqs[i] = seq + i
            severity_mask, bloom = frame_index(batch, active.keys.bloom_key)
            ts = batch.ts
            data, entry = active.frame(encode_columns(batch.columns, self.chunk_version), offset=offset, first_seq=seq,
                                       count=n, ts_min=min(ts), ts_max=max(ts),
                                       severity_mask=severity_mask, app_bloom=bloom, fast=fast)
            parts.append(data)
            entries.append(entry)
            counts.append(frame_counts(batch))  # for the footer: hostlog stats reads them
            offset += len(data)
            seq += n
        if len(parts) > 1:
            self._mark_group(active.path.name, active.end, offset)
        active.write_frames(parts[0] if len(parts) == 1 else b"".join(parts), entries, counts)
        info = self.segments[-1]
        info.next_seq, info.size = active.next_seq, active.size
        if active.size >= self.segment_bytes or (
                time.time_ns() - active.header.created_ns > self.segment_age * 1e9):
            try:
                self.rotate()
            except OSError as exc:
                if not no_space(exc):
                    raise
                # The frames are written (accepted): a full disk only delays
                # the seal, or the next segment, until there is room again.
        return first, seq - 1

    def group_fits(self, nbytes: int) -> bool:
        """May a group of about ``nbytes`` be written at once? Always while
        retention can free whatever it takes (no destination, or on_full =
        drop_oldest); else only if it fits within max_bytes once retention
        has freed the oldest segments every destination has acknowledged: a
        destination that lags must not make the spool grow by a whole group."""
        acked = self.acked_seq()
        if acked is None or self.on_full == "drop_oldest":
            return True
        freeable = 0
        for info in self.segments[:-1]:  # retention frees the oldest first, sealed ones only
            if info.next_seq - 1 > acked:
                break
            freeable += info.size
        return self.total_bytes - freeable + nbytes <= self.max_bytes

    def _mark_group(self, segment: str, start: int, end: int) -> None:
        """Before a group's pwrite: where it goes (no fsync: this is for a
        killed process, whose completed writes the kernel keeps)."""
        tmp = self._group_mark.with_name(f".{self._group_mark.name}.tmp")
        tmp.write_text(json.dumps({"segment": segment, "offset": start, "end": end}))
        os.replace(tmp, self._group_mark)

    def sync(self) -> int:
        """Make everything accepted durable; returns the durable seq. A
        failure (SpoolSyncError) is final: every later call raises it again."""
        if self.sync_failed is not None:
            raise self.sync_failed
        if self.active is None:  # sealed (synced) and no next segment yet
            self.durable_seq = self.next_seq - 1
            return self.durable_seq
        try:
            self.active.sync()
        except BaseException as exc:
            self.sync_failed = exc
            raise
        crashpoint("synced")
        self.durable_seq = self.active.next_seq - 1
        return self.durable_seq

    def maintain(self, now_ns: int | None = None) -> None:
        """What must happen even when nothing is written: seal an active
        segment older than ``segment_age`` and apply retention."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        active = self.active
        if (active is not None and active.entries
                and now_ns - active.header.created_ns > self.segment_age * 1e9):
            self.rotate()  # rotate applies retention too
        else:
            self.enforce_retention(now_ns)

    def begin_sync(self) -> tuple[int, int]:
        """For a sync on another thread: a copy of the active segment's fd and
        the last seq written to it. fdatasync the fd, close it, then call
        :meth:`end_sync` with the seq."""
        assert self.active is not None, "spool is closed"
        if self.sync_failed is not None:
            raise self.sync_failed
        self._sync_in_flight = True
        return os.dup(self.active.fd), self.active.next_seq - 1

    def end_sync(self, seq: int) -> None:
        self.durable_seq = max(self.durable_seq, seq, self._sealed_durable)
        self._sync_in_flight = False

    def fail_sync(self, exc: BaseException) -> None:
        """The sync begun by :meth:`begin_sync` failed: nothing it covered is
        durable, nor what a seal made meanwhile (the seal's fsync may have
        succeeded only because the failed one had taken the error), and no
        sync from now on is tried or trusted."""
        self.sync_failed = exc
        self._sync_in_flight = False
        self._sealed_durable = 0

    def _sealed(self, seq: int) -> None:
        """A seal's fsync returned: records up to ``seq`` are durable, unless
        a sync of the same file runs on the other thread and fails (then it
        may have taken the seal's error: see :meth:`fail_sync`)."""
        if self._sync_in_flight:
            self._sealed_durable = max(self._sealed_durable, seq)
        else:
            self.durable_seq = max(self.durable_seq, seq)

    def _create_active(self) -> SegmentWriter:
        """Create the segment that follows a sealed one (O_EXCL, header,
        fsync). On a full disk the OSError goes to the caller and the spool
        stays without an active segment; the next append tries again."""
        first = self._next_first
        assert first is not None
        active = SegmentWriter.create(self.segments_dir, agent_id=self._agent_id_bytes(),
                                      keyring=self.keyring, first_seq=first)
        self.active, self._next_first = active, None
        crashpoint("rotation-created")
        self.segments.append(SegmentInfo(active.path, first, first, active.size, None))
        return active

    def cut_untrusted(self) -> int:
        """After a failed sync: cut the active segment back to the last
        durable record (footer and all); returns the bytes cut. The spool is
        closed for writing after this (the agent stops; at its next start,
        written pairs past the cut are dropped and replayable sources read
        those records again, docs/guarantees.md)."""
        active = self.active
        if active is None:
            return 0
        cut = active.cut_back(self.durable_seq)
        self.active = None
        self._next_first = active.next_seq
        info = self.segments[-1]
        info.next_seq, info.size, info.sealed_ns = active.next_seq, active.end, None
        return cut

    def rotate(self) -> None:
        """Seal the active segment (footer, fsync) and start the next one."""
        active = self.active
        assert active is not None, "spool is closed"
        if not active.entries:
            return
        active.seal()
        crashpoint("rotation-sealed")
        self.active = None  # sealed and closed: nothing more goes into it
        info = self.segments[-1]
        info.size, info.sealed_ns = active.end, time.time_ns()
        self._sealed(active.next_seq - 1)
        self._next_first = active.next_seq
        self._create_active()
        self.enforce_retention()

    # -- retention -------------------------------------------------------------
    def acked_seq(self) -> int | None:
        """The lowest seq every destination has acknowledged (None: no destinations)."""
        cursors = self.directory / "state" / "cursors"
        acked = []
        for p in cursors.glob("*.json"):
            try:
                acked.append(read_json(p, {}).get("acked_seq", 0))
            except ValueError:  # torn by a crash: keep everything for that destination
                acked.append(0)
        return min(acked) if acked else None

    def enforce_retention(self, now_ns: int | None = None) -> list[Path]:
        """Delete the oldest sealed segments while over max_bytes or older than
        max_age. Segments a destination still needs stay, unless on_full is
        drop_oldest; every record dropped that way is counted."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        acked = self.acked_seq()
        removed = []
        total = self.total_bytes
        while len(self.segments) > 1:
            oldest = self.segments[0]
            too_big = total > self.max_bytes
            too_old = (self.max_age > 0 and oldest.sealed_ns is not None
                       and now_ns - oldest.sealed_ns > self.max_age * 1e9)
            if not (too_big or too_old):
                break
            unacked = acked is not None and acked < oldest.next_seq - 1
            if unacked:
                if self.on_full != "drop_oldest":
                    break
                self.dropped_records += oldest.next_seq - max(oldest.first_seq, (acked or 0) + 1)
            oldest.path.unlink(missing_ok=True)
            crashpoint("retention-unlinked")
            self.segments.pop(0)
            self.dropped_segments += unacked
            total -= oldest.size
            removed.append(oldest.path)
        if removed:
            fsync_dir(self.segments_dir)
        return removed

    def drop_oldest_for_room(self) -> int | None:
        """The disk is full and on_full = drop_oldest: delete the oldest
        sealed segment, whatever max_bytes and max_age say; returns the
        records it dropped that not every destination had acknowledged (all
        of them without a destination: the spool was their only copy), or
        None when there is no sealed segment to delete (the active one is
        never deleted). Counted in :attr:`dropped_records` (the metric, and
        the record the agent writes about it) and :attr:`dropped_for_space`."""
        if len(self.segments) < 2 or self.segments[0].sealed_ns is None:
            return None
        oldest = self.segments[0]
        acked = self.acked_seq()
        start = oldest.first_seq if acked is None else max(oldest.first_seq, acked + 1)
        dropped = max(0, oldest.next_seq - start)
        oldest.path.unlink(missing_ok=True)
        self.segments.pop(0)
        self.dropped_records += dropped
        self.dropped_for_space += dropped
        self.dropped_segments += bool(dropped)
        fsync_dir(self.segments_dir)
        return dropped


def _read_group_mark(path: Path) -> dict | None:
    try:
        mark = read_json(path)
    except ValueError:
        return None  # torn: its write never started (the mark is replaced before it)
    return mark if isinstance(mark, dict) else None


def _cut_unfinished_group(index: SegmentIndex, segment: str, size: int, mark: dict | None,
                          report: RecoveryReport) -> SegmentIndex:
    """The active segment's index without a group of frames whose write a
    kill -9 cut short (Spool.append_group): the file ends inside the group
    the mark describes. Its whole frames go too, as a torn frame does: the
    group was never accepted, and the written pairs (spool/checkpoints.py)
    point before it, so its source reads it again. A group written whole is
    never cut: the file then reaches its end (the writer only appends, and
    recovery removes the mark once it has cut or kept)."""
    if mark is None or mark.get("segment") != segment:
        return index
    start, end = mark.get("offset"), mark.get("end")
    if not (isinstance(start, int) and isinstance(end, int) and start < size < end
            and start < index.end):
        return index
    kept = [e for e in index.entries if e.offset < start]
    if (kept[-1].offset + kept[-1].size if kept else F.SEGMENT_HEADER_SIZE) != start:
        return index  # not a frame boundary of this segment: not our mark
    report.group_cut = sum(e.count for e in index.entries) - sum(e.count for e in kept)
    return SegmentIndex(kept, False, start, [d for d in index.damage if d.offset < start])


def _seq_floor(path: Path) -> int:
    """One past the highest seq an unreadable segment held, from the frame
    headers in it (CRC-checked, readable without the key). Not from its name:
    a stray file may carry any name."""
    floor = 1
    if not path.is_file():
        return floor
    data = path.read_bytes()
    i = data.find(F.FRAME_MAGIC)
    while i >= 0:
        try:
            h = F.unpack_frame_header(data, i)
            floor = max(floor, h.first_seq + h.count)
        except F.FrameHeaderError:
            pass
        i = data.find(F.FRAME_MAGIC, i + 1)
    return floor
