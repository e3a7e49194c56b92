"""Reading a spool from another process: queries, verify, stats, follow.

Takes no lock: segments are append-only and sealed ones never change, so a
reader sees every frame that was complete when it looked, and stops at a
frame still being written. A segment deleted by retention while a query runs
is passed over (it was the oldest; the query asked for what is there now).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from hostlog.errors import KeyFileError, SpoolError
from hostlog.record import Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.keys import Keyring
from hostlog.spool.segment import Damage, SegmentReader, segment_first_seq
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
        return sorted((p for p in paths if segment_first_seq(p) is not None), key=segment_first_seq)

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
               after_seq: int = 0) -> Iterator[tuple[SegmentReader, IndexEntry]]:
        """Every frame (oldest first, or newest first with ``reverse``) that
        passes ``test`` and holds records after ``after_seq``."""
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
                index = seg.index()
                self.damage.extend(index.damage)
                entries = index.entries[::-1] if reverse else index.entries
                for entry in entries:
                    if entry.last_seq <= after_seq:
                        continue
                    if test is None or test(seg, entry):
                        yield seg, entry

    def read(self, seg: SegmentReader, entry: IndexEntry) -> list[Record]:
        """The records of a frame; damage is recorded and reads as no records."""
        result = seg.read_frame(entry)
        if isinstance(result, Damage):
            self.damage.append(result)
            return []
        return result

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
