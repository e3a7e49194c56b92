"""Pipes read on the loop: gulps (many lines per wake-up), the one-line shortcut,
and the fields pool a batch carries. Real pipes, a real event loop, a sink that
keeps what it is given."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace
from typing import Any

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process import pipes as P
from hostlog.collectors.process.pipes import Pipes
from hostlog.config import App
from hostlog.record import Columns


class KeepSink:
    def __init__(self) -> None:
        self.batches: list[Columns] = []

    def has_room(self) -> bool:
        return True

    async def wait_room(self) -> None:
        return None

    def submit(self, batch: Any, on_durable: Any = None) -> None:
        self.batches.append(batch)

    async def write(self, batch: Any, on_durable: Any = None) -> None:
        self.submit(batch)

    def write_nowait(self, batch: Any, on_durable: Any = None) -> bool:
        self.submit(batch)
        return True


def open_pipes(pipes: Pipes, n: int) -> list[int]:
    """``n`` apps' stdout pipes read by ``pipes``; returns the write ends."""
    ends = []
    for i in range(n):
        r, w = os.pipe()
        os.set_blocking(r, False)
        child: Any = SimpleNamespace(pid=1000 + i)
        pipes.open(App(name=f"app{i}", command=["true"]), child, r, "stdout", 6)
        ends.append(w)
    return ends


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_gulp_goes_on_while_it_finds_many_lines_even_from_few_pipes():
    """Three apps, each writing many lines between two gulps: that is far more
    wake-ups saved than GULP_RATE * GULP_DELAY, though only three pipes are
    read; reading stays in gulps (the loop does not watch the pipes)."""
    async def main() -> None:
        sink = KeepSink()
        pipes = Pipes(CollectorContext("t", sink, checkpoints=None), partial_timeout=1.0)
        ends = open_pipes(pipes, 3)
        per_pipe = int(P.GULP_RATE * P.GULP_DELAY)  # 3x a gulp's worth in all
        try:
            for w in ends:
                for i in range(per_pipe):
                    os.write(w, f"line {i}\n".encode())
            pipes._unwatch()  # as _wake does when it starts a gulp
            pipes._gulp_done()
            assert pipes._gulp is not None and not pipes._watching
            assert sum(map(len, sink.batches)) == 3 * per_pipe
            # a gulp that finds little: back to reading at once
            os.write(ends[0], b"one\n")
            pipes._gulp.cancel()
            pipes._gulp_done()
            assert pipes._gulp is None and pipes._watching
        finally:
            for w in ends:
                os.close(w)
            for s in list(pipes.streams.values()):
                pipes._close(s)
            pipes.close()
    run(main())


def test_one_line_reads_and_marked_lines_carry_the_fields_their_rows_use():
    async def main() -> None:
        sink = KeepSink()
        pipes = Pipes(CollectorContext("t", sink, checkpoints=None), partial_timeout=1.0)
        ends = open_pipes(pipes, 2)
        try:
            os.write(ends[0], b"plain\n")
            os.write(ends[1], b"<3>warn\nno newline")
            pipes._read_ready()
            pipes._flush_partial(next(s for s in pipes.streams.values() if s.app == "app1"))
            pipes.handoff()
            (batch,) = sink.batches
            rows = sorted(zip(batch.app, batch.msg, batch.severity, batch.fields))
            assert [(a, m, s) for a, m, s, _ in rows] == [
                ("app0", "plain", 6), ("app1", "no newline", 6), ("app1", "warn", 3)]
            assert [f for *_, f in rows] == [{"stream": "stdout"},
                                             {"stream": "stdout", "line_break": "timeout"},
                                             {"stream": "stdout"}]
            pool = batch.fields_pool
            assert pool is not None
            # every row's dict is in the pool, each once
            assert {id(f) for f in batch.fields} <= {id(f) for f in pool}
            assert len({id(f) for f in pool}) == len(pool) == 3
            assert batch.text_bytes() >= sum(map(len, batch.msg))
        finally:
            for w in ends:
                os.close(w)
            for s in list(pipes.streams.values()):
                pipes._close(s)
            pipes.close()
    run(main())
