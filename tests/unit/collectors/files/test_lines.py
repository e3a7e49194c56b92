"""LineFramer and decode_messages: the sans-IO half of the file collector."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.files.lines import MARK_PARTIAL, MARK_TRUNCATED, LineFramer, decode_messages

# Bytes that exercise the edges: newlines, CR, multi-byte UTF-8, invalid bytes.
ALPHABET = [b"a", b"b", b" ", b"\n", b"\n", b"\r", "é".encode(), "日".encode(), "🙂".encode(),
            b"\xff", b"\x80"]
data_st = st.lists(st.sampled_from(ALPHABET), max_size=300).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def run(framer: LineFramer, chunks: list[bytes]) -> tuple[list[bytes], list[dict[int, str]]]:
    messages: list[bytes] = []
    marks: list[dict[int, str]] = []
    for chunk in chunks:
        out = framer.feed(chunk)
        marks.append({len(messages) + i: m for i, m in out.marks.items()})
        messages += out.messages
    return messages, marks


def complete_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")[:-1]
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


# -- plain lines -------------------------------------------------------------------


def test_lines_are_split_on_newline_and_crlf_loses_its_cr() -> None:
    f = LineFramer(max_line=100)
    out = f.feed(b"one\ntwo\r\nthree\rstill three\npart")
    assert out.messages == [b"one", b"two", b"three\rstill three"]
    assert out.marks == {}
    assert out.committed == len(b"one\ntwo\r\nthree\rstill three\n")
    assert f.pending == 4


def test_a_partial_line_waits_for_its_newline() -> None:
    f = LineFramer(max_line=100)
    assert f.feed(b"hel").messages == []
    assert f.feed(b"lo wor").messages == []
    out = f.feed(b"ld\nnext")
    assert out.messages == [b"hello world"]
    assert out.committed == 12


def test_flush_emits_the_partial_line_marked_and_its_rest_is_marked_too() -> None:
    f = LineFramer(max_line=100)
    f.feed(b"a\nhalf a li")
    out = f.flush()
    assert out.messages == [b"half a li"] and out.marks == {0: MARK_PARTIAL}
    assert out.committed == f.read_offset == 11
    out = f.feed(b"ne\nwhole\n")
    assert out.messages == [b"ne", b"whole"] and out.marks == {0: MARK_PARTIAL}
    assert f.flush().messages == []


def test_a_long_line_is_cut_into_marked_pieces() -> None:
    f = LineFramer(max_line=4)
    out = f.feed(b"abcdefghij\nok\n")
    assert out.messages == [b"abcd", b"efgh", b"ij", b"ok"]
    assert out.marks == {0: MARK_TRUNCATED, 1: MARK_TRUNCATED, 2: MARK_TRUNCATED}


def test_an_unterminated_long_line_is_cut_before_its_newline_comes() -> None:
    f = LineFramer(max_line=4)
    out = f.feed(b"abcdefghij")
    assert out.messages == [b"abcd", b"efgh"]
    assert f.pending == 2  # memory stays bounded by max_line
    out = f.feed(b"k\n")
    assert out.messages == [b"ijk"] and out.marks == {0: MARK_TRUNCATED}


def test_cuts_do_not_split_a_utf8_character() -> None:
    line = "aé日🙂b".encode()  # 1 + 2 + 3 + 4 + 1 bytes
    out = LineFramer(max_line=4).feed(line + b"\n")
    assert [m.decode() for m in out.messages] == ["aé", "日", "🙂", "b"]
    raw = LineFramer(max_line=4, utf8=False).feed(line + b"\n").messages
    assert [len(m) for m in raw] == [4, 4, 3]


@settings(max_examples=300)
@given(data=data_st, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_how_the_bytes_are_chunked_never_changes_the_output(data: bytes, cuts: list[int]) -> None:
    whole, whole_marks = run(LineFramer(max_line=5), [data])
    parts, part_marks = run(LineFramer(max_line=5), chunked(data, cuts))
    assert parts == whole
    assert {k: v for m in part_marks for k, v in m.items()} == whole_marks[0]


@settings(max_examples=300)
@given(data=data_st, max_line=st.integers(1, 12))
def test_pieces_put_back_together_give_every_complete_line(data: bytes, max_line: int) -> None:
    f = LineFramer(max_line=max_line)
    out = f.feed(data)
    assert all(len(m) <= max_line for m in out.messages)
    assert out.committed == len(data) - f.pending
    complete = complete_lines(data)
    unmarked = [m for i, m in enumerate(out.messages) if i not in out.marks]
    assert unmarked == [ln for ln in complete if len(ln) <= max_line]
    assert set(out.marks.values()) <= {MARK_TRUNCATED}
    # nothing lost: with the flushed tail, the bytes are all there
    tail = f.flush().messages
    assert b"".join(out.messages + tail) == b"".join(complete) + data.split(b"\n")[-1]


@settings(max_examples=200)
@given(line=st.text(min_size=1, max_size=60).filter(lambda s: "\n" not in s and "\r" not in s),
       max_line=st.integers(4, 16))
def test_every_piece_of_a_valid_utf8_line_decodes(line: str, max_line: int) -> None:
    out = LineFramer(max_line=max_line).feed(line.encode() + b"\n")
    assert "".join(m.decode() for m in out.messages) == line


@settings(max_examples=300)
@given(data=data_st, cuts=st.lists(st.integers(0, 400), min_size=1, max_size=6),
       crash_after=st.integers(0, 6), multiline=st.booleans())
def test_a_framer_restarted_at_the_committed_offset_emits_exactly_the_rest(
        data: bytes, cuts: list[int], crash_after: int, multiline: bool) -> None:
    """The checkpoint property: what was emitted before the crash, plus what a
    new framer emits from the committed offset, is every message once."""
    pattern = re.compile(rb"a") if multiline else None
    max_line = 1000 if multiline else 6  # see the module doc: cut lines + multiline
    chunks = chunked(data, cuts)
    first = LineFramer(max_line=max_line, multiline_start=pattern)
    emitted: list[bytes] = []
    last = 0
    for chunk in chunks[:crash_after]:
        out = first.feed(chunk)
        emitted += out.messages
        assert last <= out.committed <= first.read_offset
        last = out.committed
    resumed = LineFramer(max_line=max_line, multiline_start=pattern, offset=last)
    rest = resumed.feed(data[last:]).messages + resumed.flush().messages
    reference = LineFramer(max_line=max_line, multiline_start=pattern)
    everything = reference.feed(data).messages + reference.flush().messages
    assert emitted + rest == everything


# -- multiline -----------------------------------------------------------------------

START = re.compile(rb"\d{4}-")


def test_continuation_lines_join_the_record_that_started_them() -> None:
    f = LineFramer(max_line=1000, multiline_start=START)
    out = f.feed(b"2024-01 error\n  at foo()\n  at bar()\n2024-02 next\n")
    assert out.messages == [b"2024-01 error\n  at foo()\n  at bar()"]
    # the open record is not committed: a restart re-reads it
    assert out.committed == len(b"2024-01 error\n  at foo()\n  at bar()\n")
    out = f.flush()
    assert out.messages == [b"2024-02 next"]
    assert out.committed == f.read_offset


def test_lines_before_the_first_start_line_form_a_record_of_their_own() -> None:
    f = LineFramer(max_line=1000, multiline_start=START)
    out = f.feed(b"orphan\n  cont\n2024-01 a\n")
    assert out.messages == [b"orphan\n  cont"]


def test_a_joined_record_never_exceeds_max_line() -> None:
    f = LineFramer(max_line=12, multiline_start=START)
    out = f.feed(b"2024-01 a\n b\n cccccc\n dd\n2024-02\n")
    assert out.messages == [b"2024-01 a\n b", b" cccccc\n dd"]
    assert out.marks == {0: MARK_TRUNCATED, 1: MARK_TRUNCATED}
    assert all(len(m) <= 12 for m in out.messages)


@settings(max_examples=300)
@given(lines=st.lists(st.sampled_from([b"S one", b"S", b" c", b"", b"cont x", b"S\xff"]), max_size=30))
def test_multiline_records_rejoin_to_the_original_lines(lines: list[bytes]) -> None:
    pattern = re.compile(rb"S")
    f = LineFramer(max_line=10_000, multiline_start=pattern)
    data = b"".join(ln + b"\n" for ln in lines)
    records = f.feed(data).messages + f.flush().messages
    assert b"\n".join(records) == b"\n".join(lines)
    for i, record in enumerate(records):
        first, *rest = record.split(b"\n")
        assert i == 0 or pattern.match(first), "only the first record may start without a start line"
        assert not any(pattern.match(r) for r in rest), "a start line always opens a record"


# -- decoding --------------------------------------------------------------------------


def test_decode_keeps_undecodable_messages_as_bytes() -> None:
    assert decode_messages([b"ok", b"bad \xff", "日本".encode()]) == ["ok", b"bad \xff", "日本"]
    assert decode_messages([b"caf\xe9"], "latin-1") == ["café"]
    assert decode_messages([b"two\nlines", b"x"]) == ["two\nlines", "x"]
    assert decode_messages([]) == []


@given(st.lists(st.binary(max_size=20), max_size=20))
def test_decode_returns_one_item_per_message_and_loses_no_byte(messages: list[bytes]) -> None:
    out = decode_messages(messages)
    assert len(out) == len(messages)
    assert [m.encode() if isinstance(m, str) else m for m in out] == messages
