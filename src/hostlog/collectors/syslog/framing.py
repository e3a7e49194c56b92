"""Sans-IO RFC 6587 framer: a TCP (or TLS) byte stream in, syslog messages out.

One :class:`SyslogFramer` per connection. ``feed()`` takes whatever bytes the
socket returned and gives back the complete messages they finish;
``finish()`` at EOF gives back what is left. No I/O, no exceptions for any
input: damage is a value (a :class:`TruncatedFrame`, counted).

Theory of operation:

* Method per connection, from its first frame (RFC 6587 3.4 describes both
  and leaves detection to the receiver): ``MSG-LEN SP`` (a nonzero digit,
  more digits, a space) means octet counting (RFC 6587 3.4.1 = RFC 5425 4.3),
  anything else means non-transparent framing (3.4.2). Deciding once keeps
  an LF stream whose lines start with digits ("2024-05-01 ...", no PRI) from
  being read as octet counts.
* Octet counting falls back per frame: a frame that does not start with a
  valid ``MSG-LEN SP`` (garbage, a stray LF after a frame, a desynced
  sender) is taken up to its next LF or NUL as one frame of raw bytes, and
  counting resumes after it. The parser then keeps those bytes in a record
  with a parse error: nothing is dropped silently. A MSG-LEN above
  ``16 * max_message`` is taken for such garbage too, not as a length.
* Non-transparent: the trailer is LF, or NUL (both accepted, as go-syslog's
  framing cases use both); CR LF loses its CR; empty lines are skipped.
* A message longer than ``max_message`` is cut to ``max_message`` bytes and
  returned as a :class:`TruncatedFrame`; the rest of it is discarded up to its
  end (MSG-LEN octets, or the next LF/NUL) and the connection goes on.
* Work is done on whole buffers with ``split``/``find``; a Python loop runs
  once per frame in octet counting and once per feed in LF framing, never
  per byte, and bytes already known to hold no trailer are not scanned again.
"""

from __future__ import annotations

__all__ = ["LineBlock", "OctetBlock", "SyslogFramer", "TruncatedFrame"]

try:  # compiled (setup.py); without it octet-counted frames never come as blocks
    from hostlog.collectors.syslog._syslog5424 import octet_prefix as _octet_prefix
except ImportError:  # pragma: no cover - tested where the extension is built
    _octet_prefix = None

# Framing method of the connection.
_UNDECIDED, _OCTET, _LF = 0, 1, 2
# Where an octet-counting connection is inside the current frame.
_HEADER, _BODY, _LINE, _SKIP = 0, 1, 2, 3

_NONZERO = b"123456789"
#: MSG-LEN values above this many times max_message are read as garbage, not
#: as a length: resyncing on the next LF beats skipping megabytes blindly.
_MAX_COUNT_FACTOR = 16


class TruncatedFrame(bytes):
    """A frame that is not the whole message: cut at ``max_message``, or cut
    short by EOF. Every other frame is plain ``bytes``.

    :func:`hostlog.collectors.syslog.parse.parse_message` marks the record of
    such a frame with ``fields["truncated"] = "true"``.
    """

    __slots__ = ()


class LineBlock(bytes):
    """Complete LF-framed lines of one connection in one piece, each still
    ending in its LF (CR LF, empty lines and over-long lines still in it):
    see :meth:`SyslogFramer.feed_blocks`."""

    __slots__ = ()


class OctetBlock(bytes):
    """Whole octet-counted frames (``MSG-LEN SP MSG``, MSG at most
    ``max_message`` octets) of one connection in one piece: see
    :meth:`SyslogFramer.feed_blocks`."""

    __slots__ = ()


