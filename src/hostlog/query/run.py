"""Running a query over a spool: select, order, print, follow."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import BinaryIO, Literal, overload

from hostlog.chunk import ChunkError, FrameColumns
from hostlog.query.filters import Query
from hostlog.record import Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage, SegmentReader

FOLLOW_POLL_S = 0.05  # a follower walks only the frames appended since its last look
#: (spool seq, record) pairs: a frame's worth of what a query shows
Pairs = list[tuple[int, Record]]


def select(reader: SpoolReader, query: Query, *, lines: int | None = None, reverse: bool = False,
           identity: bool = True, columnar: bool = False) -> tuple[Iterator[Pairs | ColumnPick], int]:
    """What a query shows, as pieces (lists of (spool seq, record) pairs, a
    frame's worth each) in the order shown, and the newest spool seq when it
    started (``--follow`` goes on after it).

    Records come in spool order, oldest first, or newest first with
    ``reverse``. ``lines`` (-n) picks N of them as journalctl 252 does
    (docs/query.md, "-n with -S, -U and -r"):

    * with ``since_ns`` and not ``reverse``: the first N from ``since_ns`` on
      (journalctl seeks to --since and reads forward);
    * otherwise the newest N, read from the end so only the frames that hold
      them are decrypted, and only their records built; without ``reverse``,
      ``until_ns`` does not move where they are counted from, it only drops
      those of them after it (journalctl counts N back from the tail, then
      stops reading forward at --until).

    ``identity=False``: the records may come without origin and seq (what
    short and cat print does not need them).
    """
    roomy_heap()
    if lines is None:
        newest_seq = last_seq(reader)
        return iter_pieces(reader, query, reverse=reverse, identity=identity,
                           columnar=columnar), newest_seq
    if query.since_ns is not None and not reverse:
        return iter([first_selected(reader, query, lines, identity=identity)]), last_seq(reader)
    until_ns = None
    if query.until_ns is not None and not reverse:
        until_ns = query.until_ns
        query = dataclasses.replace(query, until_ns=None)
    picked: Pairs = []
    newest_seq = 0
    for seg, entry in reader.frames_quick(reverse=True):
        newest_seq = newest_seq or entry.last_seq  # the first frame seen is the newest
        if len(picked) >= lines:
            break
        if not query.frame_test(seg, entry):
            continue
        pairs = frame_selected(reader, seg, entry, query, last=lines - len(picked),
                               identity=identity)
        picked.extend(reversed(pairs))
    if not reverse:
        picked.reverse()
    if until_ns is not None:
        picked = [pair for pair in picked if pair[1].ts <= until_ns]
    return iter([picked]), newest_seq


def first_selected(reader: SpoolReader, query: Query, lines: int, *,
                   identity: bool = True) -> Pairs:
    """The first ``lines`` records the query selects, in spool order; frames
    before ``since_ns`` are passed over by the index, and reading stops once
    there are enough."""
    picked: Pairs = []
    if lines <= 0:
        return picked
    for seg, entry in reader.frames_quick(test=query.frame_test, since_ns=query.since_ns,
                                          until_ns=query.until_ns):
        pairs = frame_selected(reader, seg, entry, query, first=lines - len(picked),
                               identity=identity)
        picked.extend(pairs)
        if len(picked) >= lines:
            break
    return picked


def last_seq(reader: SpoolReader) -> int:
    for _, entry in reader.frames_quick(reverse=True):
        return entry.last_seq
    return 0


@overload
def iter_pieces(reader: SpoolReader, query: Query, *, reverse: bool = ..., after_seq: int = ...,
                identity: bool = ..., columnar: Literal[False] = ...) -> Iterator[Pairs]: ...
@overload
def iter_pieces(reader: SpoolReader, query: Query, *, reverse: bool = ..., after_seq: int = ...,
                identity: bool = ..., columnar: bool) -> Iterator[Pairs | ColumnPick]: ...
def iter_pieces(reader: SpoolReader, query: Query, *, reverse: bool = False, after_seq: int = 0,
                identity: bool = True, columnar: bool = False) -> Iterator[Pairs | ColumnPick]:
    """What each frame selects, frame by frame, in the order shown (see
    frame_selected() for ``columnar``)."""
    for seg, entry in reader.frames_quick(reverse=reverse, test=query.frame_test, after_seq=after_seq,
                                          since_ns=query.since_ns, until_ns=query.until_ns):
        piece = frame_selected(reader, seg, entry, query, after_seq=after_seq, identity=identity,
                               columnar=columnar)
        if isinstance(piece, ColumnPick):
            if piece.idx:
                piece.reverse = reverse
                yield piece
        elif piece:
            if reverse:
                piece.reverse()
            yield piece


def iter_selected(reader: SpoolReader, query: Query, *, reverse: bool = False,
                  after_seq: int = 0, identity: bool = True) -> Iterator[tuple[int, Record]]:
    for pairs in iter_pieces(reader, query, reverse=reverse, after_seq=after_seq,
                             identity=identity):
        yield from pairs


class ColumnPick:
    """A frame's selection that its columns decided: the indices of the
    records, not yet built (a printer may format them from the columns)."""

    __slots__ = ("cols", "idx", "first", "verify", "identity", "reverse")

    def __init__(self, cols: FrameColumns, idx: list[int], first: int,
                 verify: Callable[[Record], bool], identity: bool) -> None:
        self.cols, self.idx, self.first = cols, idx, first  # idx ascending
        self.verify, self.identity = verify, identity
        self.reverse = False  # shown newest first

    def pairs(self) -> Pairs:
        records = self.cols.records(self.idx, identity=self.identity)
        pairs = [(self.first + i, r) for i, r in zip(self.idx, records) if self.verify(r)]
        if self.reverse:
            pairs.reverse()
        return pairs


@overload
def frame_selected(reader: SpoolReader, seg: SegmentReader, entry: IndexEntry, query: Query, *,
                   after_seq: int = ..., last: int | None = ..., first: int | None = ...,
                   identity: bool = ..., columnar: Literal[False] = ...) -> Pairs: ...
@overload
def frame_selected(reader: SpoolReader, seg: SegmentReader, entry: IndexEntry, query: Query, *,
                   after_seq: int = ..., last: int | None = ..., first: int | None = ...,
                   identity: bool = ..., columnar: bool) -> Pairs | ColumnPick: ...
def frame_selected(reader: SpoolReader, seg: SegmentReader, entry: IndexEntry, query: Query, *,
                   after_seq: int = 0, last: int | None = None, first: int | None = None,
                   identity: bool = True, columnar: bool = False) -> Pairs | ColumnPick:
    """The (seq, record) pairs of one frame that the query selects, in spool
    order; with ``last`` (``first``), at most the last (first) that many.

    The chunk is tested by its bytes, then by single columns; Records are
    built only for what is left (and, with ``last`` or ``first``, from that
    end, a batch at a time, until enough pass). ``columnar``: when the columns decided, a
    :class:`ColumnPick` instead of Records (what a Printer with a column
    formatter takes).
    """
    chunk = reader.read_chunk(seg, entry)
    if chunk is None or not query.chunk_test(chunk):
        return []
    first_seq = entry.first_seq
    identity = identity or query.needs_identity
    try:
        cols = FrameColumns(chunk)
        idx, need_records = query.candidates(cols, entry)
        if after_seq >= first_seq:
            idx = [i for i in idx if first_seq + i > after_seq]
        if columnar and not need_records and last is None and first is None:
            return ColumnPick(cols, idx, first_seq, query.verify, identity)
        # the columns decided (verify() is left), or the record test must
        test = query.verify if not need_records else query.record_test
        if first is not None:
            return _first_passing(cols, idx, first_seq, first, test, identity)
        if last is None:
            return [(first_seq + i, r) for i, r in zip(idx, cols.records(idx, identity=identity))
                    if test(r)]
        out: list[tuple[int, Record]] = []
        end = len(idx)
        step = max(64, 2 * last)
        while end > 0 and len(out) < last:
            part = idx[max(0, end - step):end]
            got = [(first_seq + i, r) for i, r in zip(part, cols.records(part, identity=identity))
                   if test(r)]
            out[:0] = got
            end -= len(part)
            step *= 2
        return out[-last:] if last > 0 else []
    except ChunkError as exc:
        reader.damage.append(Damage(seg.path.name, entry.offset, str(exc), first_seq, entry.count))
        return []


def _first_passing(cols: FrameColumns, idx: list[int], first_seq: int, wanted: int,
                   test: Callable[[Record], bool], identity: bool) -> Pairs:
    """The first ``wanted`` of ``idx`` whose records pass ``test``, built a
    batch at a time from the front."""
    out: Pairs = []
    start, step = 0, max(64, 2 * wanted)
    while start < len(idx) and len(out) < wanted:
        part = idx[start:start + step]
        out += [(first_seq + i, r) for i, r in zip(part, cols.records(part, identity=identity))
                if test(r)]
        start += len(part)
        step *= 2
    return out[:wanted] if wanted > 0 else []


def roomy_heap() -> None:
    """Let big buffers come from the heap, not fresh mmap()s.

    Each frame's chunk (a few hundred KiB) is allocated and freed in turn.
    glibc serves blocks above its mmap threshold (128 KiB at start) with
    mmap() and unmaps them on free, so every chunk would cost a page fault per
    4 KiB touched: measured 5x the decryption and decompression together.
    Freeing one larger mmap()ed block raises glibc's dynamic threshold (to
    at most 32 MiB); later chunks then reuse heap memory. Elsewhere: harmless.
    """
    global _heap_hinted
    if not _heap_hinted:  # once: a second calloc() of this size comes from the heap, zeroed
        bytes(_HEAP_HINT)  # calloc(): mapped, never touched; freed at once
        _heap_hinted = True


_HEAP_HINT = 8 << 20
_heap_hinted = False


class Printer:
    """Formats pieces of (seq, record) pairs into bytes, with journalctl's
    ``-- Boot ID --`` line where the boot changes between two records shown
    (the records that know their boot: journald's, by _BOOT_ID).

    ``fast``: a formatter that returns None when it cannot do a record (the
    short layouts' fast path), tried before ``format_record``. ``first`` and
    ``last`` are the first and last boot printed, so output made in pieces
    by several processes (parallel.py) can be joined.
    """

    def __init__(self, format_record: Callable[[Record], bytes], *, boot_lines: bool = False,
                 color: bool = False, fast: Callable[[Record], bytes | None] | None = None,
                 columns: Callable | None = None) -> None:
        self.format_record = format_record
        self.fast = fast
        self.columns = columns  # Formatter.short_columns, when it applies
        self.boot_lines = boot_lines
        self.on, self.off = (b"\x1b[0;1;39m", b"\x1b[0m") if color else (b"", b"")
        self.first: str | None = None
        self.last: str | None = None
        self.top = 0

    def separator(self, boot: str) -> bytes:
        return self.on + b"-- Boot " + boot.encode() + b" --" + self.off + b"\n"

    def __call__(self, piece: Pairs | ColumnPick) -> bytes:
        """The bytes of a piece; ``self.top`` is then its highest spool seq
        printed (0 if none)."""
        if piece.__class__ is ColumnPick:
            if self.columns is None:
                piece = piece.pairs()
            else:
                pick: ColumnPick = piece
                lines, boots, kept = self.columns(pick.cols, pick.idx, pick.verify, pick.identity)
                self.top = pick.first + kept[-1] if kept else 0
                if pick.reverse:
                    lines.reverse()
                    boots.reverse()
                return self._joined(lines, boots)
        pairs: Pairs = piece  # type: ignore[assignment]
        self.top = max(pairs[0][0], pairs[-1][0]) if pairs else 0
        fmt, fast = self.format_record, self.fast
        if not self.boot_lines:
            if fast is None:
                return b"".join([fmt(r) for _, r in pairs])
            return b"".join([fast(r) or fmt(r) for _, r in pairs])
        out = []
        last = self.last
        for _, r in pairs:
            fields = r.fields
            boot = fields.get("_BOOT_ID") if fields else None
            if boot is not None and boot != last and isinstance(boot, str) and len(boot) == 32:
                if last is None:
                    self.first = boot
                else:
                    out.append(self.separator(boot))
                last = boot
            out.append((fast(r) if fast is not None else None) or fmt(r))
        self.last = last
        return b"".join(out)

    def _joined(self, lines: list[bytes], boots: list[str | None]) -> bytes:
        if not self.boot_lines:
            return b"".join(lines)
        out = []
        last = self.last
        for line, boot in zip(lines, boots):
            if boot is not None and boot != last:
                if last is None:
                    self.first = boot
                else:
                    out.append(self.separator(boot))
                last = boot
            out.append(line)
        self.last = last
        return b"".join(out)

    def record(self, record: Record) -> bytes:
        return self([(0, record)])


def write_records(out: BinaryIO, pieces: Iterator[Pairs | ColumnPick], printer: Printer) -> int:
    """Write formatted pieces; returns the highest seq written (0 if none)."""
    buf: list[bytes] = []
    size = top = 0
    for piece in pieces:
        data = printer(piece)
        top = max(top, printer.top)
        buf.append(data)
        size += len(data)
        if size >= 1 << 16:
            out.write(b"".join(buf))
            buf.clear()
            size = 0
    out.write(b"".join(buf))
    out.flush()
    return top
