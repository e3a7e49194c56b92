"""Sans-IO capture of one output stream of a supervised child: bytes in, lines out.

One :class:`LineCapture` per stream (stdout, stderr) of a running child. The
supervisor feeds it whatever a pipe read returned; ``feed()`` gives back the
lines those bytes complete, ``flush()`` gives back the partial line it holds
(after a quiet timeout, or at the end of the stream). No I/O, no exceptions
for any input: every byte the child wrote comes out again, in order.

Theory of operation:

* A line ends at LF; the LF is not part of the message. Everything else is
  kept as written (CR, NUL, empty lines): the capture is lossless, so a
  consumer can rebuild the stream from the lines and their ``line_break``.
* sd-daemon priority prefix: a line starting ``<N>`` with N from 0 to 7 (also
  written ``<0N>`` or ``<00N>``, as journald's stdout streams accept it, see
  ``syslog_parse_priority()`` in systemd) takes severity N, and the prefix is
  removed. Other lines take the stream's default severity.
* Maximum line length (``max_line`` bytes, after the prefix): a longer line is
  cut into pieces of at most ``max_line`` bytes; every piece but the last is
  marked ``line_break = "line-max"`` (journald's ``_LINE_BREAK`` values). A cut
  is moved back to a UTF-8 character boundary when one lies within the last 3
  bytes, so the pieces of a text line stay text. The held partial line never
  grows beyond ``max_line``: memory per stream is bounded.
* A partial line (no LF yet) is held until its LF arrives or ``flush()`` is
  called: ``flush("timeout")`` after the stream has been quiet (a prompt, a
  progress bar) and ``flush("eof")`` when the stream ends; the piece is marked
  with that reason. What follows a cut or a timeout flush continues the same
  line: it keeps that line's severity and is not parsed for a prefix.
* Bytes that are not valid UTF-8 are kept as ``bytes`` (the record model's
  rule for binary messages); valid ones become ``str``.
* Work is done on whole buffers: one ``rfind`` for the last LF, one UTF-8
  decode and one ``split`` of everything before it, handed out as columns
  (:class:`Captured`: a list of messages, a list of severities, the few
  line breaks). A Python loop per line runs only where a line needs it: a
  ``<`` at a line start, a line over ``max_line``, bytes that are not UTF-8;
  never per byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Captured", "Line", "LineCapture", "Multiline", "concat", "decode_lines", "parse_priority",
           "LINE_MAX", "TIMEOUT", "EOF"]

#: ``line_break`` marks, as journald names them in ``_LINE_BREAK``.
LINE_MAX = "line-max"
TIMEOUT = "timeout"
EOF = "eof"

#: (message, severity, line_break): line_break is None for a line that ended
#: with LF, else one of LINE_MAX, TIMEOUT, EOF.
Line = tuple["str | bytes", int, "str | None"]

_DIGITS = b"01234567"


def parse_priority(line: bytes) -> tuple[int, bytes] | None:
    """``(severity, rest)`` when ``line`` starts with an sd-daemon ``<N>`` prefix.

    Accepts ``<N>``, ``<0N>`` and ``<00N>`` with N in 0..7 (sd-daemon(3) writes
    ``<N>``; journald's parser also takes the zero-padded forms and nothing
    with a facility); anything else is not a prefix and returns None.
    """
    if line[:1] != b"<":
        return None
    end = line.find(b">", 1, 5)
    if end < 2:
        return None
    digits = line[1:end]
    last = digits[-1:]
    if not last or last not in _DIGITS or digits[:-1].strip(b"0"):
        return None
    return _DIGITS.index(last), line[end + 1:]


def _text(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _cut(data: bytes, start: int, limit: int) -> int:
    """End of the piece of at most ``limit`` bytes starting at ``start``.

    ``data[start + limit]`` must exist. When it is a UTF-8 continuation byte a
    character straddles the cut: move the cut back to that character's lead
    byte, if it is within 3 bytes and the piece does not become empty.
    """
    end = start + limit
    back = end
    while back > start and back > end - 3 and 0x80 <= data[back] <= 0xBF:
        back -= 1
    if back != end and back > start and data[back] >= 0xC0:
        return back
    return end


@dataclass(slots=True)
class Captured:
    """Lines as columns: what one :meth:`LineCapture.take` returns.

    ``msgs[i]`` and ``severities[i]`` belong together; ``breaks`` is sparse
    (index -> line_break) for the few lines that did not end with an LF.
    """

    msgs: list[str | bytes] = field(default_factory=list)
    severities: list[int] = field(default_factory=list)
    breaks: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.msgs)

    def append(self, msg: str | bytes, severity: int, brk: str | None) -> None:
        if brk is not None:
            self.breaks[len(self.msgs)] = brk
        self.msgs.append(msg)
        self.severities.append(severity)

    def lines(self) -> list[Line]:
        """The same as ``(msg, severity, line_break)`` tuples."""
        get = self.breaks.get
        return [(m, s, get(i)) for i, (m, s) in enumerate(zip(self.msgs, self.severities))]


class LineCapture:
    """Line capture for one stream; see the module docstring for the rules."""

    def __init__(self, *, max_line: int = 64 * 1024, default_severity: int = 6,
                 parse_priority: bool = True) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self.default_severity = default_severity
        self.parse_priority = parse_priority
        self._buf = b""  # the partial line: never longer than max_line
        self._line_start = True  # the next byte begins a new line (prefix allowed)
        self._severity = default_severity  # severity of the line being continued

    @property
    def pending(self) -> int:
        """Bytes of a partial line held back (a quiet-timeout flush is due)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Line]:
        """Take bytes from the stream; return the lines (and pieces) they complete."""
        return self.take(data).lines()

    def flush(self, reason: str = EOF) -> list[Line]:
        """:meth:`take_flush` as tuples."""
        return self.take_flush(reason).lines()

    def take(self, data: bytes) -> Captured:
        """:meth:`feed`, as columns: the collector's path."""
        out = Captured()
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            rest = buf
        else:
            rest = buf[end + 1:]
            start = 0
            if not self._line_start:
                # The first line continues one already partly emitted.
                start = buf.index(b"\n") + 1
                self._emit(buf[:start - 1], self._severity, None, out)
                self._line_start = True
            if start <= end:
                self._whole_lines(buf[start:end], out)
        if len(rest) > self.max_line:
            rest = self._emit_pieces(self._begin(rest), out)
        self._buf = rest
        return out

    def single(self, data: bytes) -> str | None:
        """The line ``data`` holds when it is exactly one whole line that no
        rule above changes (no partial line held, no ``<`` at its start,
        within ``max_line``, UTF-8): what :meth:`take` would give as its one
        message, with the default severity, in the same state after; the
        read of a quiet app that flushes every line, without building
        columns. None: not such a line, nothing taken (use :meth:`take`)."""
        if (self._buf or not self._line_start or len(data) > self.max_line + 1
                or data[-1:] != b"\n" or data.find(b"\n") != len(data) - 1
                or (self.parse_priority and data[:1] == b"<")):
            return None
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def take_flush(self, reason: str = EOF) -> Captured:
        """Hand out the partial line, marked ``reason`` (TIMEOUT or EOF).

        After TIMEOUT the bytes that follow continue the same line; after EOF
        the capture starts afresh (a new stream, e.g. after a restart).
        """
        out = Captured()
        if self._buf:
            line = self._begin(self._buf)
            self._buf = b""
            self._emit(line, self._severity, reason, out)
        if reason != TIMEOUT:
            self._line_start = True
            self._severity = self.default_severity
        return out

    # -- internals --------------------------------------------------------------
    def _whole_lines(self, whole: bytes, out: Captured) -> None:
        """Lines that start at a line start and end with an LF (``whole``
        holds them without their last LF). C-level passes over the buffer;
        the per-line loops below run only for lines with a ``<`` prefix,
        lines over max_line, or bytes that are not UTF-8."""
        default, limit = self.default_severity, self.max_line
        # (memchr for "<" first: a two-byte search is slow where LFs abound)
        prefixed = self.parse_priority and b"<" in whole and (
            whole[:1] == b"<" or b"\n<" in whole)
        if not prefixed:
            try:
                text = whole.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                msgs = text.split("\n")
                # an ASCII line's length in characters is its length in bytes
                if (len(whole) <= limit or (text.isascii() and max(map(len, msgs)) <= limit)
                        or max(map(len, whole.split(b"\n"))) <= limit):
                    out.msgs += msgs
                    out.severities += [default] * len(msgs)
                    return
        lines = whole.split(b"\n")
        severities = [default] * len(lines)
        if prefixed:
            for i, line in enumerate(lines):
                if line[:1] == b"<":
                    found = parse_priority(line)
                    if found is not None:
                        severities[i], lines[i] = found
        if len(whole) > limit and max(map(len, lines)) > limit:
            for line, severity in zip(lines, severities):
                if len(line) > limit:
                    self._emit(line, severity, None, out)
                else:
                    out.msgs.append(_text(line))
                    out.severities.append(severity)
            return
        out.msgs += decode_lines(lines)
        out.severities += severities

    def _begin(self, line: bytes) -> bytes:
        """Take the prefix off a line that starts here; remember its severity."""
        if self._line_start:
            self._line_start = False
            self._severity = self.default_severity
            if self.parse_priority:
                found = parse_priority(line)
                if found is not None:
                    self._severity, line = found
        return line

    def _emit_pieces(self, line: bytes, out: Captured) -> bytes:
        """Emit full pieces while more than max_line bytes remain; return the rest."""
        start, limit, severity = 0, self.max_line, self._severity
        while len(line) - start > limit:
            end = _cut(line, start, limit)
            out.append(_text(line[start:end]), severity, LINE_MAX)
            start = end
        return line[start:]

    def _emit(self, line: bytes, severity: int, last: str | None, out: Captured) -> None:
        """Emit a line whose prefix is already handled: pieces, then the end."""
        self._severity = severity
        rest = self._emit_pieces(line, out)
        out.append(_text(rest), severity, last)


