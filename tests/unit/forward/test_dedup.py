"""A receiver's dedup: whatever a sender resends, each (origin, seq) is stored once, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.forward.dedup import Dedup
from hostlog.record import Columns, Record


def batch(origin_seqs: list[tuple[str, int]]) -> Columns:
    return Columns.of([Record(ts=1, msg=f"{o}:{s}", origin=o, seq=s) for o, s in origin_seqs])


def stored(dedup: Dedup, b: Columns) -> list[tuple[str, int]]:
    kept, dropped = dedup.take(b)
    assert len(kept) + dropped == len(b)
    assert [r.msg for r in kept] == [f"{o}:{s}" for o, s in zip(kept.origin, kept.seq)]
    return list(zip(kept.origin, kept.seq))


def test_a_resent_chunk_is_dropped_and_an_overlapping_one_cut() -> None:
    d = Dedup()
    assert stored(d, batch([("a", s) for s in range(1, 11)])) == [("a", s) for s in range(1, 11)]
    assert stored(d, batch([("a", s) for s in range(1, 11)])) == []
    assert stored(d, batch([("a", s) for s in range(6, 16)])) == [("a", s) for s in range(11, 16)]
    assert d.held("a") == 15 and d.held("b") == 0


def test_origins_are_apart() -> None:
    d = Dedup({"a": 100})
    assert stored(d, batch([("a", 100), ("b", 1), ("a", 101), ("b", 1), ("b", 2)])) == \
        [("b", 1), ("a", 101), ("b", 2)]
    assert d.marks == {"a": 101, "b": 2}


@st.composite
def resends(draw) -> tuple[dict[str, int], list[list[tuple[str, int]]]]:
    """Streams of a few origins cut into chunks; a sender that reconnects
    resends from some earlier point; a relay mixes origins in one chunk."""
    lengths = draw(st.dictionaries(st.sampled_from("abc"), st.integers(1, 60), min_size=1))
    chunks: list[list[tuple[str, int]]] = []
    pos = dict.fromkeys(lengths, 0)
    while any(pos[o] < n for o, n in lengths.items()):
        o = draw(st.sampled_from(sorted(o for o in lengths if pos[o] < lengths[o])))
        if draw(st.integers(0, 4)) == 0 and pos[o]:
            pos[o] = draw(st.integers(0, pos[o]))  # a resend from an earlier point
        k = draw(st.integers(1, 10))
        rows = [(o, s) for s in range(pos[o] + 1, min(lengths[o], pos[o] + k) + 1)]
        if draw(st.booleans()) and chunks:  # a relay's chunk: another origin's rows mixed in
            other = draw(st.sampled_from(sorted(lengths)))
            if other != o and pos[other] < lengths[other]:
                rows.insert(draw(st.integers(0, len(rows))), (other, pos[other] + 1))
                pos[other] += 1
        pos[o] = min(lengths[o], pos[o] + k)
        chunks.append(rows)
    return lengths, chunks


@settings(max_examples=300, deadline=None)
@given(resends())
def test_every_record_is_stored_exactly_once_in_order(case) -> None:
    lengths, chunks = case
    d = Dedup()
    out: list[tuple[str, int]] = []
    for rows in chunks:
        out += stored(d, batch(rows))
    for origin, n in lengths.items():
        assert [s for o, s in out if o == origin] == list(range(1, n + 1))
    assert len(out) == len(set(out))
