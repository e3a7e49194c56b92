"""The seam between the sender and what it speaks: one :class:`Output` per
connection, of one kind per ``[[forward]] type``.

The sender (:mod:`hostlog.forward.sender`) owns everything outputs share:
the cursor, the window of chunks in flight, retries with backoff, failover
and replicas, lag and status. An output only opens a connection, sends the
chunks it is given, and reports acknowledgements as cumulative spool seqs:

* ``open()`` connects (and greets); returns the seq the peer says it already
  holds (the sender resumes after it), or None when the peer cannot say.
* ``send(chunk)`` sends one spool frame (:class:`hostlog.forward.protocol.Chunk`:
  its records still LZ4-compressed, as the spool holds them); an output that
  speaks another format decodes it (:func:`decode_chunk`).
* ``acks()`` yields, in order, the seq up to which everything sent is held by
  the peer. It ends when the peer closes the connection; it raises
  :class:`Refused` for a peer that said no, and the protocol's errors.
* ``drain()`` waits until what was sent is on its way (flow control);
  ``close()`` closes whatever the output opened, and never raises.
* optionally ``counts()``: what this kind of output counts of its own
  (retries, skipped records, ...), cumulative for its target; the sender
  shows them in status and metrics beside its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from hostlog.chunk import decode_columns
from hostlog.forward.protocol import Chunk
from hostlog.record import Columns
from hostlog.spool.frame import MAX_PAYLOAD, decompress_chunk

__all__ = ["Identity", "Output", "Refused", "decode_chunk"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this agent is to its peers."""

    agent: str
    host: str
    token: str | None = None


class Refused(Exception):
    """The peer said no; ``rejected``: do not come back soon (a wrong token,
    another protocol version), else: later (it is busy, full, restarting)."""

    def __init__(self, reason: str, *, rejected: bool) -> None:
        super().__init__(reason)
        self.rejected = rejected


class Output(Protocol):
    async def open(self) -> int | None: ...
    async def send(self, chunk: Chunk) -> None: ...
    def acks(self) -> AsyncIterator[int]: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...


def decode_chunk(chunk: Chunk) -> Columns:
    """The records of a chunk, for an output that sends them in another format."""
    if chunk.chunk_len > MAX_PAYLOAD:
        raise ValueError(f"chunk of seq {chunk.first}..{chunk.last} claims {chunk.chunk_len} bytes")
    return decode_columns(decompress_chunk(chunk.data, chunk.chunk_len))
