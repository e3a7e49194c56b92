"""Reading a spool from another process: queries, verify, stats, follow.

Takes no lock: segments are append-only and sealed ones never change, so a
reader sees every frame that was complete when it looked, and stops at a
frame still being written. A segment deleted by retention while a query runs
is passed over (it was the oldest; the query asked for what is there now).

The archive tier (spool/archive.py) is read with the spool, in seq order:
``segments/`` is listed first, then the archive directory, and a segment
name found in both (an archiving between its rename and its unlink) is read
from the archive only; a segment that leaves ``segments/`` for the archive
between the listing and its opening is opened there. ``archive=False``
(``hostlog query --no-archive``) reads ``segments/`` alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from hostlog.errors import KeyFileError, SpoolError
from hostlog.record import Record
from hostlog.spool import frame as F
from hostlog.spool.frame import IndexEntry
from hostlog.spool.keys import Keyring
from hostlog.spool.segment import Damage, SegmentIndex, SegmentReader, segment_first_seq
from hostlog.spool.spool import spool_meta

#: A test on one frame, from its index entry and its segment's reader (which
#: holds the key for the app filter): False means the frame holds nothing wanted.
FrameTest = Callable[[SegmentReader, IndexEntry], bool]

#: Descriptors a pinned reader keeps at most (SpoolReader.pinned): well below
#: the usual soft limit of 1,024 open files.
PIN_MAX = 512


def find_key_file(directory: Path) -> Path:
    """The key file a spool was written with: recorded in its spool.json by
    the writer; else ``spool.key`` beside the spool directory (the default)."""
    meta = spool_meta(directory) or {}
    if meta.get("key_file"):
        return Path(meta["key_file"])
    return directory.parent / "spool.key"


@dataclass
class SpoolReader:
    directory: Path
    keyring: Keyring
    damage: list[Damage] = field(default_factory=list)
    archive: bool = True  # read the archive tier too
    # the last index of each unsealed segment, by path and salt: the next
    # look at it walks only what was appended since (follow polls it)
    _unsealed: dict[tuple[Path, bytes], SegmentIndex] = field(default_factory=dict, repr=False)
    # while pinned (see pinned()): a descriptor of each segment opened, by
    # the path it was listed under
    _pinned: dict[Path, int] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, directory: str | os.PathLike[str], key_file: str | os.PathLike[str] | None = None,
             *, archive: bool = True) -> SpoolReader:
        directory = Path(directory)
        if not (directory / "segments").is_dir():
            raise SpoolError(f"{directory} is not a hostlog spool (no segments/ in it)")
        key_path = Path(key_file) if key_file else find_key_file(directory)
        try:
            keyring = Keyring.load(key_path)
        except KeyFileError as exc:
            raise KeyFileError(f"cannot read spool {directory}: {exc}") from None
        return cls(directory, keyring, archive=archive)

    def archive_dir(self) -> Path:
        from hostlog.spool.archive import archive_dir
        return archive_dir(self.directory)

    def segment_paths(self) -> list[Path]:
        try:
            names = os.listdir(self.directory / "segments")
        except FileNotFoundError:
            return []
        by_name = {n: self.directory / "segments" / n for n in names}
        if self.archive:
            archived = self.archive_dir()
            try:
                # after segments/: a segment archived meanwhile is then in one
                # listing at least; in both, the archive's copy is the one read
                by_name.update((n, archived / n) for n in os.listdir(archived))
            except FileNotFoundError:
                pass
        return sorted((p for p in by_name.values() if segment_first_seq(p) is not None),
                      key=lambda p: segment_first_seq(p) or 0)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """While in it, a segment opened once is opened again (by
        :meth:`open_segment`, in this process or a forked one) as the same
        file, even if a compaction or an archiving replaced or moved it
        meanwhile: for a reader that lists frames first and reads them later
        (query/parallel.py), whose index entries belong to that file.
        Re-entrant; at most PIN_MAX descriptors are kept (past them a segment
        is opened by its name again, as without a pin)."""
        if self._pinned is not None:
            yield
            return
        self._pinned = {}
        try:
            yield
        finally:
            pinned, self._pinned = self._pinned, None
            for fd in set(pinned.values()):
                os.close(fd)

    def open_segment(self, path: Path) -> SegmentReader | None:
        if self._pinned is not None and path in self._pinned:
            return SegmentReader(path, self.keyring, fd=os.dup(self._pinned[path]))
        seg = self._open_segment(path)
        if seg is not None and self._pinned is not None and len(self._pinned) < PIN_MAX:
            self._pinned[path] = self._pinned[seg.path] = os.dup(seg.fd)
        return seg

    def _open_segment(self, path: Path) -> SegmentReader | None:
        candidates = [path]
        if self.archive and path.parent == self.directory / "segments":
            candidates.append(self.archive_dir() / path.name)  # archived since we listed it
        for candidate in candidates:
            try:
                return SegmentReader(candidate, self.keyring)
            except FileNotFoundError:
                continue
            except KeyFileError:
                raise
            except SpoolError as exc:
                if os.path.getsize(candidate) == 0:
                    return None  # being created right now
                self.damage.append(Damage(candidate.name, 0, str(exc)))
                return None
        return None  # removed by retention since we listed it

    def frames(self, *, reverse: bool = False, test: FrameTest | None = None,
               after_seq: int = 0) -> Generator[tuple[SegmentReader, IndexEntry], None, None]:
        """Every frame (oldest first, or newest first with ``reverse``) that
        passes ``test`` and holds records after ``after_seq``."""
        with closing(self.open_segments(reverse=reverse, after_seq=after_seq)) as segments:
            for seg in segments:
                index = seg.index()
                self.damage.extend(index.damage)
                entries = index.entries[::-1] if reverse else index.entries
                for entry in entries:
                    if entry.last_seq <= after_seq:
                        continue
                    if test is None or test(seg, entry):
                        yield seg, entry

    def open_segments(self, *, reverse: bool = False,
                      after_seq: int = 0) -> Generator[SegmentReader, None, None]:
        """The segments that may hold records after ``after_seq``, each open
        while the caller looks at it (oldest first, or newest first with
        ``reverse``); one that cannot be opened is passed over."""
        paths = self.segment_paths()
        if after_seq:
            # skip whole segments that end before after_seq: the next one starts later
            starts = [segment_first_seq(p) or 0 for p in paths]
            paths = [p for i, p in enumerate(paths)
                     if i + 1 >= len(starts) or starts[i + 1] > after_seq + 1]
        for path in (reversed(paths) if reverse else paths):
            seg = self.open_segment(path)
            if seg is None:
                continue
            with seg:
                yield seg

    def read(self, seg: SegmentReader, entry: IndexEntry) -> list[Record]:
        """The records of a frame; damage is recorded and reads as no records."""
        result = seg.read_frame(entry)
        if isinstance(result, Damage):
            self.damage.append(result)
            return []
        return result

    def frames_quick(self, *, reverse: bool = False, test: FrameTest | None = None,
                     after_seq: int = 0, since_ns: int | None = None,
                     until_ns: int | None = None) -> Generator[tuple[SegmentReader, IndexEntry], None, None]:
        """What :meth:`frames` yields, for a reader that tests many frames and
        reads few: a sealed segment's footer is read with two small preads
        and its rows become IndexEntry tuples without a constructor call each.
        ``since_ns``/``until_ns``: a sealed segment whose frames all end
        before (begin after) is passed over as a whole, without testing them."""
        with closing(self.open_segments(reverse=reverse, after_seq=after_seq)) as segments:
            for seg in segments:
                rows = _footer_rows(seg)
                if rows is not None and self._unsealed:
                    self._unsealed.pop((seg.path, seg.header.salt), None)  # sealed since
                if rows and ((since_ns is not None and max(map(_TS_MAX, rows)) < since_ns) or
                             (until_ns is not None and min(map(_TS_MIN, rows)) > until_ns)):
                    continue
                if rows is None:
                    key = (seg.path, seg.header.salt)
                    index = seg.index(after=self._unsealed.pop(key, None))
                    if not index.sealed:
                        self._unsealed[key] = index
                    self.damage.extend(index.damage)
                    rows = index.entries
                for row in (reversed(rows) if reverse else rows):
                    if after_seq and row.first_seq + row.count - 1 <= after_seq:
                        continue
                    if test is None or test(seg, row):
                        yield seg, row

    def read_chunk(self, seg: SegmentReader, entry: IndexEntry) -> bytes | None:
        """A frame's chunk, authenticated, decrypted and decompressed but not
        decoded (:meth:`SegmentReader.read_chunk`); damage is recorded and
        reads as None."""
        chunk = seg.read_chunk(entry)
        if isinstance(chunk, Damage):
            self.damage.append(chunk)
            return None
        return chunk

    def records(self, *, reverse: bool = False, test: FrameTest | None = None,
                after_seq: int = 0) -> Iterator[tuple[int, Record]]:
        """(spool seq, record) pairs in spool order (or reversed)."""
        for seg, entry in self.frames(reverse=reverse, test=test, after_seq=after_seq):
            records = self.read(seg, entry)
            seqs = range(entry.first_seq, entry.first_seq + len(records))
            pairs = zip(seqs, records)
            for seq, record in (reversed(list(pairs)) if reverse else pairs):
                if seq > after_seq:
                    yield seq, record


_TS_MIN, _TS_MAX = itemgetter(3), itemgetter(4)


def _footer_rows(seg: SegmentReader) -> list[IndexEntry] | None:
    """A sealed segment's footer index (None: no intact footer), read with
    two small preads instead of the segment's tail."""
    size = seg.size()
    if size < F.SEGMENT_HEADER_SIZE + F.FOOTER_TRAILER_SIZE:
        return None
    trailer = os.pread(seg.fd, F.FOOTER_TRAILER_SIZE, size - F.FOOTER_TRAILER_SIZE)
    parsed = F.footer_trailer(trailer)
    if parsed is None or parsed[0] + F.FOOTER_TRAILER_SIZE > size - F.SEGMENT_HEADER_SIZE:
        return None
    index_len = parsed[0]
    index = os.pread(seg.fd, index_len, size - F.FOOTER_TRAILER_SIZE - index_len)
    return F.footer_index(index, trailer)
