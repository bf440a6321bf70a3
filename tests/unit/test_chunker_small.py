"""chunk_stream's small-file path: a stream of at most ``min_size`` bytes is one chunk, and
short reads around that size cut exactly as the whole buffer does."""

from __future__ import annotations

import io
import random

import pytest

from opencbs.engine.chunker import ChunkerParams, chunk_bytes, chunk_stream

PARAMS = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)


class Trickle:
    """A reader that returns at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.buf = io.BytesIO(data)
        self.step = step

    def read(self, size: int, /) -> bytes:
        return self.buf.read(min(size, self.step))


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000, 70_000])
@pytest.mark.parametrize("step", [7, 1000, 1 << 20])
def test_small_and_short_reads_cut_like_the_whole_buffer(size: int, step: int) -> None:
    data = random.Random(size).randbytes(size)
    chunks = list(chunk_stream(Trickle(data, step), PARAMS, read_size=1 << 20))
    assert chunks == chunk_bytes(data, PARAMS)
    assert all(type(c) is bytes and c for c in chunks)
    if 0 < size <= PARAMS.min_size:
        assert chunks == [data]
