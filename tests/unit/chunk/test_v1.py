"""The chunk codec, version 1: a batch decoded as columns is the batch encoded."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import ChunkError, decode_chunk, decode_columns, encode_chunk, encode_columns
from tests.unit.chunk.test_v1_columns import records


@settings(max_examples=200, deadline=None)
@given(st.lists(records(), min_size=0, max_size=40))
def test_decode_columns_gives_back_the_encoded_batch(rows) -> None:
    chunk = encode_chunk(rows)
    batch = decode_columns(chunk)
    assert len(batch) == len(rows)
    assert batch.records() == decode_chunk(chunk) == rows
    # and what it gives encodes to the same chunk again (a receiver may re-store it)
    if rows:
        assert encode_columns(batch.columns) == chunk


def test_decode_columns_of_an_empty_chunk_is_an_empty_batch() -> None:
    assert len(decode_columns(encode_chunk([]))) == 0


@pytest.mark.parametrize("data", [
    b"", b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([2, 1]), msgpack.packb([1, 3, []]),
    msgpack.packb([1, -1]), msgpack.packb([1, 2] + [[]] * 14),
    msgpack.packb([1, 1, ["h"], 0, [0], [5], [0], [0], [None], [6], [None], ["m"], [{}], [0], 1, [0]]),
])
def test_decode_columns_refuses_what_is_not_a_chunk(data: bytes) -> None:
    with pytest.raises(ChunkError):
        decode_columns(data)