class SyslogFramer:
    """Split one connection's byte stream into syslog messages (RFC 6587)."""

    def __init__(self, max_message: int = 65536) -> None:
        if max_message < 1:
            raise ValueError("max_message must be at least 1")
        #: Longest message returned whole; longer ones are cut to this size.
        self.max_message = max_message
        #: Messages cut at max_message (each returned as a TruncatedFrame).
        self.truncated = 0
        #: Partial messages returned by finish() at EOF (also TruncatedFrames).
        self.incomplete = 0
        self._max_count = max_message * _MAX_COUNT_FACTOR
        # A valid MSG-LEN has at most this many digits; the SP must follow.
        self._len_digits = len(str(self._max_count))
        self._reset()

    def _reset(self) -> None:
        self._mode = _UNDECIDED
        self._state = _HEADER
        # Bytes of the current, unfinished frame: a partial line, a partial
        # MSG-LEN, or a partial body. Bounded: a line or body is cut once it
        # exceeds max_message, and a MSG-LEN is at most _len_digits bytes, so
        # a peer cannot make a connection hold more than max_message plus a
        # few bytes between two feeds, however it drips or floods.
        self._buf = bytearray()
        self._need = 0  # total body size of the frame being read (<= max_message)
        self._cut = False  # that body is the first max_message bytes of a longer one
        self._skip = 0  # octets of a cut body still to discard
        self._discard = False  # dropping the rest of an over-long line, up to LF/NUL

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages they complete, in order."""
        out: list[bytes] = []
        if not data:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        if self._mode == _UNDECIDED:
            decided = self._decide(data)
            if decided is None:
                return out
            data = decided
        if self._mode == _LF:
            self._feed_lf(data, out)
        else:
            self._feed_octet(data, out)
        return out

    def finish(self) -> list[bytes]:
        """At EOF: return the unfinished frame, if any, as a TruncatedFrame.

        A peer that disconnects mid-frame costs that one frame, which is still
        handed on (marked) rather than dropped. The framer is then reset.
        """
        buf = bytes(self._buf)
        out: list[bytes] = []
        if self._mode == _LF or (self._mode == _OCTET and self._state == _LINE):
            if buf.endswith(b"\r"):
                buf = buf[:-1]
            if buf and not self._discard:
                out.append(TruncatedFrame(buf))
        elif buf and self._state != _SKIP:
            # a partial MSG-LEN ("1" at EOF), or a partial body
            out.append(TruncatedFrame(buf))
        self.incomplete += len(out)
        self._reset()
        return out

    # -- method detection ---------------------------------------------------

    def _decide(self, data: bytes) -> bytes | None:
        """Pick the connection's framing from its first frame; None = need more bytes."""
        if self._buf:
            data = bytes(self._buf) + data
            self._buf.clear()
        data = data.lstrip(b"\r\n\x00")  # stray trailers before the first frame
        if not data:
            return None
        self._mode = _LF
        if data[0] in _NONZERO:
            sp = data.find(b" ", 0, self._len_digits + 1)
            if sp > 0:
                if data[:sp].isdigit() and int(data[:sp]) <= self._max_count:
                    self._mode = _OCTET
            elif len(data) <= self._len_digits and data.isdigit():
                self._mode = _UNDECIDED  # "12" so far: wait for the SP
                self._buf += data
                return None
        return data

    # -- non-transparent framing (RFC 6587 3.4.2) ----------------------------

    def _feed_lf(self, data: bytes, out: list[bytes]) -> None:
        buf = self._buf
        if self._discard:
            i = _terminator(data, 0)
            if i < 0:
                return
            data = data[i + 1:]
            self._discard = False
        # RFC 6587 3.4.2: TRAILER is LF, or NUL in some implementations.
        if b"\x00" in data:
            data = data.replace(b"\x00", b"\n")
        parts = data.split(b"\n")
        tail = parts.pop()  # after the last trailer: the start of the next frame
        if parts:
            cr = b"\r" in data or buf.endswith(b"\r")
            if buf:
                parts[0] = bytes(buf) + parts[0]
                buf.clear()
            # (len(data) + len(parts[0]) bounds every line)
            self._emit_lines(parts, cr, len(data) + len(parts[0]), out)
        if tail:
            buf += tail
            if self._too_long(buf):
                self._emit_cut(buf, out)
                self._discard = True

    def _emit_lines(self, parts: list[bytes], cr: bool, bound: int, out: list[bytes]) -> None:
        """Complete lines (trailers removed) as frames: CR LF loses its CR,
        empty lines are skipped, long lines are cut. ``bound`` is at least the
        longest line's length (cheap to know; max() is C-level, but a pass)."""
        if cr:
            parts = [p[:-1] if p.endswith(b"\r") else p for p in parts]
        if bound > self.max_message and max(map(len, parts)) > self.max_message:
            self._emit_long(parts, out)
        else:
            out.extend(filter(None, parts))  # empty lines carry nothing

    # -- runs of whole frames as one block ----------------------------------------

    def feed_blocks(self, data: bytes) -> list[bytes]:
        """:meth:`feed`, except that a run of complete frames may come back
        as one :class:`LineBlock` or :class:`OctetBlock` (the bytes of those
        frames as they came, in one piece), for a parser that reads frames in
        place (:func:`hostlog.collectors.syslog.parse_batch.parse_block`);
        :meth:`split_block` makes of a block the frames :meth:`feed` would
        have returned. The framer's state is the same either way.

        LF framing: the complete lines of data with no NUL in it, when the
        framer is not dropping the rest of an over-long line and the partial
        last line cannot be over-long yet (long lines inside a block are the
        reader's to notice: ``split_block`` cuts them). Octet counting: after
        the frame under way is finished, the run of whole frames of at most
        ``max_message`` octets (found by the compiled ``octet_prefix``; none
        without it); what follows the run is framed as :meth:`feed` frames it.
        """
        if type(data) is not bytes:
            data = bytes(data)
        if self._mode == _LF:
            end = data.rfind(b"\n") + 1  # 0: no line ends in data
            if self._discard or end == 0 or b"\x00" in data or len(data) - end >= self.max_message:
                return self.feed(data)
            buf = self._buf
            block = LineBlock(data[:end] if not buf else bytes(buf) + data[:end])
            buf.clear()
            buf += memoryview(data)[end:]  # shorter than max_message: never cut here
            return [block]
        if self._mode != _OCTET or _octet_prefix is None:
            return self.feed(data)
        out: list[bytes] = []
        data, pos = self._feed_octet(data, out, stop_between_frames=True)
        end = _octet_prefix(data, pos, self.max_message)
        if end > pos:
            out.append(OctetBlock(data[pos:end]))
        if end < len(data):
            self._feed_octet(data[end:], out)
        return out

    def split_block(self, block: bytes) -> list[bytes]:
        """The frames of a block from :meth:`feed_blocks`, as :meth:`feed`
        would have returned them (truncated lines are counted here)."""
        out: list[bytes] = []
        if type(block) is OctetBlock:
            pos = 0
            while pos < len(block):
                sp = block.index(b" ", pos)
                pos = sp + 1 + int(block[pos:sp])
                out.append(block[sp + 1:pos])
            return out
        parts = block.split(b"\n")
        parts.pop()  # after the last LF: nothing
        self._emit_lines(parts, b"\r" in block, len(block), out)
        return out

    def _emit_long(self, parts: list[bytes], out: list[bytes]) -> None:
        mx = self.max_message
        for p in parts:
            if len(p) > mx:
                out.append(TruncatedFrame(p[:mx]))
                self.truncated += 1
            elif p:
                out.append(p)

    def _too_long(self, buf: bytearray) -> bool:
        # A partial line may hold max_message bytes plus the CR of a CR LF
        # still to come: that line is not too long, whatever the split.
        n = len(buf) - self.max_message
        return n > 1 or (n == 1 and not buf.endswith(b"\r"))

    def _emit_cut(self, buf: bytearray, out: list[bytes]) -> None:
        out.append(TruncatedFrame(buf[:self.max_message]))
        self.truncated += 1
        buf.clear()

    # -- octet counting (RFC 6587 3.4.1) -------------------------------------

    def _feed_octet(self, data: bytes, out: list[bytes],
                    stop_between_frames: bool = False) -> tuple[bytes, int]:
        """Frame ``data``; returns it (joined to a buffered MSG-LEN, if one
        was) and how far it was read: all of it, or (``stop_between_frames``)
        up to where the next frame starts with nothing buffered."""
        buf = self._buf
        mx = self.max_message
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if stop_between_frames and state == _HEADER and not buf:
                return data, pos
            if state == _HEADER:
                if buf:  # a MSG-LEN split across feeds: at most _len_digits bytes
                    data = bytes(buf) + data[pos:]
                    buf.clear()
                    pos, n = 0, len(data)
                # RFC 6587 3.4.1: SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG,
                # MSG-LEN = NONZERO-DIGIT *DIGIT
                sp = data.find(b" ", pos, pos + self._len_digits + 1)
                if sp < 0:
                    if n - pos <= self._len_digits and data[pos] in _NONZERO \
                            and data[pos:].isdigit():
                        buf += data[pos:]  # wait for the rest of MSG-LEN
                        return data, n
                    self._state = _LINE  # not a MSG-LEN: this frame is a line
                    continue
                digits = data[pos:sp]
                if not digits or digits[0] not in _NONZERO or not digits.isdigit() \
                        or int(digits) > self._max_count:
                    self._state = _LINE
                    continue
                count = int(digits)
                pos = sp + 1
                if count <= mx and pos + count <= n:  # the usual case: whole frame here
                    out.append(data[pos:pos + count])
                    pos += count
                    continue
                self._state = _BODY
                self._cut = count > mx
                self._need = mx if self._cut else count
                self._skip = count - self._need
            elif state == _BODY:
                want = self._need - len(buf)
                if n - pos < want:
                    buf += memoryview(data)[pos:]
                    return data, n
                frame = bytes(buf) + data[pos:pos + want]
                buf.clear()
                pos += want
                if self._cut:
                    out.append(TruncatedFrame(frame))
                    self.truncated += 1
                    self._state = _SKIP
                else:
                    out.append(frame)
                    self._state = _HEADER
            elif state == _SKIP:
                k = min(self._skip, n - pos)
                self._skip -= k
                pos += k
                if self._skip == 0:
                    self._state = _HEADER
            else:  # _LINE: one frame up to the next LF or NUL
                i = _terminator(data, pos)
                if i < 0:
                    if not self._discard:
                        buf += memoryview(data)[pos:]
                        if self._too_long(buf):
                            self._emit_cut(buf, out)
                            self._discard = True
                    return data, n
                if self._discard:
                    self._discard = False
                else:
                    line = bytes(buf) + data[pos:i]
                    buf.clear()
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if len(line) > mx:
                        out.append(TruncatedFrame(line[:mx]))
                        self.truncated += 1
                    elif line:
                        out.append(line)
                pos = i + 1
                self._state = _HEADER
        return data, n


def _terminator(data: bytes, pos: int) -> int:
    """Index of the first LF or NUL at or after ``pos``, or -1."""
    i = data.find(b"\n", pos)
    j = data.find(b"\x00", pos, len(data) if i < 0 else i)
    return j if j >= 0 else i
