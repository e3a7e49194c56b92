"""The query engine: what `hostlog query` does between its arguments and its
output, for every caller (the CLI now; the HTTP API, live tail and
`hostlog patterns` next).

* :func:`effective` turns journalctl's option rules into the plain terms the
  engine runs on (``-f`` shows the last 10 first; ``-g`` with ``-n`` implies
  ``-r``);
* :func:`write` selects and writes the records, in one process or, for a long
  scan without ``-n``, in parallel worker processes;
* :func:`follow` is an async iterator of the records that arrive after a
  seq: callers drive it on their event loop (the CLI with ``asyncio.run``), so
  nothing blocks a loop that serves others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from hostlog.query.filters import Query
from hostlog.query.run import FOLLOW_POLL_S, Printer, iter_selected, last_seq, roomy_heap, select, write_records
from hostlog.record import Record
from hostlog.spool.reader import SpoolReader

__all__ = ["effective", "follow", "write"]


def effective(*, lines: int | None, reverse: bool, follow: bool, grep: bool) -> tuple[int | None, bool]:
    """(lines, reverse) as the engine runs them, from what the user gave."""
    if follow and lines is None:
        lines = 10  # journalctl -f shows the last 10 first
    if grep and lines is not None and not follow:
        # journalctl(1): "When used with --grep=, --reverse is implied" (-n
        # counts matches from the end, and they are printed as found)
        reverse = True
    return lines, reverse


def write(out: BinaryIO, reader: SpoolReader, query: Query, *, lines: int | None, reverse: bool,
          identity: bool, make_printer: Callable[[], Printer], columnar: bool,
          parallel: bool = True) -> tuple[int, int]:
    """Write the selected records to ``out``; returns (the highest seq
    written, the spool's newest seq when the selection was made)."""
    if lines is None and parallel:
        from hostlog.query.parallel import MIN_FRAMES, worker_count
        workers = worker_count()
        if workers > 1:
            # pinned: the workers open the very files listed here, even if a
            # compaction or an archiving replaces or moves one meanwhile
            with reader.pinned():
                frames = [(seg.path, entry) for seg, entry in
                          reader.frames_quick(reverse=reverse, test=query.frame_test,
                                              since_ns=query.since_ns, until_ns=query.until_ns)]
                if len(frames) >= MIN_FRAMES:
                    from hostlog.query.parallel import write_parallel
                    roomy_heap()
                    _, top = write_parallel(out, reader, query, frames, make_printer,
                                            reverse=reverse, identity=identity, workers=workers)
                    return top, last_seq(reader)
    pieces, newest = select(reader, query, lines=lines, reverse=reverse, identity=identity,
                            columnar=columnar)
    return write_records(out, pieces, make_printer()), newest


def _new_records(reader: SpoolReader, query: Query,
                 after_seq: int) -> tuple[int, list[tuple[int, Record]]]:
    """The spool's newest seq, read first, and the selected records after
    ``after_seq``: everything up to that seq has been looked at, so the next
    scan may start there even if the filter took none of it. (Read after the
    scan, a record written in between would be passed over unseen.)"""
    found = list(iter_selected(reader, query, after_seq=after_seq))
    return last_seq(reader), found


async def follow(reader: SpoolReader, query: Query, after_seq: int, *,
                 poll_s: float = FOLLOW_POLL_S) -> AsyncIterator[Record]:
    """The selected records that arrive after ``after_seq``, as they arrive;
    ends when the caller stops iterating (or cancels)."""
    import asyncio  # here: a query that does not follow does not pay for importing it

    while True:
        # a scan of what is new is short (the frames after after_seq)
        newest, found = _new_records(reader, query, after_seq)
        for seq, record in found:
            after_seq = seq
            yield record
        after_seq = max(after_seq, newest)
        await asyncio.sleep(poll_s)
