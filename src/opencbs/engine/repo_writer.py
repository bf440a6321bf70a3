"""Storing content: chunk, deduplicate, compress, seal, pack, index — on two cores.

A ``Writer`` (from ``Repository.writer()``) keeps one open pack in memory. When the pack reaches
the repository's target size (16 MiB by default) it is stored, then its index object, and only
then do its chunks count as stored for everyone: a job interrupted at any point leaves finished
packs that later writers reuse, and at most an unindexed pack (see ``recover_indexes``).

Pipeline: the caller's thread reads, chunks and hashes (and decides deduplication); chunks of
at least ``ASYNC_MIN`` bytes are compressed and sealed by a shared pool of worker threads
(zstd, AES-GCM and BLAKE3 release the GIL), and finished packs are hashed and stored by one
shared I/O thread, while the caller goes on with the next file. Smaller chunks are gathered
into one pool task per ``BATCH_MIN`` bytes (one hand-off per chunk would cost more than the
work); a batch still open when the size of one of its chunks is asked for is sealed in the
caller's thread. Chunks enter the open pack in the order they were added, and packs are stored
in the order they were finished, each followed by its index object. At most ``MAX_INFLIGHT``
pool tasks wait for compression and at most ``MAX_PACKS_INFLIGHT`` finished packs wait for
storage (memory stays at about ``(MAX_PACKS_INFLIGHT + 2) x pack size + MAX_INFLIGHT x 2 x
4 MiB``).

A failure to store a pack (``DestinationError``) is raised in the caller's thread, by the
``add_file``/``add_chunk``/``flush`` call that next looks at the finished packs (``flush``
always does). ``FileResult`` sizes that depend on compression (``stored_size``,
``new_stored_bytes``) are computed when first read, waiting for that file's chunks only.

A file whose read fails (``add_file`` raises the source's ``OSError``) has no ``FileResult``, so
nothing will refer to the chunks it added: the writer takes back those still in it (waiting
for compression, or in the open pack), and they are never written. Those already in a finished
pack (a file larger than what the writer holds, about a pack) are stored, and stay unreferenced
until a prune removes them (a later file with the same chunks deduplicates against them).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from types import TracebackType

from opencbs.destinations.base import Storage
from opencbs.engine.chunk_index import INDEX_PREFIX, ChunkIndex, seal_index
from opencbs.engine.chunker import ChunkerParams, Readable, chunk_stream
from opencbs.engine.compression import encode_payload, encode_payloads
from opencbs.engine.crypto import NONCE_SIZE, Keys
from opencbs.engine.packs import PackBuilder, PackEntry, pack_name

log = logging.getLogger(__name__)

#: Chunks of at least this many bytes are one pool task each.
ASYNC_MIN = 64 * 1024
#: Smaller chunks are handed to the pool in batches of at least this many bytes.
BATCH_MIN = 64 * 1024
#: ``add_file`` keeps the slots of the chunks a file added (to take them back if its read
#: fails), dropping those already in an indexed pack when it holds this many, or twice as many
#: as were left the last time (so a large file holds about the writer's chunks, not its own).
_ADDED_TRIM = 64
#: Pool tasks (batches) handed to the pool and not yet in the open pack (bounds memory).
MAX_INFLIGHT = 8
#: Finished packs handed to the I/O threads and not yet stored (bounds memory), for a storage
#: that names no ``upload_concurrency`` (a local folder: one at a time is as fast as the disk).
MAX_PACKS_INFLIGHT = 1

_pool_lock = threading.Lock()
_pools: dict[str, ThreadPoolExecutor] = {}


def upload_concurrency(storage: Storage) -> int:
    """How many packs a writer uploads to ``storage`` at once: its ``upload_concurrency``
    (an object store, where each request waits on the network: ``destinations.s3``), else
    :data:`MAX_PACKS_INFLIGHT`."""
    n = getattr(storage, "upload_concurrency", MAX_PACKS_INFLIGHT)
    return max(1, min(16, n)) if isinstance(n, int) else MAX_PACKS_INFLIGHT


def _pool(kind: str, workers: int = 1) -> ThreadPoolExecutor:
    """The shared ``compress`` pool (one thread per core, at most 4) or ``io`` pool of
    ``workers`` threads (one pool per size)."""
    if kind != "compress":
        kind = f"{kind}-{workers}"
    with _pool_lock:
        pool = _pools.get(kind)
        if pool is None:
            if kind == "compress":
                workers = max(1, min(4, os.cpu_count() or 1))
            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"opencbs-{kind}")
            _pools[kind] = pool
        return pool


class _Batch:
    """Chunks sealed together by one pool task (or, if a size is needed before it was handed
    over, in the caller's thread), in the order they enter the pack."""

    __slots__ = ("keys", "level", "slots", "data", "size", "future", "results", "lock")

    def __init__(self, keys: Keys, level: int) -> None:
        self.keys = keys
        self.level = level
        self.slots: list[_Slot] = []
        self.data: list[bytes] = []
        self.size = 0
        self.future: Future[list[tuple[bytes, int]]] | None = None
        self.results: list[tuple[bytes, int]] | None = None
        self.lock = threading.Lock()

    def add(self, slot: _Slot, data: bytes) -> bool:
        """Add a chunk; ``False`` (not added) if the batch was sealed already."""
        with self.lock:
            if self.results is not None or self.future is not None:
                return False
            slot.batch = self
            slot.index = len(self.slots)
            self.slots.append(slot)
            self.data.append(data)
            self.size += len(data)
            return True

    def seal(self) -> list[tuple[bytes, int]]:
        """``(sealed blob, compressed size)`` of each chunk: the same payloads as
        ``encode_payload``, compressed by one zstd call and with one draw of random nonces for
        the whole batch (few GIL hand-offs for many small chunks)."""
        keys, level, data = self.keys, self.level, self.data
        if len(data) == 1 or not all(data):
            return [
                _seal_chunk(keys, level, slot.chunk_id, d)
                for slot, d in zip(self.slots, data, strict=True)
            ]
        payloads = encode_payloads(data, level)
        nonces = os.urandom(NONCE_SIZE * len(data))
        out: list[tuple[bytes, int]] = []
        seal = keys.seal
        for i, (slot, (payload, stored)) in enumerate(zip(self.slots, payloads, strict=True)):
            nonce = nonces[i * NONCE_SIZE : (i + 1) * NONCE_SIZE]
            out.append((seal(payload, slot.chunk_id, nonce=nonce), stored))
        return out

    def submit(self) -> None:
        """Hand the batch to the pool (unless already sealed in the caller's thread)."""
        with self.lock:
            if self.results is None and self.future is None:
                self.future = _pool("compress").submit(self.seal)

    def done(self) -> bool:
        return self.results is not None or (self.future is not None and self.future.done())

    def result(self) -> list[tuple[bytes, int]]:
        """The sealed chunks: waits for the pool, or seals now if not handed over yet;
        re-raises the task's error."""
        results = self.results
        if results is None:
            with self.lock:
                if self.results is None:
                    if self.future is None:
                        self.results = self.seal()
                    else:
                        self.results = self.future.result()
                    self.data = []
                results = self.results
        return results

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()


class _Slot:
    """One new chunk on its way into a pack: sizes (``stored`` is -1 until compressed) and,
    until it enters the open pack, its batch (and place in it)."""

    __slots__ = ("chunk_id", "original", "stored", "batch", "index", "taken_back")

    def __init__(self, chunk_id: bytes, original: int) -> None:
        self.chunk_id = chunk_id
        self.original = original
        self.stored = -1
        self.batch: _Batch | None = None
        self.index = 0
        self.taken_back = False  # its file's read failed: never enters a pack

    def stored_size(self) -> int:
        """Compressed bytes; waits for the worker if needed (re-raises its error)."""
        if self.stored < 0:
            batch = self.batch
            if batch is not None:
                self.stored = batch.result()[self.index][1]
        return self.stored


def _seal_chunk(keys: Keys, level: int, chunk_id: bytes, data: bytes) -> tuple[bytes, int]:
    """``(sealed blob, compressed size)`` of a chunk."""
    payload, stored_size = encode_payload(data, level)
    return keys.seal(payload, chunk_id), stored_size


#: What ``store_pack`` stored: the pack ID, its entries and the bytes written (the pack file
#: and its index object).
StoredPack = tuple[str, list[PackEntry], int]


def store_pack(storage: Storage, keys: Keys, pack: PackBuilder) -> StoredPack:
    """Finish and store a pack, then its index object (the I/O thread; prune's repacking);
    returns the pack ID, its entries and the bytes of the two objects written. Raises
    ``DestinationError``."""
    pack_id, data, entries = pack.finish(keys)
    storage.put(pack_name(pack_id), data)
    index_name = INDEX_PREFIX + pack_id
    index = seal_index(keys, index_name, [(pack_id, entries)])
    storage.put(index_name, index)
    log.debug("stored pack %s: %d chunks, %d bytes", pack_id, len(entries), len(data))
    return pack_id, entries, len(data) + len(index)


def _wait_stored(packs: deque[tuple[Future[StoredPack], list[bytes]]]) -> None:
    """Let finished packs reach the destination (a writer dropped without ``flush``)."""
    wait_futures([f for f, _ in packs])


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk given to ``Writer.add_chunk``: its 32-byte ID, ``original_size`` and
    ``stored_size`` (compressed bytes) and whether this call stored it (``new``) or found it
    already stored (deduplicated)."""

    chunk_id: bytes
    original_size: int
    stored_size: int
    new: bool


class FileResult:
    """The content of one file as stored (sizes in bytes).

    ``chunk_ids``: the file's chunks in order (the snapshot records them);
    ``content_id``: keyed BLAKE3 of the whole content (``Entry.content_id``);
    ``original_size``: bytes read; ``stored_size``: compressed bytes its chunks take, deduplicated
    or not (the report's "zipped" size); ``new_stored_bytes``: compressed bytes of the chunks this
    file added; ``dedup_saved_bytes``: original bytes of chunks that were already stored (the
    report's ``DedupeSaving`` share), so ``original_size`` = new original bytes + this.

    ``stored_size`` and ``new_stored_bytes`` may wait, when first read, for the worker threads
    to compress this file's chunks: read them late (after the next files were added) to keep
    both cores busy. Every other field is known at once.
    """

    __slots__ = (
        "chunk_ids",
        "content_id",
        "original_size",
        "dedup_saved_bytes",
        "_known",
        "_new_known",
        "_waiting",
    )

    def __init__(
        self,
        chunk_ids: tuple[bytes, ...],
        content_id: bytes,
        sizes: tuple[int, int, int, int],
        waiting: tuple[tuple[_Slot, bool], ...] = (),
    ) -> None:
        """``sizes``: ``(original_size, stored_size, new_stored_bytes, dedup_saved_bytes)``,
        of ``stored_size`` and ``new_stored_bytes`` the part already known; ``waiting``: chunks
        whose compressed size is still to come, each with whether this file added it.

        Built once per file: one tuple of sizes, not keywords (keyword arguments double the cost
        of building an object in Python 3.11)."""
        self.chunk_ids = chunk_ids
        self.content_id = content_id
        self.original_size, self._known, self._new_known, self.dedup_saved_bytes = sizes
        self._waiting = waiting

    def _resolve(self) -> None:
        for slot, new in self._waiting:
            size = slot.stored_size()
            self._known += size
            if new:
                self._new_known += size
        self._waiting = ()

    @property
    def stored_size(self) -> int:
        """Compressed bytes of the file's chunks (may wait for their compression)."""
        if self._waiting:
            self._resolve()
        return self._known

    @property
    def new_stored_bytes(self) -> int:
        """Compressed bytes of the chunks this file added (may wait for their compression)."""
        if self._waiting:
            self._resolve()
        return self._new_known

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileResult):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def _fields(self) -> tuple[object, ...]:
        return (
            self.chunk_ids,
            self.content_id,
            self.original_size,
            self.stored_size,
            self.new_stored_bytes,
            self.dedup_saved_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"FileResult(chunks={len(self.chunk_ids)}, content_id="
            f"{self.content_id.hex()[:16]}…, original_size={self.original_size}, "
            f"stored_size={self.stored_size}, new_stored_bytes={self.new_stored_bytes}, "
            f"dedup_saved_bytes={self.dedup_saved_bytes})"
        )


class Writer:
    """Adds chunks and files to a repository. Not thread-safe: one writer per thread (it uses
    shared worker threads itself, see the module docstring).

    Use as a context manager (flushes on a normal exit, ``close`` on an error) or call
    ``flush()``. Chunks of the open pack are deduplicated within this writer but are not
    readable until flushed. A writer dropped without ``flush`` still lets the packs it had
    finished reach the destination; its open pack is lost.
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
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        """Internal: use ``Repository.writer()``. ``on_stored`` is called (in the caller's
        thread) with the bytes of each pack and its index object once both are stored."""
        self._storage = storage
        self._keys = keys
        self._index = index
        self._chunker = chunker
        self._level = compression_level
        self._target = pack_target_size
        self._pack = PackBuilder()
        # Chunks added but not yet in an indexed pack: chunk ID -> slot (sizes).
        self._pending: dict[bytes, _Slot] = {}
        # Small chunks not yet handed to the pool; batches handed over, in pack order.
        self._open_batch: _Batch | None = None
        self._inflight: deque[_Batch] = deque()
        # Packs handed to the I/O thread, oldest first, with their chunk IDs.
        self._packs: deque[tuple[Future[StoredPack], list[bytes]]] = deque()
        self._finalizer = weakref.finalize(self, _wait_stored, self._packs)
        self._uploads = upload_concurrency(storage)
        self._shipped = 0  # bytes of the packs handed to the I/O thread
        self._stored = 0  # bytes of the packs and index objects stored (``stored_bytes``)
        self._on_stored = on_stored

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
        else:
            self.close()

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk is stored or on its way into this writer's packs."""
        return chunk_id in self._pending or chunk_id in self._index

    def add_chunk(self, data: bytes, chunk_id: bytes | None = None) -> ChunkResult:
        """Store one chunk unless already stored. ``chunk_id`` may be passed if already
        computed (``Keys.chunk_id(data)``). Waits for the chunk's compression. Raises
        ``DestinationError`` if a pack could not be written (that pack's chunks are then
        forgotten, and stored again if added again)."""
        if chunk_id is None:
            chunk_id = self._keys.chunk_id(data)
        slot, new = self._add(chunk_id, data)
        if slot is None:
            loc = self._index.get(chunk_id)
            assert loc is not None
            return ChunkResult(chunk_id, len(data), loc.stored_size, new=False)
        return ChunkResult(chunk_id, len(data), slot.stored_size(), new=new)

    def add_file(self, source: str | os.PathLike[str] | Readable) -> FileResult:
        """Store the content of a file: a path, or any ``Readable`` (an object with
        ``read(n) -> bytes``, e.g. a binary file or ``BytesIO``) read to its end.

        The file is read in 1 MiB pieces, never whole; it is entirely read when this returns
        (its compression may still be running: see ``FileResult``). Errors reading the source
        (``OSError``) propagate unchanged for the caller to report per file, after the chunks
        this file added are taken back where they are still in the writer (module docstring);
        ``DestinationError`` means the destination failed.
        """
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return self._add_stream(f)
        return self._add_stream(source)

    def _add_stream(self, f: Readable) -> FileResult:
        added: list[_Slot] = []  # the chunks this file added, taken back if its read fails
        try:
            return self._add_chunks(f, added)
        except OSError:  # reading the source failed (module docstring)
            self._take_back(added)
            raise

    def _add_chunks(self, f: Readable, added: list[_Slot]) -> FileResult:
        """``_add_stream``'s work: each chunk this file adds is appended to ``added`` (from
        which those already in an indexed pack are dropped now and then)."""
        keys = self._keys
        hasher = None
        first: bytes | None = None
        ids: list[bytes] = []
        waiting: list[tuple[_Slot, bool]] = []
        original = stored = new_stored = saved = 0
        trim_at = _ADDED_TRIM
        for chunk in chunk_stream(f, self._chunker):
            # The content ID of a one-chunk file is its chunk ID (the same keyed BLAKE3 over
            # the same bytes): hash the whole content separately only from a second chunk on.
            if hasher is not None:
                hasher.update(chunk)
            elif first is None:
                first = chunk
            else:
                hasher = keys.hasher()
                hasher.update(first)
                hasher.update(chunk)
                first = None
            chunk_id = keys.chunk_id(chunk)
            ids.append(chunk_id)
            size = len(chunk)
            original += size
            slot, new = self._add(chunk_id, chunk)
            if not new:
                saved += size
            elif slot is not None:
                added.append(slot)
                if len(added) >= trim_at:
                    pending = self._pending
                    added[:] = [s for s in added if pending.get(s.chunk_id) is s]
                    trim_at = max(_ADDED_TRIM, 2 * len(added))
            if slot is None:  # in an indexed pack
                loc = self._index.get(chunk_id)
                assert loc is not None
                stored += loc.stored_size
            elif slot.stored >= 0:
                stored += slot.stored
                if new:
                    new_stored += slot.stored
            else:
                waiting.append((slot, new))
        if hasher is not None:
            content_id = hasher.digest()
        elif ids:
            content_id = ids[0]
        else:
            content_id = keys.hasher().digest()
        return FileResult(
            tuple(ids), content_id, (original, stored, new_stored, saved), tuple(waiting)
        )

    def _take_back(self, added: list[_Slot]) -> None:
        """Take back the chunks of ``added`` (those a file added whose read failed) that have
        not left the writer: skipped when their batch reaches the pack, or removed from the
        open pack; nothing else refers to them (the file was the last one added). Those in
        a finished pack are stored all the same (module docstring)."""
        pending = self._pending
        in_pack = set(self._pack.chunk_ids())
        from_pack: set[bytes] = set()
        stored = 0
        for slot in added:
            chunk_id = slot.chunk_id
            if pending.get(chunk_id) is not slot:
                stored += 1  # in an indexed pack already
                continue
            if slot.batch is not None:
                slot.taken_back = True
            elif chunk_id in in_pack:
                from_pack.add(chunk_id)
            else:
                stored += 1  # in a finished pack, on its way to the destination
                continue
            del pending[chunk_id]
        if from_pack:
            self._pack = self._pack.without(from_pack)
        if stored:
            log.debug("%d chunks of a file whose read failed were stored already", stored)

    def _add(self, chunk_id: bytes, data: bytes) -> tuple[_Slot | None, bool]:
        """``(slot, new)``: the chunk's pending slot (``None`` if in an indexed pack) and
        whether this call added it."""
        self._collect(block=False)
        slot = self._pending.get(chunk_id)
        if slot is not None:
            return slot, False
        if chunk_id in self._index:
            return None, False
        slot = _Slot(chunk_id, len(data))
        self._pending[chunk_id] = slot
        if len(data) >= ASYNC_MIN:
            self._submit_open()
            single = _Batch(self._keys, self._level)
            single.add(slot, data)
            single.submit()
            self._inflight.append(single)
        else:
            batch = self._open_batch
            if batch is None or not batch.add(slot, data):
                # (a batch sealed early, for a size asked of it, closes)
                self._submit_open()
                batch = self._open_batch = _Batch(self._keys, self._level)
                batch.add(slot, data)
            if batch.size >= BATCH_MIN:
                self._submit_open()
            elif len(self._inflight) <= MAX_INFLIGHT:
                return slot, True
            # else: batches sealed early (a file's stored size asked of them) pile up: drain
            # them, or they hold their chunks until the end of the job (bench/README.md)
        self._drain(MAX_INFLIGHT)
        return slot, True

    def _submit_open(self) -> None:
        """Hand the open batch of small chunks to the pool."""
        batch = self._open_batch
        if batch is not None:
            self._open_batch = None
            batch.submit()
            self._inflight.append(batch)

    def _drain(self, limit: int) -> None:
        """Move sealed batches into the open pack, in order, until at most ``limit`` wait;
        batches already sealed at the head move without waiting."""
        inflight = self._inflight
        while inflight:
            head = inflight[0]
            if len(inflight) <= limit and not head.done():
                return
            inflight.popleft()
            self._batch_to_pack(head)

    def _batch_to_pack(self, batch: _Batch) -> None:
        try:
            results = batch.result()
        except BaseException:
            pending = self._pending
            for slot in batch.slots:
                if pending.get(slot.chunk_id) is slot:  # (not a later copy of one taken back)
                    del pending[slot.chunk_id]
            raise
        shipped = False
        for slot, (blob, stored) in zip(batch.slots, results, strict=True):
            slot.stored = stored
            slot.batch = None
            if slot.taken_back:
                continue
            if len(self._pack) and self._pack.size + len(blob) > self._target:
                self._ship()
                shipped = True
            self._pack.add(slot.chunk_id, blob, stored, slot.original)
        # Wait for the I/O thread only now, with the whole batch in packs: if an older pack
        # failed, the error leaves this writer consistent.
        while shipped and len(self._packs) > self._uploads:
            self._collect(block=True)

    @property
    def upload_bytes(self) -> int:
        """Bytes of pack files this writer has stored or is storing, its open pack included,
        and the chunks still being compressed for it (uncompressed: at most what they add);
        what a job adds to the destination, which the quota counts."""
        waiting = sum(b.size for b in self._inflight)
        if self._open_batch is not None:
            waiting += self._open_batch.size
        return self._shipped + self._pack.size + waiting

    @property
    def stored_bytes(self) -> int:
        """Bytes this writer has written to the destination, exactly: the pack files and their
        index objects stored so far (compressed, encrypted, after deduplication: a chunk
        stored already is never written again). Packs still on their way are not counted
        until ``flush``/``close`` (or a later call) has seen them stored; unlike
        ``upload_bytes``, an estimate that counts them, for the quota."""
        return self._stored

    def _ship(self) -> None:
        """Hand the open pack to the I/O thread."""
        self._shipped += self._pack.size
        pack, self._pack = self._pack, PackBuilder()
        io = _pool("io", self._uploads)
        future = io.submit(store_pack, self._storage, self._keys, pack)
        self._packs.append((future, pack.chunk_ids()))

    def _collect(self, *, block: bool) -> None:
        """Index the packs the I/O thread has stored (oldest first; with ``block``, waits for
        the oldest). Raises the error of a pack that could not be stored, after forgetting
        its chunks."""
        packs = self._packs
        while packs and (block or packs[0][0].done()):
            block = False
            future, chunk_ids = packs.popleft()
            try:
                pack_id, entries, written = future.result()
            except BaseException:
                for chunk_id in chunk_ids:
                    self._pending.pop(chunk_id, None)
                raise
            self._stored += written
            if self._on_stored is not None:
                self._on_stored(written)
            self._index.add_pack(pack_id, entries)
            for chunk_id in chunk_ids:
                self._pending.pop(chunk_id, None)

    def flush(self) -> None:
        """Store the open pack and its index object (no-op if empty) and wait until every
        pack of this writer is stored and indexed. After this every chunk added so far is
        readable and visible to ``has_chunk`` of all writers. Raises ``DestinationError``
        (the first failure; the chunks of failed packs are forgotten)."""
        error: BaseException | None = None
        try:
            self._submit_open()
            self._drain(0)
        except BaseException as exc:  # a compression failure: nothing of it was stored
            error = exc
            self._discard_open()
        if len(self._pack):
            self._ship()
        while self._packs:
            try:
                self._collect(block=True)
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def _discard_open(self) -> None:
        if self._open_batch is not None:
            self._inflight.append(self._open_batch)
            self._open_batch = None
        for batch in self._inflight:
            batch.cancel()
            for slot in batch.slots:
                self._pending.pop(slot.chunk_id, None)
        self._inflight.clear()
        for chunk_id in self._pack.chunk_ids():
            self._pending.pop(chunk_id, None)
        self._pack = PackBuilder()

    def close(self) -> None:
        """Drop the open pack and the chunks still being compressed (as a job that stops does)
        and wait until the packs already finished are stored; never raises for them (their
        failures are logged). The writer can be used again."""
        self._discard_open()
        while self._packs:
            try:
                self._collect(block=True)
            except Exception as exc:  # noqa: BLE001 - closing after another error
                log.warning("a finished pack was not stored: %s", exc)
