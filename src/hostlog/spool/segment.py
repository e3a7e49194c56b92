"""One segment file: writing frames to it, and reading or scanning it back.

A segment is append-only. The writer only ever appends whole frames (one
``write`` each) and, when the segment is full, a footer that indexes them;
then it is *sealed* and never changes again. A reader may open any segment at
any time, including the active one while it grows: a frame that is not yet
complete at the end of the file is simply not there yet.

Damage is a value (:class:`Damage`), never an exception: scanning reports the
frames that fail and goes on with the rest.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hostlog.chunk import ChunkError, decode_chunk
from hostlog.crashpoint import crashpoint
from hostlog.errors import SpoolError, SpoolFormatError, SpoolSyncError, WrongKeyError
from hostlog.faultpoint import faultpoint
from hostlog.record import Record
from hostlog.spool import frame as F
from hostlog.spool.index import CountsBuilder, FrameCounts, SegmentCounts, unpack_counts
from hostlog.spool.keys import Keyring, SegmentKeys, derive_segment_keys
from hostlog.spool.state import fsync_dir

log = logging.getLogger("hostlog.spool")

SEGMENT_SUFFIX = ".seg"

#: The errors of a write that found no room: the disk (or the quota) is full.
#: A full spool, not a failure: the writer cuts what it was writing back to
#: its last whole frame and waits for room (spool/writer.py).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(exc: BaseException) -> bool:
    """Is ``exc`` a write that found the file system (or the quota) full?"""
    return isinstance(exc, OSError) and not isinstance(exc, SpoolError) and exc.errno in NO_SPACE


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def segment_first_seq(path: Path) -> int | None:
    stem = path.name.removesuffix(SEGMENT_SUFFIX)
    return int(stem) if path.name.endswith(SEGMENT_SUFFIX) and stem.isdigit() else None


@dataclass(frozen=True, slots=True)
class Damage:
    """A frame (or the bytes where one should be) that could not be read."""

    segment: str
    offset: int
    reason: str
    first_seq: int | None = None
    count: int | None = None

    def __str__(self) -> str:
        seqs = ""
        if self.first_seq is not None:
            seqs = f" (records {self.first_seq}..{self.first_seq + (self.count or 1) - 1})"
        return f"{self.segment} @ {self.offset}{seqs}: {self.reason}"


@dataclass(slots=True)
class SegmentIndex:
    """What a reader knows of a segment without decrypting it."""

    entries: list[F.IndexEntry]
    sealed: bool
    end: int  # offset just past the last intact frame
    damage: list[Damage] = field(default_factory=list)
    sealed_ns: int | None = None
    footer: F.Footer | None = None  # a sealed segment's footer (its counts block, if any)


class SegmentReader:
    """Read access to one segment; cheap to open, reads only what is asked."""

    def __init__(self, path: Path, keyring: Keyring, *, fd: int | None = None) -> None:
        self.path = path
        # ``fd``: an open descriptor of the file (owned from now on), e.g. one
        # kept while the file at ``path`` may be replaced (spool/archive.py)
        self.fd = os.open(path, os.O_RDONLY) if fd is None else fd
        try:
            try:
                head = os.pread(self.fd, F.SEGMENT_HEADER_SIZE, 0)
            except IsADirectoryError:
                raise SpoolFormatError("a directory, not a segment") from None
            self.header = F.SegmentHeader.unpack(head)
            master = keyring.get(self.header.key_id)
            self.keys: SegmentKeys = derive_segment_keys(master, self.header.salt)
            if self.keys.check != self.header.key_check:
                where = f" in {keyring.path}" if keyring.path else ""
                raise WrongKeyError(
                    f"key id {self.header.key_id}{where} is not the key segment {path.name} "
                    f"was written with (wrong key file, or a different key with the same id)")
        except SpoolFormatError as exc:
            os.close(self.fd)
            raise SpoolFormatError(f"{path}: {exc}") from None
        except BaseException:
            os.close(self.fd)
            raise
        self.aead = AESGCM(self.keys.data_key)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    # -- index ---------------------------------------------------------------
    def index(self, *, verify: bool = False, after: SegmentIndex | None = None) -> SegmentIndex:
        """The frames of this segment: from its footer when sealed, else by
        walking the frame headers (and, with ``verify``, authenticating each).
        ``after``: an earlier index of this same segment, while unsealed; the
        walk goes on from its end instead of from the start (frames are
        appended, never changed: a follower polling the active segment reads
        only the new headers)."""
        size = self.size()
        if not verify:
            footer = self._read_footer(size)
            if footer is not None:
                return SegmentIndex(footer.entries, True, size - footer.size,
                                    sealed_ns=footer.sealed_ns, footer=footer)
            if after is not None and not after.sealed and not after.damage and after.end <= size:
                more = self.scan(size, verify=False, start=after.end)
                return SegmentIndex(after.entries + more.entries, more.sealed, more.end,
                                    more.damage, more.sealed_ns)
        return self.scan(size, verify=verify)

    def _read_footer(self, size: int) -> F.Footer | None:
        if size < F.SEGMENT_HEADER_SIZE + F.FOOTER_TRAILER_SIZE:
            return None
        trailer = os.pread(self.fd, F.FOOTER_TRAILER_SIZE, size - F.FOOTER_TRAILER_SIZE)
        if not trailer.endswith(F.FOOTER_MAGIC):
            return None
        index_len = int.from_bytes(trailer[:4], "little")
        want = index_len + F.FOOTER_TRAILER_SIZE
        room = size - F.SEGMENT_HEADER_SIZE
        if want > room:
            return None
        if want + F.COUNTS_TRAILER_SIZE <= room:  # a counts block before the index?
            want += F.COUNTS_TRAILER_SIZE
            tail = os.pread(self.fd, want, size - want)
            length = F.counts_length(tail[:F.COUNTS_TRAILER_SIZE])
            if length is not None and want + length <= room:
                want += length
                tail = os.pread(self.fd, length, size - want) + tail
            return F.parse_footer(tail)
        return F.parse_footer(os.pread(self.fd, want, size - want))

    def counts(self, index: SegmentIndex | None = None) -> SegmentCounts | Damage | None:
        """The per-frame counts of a sealed segment's footer, aligned with its
        index entries (``index``: this segment's, if the caller has it); None
        when the footer has none (an unsealed segment, or one sealed by an
        older hostlog), a :class:`Damage` when they do not authenticate or
        do not fit the index."""
        index = self.index() if index is None else index
        footer = index.footer
        if footer is None or footer.counts is None:
            return None
        try:
            plain = F.open_counts(footer, key=self.keys.data_key, salt=self.header.salt,
                                  segment_size=self.size(), aead=self.aead)
            return unpack_counts(plain, len(footer.entries))
        except (F.FrameError, ValueError) as exc:
            return Damage(self.path.name, index.end, f"footer counts unusable ({exc}); "
                                                     f"its frames are read instead")

    def scan(self, size: int | None = None, *, verify: bool = True,
             cut_at_damage: bool = False, start: int = F.SEGMENT_HEADER_SIZE) -> SegmentIndex:
        """Walk the frames from the start.

        Stops at the first place that holds no intact frame header or whose
        frame runs past the end of the file: in the active segment that is the
        torn tail (or a frame still being written). A frame whose header is
        intact but whose payload does not authenticate is reported; if an
        intact frame follows it, the walk goes on past it, since a torn write
        can only ever be the last frame.
        """
        size = self.size() if size is None else size
        entries: list[F.IndexEntry] = []
        damage: list[Damage] = []
        footer = self._read_footer(size)
        footer_start = size - footer.size if footer else None
        off = start
        while off < size and off != footer_start:
            header_bytes = os.pread(self.fd, F.FRAME_HEADER_SIZE, off)
            try:
                h = F.unpack_frame_header(header_bytes)
            except F.FrameHeaderError as exc:
                if len(header_bytes) < F.FRAME_HEADER_SIZE:
                    break  # a header cut short by the end of the file: torn tail
                nxt = self._find_next_frame(off + 1, footer_start or size)
                if nxt is None:
                    # nothing intact follows: a torn tail, or a footer being
                    # written right now; not damage
                    break
                damage.append(Damage(self.path.name, off, f"no intact frame here ({exc}); "
                                     f"{nxt - off} bytes skipped"))
                if cut_at_damage:
                    break
                off = nxt
                continue
            if off + h.size > size:
                break  # incomplete last frame: torn tail, or still being written
            if verify:
                problem = self._authenticate(h, header_bytes, off)
                if problem is not None:
                    damage.append(Damage(self.path.name, off, problem, h.first_seq, h.count))
                    if cut_at_damage or not self._intact_header_at(off + h.size, size):
                        break
                    off += h.size
                    continue
            entries.append(F.IndexEntry.of(off, h))
            off += h.size
        end = entries[-1].offset + entries[-1].size if entries else start
        sealed = footer is not None and off == footer_start
        return SegmentIndex(entries, sealed, end, damage,
                            footer.sealed_ns if footer is not None and sealed else None,
                            footer if sealed else None)

    def _find_next_frame(self, start: int, stop: int) -> int | None:
        """The offset of the next intact frame after damage, to resynchronise."""
        data = os.pread(self.fd, stop - start, start)
        i = data.find(F.FRAME_MAGIC)
        while i >= 0:
            try:
                h = F.unpack_frame_header(data, i)
                if start + i + h.size <= stop:
                    return start + i
            except F.FrameHeaderError:
                pass
            i = data.find(F.FRAME_MAGIC, i + 1)
        return None

    def _intact_header_at(self, off: int, size: int) -> bool:
        if off >= size:
            return False
        try:
            h = F.unpack_frame_header(os.pread(self.fd, F.FRAME_HEADER_SIZE, off))
        except F.FrameHeaderError:
            return False
        return off + h.size <= size

    def _authenticate(self, h: F.FrameHeader, header_bytes: bytes, off: int) -> str | None:
        payload = os.pread(self.fd, h.payload_len, off + F.FRAME_HEADER_SIZE)
        try:
            F.open_frame(h, header_bytes, payload, key=self.keys.data_key,
                         salt=self.header.salt, offset=off, aead=self.aead)
        except F.FrameError as exc:
            return str(exc)
        return None

    # -- frames --------------------------------------------------------------
    def read_chunk(self, entry: F.IndexEntry) -> bytes | Damage:
        """One frame's chunk, authenticated, decrypted and decompressed but
        not decoded (a query looks at a column or two first). The one read
        path of a frame: damage comes back as a value."""
        return self._read(entry, decompress=True)

    def read_compressed(self, entry: F.IndexEntry) -> bytes | Damage:
        """One frame's chunk, authenticated and decrypted, still LZ4
        compressed (``entry.chunk_len`` bytes once inflated): what a
        forwarder sends. A zstd frame (the archive tier) is given as an LZ4
        block too. Damage comes back as a value."""
        return self._read(entry, decompress=False)

    def _read(self, entry: F.IndexEntry, *, decompress: bool) -> bytes | Damage:
        data = os.pread(self.fd, entry.size, entry.offset)
        if len(data) < entry.size:
            return self._damage(entry, "frame is cut short")
        header_bytes = data[:F.FRAME_HEADER_SIZE]
        try:
            h = F.unpack_frame_header(header_bytes)
            if h.first_seq != entry.first_seq or h.size != entry.size:
                raise F.FrameHeaderError("frame header does not match the index")
            compressed = F.decrypt_frame(h, header_bytes, data[F.FRAME_HEADER_SIZE:],
                                         key=self.keys.data_key, salt=self.header.salt,
                                         offset=entry.offset, aead=self.aead)
            if decompress:
                return F.decompress_chunk(compressed, h.chunk_len, h.flags)
            return F.to_lz4(compressed, h.chunk_len, h.flags)  # (a zstd frame: as LZ4, for peers)
        except F.FrameError as exc:
            return self._damage(entry, str(exc))

    def read_frame(self, entry: F.IndexEntry) -> list[Record] | Damage:
        """Decrypt and decode one frame; damage comes back as a value."""
        chunk = self.read_chunk(entry)
        if isinstance(chunk, Damage):
            return chunk
        try:
            records = decode_chunk(chunk)
        except ChunkError as exc:
            return self._damage(entry, str(exc))
        if len(records) != entry.count:
            return self._damage(entry, f"frame holds {len(records)} records, "
                                       f"header says {entry.count}")
        return records

    def _damage(self, entry: F.IndexEntry, problem: str) -> Damage:
        return Damage(self.path.name, entry.offset, problem, entry.first_seq, entry.count)

    def frames(self, entries: list[F.IndexEntry]) -> Iterator[tuple[F.IndexEntry, list[Record] | Damage]]:
        for entry in entries:
            yield entry, self.read_frame(entry)


class SegmentWriter:
    """Appends frames to the active segment and seals it."""

    def __init__(self, path: Path, fd: int, header: F.SegmentHeader, keys: SegmentKeys,
                 entries: list[F.IndexEntry], end: int) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.keys = keys
        self.entries = entries
        # the frames' counts for the footer; frames found in the segment
        # (reopened after a restart) have none: readers count those by reading
        self.counts = CountsBuilder(frames_without=len(entries))
        self.end = end  # where the next frame goes
        self.aead = AESGCM(keys.data_key)
        self.next_seq = entries[-1].first_seq + entries[-1].count if entries else header.first_seq

    @classmethod
    def create(cls, directory: Path, *, agent_id: bytes, keyring: Keyring,
               first_seq: int) -> SegmentWriter:
        """Create the next segment: O_EXCL, header, fsync it and the directory."""
        salt = os.urandom(32)
        keys = derive_segment_keys(keyring.current, salt)
        header = F.SegmentHeader(agent_id=agent_id, salt=salt, key_id=keyring.current_id,
                                 key_check=keys.check, first_seq=first_seq,
                                 created_ns=time.time_ns())
        path = directory / segment_name(first_seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _pwrite_all(fd, header.pack(), 0)
            except BaseException:
                # a header cut short (a full disk): the file holds nothing;
                # remove it, so that the next try can create it again
                path.unlink(missing_ok=True)
                raise
            _fsync(fd, f"new segment {path.name}", data_only=False)
        except BaseException:
            os.close(fd)
            raise
        try:
            fsync_dir(directory)
        except OSError as exc:
            os.close(fd)
            raise SpoolSyncError(f"fsync of {directory} (new segment {path.name}) failed: {exc}") from exc
        return cls(path, fd, header, keys, [], F.SEGMENT_HEADER_SIZE)

    @classmethod
    def reopen(cls, reader: SegmentReader, index: SegmentIndex) -> SegmentWriter:
        """Continue an unsealed segment after recovery, cutting its torn tail."""
        fd = os.open(reader.path, os.O_RDWR)
        if os.fstat(fd).st_size != index.end:
            os.ftruncate(fd, index.end)
            os.fsync(fd)
        return cls(reader.path, fd, reader.header, reader.keys, list(index.entries), index.end)

    @property
    def size(self) -> int:
        return self.end

    def append(self, chunk: bytes, *, first_seq: int, count: int, ts_min: int, ts_max: int,
               severity_mask: int, app_bloom: int, fast: bool = False,
               counts: FrameCounts | None = None) -> F.IndexEntry:
        data, entry = self.frame(chunk, offset=self.end, first_seq=first_seq, count=count,
                                 ts_min=ts_min, ts_max=ts_max, severity_mask=severity_mask,
                                 app_bloom=app_bloom, fast=fast)
        self.write_frames(data, [entry], [counts])
        return entry

    def frame(self, chunk: bytes, *, offset: int, first_seq: int, count: int, ts_min: int,
              ts_max: int, severity_mask: int, app_bloom: int,
              fast: bool = False, zstd_level: int | None = None) -> tuple[bytes, F.IndexEntry]:
        """One frame for ``offset`` (sealed for that place), not written yet."""
        data = F.seal_frame(chunk, key=self.keys.data_key, key_id=self.header.key_id,
                            salt=self.header.salt, offset=offset, first_seq=first_seq,
                            count=count, ts_min=ts_min, ts_max=ts_max,
                            severity_mask=severity_mask, app_bloom=app_bloom, aead=self.aead,
                            fast=fast, zstd_level=zstd_level)
        return data, F.IndexEntry(offset, first_seq, count, ts_min, ts_max, severity_mask,
                                  app_bloom, len(data), len(chunk))

    def write_frames(self, data: bytes, entries: list[F.IndexEntry],
                     counts: Sequence[FrameCounts | None] | None = None) -> None:
        """Write consecutive frames made by :meth:`frame` for the offsets from
        :attr:`end` on, in one pwrite: a reader sees them whole or (at the
        tail) cut short. ``counts``: each frame's (index.frame_counts), for
        the footer; None for a frame whose counts are not known."""
        assert entries and entries[0].offset == self.end
        try:
            _pwrite_all(self.fd, data, self.end)
        except BaseException:
            # No room for all of it (ENOSPC after a part was written), or any
            # other error: cut the torn part off, so that the segment still
            # ends at its last whole frame (readable, and recoverable as it is)
            self._cut_at_end()
            raise
        crashpoint("frame-written")
        self.entries.extend(entries)
        for frame_counts in counts if counts is not None else [None] * len(entries):
            self.counts.add(frame_counts)
        self.end += len(data)
        self.next_seq = entries[-1].first_seq + entries[-1].count

    def _cut_at_end(self) -> None:
        """Truncate the file to :attr:`end` (the end of its last whole frame)."""
        try:
            os.ftruncate(self.fd, self.end)
        except OSError as exc:
            raise SpoolError(f"segment {self.path.name}: a write failed and its torn part could "
                             f"not be cut off ({exc}); recovery cuts it at the next start") from exc

    def sync(self) -> None:
        """fdatasync; a failure raises :class:`SpoolSyncError` (never retried)."""
        _fsync(self.fd, f"segment {self.path.name}")

    def seal(self) -> None:
        """Write the footer and fsync; the segment never changes after this.
        No room for the footer: it is cut off again and the segment stays
        active (the OSError is raised; sealing is tried again later)."""
        footer = F.pack_footer(self.entries, time.time_ns(), self.counts.pack(),
                               key=self.keys.data_key, salt=self.header.salt, offset=self.end)
        try:
            _pwrite_all(self.fd, footer, self.end)
        except BaseException:
            self._cut_at_end()
            raise
        self.end += len(footer)
        _fsync(self.fd, f"segment {self.path.name} (sealing it)", data_only=False)
        self.close()

    def cut_back(self, seq: int) -> int:
        """After a failed sync: cut the segment back to its frames that end
        at or before ``seq`` (the last durable record), footer included, and
        close it; returns the bytes cut. What was written after ``seq`` was
        never durable, and after a failed sync the page cache cannot be
        trusted to hold it; its replayable sources read it again."""
        keep = [e for e in self.entries if e.first_seq + e.count - 1 <= seq]
        end = keep[-1].offset + keep[-1].size if keep else F.SEGMENT_HEADER_SIZE
        fd = self.fd if self.fd >= 0 else os.open(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size > end:
                os.ftruncate(fd, end)
                try:
                    os.fsync(fd)
                except OSError as exc:  # the disk fails: the restart's recovery reads what is there
                    log.error("segment %s: cut back to seq %d, but its fsync failed: %s",
                              self.path.name, seq, exc)
        finally:
            if fd != self.fd:
                os.close(fd)
        self.entries = keep
        self.end = end
        self.next_seq = keep[-1].first_seq + keep[-1].count if keep else self.header.first_seq
        self.close()
        return max(0, size - end)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _fsync(fd: int, what: str, *, data_only: bool = True) -> None:
    """fdatasync (or fsync) ``fd``; a failure is a :class:`SpoolSyncError`,
    final: it is never retried (see hostlog.errors)."""
    try:
        faultpoint("segment-sync")
        (os.fdatasync if data_only else os.fsync)(fd)
    except OSError as exc:
        raise SpoolSyncError(f"{'fdatasync' if data_only else 'fsync'} of {what} failed: {exc}") from exc