def decode_lines(lines: list[bytes]) -> list[str | bytes]:
    """Each line as text where it is UTF-8, as its bytes where not: one
    decode of the joined lines when all are text (lines hold no LF)."""
    if not lines:
        return []
    try:
        return b"\n".join(lines).decode("utf-8").split("\n")  # type: ignore[return-value]
    except UnicodeDecodeError:
        return list(map(_text, lines))


class Multiline:
    """``multiline_start`` for one stream: captured lines joined into
    records, a line that does not match the pattern going with the record
    before it (a stack trace is one record). Sans-IO, like LineCapture.

    The joining is the file collector's (:class:`hostlog.collectors.files.lines.LineFramer`
    with ``multiline_start``, fed the captured lines): the same rule, the
    same ``max_line`` bound on a record (at that size it is handed out,
    marked ``line-max``, and the next line opens a new record), the same
    trailing CR taken off a line. A record takes the severity of its first
    line (its ``<N>`` prefix, or the stream's), and the line break of its
    last. The open record is held until the next start line or
    :meth:`flush` (a quiet stream, its end).
    """

    def __init__(self, pattern: str, *, max_line: int) -> None:
        import re

        from hostlog.collectors.files.lines import LineFramer
        self._framer = LineFramer(max_line=max_line, multiline_start=re.compile(pattern.encode("utf-8")))
        # (severity, line_break) of each line fed and not yet handed out, oldest first
        self._held: list[tuple[int, str | None]] = []

    @property
    def pending(self) -> bool:
        """Lines are held (an open record waits for its end)."""
        return bool(self._held)

    def take(self, lines: Captured) -> Captured:
        """Join these lines to what is held; returns the records completed."""
        if not lines.msgs:
            return Captured()
        get = lines.breaks.get
        self._held += [(s, get(i)) for i, s in enumerate(lines.severities)]
        data = b"\n".join(m.encode("utf-8", "surrogateescape") if isinstance(m, str) else m
                          for m in lines.msgs) + b"\n"
        return self._records(self._framer.feed(data))

    def flush(self) -> Captured:
        """Hand out the open record."""
        return self._records(self._framer.flush())

    def _records(self, framed: Any) -> Captured:
        from hostlog.collectors.files.lines import MARK_TRUNCATED
        out = Captured()
        held = self._held
        used = 0
        for k, message in enumerate(framed.messages):
            count = message.count(b"\n") + 1
            first, last = held[used], held[used + count - 1]
            used += count
            brk = LINE_MAX if framed.marks.get(k) == MARK_TRUNCATED else last[1]
            out.append(_text(message), first[0], brk)
        del held[:used]
        return out


def concat(a: Captured, b: Captured) -> Captured:
    """The lines of ``a``, then those of ``b``."""
    if not b.msgs:
        return a
    if not a.msgs:
        return b
    offset = len(a.msgs)
    a.breaks.update({offset + i: brk for i, brk in b.breaks.items()})
    a.msgs += b.msgs
    a.severities += b.severities
    return a
