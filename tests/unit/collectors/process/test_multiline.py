"""``multiline_start`` for supervised apps: captured lines joined into records
by the file collector's rule, whatever the pieces the pipe gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.process.lines import LINE_MAX, TIMEOUT, LineCapture, Multiline, concat

TRACE = (b"2026-01-01 started\n"
         b"Traceback (most recent call last):\n"
         b'  File "app.py", line 3, in <module>\n'
         b"    main()\n"
         b"ValueError: boom\n"
         b"<4>2026-01-01 warning after it\n"
         b"  with a detail\n")
START = r"^(\d{4}-|Traceback|\w+Error)"


Lines = list[tuple[str | bytes, int, str | None]]


def joined(chunks: list[bytes], pattern: str = START, max_line: int = 1024) -> Lines:
    capture, multi = LineCapture(max_line=max_line, default_severity=3), Multiline(pattern, max_line=max_line)
    out = []
    for data in chunks:
        out += multi.take(capture.take(data)).lines()
    return out + concat(multi.take(capture.take_flush()), multi.flush()).lines()


def test_a_stack_trace_is_one_record_with_its_first_lines_priority() -> None:
    assert joined([TRACE]) == [
        ("2026-01-01 started", 3, None),
        ('Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n    main()', 3, None),
        ("ValueError: boom", 3, None),
        ("2026-01-01 warning after it\n  with a detail", 4, None),
    ]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, len(TRACE)), max_size=8))
def test_how_the_pipe_cuts_the_bytes_does_not_matter(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [TRACE[a:b] for a, b in zip([0, *points], [*points, len(TRACE)]) if a < b]
    assert joined(pieces) == joined([TRACE])


def test_the_open_record_waits_for_its_end_and_a_flush_ends_it() -> None:
    capture, multi = LineCapture(max_line=100), Multiline(r"^\S", max_line=100)
    assert multi.take(capture.take(b"first\n  more\n")).lines() == []
    assert multi.pending
    assert multi.flush().lines() == [("first\n  more", 6, None)]
    assert not multi.pending


def test_a_record_stops_at_max_line_marked() -> None:
    out = joined([b"a\n 123456789\n 123456789\n 12\nb\n"], r"^\S", max_line=20)
    assert out == [("a\n 123456789", 3, LINE_MAX), (" 123456789\n 12", 3, LINE_MAX), ("b", 3, None)]


def test_a_partial_line_flushed_on_quiet_keeps_its_mark() -> None:
    capture, multi = LineCapture(max_line=100), Multiline(r"^\S", max_line=100)
    out = multi.take(capture.take(b"start\n  tail without newline"))
    out = concat(out, concat(multi.take(capture.take_flush(TIMEOUT)), multi.flush()))
    assert out.lines() == [("start\n  tail without newline", 6, TIMEOUT)]
