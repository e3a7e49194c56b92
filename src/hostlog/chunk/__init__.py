"""The chunk codec: how a batch of records is encoded inside a spool frame.

Pure. One module per layout version (``v1``: msgpack by column; v2, a column
store, is planned beside it); the rest of hostlog calls only what this
package exports, so a new layout touches this package and nothing else.
Readers dispatch on the version a chunk carries.
"""

from __future__ import annotations

from hostlog.chunk.v1 import CHUNK_VERSION, decode_chunk, decode_columns, encode_chunk, encode_columns
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
                                      FrameColumns,
)
from hostlog.errors import ChunkError

__all__ = [
    "APP", "CHUNK_VERSION", "FACILITY", "FIELDS", "HOST", "MSG", "ORIGIN", "PID", "SEQ_BASE",
    "SEVERITY", "SOURCE", "TS_DELTAS", "ChunkError", "FrameColumns", "decode_chunk",
    "decode_columns", "encode_chunk", "encode_columns",
]
