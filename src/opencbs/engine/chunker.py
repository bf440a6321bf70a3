"""Content-defined chunking (FastCDC, the compiled ``fastcdc`` extension) over streams.

The library chunks a whole buffer (it ``mmap``s files, which would crash the process with
SIGBUS if a file shrank while it is read). We feed it bounded windows instead: a FastCDC cut
depends only on the bytes from the chunk's start up to ``max_size`` further, so a chunk found in
a window is final when at least ``max_size`` bytes of the window follow its start (or the
stream ended). Boundaries are therefore exactly those of chunking the whole input at once, and
memory stays at about ``window`` bytes whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc  # type: ignore[import-untyped]

KiB = 1024
MiB = 1024 * KiB

# Limits of the fastcdc library (it checks them with ``assert``).
_MIN_RANGE = (64, 64 * MiB)
_AVG_RANGE = (256, 256 * MiB)
_MAX_RANGE = (1 * KiB, 1024 * MiB)


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """Chunk sizes in bytes: ``min_size <= avg_size <= max_size``.

    Every writer of a repository must use the same parameters, or identical content gets
    different boundaries and no longer deduplicates; the repository stores them.
    """

    min_size: int = 256 * KiB
    avg_size: int = 1 * MiB
    max_size: int = 4 * MiB

    def __post_init__(self) -> None:
        for label, value, (low, high) in (
            ("min_size", self.min_size, _MIN_RANGE),
            ("avg_size", self.avg_size, _AVG_RANGE),
            ("max_size", self.max_size, _MAX_RANGE),
        ):
            if not low <= value <= high:
                raise ValueError(f"{label}={value} outside {low}..{high} bytes")
        if not self.min_size <= self.avg_size <= self.max_size:
            raise ValueError("chunk sizes must satisfy min_size <= avg_size <= max_size")

    @property
    def window(self) -> int:
        """Bytes buffered before cutting (bytes; at a cut the chunker holds about twice this:
        the pieces and their join). Twice ``max_size`` is enough for every cut to see the
        ``max_size`` bytes after it, so the cuts are those of the whole stream; four times
        held 16 MiB more at each cut of a large file or snapshot tree, and saved only the
        second scan of the bytes left after a cut (about 0.3 ms of CPU per MiB)."""
        return max(2 * self.max_size, 1 * MiB)


class StreamChunker:
    """Cuts a stream fed piece by piece into content-defined chunks.

    ``feed(data)`` yields the chunks that became final; ``finish()`` yields the rest. Consume
    each generator fully before the next call. Chunks are ``bytes``, never empty; their
    concatenation is the input.
    """

    def __init__(self, params: ChunkerParams | None = None) -> None:
        self.params = params or ChunkerParams()
        self._buf = b""
        self._pending: list[bytes] = []
        self._pending_len = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add ``data``; yield the chunks now final."""
        if data:
            self._pending.append(bytes(data))
            self._pending_len += len(data)
        if len(self._buf) + self._pending_len >= self.params.window:
            yield from self._cut(final=False)

    def finish(self) -> Iterator[bytes]:
        """End of stream: yield the remaining chunks."""
        yield from self._cut(final=True)

    def _cut(self, *, final: bool) -> Iterator[bytes]:
        buf = b"".join([self._buf, *self._pending])
        self._pending.clear()
        self._pending_len = 0
        p = self.params
        done = 0
        for chunk in _fastcdc(buf, p.min_size, p.avg_size, p.max_size, False, None):
            start: int = chunk.offset
            if not final and len(buf) - start < p.max_size:
                break
            done = start + chunk.length
            yield buf[start:done]
        self._buf = buf[done:]


class Readable(Protocol):
    """Anything with ``read(n) -> bytes`` that returns ``b""`` at its end (a binary file, a
    ``BytesIO``, a reader over a descriptor)."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""
        ...


def chunk_stream(
    fileobj: Readable, params: ChunkerParams | None = None, *, read_size: int = 1 * MiB
) -> Iterator[bytes]:
    """Chunks of a binary file object read to its end with ``read(read_size)``.

    Raises whatever ``fileobj.read`` raises (``OSError`` for a source file): reading the source
    is the caller's concern.
    """
    chunker = StreamChunker(params)
    data = fileobj.read(read_size)
    if not data:
        return
    if len(data) <= chunker.params.min_size:
        # Small-file fast path: a stream of at most ``min_size`` bytes is one chunk (FastCDC
        # never cuts before ``min_size``), found without buffering or scanning it.
        more = fileobj.read(read_size)
        if not more:
            yield bytes(data)
            return
        yield from chunker.feed(data)
        data = more
    while data:
        yield from chunker.feed(data)
        data = fileobj.read(read_size)
    yield from chunker.finish()


def chunk_iter(pieces: Iterable[bytes], params: ChunkerParams | None = None) -> Iterator[bytes]:
    """Chunks of the concatenation of ``pieces``."""
    chunker = StreamChunker(params)
    for piece in pieces:
        yield from chunker.feed(piece)
    yield from chunker.finish()


def chunk_bytes(data: bytes, params: ChunkerParams | None = None) -> list[bytes]:
    """Chunks of an in-memory buffer (the reference the streaming cuts must equal)."""
    p = params or ChunkerParams()
    return [
        data[c.offset : c.offset + c.length]
        for c in _fastcdc(data, p.min_size, p.avg_size, p.max_size, False, None)
    ]
