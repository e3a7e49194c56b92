"""The chunk codec: how a batch of records is encoded inside a spool frame.

Pure. One module per layout version (``v1``: msgpack by column; ``v2``: a
column store, each column its own block, messages by template); the rest of
hostlog calls only what this package exports, so a new layout touches this
package and nothing else. Writers choose the version (``version=``, 1 by
default); readers dispatch on the version a chunk carries: its first byte
(the v2 modules are imported only when a v2 chunk is met or written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hostlog.chunk import v1
from hostlog.chunk.v1 import CHUNK_VERSION
from hostlog.chunk.v1_columns import (
                                      APP,
                                      FACILITY,
                                      FIELDS,
                                      HOST,
                                      MSG,
                                      ORIGIN,
                                      PID,
                                      SEQ_BASE,
                                      SEVERITY,
                                      SOURCE,
                                      TS_DELTAS,
)
from hostlog.chunk.view import FrameColumns, is_v2
from hostlog.errors import ChunkError
from hostlog.record import Columns, Record

__all__ = [
    "APP", "CHUNK_VERSION", "CHUNK_VERSIONS", "FACILITY", "FIELDS", "HOST", "MSG", "ORIGIN",
    "PID", "SEQ_BASE", "SEVERITY", "SOURCE", "TS_DELTAS", "ChunkError", "FrameColumns",
    "chunk_version", "decode_chunk", "decode_columns", "encode_chunk", "encode_columns",
]

#: The layout versions this package writes and reads.
CHUNK_VERSIONS = (1, 2)


def chunk_version(chunk: bytes | memoryview) -> int:
    """The layout version a chunk carries (2 by its first byte, else 1: a
    version 1 chunk is a msgpack array, which its decoder checks)."""
    return 2 if is_v2(chunk) else 1


def encode_chunk(records: Sequence[Record], version: int = CHUNK_VERSION) -> bytes:
    """Encode records as one chunk of layout ``version`` (see docs/format.md)."""
    if version == 2:
        from hostlog.chunk import v2
        return v2.encode_chunk(records)
    if version != 1:
        raise ValueError(f"chunk version {version!r} is not one of {CHUNK_VERSIONS}")
    return v1.encode_chunk(records)


def encode_columns(columns: Sequence[Sequence[Any]], version: int = CHUNK_VERSION) -> bytes:
    """:func:`encode_chunk` of records given as :func:`hostlog.record.record_columns`
    (not empty)."""
    if version == 2:
        from hostlog.chunk import v2
        return v2.encode_columns(columns)
    if version != 1:
        raise ValueError(f"chunk version {version!r} is not one of {CHUNK_VERSIONS}")
    return v1.encode_columns(columns)


def decode_chunk(data: bytes) -> list[Record]:
    """Decode a chunk of either version; ChunkError if it is not one."""
    if is_v2(data):
        from hostlog.chunk import v2
        return v2.decode_chunk(data)
    return v1.decode_chunk(data)


def decode_columns(data: bytes) -> Columns:
    """Decode a chunk of either version into a batch (the columns of
    :class:`hostlog.record.Columns`), without a Record per row: what a
    receiver of forwarded chunks hands its spool writer. ChunkError if it is
    not a chunk."""
    if is_v2(data):
        from hostlog.chunk import v2
        return v2.decode_columns(data)
    return v1.decode_columns(data)
