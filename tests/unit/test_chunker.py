"""Content-defined chunking: round trips, stable boundaries, streaming equals whole-buffer."""

from __future__ import annotations

import io
import random

import fastcdc  # type: ignore[import-untyped]
import pytest
from fastcdc.fastcdc_cy import fastcdc_cy  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbs.engine.chunker import (
    ChunkerParams,
    StreamChunker,
    chunk_bytes,
    chunk_iter,
    chunk_stream,
)

SMALL = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)


def _random(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def test_uses_the_compiled_extension() -> None:
    assert fastcdc.fastcdc is fastcdc_cy


def test_defaults() -> None:
    p = ChunkerParams()
    assert (p.min_size, p.avg_size, p.max_size) == (256 * 1024, 1024 * 1024, 4 * 1024 * 1024)


@pytest.mark.parametrize(
    "sizes", [(32, 4096, 16384), (1024, 512, 16384), (1024, 4096, 2048), (1024, 4096, 2**31)]
)
def test_invalid_params(sizes: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        ChunkerParams(*sizes)


@pytest.mark.parametrize("read_size", [777, 4096, 65536, 1 << 20])
def test_stream_round_trip_and_same_cuts_as_whole_buffer(read_size: int) -> None:
    data = _random(300_000)
    chunks = list(chunk_stream(io.BytesIO(data), SMALL, read_size=read_size))
    assert b"".join(chunks) == data
    assert chunks == chunk_bytes(data, SMALL)
    assert all(SMALL.min_size <= len(c) <= SMALL.max_size for c in chunks[:-1])
    assert len(chunks) > 20


def test_same_data_same_boundaries_and_local_changes() -> None:
    data = _random(200_000, seed=7)
    first = chunk_bytes(data, SMALL)
    assert chunk_bytes(data, SMALL) == first
    edited = data[:100_000] + b"inserted!" + data[100_000:]
    second = chunk_bytes(edited, SMALL)
    # Only chunks around the edit change: most are shared.
    shared = set(first) & set(second)
    assert len(shared) >= len(first) - 3


def test_empty_and_tiny_inputs() -> None:
    assert list(chunk_stream(io.BytesIO(b""), SMALL)) == []
    assert list(chunk_stream(io.BytesIO(b"x"), SMALL)) == [b"x"]
    assert list(chunk_iter([b"", b"ab", b"", b"c"], SMALL)) == [b"abc"]


def test_streaming_window_is_bounded() -> None:
    chunker = StreamChunker(SMALL)
    out: list[bytes] = []
    for i in range(100):
        out.extend(chunker.feed(_random(10_000, seed=i)))
        assert len(chunker._buf) + chunker._pending_len < SMALL.window + 10_000
    out.extend(chunker.finish())
    assert sum(map(len, out)) == 1_000_000


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=60_000),
    cuts=st.lists(st.integers(min_value=0, max_value=60_000), max_size=8),
)
def test_any_feeding_gives_the_whole_buffer_chunks(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert list(chunk_iter(pieces, SMALL)) == chunk_bytes(data, SMALL)
