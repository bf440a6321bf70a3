"""Storing content: chunk, deduplicate, compress, seal, pack, index.

A ``Writer`` (from ``Repository.writer()``) keeps one open pack in memory. When the pack reaches
the repository's target size (16 MiB by default) it is stored, then its index object, and only
then do its chunks count as stored for everyone: a job interrupted at any point leaves finished
packs that later writers reuse, and at most an unindexed pack (see ``recover_indexes``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import TracebackType

from opencbs.destinations.base import Storage
from opencbs.engine.chunk_index import INDEX_PREFIX, ChunkIndex, seal_index
from opencbs.engine.chunker import ChunkerParams, Readable, chunk_stream
from opencbs.engine.compression import encode_payload
from opencbs.engine.crypto import Keys
from opencbs.engine.packs import PackBuilder, pack_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk given to ``Writer.add_chunk``: its 32-byte ID, ``original_size`` and
    ``stored_size`` (compressed bytes) and whether this call stored it (``new``) or found it
    already stored (deduplicated)."""

    chunk_id: bytes
    original_size: int
    stored_size: int
    new: bool


@dataclass(frozen=True, slots=True)
class FileResult:
    """The content of one file as stored (sizes in bytes).

    ``chunk_ids``: the file's chunks in order (the snapshot records them);
    ``content_id``: keyed BLAKE3 of the whole content (``Entry.content_id``);
    ``original_size``: bytes read; ``stored_size``: compressed bytes its chunks take, deduplicated
    or not (the report's "zipped" size); ``new_stored_bytes``: compressed bytes of the chunks this
    file added; ``dedup_saved_bytes``: original bytes of chunks that were already stored (the
    report's ``DedupeSaving`` share), so ``original_size`` = new original bytes + this.
    """

    chunk_ids: tuple[bytes, ...]
    content_id: bytes
    original_size: int
    stored_size: int
    new_stored_bytes: int
    dedup_saved_bytes: int


class Writer:
    """Adds chunks and files to a repository. Not thread-safe: one writer per thread.

    Use as a context manager (flushes on a normal exit) or call ``flush()``. Chunks of the open
    pack are deduplicated within this writer but are not readable until flushed.
    """

    def __init__(
        self,
        storage: Storage,
        keys: Keys,
        index: ChunkIndex,
        *,
        chunker: ChunkerParams,
        compression_level: int,
        pack_target_size: int,
    ) -> None:
        """Internal: use ``Repository.writer()``."""
        self._storage = storage
        self._keys = keys
        self._index = index
        self._chunker = chunker
        self._level = compression_level
        self._target = pack_target_size
        self._pack = PackBuilder()
        self._pending: dict[bytes, tuple[int, int]] = {}  # chunk ID -> (stored, original)

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk is stored or waiting in this writer's open pack."""
        return chunk_id in self._pending or chunk_id in self._index

    def _known_sizes(self, chunk_id: bytes) -> tuple[int, int] | None:
        pending = self._pending.get(chunk_id)
        if pending is not None:
            return pending
        loc = self._index.get(chunk_id)
        return None if loc is None else (loc.stored_size, loc.original_size)

    def add_chunk(self, data: bytes, chunk_id: bytes | None = None) -> ChunkResult:
        """Store one chunk unless already stored. ``chunk_id`` may be passed if already
        computed (``Keys.chunk_id(data)``). Raises ``DestinationError`` if a pack cannot be
        written (nothing is then recorded for that pack)."""
        if chunk_id is None:
            chunk_id = self._keys.chunk_id(data)
        known = self._known_sizes(chunk_id)
        if known is not None:
            return ChunkResult(chunk_id, len(data), known[0], new=False)
        payload, stored_size = encode_payload(data, self._level)
        blob = self._keys.seal(payload, chunk_id)
        if len(self._pack) and self._pack.size + len(blob) > self._target:
            self.flush()
        self._pack.add(chunk_id, blob, stored_size, len(data))
        self._pending[chunk_id] = (stored_size, len(data))
        return ChunkResult(chunk_id, len(data), stored_size, new=True)

    def add_file(self, source: str | os.PathLike[str] | Readable) -> FileResult:
        """Store the content of a file: a path, or any ``Readable`` (an object with
        ``read(n) -> bytes``, e.g. a binary file or ``BytesIO``) read to its end.

        The file is read in 1 MiB pieces, never whole. Errors reading the source (``OSError``)
        propagate unchanged for the caller to report per file; ``DestinationError`` means the
        destination failed.
        """
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return self._add_stream(f)
        return self._add_stream(source)

    def _add_stream(self, f: Readable) -> FileResult:
        hasher = self._keys.hasher()
        ids: list[bytes] = []
        original = stored = new_stored = saved = 0
        for chunk in chunk_stream(f, self._chunker):
            hasher.update(chunk)
            result = self.add_chunk(chunk)
            ids.append(result.chunk_id)
            original += result.original_size
            stored += result.stored_size
            if result.new:
                new_stored += result.stored_size
            else:
                saved += result.original_size
        return FileResult(tuple(ids), hasher.digest(), original, stored, new_stored, saved)

    def flush(self) -> None:
        """Store the open pack and its index object (no-op if empty). After this every chunk
        added so far is readable and visible to ``has_chunk`` of all writers."""
        if not len(self._pack):
            return
        pack_id, data, entries = self._pack.finish(self._keys)
        self._pack = PackBuilder()
        # Whatever happens below, the open pack's chunks are no longer pending: on a failure
        # they are lost and must be stored again if added again.
        self._pending.clear()
        self._storage.put(pack_name(pack_id), data)
        index_name = INDEX_PREFIX + pack_id
        self._storage.put(index_name, seal_index(self._keys, index_name, [(pack_id, entries)]))
        self._index.add_pack(pack_id, entries)
        log.debug("stored pack %s: %d chunks, %d bytes", pack_id, len(entries), len(data))
