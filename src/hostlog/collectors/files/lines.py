"""Line framing for tailed files: sans-IO, bytes in, messages out.

:class:`LineFramer` turns the bytes of one file, fed in chunks of any size,
into messages, and says after every step up to which file offset everything
has been emitted (``committed``): the offset a checkpoint may hold. A framer
built at that offset and fed the rest of the file emits exactly the messages
the first one had not yet emitted; that property is what lets the file
collector resume after a crash without a lost or a repeated line.

Rules, in the order they apply:

* A line ends at ``\\n``; the newline and one ``\\r`` before it are removed.
  The file is split with ``bytes.split`` over whole chunks, never line by
  line: per-line Python work is the budget that decides speed.
* A line longer than ``max_line`` bytes is cut into pieces of at most
  ``max_line`` bytes, each its own message marked ``truncated``. With
  ``utf8=True`` a cut never falls inside a UTF-8 sequence, so each piece of a
  valid line still decodes. An unterminated line is cut as soon as it reaches
  ``max_line``, so memory stays bounded whatever the file holds.
* The last line of a chunk without its newline waits for it. :meth:`flush`
  (the collector calls it after a quiet period) emits it marked ``partial``;
  the rest of that line, when it comes, is marked ``partial`` too.
* With ``multiline_start``, a line that does not match the pattern is joined
  (with ``\\n``) to the record before it, as a stack trace belongs to the line
  that announced it. A record is held until the next start line or a flush,
  and never grows beyond ``max_line`` bytes: at that size it is emitted,
  marked ``truncated``, and the next line opens a new record (also marked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Lines", "LineFramer", "MARK_PARTIAL", "MARK_TRUNCATED"]

MARK_TRUNCATED = "truncated"
MARK_PARTIAL = "partial"


@dataclass(slots=True)
class Lines:
    """Messages produced by one :meth:`LineFramer.feed` or :meth:`LineFramer.flush`.

    ``marks`` is sparse: index -> mark, for the few messages that have one.
    ``committed`` is the file offset just past the last byte these (and all
    earlier) messages cover.
    """

    messages: list[bytes] = field(default_factory=list)
    marks: dict[int, str] = field(default_factory=dict)
    committed: int = 0


def _cut(buf: bytes, start: int, limit: int, utf8: bool) -> int:
    """End of the piece of at most ``limit`` bytes that starts at ``start``."""
    end = start + limit
    if utf8 and end < len(buf):
        # Step back over continuation bytes (10xxxxxx) to the start of the
        # sequence; a sequence is at most 4 bytes, so at most 3 steps. If that
        # finds no boundary the bytes are not UTF-8 anyway: cut where we were.
        pos = end
        while pos > end - 3 and pos > start + 1 and (buf[pos] & 0xC0) == 0x80:
            pos -= 1
        if (buf[pos] & 0xC0) != 0x80:
            return pos
    return end


class LineFramer:
    """Incremental line splitter for one file; see the module doc."""

    def __init__(self, *, max_line: int, multiline_start: re.Pattern[bytes] | None = None,
                 offset: int = 0, utf8: bool = True) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self.multiline = multiline_start
        self.utf8 = utf8
        #: Everything before this offset has been emitted.
        self.committed = offset
        #: Offset of the next byte to feed.
        self.read_offset = offset
        self._partial = b""           # unterminated line held back
        self._line_cut = False        # the held line already lost pieces to max_line
        self._line_flushed = False    # the held line's start went out in a flush
        # the open multiline record
        self._record: list[bytes] = []
        self._record_len = 0
        self._record_mark: str | None = None

    @property
    def pending(self) -> int:
        """Bytes fed but not yet emitted (a partial line, an open record)."""
        return self.read_offset - self.committed

    # -- input ---------------------------------------------------------------------
    def feed(self, data: bytes) -> Lines:
        out = Lines(committed=self.committed)
        if not data:
            return out
        start = self.read_offset - len(self._partial)  # file offset of buf[0]
        buf = self._partial + data if self._partial else data
        self.read_offset += len(data)
        lines = buf.split(b"\n")
        rest = lines.pop()
        if (not self._line_cut and not self._line_flushed and self.multiline is None
                and max(map(len, lines), default=0) <= self.max_line):
            # Fast path, the common case: whole lines, none too long.
            if b"\r" in buf:
                lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
            out.messages = lines
            start += len(buf) - len(rest)
            self.committed = start
        else:
            for line in lines:
                self._line(out, line, start, len(line) + 1)
                start += len(line) + 1
        self._partial = rest
        self._hold_partial(out, start)
        out.committed = self.committed
        return out

    def flush(self) -> Lines:
        """Emit what is held back: the partial line (marked) and the open record."""
        out = Lines(committed=self.committed)
        if self._partial:
            start = self.read_offset - len(self._partial)
            line, self._partial = self._partial, b""
            self._line(out, line, start, len(line), mark=MARK_PARTIAL)
            self._line_flushed = True
        self._close_record(out)
        self.committed = self.read_offset
        out.committed = self.committed
        return out

    # -- internals -----------------------------------------------------------------
    def _hold_partial(self, out: Lines, start: int) -> None:
        """Cut the held line while it is longer than max_line (bounded memory)."""
        rest = self._partial
        # A trailing CR may be the first half of CRLF, which _line drops:
        # leave it out of the count so chunk boundaries never change a cut.
        size = len(rest) - 1 if rest.endswith(b"\r") else len(rest)
        if size <= self.max_line:
            return
        pos = 0
        while size - pos > self.max_line:
            end = _cut(rest, pos, self.max_line, self.utf8)
            self._emit_line(out, rest[pos:end], start + pos, end - pos, MARK_TRUNCATED)
            pos = end
        self._partial = rest[pos:]
        self._line_cut = True

    def _line(self, out: Lines, line: bytes, start: int, size: int, mark: str | None = None) -> None:
        """One line as it was in the file (``size`` counts its newline, if any)."""
        if line.endswith(b"\r") and size > len(line):
            line = line[:-1]
        if self._line_cut:
            mark = MARK_TRUNCATED  # the last piece of a line cut while held
        elif self._line_flushed:
            mark = MARK_PARTIAL    # the rest of a line flushed without its end
        self._line_cut = self._line_flushed = False
        if len(line) <= self.max_line:
            self._emit_line(out, line, start, size, mark)
            return
        pos = 0
        while pos < len(line):
            end = _cut(line, pos, self.max_line, self.utf8)
            last = end >= len(line)
            self._emit_line(out, line[pos:end], start + pos,
                            (size - pos) if last else (end - pos), MARK_TRUNCATED)
            pos = end

    def _emit_line(self, out: Lines, line: bytes, start: int, size: int, mark: str | None) -> None:
        if self.multiline is None or mark == MARK_TRUNCATED:
            self._close_record(out)
            if mark is not None:
                out.marks[len(out.messages)] = mark
            out.messages.append(line)
            self.committed = start + size
            return
        if self._record and self.multiline.match(line) is None:
            if self._record_len + 1 + len(line) <= self.max_line:
                self._record.append(line)
                self._record_len += 1 + len(line)
                return
            self._record_mark = MARK_TRUNCATED
            mark = MARK_TRUNCATED
        self._close_record(out)
        self._record = [line]
        self._record_len = len(line)
        self._record_mark = mark
        # Bytes of an open record are not committed: a restart re-reads them.
        self.committed = start

    def _close_record(self, out: Lines) -> None:
        if not self._record:
            return
        if self._record_mark is not None:
            out.marks[len(out.messages)] = self._record_mark
        out.messages.append(self._record[0] if len(self._record) == 1 else b"\n".join(self._record))
        self._record = []
        self._record_len = 0
        self._record_mark = None


def decode_messages(messages: list[bytes], encoding: str = "utf-8") -> list[str | bytes]:
    """Messages as text where they decode, as the original bytes where not.

    One decode over the whole batch first (one call instead of one per
    message); only when that fails is each message tried on its own. The
    encoding must be ASCII-compatible (newline is byte 0x0A), as line
    splitting already assumes.
    """
    if not messages:
        return []
    try:
        text = b"\n".join(messages).decode(encoding)
    except UnicodeDecodeError:
        pass
    else:
        parts = text.split("\n")
        if len(parts) == len(messages):
            return parts  # type: ignore[return-value]
        # some messages hold newlines (joined multiline records): go one by one
    out: list[str | bytes] = []
    for m in messages:
        try:
            out.append(m.decode(encoding))
        except UnicodeDecodeError:
            out.append(m)
    return out
