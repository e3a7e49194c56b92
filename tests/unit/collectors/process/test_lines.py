"""Tests of hostlog.collectors.process.lines: tables for the rules, properties for the invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.process.lines import (
    EOF,
    LINE_MAX,
    TIMEOUT,
    Line,
    LineCapture,
    _cut,
    _text,
    decode_lines,
    parse_priority,
)


def run(chunks: list[bytes], *, max_line: int = 64 * 1024, default: int = 6,
        parse: bool = True) -> list[tuple]:
    capture = LineCapture(max_line=max_line, default_severity=default, parse_priority=parse)
    out = []
    for chunk in chunks:
        out += capture.feed(chunk)
    return out + capture.flush(EOF)


def rebuild(lines: list[tuple]) -> bytes:
    """The stream back from its lines: LF after each line that had one."""
    out = []
    for msg, _, brk in lines:
        out.append(msg.encode() if isinstance(msg, str) else msg)
        if brk is None:
            out.append(b"\n")
    return b"".join(out)


# -- the sd-daemon prefix ----------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    (b"<0>emerg", (0, b"emerg")),
    (b"<3>an error", (3, b"an error")),
    (b"<7>", (7, b"")),
    (b"<03>padded", (3, b"padded")),
    (b"<004>padded twice", (4, b"padded twice")),
    (b"<8>not a severity", None),  # facility bits: journald refuses them on stdout too
    (b"<13>facility", None),
    (b"<0003>too long", None),
    (b"<>empty", None),
    (b"<3 no close", None),
    (b"<a>letter", None),
    (b" <3>not at the start", None),
    (b"", None),
    (b"<", None),
])
def test_parse_priority_table(line, expected):
    assert parse_priority(line) == expected


def test_prefix_sets_severity_and_is_removed_and_other_lines_take_the_stream_default():
    assert run([b"<4>warn\nplain\n<2>crit\n"], default=3) == [
        ("warn", 4, None), ("plain", 3, None), ("crit", 2, None)]


def test_prefix_is_kept_when_parsing_is_off():
    assert run([b"<4>warn\n"], parse=False) == [("<4>warn", 6, None)]


def test_a_prefix_split_across_reads_is_still_found():
    assert run([b"<", b"5", b">notice\n"]) == [("notice", 5, None)]


# -- partial lines -----------------------------------------------------------------

def test_partial_line_waits_for_its_newline():
    capture = LineCapture()
    assert capture.feed(b"hel") == []
    assert capture.pending == 3
    assert capture.feed(b"lo\nwor") == [("hello", 6, None)]
    assert capture.feed(b"ld\n") == [("world", 6, None)]
    assert capture.pending == 0


def test_stream_without_trailing_newline_is_flushed_at_eof_and_marked():
    assert run([b"first\nlast words"]) == [("first", 6, None), ("last words", 6, EOF)]


def test_timeout_flush_marks_the_piece_and_the_rest_continues_the_line():
    capture = LineCapture()
    assert capture.feed(b"<3>Password: ") == []
    assert capture.flush(TIMEOUT) == [("Password: ", 3, TIMEOUT)]
    assert capture.flush(TIMEOUT) == []  # nothing held: nothing to flush
    # the rest of that line keeps its severity and is not read for a prefix
    assert capture.feed(b"<5>typed\nnext\n") == [("<5>typed", 3, None), ("next", 6, None)]


def test_eof_flush_resets_so_a_new_stream_starts_clean():
    capture = LineCapture()
    capture.feed(b"<2>cut")
    assert capture.flush(EOF) == [("cut", 2, EOF)]
    assert capture.feed(b"fresh\n") == [("fresh", 6, None)]


def test_empty_lines_and_carriage_returns_are_kept():
    assert run([b"a\n\n\r\nb\r\n"]) == [("a", 6, None), ("", 6, None), ("\r", 6, None), ("b\r", 6, None)]


# -- long lines ------------------------------------------------------------------------

def test_long_line_is_split_at_max_line_and_every_piece_but_the_last_is_marked():
    assert run([b"abcdefghij\n"], max_line=4) == [
        ("abcd", 6, LINE_MAX), ("efgh", 6, LINE_MAX), ("ij", 6, None)]


def test_a_line_of_exactly_max_line_is_not_split():
    assert run([b"abcd\n"], max_line=4) == [("abcd", 6, None)]


def test_long_partial_line_is_emitted_as_it_grows_so_memory_stays_bounded():
    capture = LineCapture(max_line=4)
    assert capture.feed(b"<3>abcdefghij") == [("abcd", 3, LINE_MAX), ("efgh", 3, LINE_MAX)]
    assert capture.pending <= 4
    assert capture.feed(b"k\n") == [("ijk", 3, None)]


def test_split_moves_back_to_a_utf8_character_boundary():
    # "é" is 2 bytes: a cut at 5 bytes would fall inside the third one
    assert run(["ééééé\n".encode()], max_line=5) == [("éé", 6, LINE_MAX), ("éé", 6, LINE_MAX), ("é", 6, None)]


def test_a_one_mebibyte_line_comes_out_in_max_line_pieces():
    line = b"x" * (1 << 20)
    lines = run([line[i:i + 65536] for i in range(0, len(line), 65536)] + [b"\n"], max_line=64 * 1024)
    assert len(lines) == 16
    assert [brk for _, _, brk in lines] == [LINE_MAX] * 15 + [None]
    assert "".join(m for m, _, _ in lines) == "x" * (1 << 20)


# -- binary ------------------------------------------------------------------------------

def test_bytes_that_are_not_utf8_stay_bytes():
    assert run([b"ok\n\xff\xfe\x00bin\n"]) == [("ok", 6, None), (b"\xff\xfe\x00bin", 6, None)]


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineCapture(max_line=0)


# -- properties --------------------------------------------------------------------------

streams = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\n\n", "é".encode(), "€".encode(),
                                    b"\xff", b"\x00", b"<3>", b"<", b"\r\n", b"x" * 20]),
                   max_size=40).map(b"".join)


def split_points(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(data)), max_size=8).map(
        lambda cuts: [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)])])


@settings(max_examples=400)
@given(data=st.data(), stream=streams, max_line=st.integers(1, 12))
def test_lines_rebuild_the_stream_exactly(data, stream, max_line):
    chunks = data.draw(split_points(stream))
    assert rebuild(run(chunks, max_line=max_line, parse=False)) == stream


@settings(max_examples=400)
@given(data=st.data(), stream=streams, max_line=st.integers(4, 12))
def test_how_the_stream_is_split_into_reads_does_not_change_the_lines(data, stream, max_line):
    chunks = data.draw(split_points(stream))
    assert run(chunks, max_line=max_line) == run([stream], max_line=max_line)


@settings(max_examples=400)
@given(stream=streams, max_line=st.integers(1, 12))
def test_no_piece_is_longer_than_max_line(stream, max_line):
    for msg, _, _ in run([stream], max_line=max_line):
        assert len(msg.encode() if isinstance(msg, str) else msg) <= max_line


@settings(max_examples=300)
@given(text=st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=60),
       max_line=st.integers(4, 16))
def test_text_lines_stay_text_when_split(text, max_line):
    lines = run([text.encode() + b"\n"], max_line=max_line, parse=False)
    assert all(isinstance(m, str) for m, _, _ in lines)
    assert "".join(m for m, _, _ in lines) == text


@settings(max_examples=300)
@given(severity=st.integers(0, 7), body=st.binary(max_size=30).filter(lambda b: b"\n" not in b))
def test_any_sd_daemon_prefix_gives_its_severity_and_the_body(severity, body):
    [(msg, sev, brk)] = run([b"<%d>" % severity + body + b"\n"], default=6)
    assert sev == severity and brk is None
    assert (msg.encode() if isinstance(msg, str) else msg) == body


@settings(max_examples=300)
@given(data=st.data(), stream=streams)
def test_timeout_flushes_lose_nothing(data, stream):
    """Flushing at any point (a quiet pipe) only adds break marks, never drops bytes."""
    chunks = data.draw(split_points(stream))
    capture = LineCapture(max_line=8, parse_priority=False)
    out = []
    for chunk in chunks:
        out += capture.feed(chunk) + capture.flush(TIMEOUT)
    out += capture.flush(EOF)
    assert rebuild(out) == stream


# -- the fast path against the per-line reference ------------------------------------------

class ReferenceCapture:
    """The capture as it was first written: a Python loop per line. The fast
    one must give exactly what this gives."""

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
        out: list[Line] = []
        if self._buf:
            data = self._buf + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if lines:
            if not self._line_start:
                # The first line continues one already partly emitted.
                self._emit(lines[0], self._severity, None, out)
                self._line_start = True
                lines = lines[1:]
            default, limit, parse = self.default_severity, self.max_line, self.parse_priority
            append = out.append
            for line in lines:
                # The common case inline: this loop is the per-line cost of capture.
                severity = default
                if parse and line[:1] == b"<":
                    found = parse_priority(line)
                    if found is not None:
                        severity, line = found
                if len(line) > limit:
                    self._emit(line, severity, None, out)
                    continue
                try:
                    append((line.decode("utf-8"), severity, None))
                except UnicodeDecodeError:
                    append((line, severity, None))
        if len(rest) > self.max_line:
            rest = self._emit_pieces(self._begin(rest), out)
        self._buf = rest
        return out

    def flush(self, reason: str = EOF) -> list[Line]:
        """Hand out the partial line, marked ``reason`` (TIMEOUT or EOF).

        After TIMEOUT the bytes that follow continue the same line; after EOF
        the capture starts afresh (a new stream, e.g. after a restart).
        """
        out: list[Line] = []
        if self._buf:
            line = self._begin(self._buf)
            self._buf = b""
            self._emit(line, self._severity, reason, out)
        if reason != TIMEOUT:
            self._line_start = True
            self._severity = self.default_severity
        return out

    # -- internals --------------------------------------------------------------
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

    def _emit_pieces(self, line: bytes, out: list[Line]) -> bytes:
        """Emit full pieces while more than max_line bytes remain; return the rest."""
        start, limit, severity = 0, self.max_line, self._severity
        while len(line) - start > limit:
            end = _cut(line, start, limit)
            out.append((_text(line[start:end]), severity, LINE_MAX))
            start = end
        return line[start:]

    def _emit(self, line: bytes, severity: int, last: str | None, out: list[Line]) -> None:
        """Emit a line whose prefix is already handled: pieces, then the end."""
        self._severity = severity
        rest = self._emit_pieces(line, out)
        out.append((_text(rest), severity, last))


def run_reference(chunks: list[bytes], *, max_line: int, parse: bool = True,
                  flush_after: bool = False) -> list[tuple]:
    capture = ReferenceCapture(max_line=max_line, parse_priority=parse)
    out = []
    for chunk in chunks:
        out += capture.feed(chunk) + (capture.flush(TIMEOUT) if flush_after else [])
    return out + capture.flush(EOF)


def run_fast(chunks: list[bytes], *, max_line: int, parse: bool = True,
             flush_after: bool = False) -> list[tuple]:
    capture = LineCapture(max_line=max_line, parse_priority=parse)
    out = []
    for chunk in chunks:
        out += capture.take(chunk).lines() + (capture.take_flush(TIMEOUT).lines() if flush_after else [])
    return out + capture.take_flush(EOF).lines()


big_streams = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\n\n", "é".encode(), "€".encode(),
                                        b"\xff", b"<3>", b"\n<5>", b"<", b"<09>", b"\r\n",
                                        b"x" * 30, b"plain line\n" * 5]),
                       max_size=60).map(b"".join)


@settings(max_examples=500)
@given(data=st.data(), stream=big_streams, max_line=st.integers(1, 40), parse=st.booleans(),
       flush_after=st.booleans())
def test_the_columnar_capture_gives_what_the_per_line_reference_gives(data, stream, max_line, parse,
                                                                       flush_after):
    chunks = data.draw(split_points(stream))
    assert run_fast(chunks, max_line=max_line, parse=parse, flush_after=flush_after) == \
        run_reference(chunks, max_line=max_line, parse=parse, flush_after=flush_after)


def test_take_gives_columns_with_sparse_breaks():
    capture = LineCapture(max_line=4)
    got = capture.take(b"<3>abcdef\nok\n")
    assert got.msgs == ["abcd", "ef", "ok"] and got.severities == [3, 3, 6]
    assert got.breaks == {0: LINE_MAX}


@settings(max_examples=200)
@given(lines=st.lists(st.binary(max_size=12).filter(lambda b: b"\n" not in b), max_size=20))
def test_decode_lines_keeps_every_line_as_text_or_bytes(lines):
    got = decode_lines(lines)
    assert len(got) == len(lines)
    assert [g.encode() if isinstance(g, str) else g for g in got] == lines


one_line_reads = st.one_of(
    big_streams, st.text(max_size=45).map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass") + b"\n"))


@settings(max_examples=500)
@given(data=st.data(), stream=big_streams, read=one_line_reads, max_line=st.integers(1, 40),
       parse=st.booleans(), flush_timeout=st.booleans())
def test_single_gives_what_take_gives_or_takes_nothing(data, stream, read, max_line, parse,
                                                       flush_timeout):
    """The one-line shortcut of a quiet app's read: whenever ``single`` answers, it
    is ``take``'s one line with the default severity, and the capture is left as
    ``take`` leaves it (the lines after come out the same); when it does not
    answer, nothing was taken."""
    # two captures in the same state: the same stream, cut the same way
    cuts = data.draw(split_points(stream)) if stream else []
    a = LineCapture(max_line=max_line, parse_priority=parse, default_severity=5)
    b = LineCapture(max_line=max_line, parse_priority=parse, default_severity=5)
    for capture in (a, b):
        for chunk in cuts:
            capture.take(chunk)
        if flush_timeout:
            capture.take_flush(TIMEOUT)
    got = a.single(read)
    expected = b.take(read)
    if got is None:
        assert a.take(read).lines() == expected.lines()  # single took nothing
    else:
        assert expected.msgs == [got] and expected.severities == [5] and not expected.breaks
    tail = b"after\n<3>x\n"
    assert a.take(tail).lines() == b.take(tail).lines()
    assert a.take_flush(EOF).lines() == b.take_flush(EOF).lines()


def test_single_answers_for_a_plain_line_only():
    capture = LineCapture(max_line=8)
    assert capture.single(b"hello\n") == "hello"
    assert capture.single(b"\n") == ""
    assert capture.single(b"two\nlines\n") is None
    assert capture.single(b"<3>warn\n") is None  # a prefix: take() handles it
    assert capture.single(b"\xffbin\n") is None  # not UTF-8
    assert capture.single(b"123456789\n") is None  # over max_line
    assert capture.single(b"part") is None
    capture.take(b"part")  # a partial line is held: the next read continues it
    assert capture.single(b"ial\n") is None
