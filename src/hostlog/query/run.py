"""Running a query over a spool: select, order, print, follow."""

from __future__ import annotations

import time
from collections import deque
from typing import BinaryIO, Callable, Iterator

from hostlog.query.filters import Query
from hostlog.record import Record
from hostlog.spool.reader import SpoolReader

FOLLOW_POLL_S = 0.2


def select(reader: SpoolReader, query: Query, *, lines: int | None = None,
           reverse: bool = False) -> tuple[Iterator[tuple[int, Record]], int]:
    """The (spool seq, record) pairs a query shows, in the order shown, and
    the newest spool seq when it started (``--follow`` goes on after it).

    Records come in spool order, oldest first, or newest first with
    ``reverse``; ``lines`` (-n) keeps the newest N, read from the end so only
    the frames that hold them are decrypted.
    """
    newest_seq = last_seq(reader)
    if lines is None:
        return iter_selected(reader, query, reverse=reverse), newest_seq
    picked: list[tuple[int, Record]] = []
    if lines > 0:
        for pair in iter_selected(reader, query, reverse=True):
            picked.append(pair)
            if len(picked) >= lines:
                break
    if not reverse:
        picked.reverse()
    return iter(picked), newest_seq


def last_seq(reader: SpoolReader) -> int:
    for _, entry in reader.frames(reverse=True):
        return entry.last_seq
    return 0


def iter_selected(reader: SpoolReader, query: Query, *, reverse: bool = False,
                  after_seq: int = 0) -> Iterator[tuple[int, Record]]:
    for seq, r in reader.records(reverse=reverse, test=query.frame_test, after_seq=after_seq):
        if query.record_test(r):
            yield seq, r


def follow(reader: SpoolReader, query: Query, after_seq: int, emit: Callable[[Record], None],
           *, should_stop: Callable[[], bool] = lambda: False,
           poll_s: float = FOLLOW_POLL_S) -> None:
    """Print records as they arrive, from ``after_seq`` on, until ``should_stop``."""
    while not should_stop():
        for seq, r in iter_selected(reader, query, after_seq=after_seq):
            after_seq = seq
            emit(r)
        newest = last_seq(reader)
        after_seq = max(after_seq, newest)
        time.sleep(poll_s)


def write_records(out: BinaryIO, pairs: Iterator[tuple[int, Record]],
                  format_record: Callable[[Record], bytes]) -> int:
    """Write formatted records; returns the highest seq written (0 if none)."""
    buf: deque[bytes] = deque()
    top = 0
    for seq, r in pairs:
        top = max(top, seq)
        buf.append(format_record(r))
        if len(buf) >= 256:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.flush()
    return top
