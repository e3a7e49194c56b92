"""Reading a spool from another process: queries, verify, stats, follow.

Takes no lock: segments are append-only and sealed ones never change, so a
reader sees every frame that was complete when it looked, and stops at a
frame still being written. A segment deleted by retention while a query runs
is passed over (it was the oldest; the query asked for what is there now).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
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
    # the last index of each unsealed segment, by path and salt: the next
    # look at it walks only what was appended since (follow polls it)
    _unsealed: dict[tuple[Path, bytes], SegmentIndex] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: str | os.PathLike[str], key_file: str | os.PathLike[str] | None = None) -> SpoolReader:
        directory = Path(directory)
        if not (directory / "segments").is_dir():
            raise SpoolError(f"{directory} is not a hostlog spool (no segments/ in it)")
        key_path = Path(key_file) if key_file else find_key_file(directory)
        try:
            keyring = Keyring.load(key_path)
        except KeyFileError as exc:
            raise KeyFileError(f"cannot read spool {directory}: {exc}") from None
        return cls(directory, keyring)

    def segment_paths(self) -> list[Path]:
        try:
            names = os.listdir(self.directory / "segments")
        except FileNotFoundError:
            return []
        paths = [self.directory / "segments" / n for n in names]
        return sorted((p for p in paths if segment_first_seq(p) is not None),
                  key=lambda p: segment_first_seq(p) or 0)

    def open_segment(self, path: Path) -> SegmentReader | None:
        try:
            return SegmentReader(path, self.keyring)
        except FileNotFoundError:
            return None  # removed by retention since we listed it
        except KeyFileError:
            raise
        except SpoolError as exc:
            if os.path.getsize(path) == 0:
                return None  # being created right now
            self.damage.append(Damage(path.name, 0, str(exc)))
            return None

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
