"""The sender gives up a connection that went quiet: chunks in flight and no
ack for ``ack_timeout``, full window or not, and a peer that takes no data
(``drain`` that never returns). Before, a link with fewer chunks out than its
window and nothing new to send waited for its acks for ever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hostlog.config.endpoints import parse_endpoint
from hostlog.forward.protocol import Chunk
from hostlog.forward.sender import Cursor, Link


class Source:
    """Records 1..upto, one chunk of one record per seq."""

    def read(self, after: int, upto: int, *, max_frames: int, max_bytes: int) -> tuple[list[tuple[Chunk, int]], int]:
        seqs = list(range(after + 1, upto + 1))[:max_frames]
        return [(Chunk("origin-1", s, 1, 1, b"x"), 0) for s in seqs], (seqs[-1] if seqs else after)

    def oldest_after(self, seq: int) -> int | None:
        return None


class Quiet:
    """A half-open peer: the welcome came, then nothing (no ack, no EOF).
    ``stall_drain``: it does not read either (the send buffer stays full)."""

    def __init__(self, stall_drain: bool = False, ack_first: int = 0) -> None:
        self.opened = 0
        self.stall_drain = stall_drain
        self.ack_first = ack_first
        self.sent: list[int] = []

    async def open(self) -> int:
        self.opened += 1
        return 0

    async def send(self, chunk: Chunk) -> None:
        self.sent.append(chunk.last)

    async def drain(self) -> None:
        if self.stall_drain:
            await asyncio.sleep(3600)

    async def acks(self) -> AsyncIterator[int]:
        if self.ack_first:
            await asyncio.sleep(0.01)
            yield self.ack_first
        await asyncio.sleep(3600)
        yield 0  # (never reached)

    async def close(self) -> None:
        return None


def run_link(tmp_path: Path, output: Quiet, *, durable: int, window: int, seconds: float) -> Link:
    endpoint = parse_endpoint("tcp://127.0.0.1:9", ("tcp", "tls"))
    errors: list[BaseException] = []
    link = Link("t", [endpoint], Cursor(tmp_path / "c.json"), Source(),  # type: ignore[arg-type]
                lambda ep: output, durable=lambda: durable, window=window,  # type: ignore[arg-type,return-value]
                report=lambda where, exc: errors.append(exc), ack_timeout=0.3)

    async def main() -> None:
        await link.start()
        await asyncio.sleep(seconds)
        await link.stop()
    asyncio.run(asyncio.wait_for(main(), seconds + 10))
    assert not errors, errors  # a timeout is a network failure, not a bug
    return link


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hostlog.forward" and r.levelno == logging.WARNING]


def test_few_chunks_in_flight_and_no_ack_is_a_dead_link(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = Quiet()
    link = run_link(tmp_path, out, durable=3, window=16, seconds=1.5)
    assert out.sent[:3] == [1, 2, 3]
    assert out.opened >= 2 and link.stats.errors >= 1  # given up, and made again
    assert any("no ack for 0.3 s with 3 chunks in flight" in w for w in warnings(caplog)), warnings(caplog)
    assert link.cursor.acked == 0


def test_ack_clock_runs_from_the_last_ack(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = Quiet(ack_first=2)
    link = run_link(tmp_path, out, durable=5, window=16, seconds=1.5)
    assert link.cursor.acked == 2  # the ack counted; what came after timed out
    assert any("with 3 chunks in flight" in w for w in warnings(caplog)), warnings(caplog)


def test_a_peer_that_takes_no_data_is_a_dead_link(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = Quiet(stall_drain=True)
    link = run_link(tmp_path, out, durable=3, window=16, seconds=1.5)
    assert link.stats.errors >= 1
    assert any("took no data for 0.3 s" in w for w in warnings(caplog)), warnings(caplog)


def test_ack_timeout_is_a_config_key() -> None:
    from hostlog.config.errors import ConfigError
    from hostlog.config.loader import parse_config

    text = '[[forward]]\nname = "c"\ntargets = ["tcp://127.0.0.1:9"]\n'
    assert parse_config(text).forwards[0].ack_timeout == 60.0
    assert parse_config(text + 'ack_timeout = "5s"\n').forwards[0].ack_timeout == 5.0
    with pytest.raises(ConfigError, match="ack_timeout"):
        parse_config(text + 'ack_timeout = "0s"\n')
