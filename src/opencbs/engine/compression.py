"""Per-chunk compression with zstd, and the flag byte that says how a chunk is stored.

A stored chunk payload is ``flag (1 byte) ‖ body``: ``RAW`` (body = the chunk) when zstd does not
make it smaller, ``ZSTD`` (body = one zstd frame) otherwise. The flag is encrypted with the body.
"""

from __future__ import annotations

import threading
from enum import IntEnum

import zstandard

from opencbs.engine.repo_errors import CorruptData
from opencbs.model.sets import DEFAULT_COMPRESSION_LEVEL


class Codec(IntEnum):
    """How a chunk body is stored."""

    RAW = 0
    ZSTD = 1


_ZSTD_FLAG = bytes([Codec.ZSTD])
_RAW_FLAG = bytes([Codec.RAW])
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor at ``level`` (they are not thread-safe)."""
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("zstd", {})
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def compress(data: bytes, level: int = DEFAULT_COMPRESSION_LEVEL) -> tuple[Codec, bytes]:
    """``(codec, body)``: zstd at ``level`` (1..22, or negative for fast modes) if that is
    smaller than ``data``, else ``(Codec.RAW, data)``."""
    if not data:
        return Codec.RAW, data
    packed = _compressor(level).compress(data)
    if len(packed) < len(data):
        return Codec.ZSTD, packed
    return Codec.RAW, data


def encode_payload(data: bytes, level: int = DEFAULT_COMPRESSION_LEVEL) -> tuple[bytes, int]:
    """The stored payload of a chunk (``flag ‖ body``) and the body's length in bytes (what the
    chunk takes after compression: its "zipped" size)."""
    codec, body = compress(data, level)
    return bytes([codec]) + body, len(body)


def encode_payloads(chunks: list[bytes], level: int) -> list[tuple[bytes, int]]:
    """``encode_payload`` of each chunk (none empty), compressed by one zstd call for all
    (``multi_compress_to_buffer``: few hand-offs of the interpreter lock for many small
    chunks)."""
    inputs: list[bytes | bytearray | memoryview] = list(chunks)
    frames = _compressor(level).multi_compress_to_buffer(inputs, threads=0)
    out: list[tuple[bytes, int]] = []
    for i, data in enumerate(chunks):
        frame = frames[i].tobytes()
        if len(frame) < len(data):
            out.append((_ZSTD_FLAG + frame, len(frame)))
        else:
            out.append((_RAW_FLAG + data, len(data)))
    return out


def decode_payload(payload: bytes, original_size: int, *, what: str = "chunk") -> bytes:
    """The chunk from its stored payload; ``original_size`` bytes bound decompression.

    Raises ``CorruptData`` for an unknown flag, a bad zstd frame or a wrong length.
    """
    if not payload:
        raise CorruptData(f"{what}: empty payload")
    flag, body = payload[0], payload[1:]
    if flag == Codec.RAW:
        data = body
    elif flag == Codec.ZSTD:
        try:
            data = zstandard.ZstdDecompressor().decompress(body, max_output_size=original_size)
        except zstandard.ZstdError as exc:
            raise CorruptData(f"{what}: cannot decompress: {exc}") from exc
    else:
        raise CorruptData(f"{what}: unknown storage flag {flag}")
    if len(data) != original_size:
        raise CorruptData(f"{what}: {len(data)} bytes where {original_size} were stored")
    return data
