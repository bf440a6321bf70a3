"""The writer's two-core pipeline: chunks compressed by worker threads enter packs in order,
lazily read sizes equal eagerly read ones, content IDs, and destination failures raised in the
caller (the job runner turns them into BS_STOP_BY_SYSTEM_ERROR)."""

from __future__ import annotations

import contextlib
import io
import random
import time

import pytest

from opencbs.destinations.base import DestinationError
from opencbs.destinations.memory import MemoryStorage
from opencbs.engine import repo_writer
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import FileResult, Repository

PASSWORD = "pipeline pass"
FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
# Chunks of 64-256 KiB: at least ASYNC_MIN, so they go through the worker pool.
POOL_CHUNKS = ChunkerParams(min_size=64 * 1024, avg_size=128 * 1024, max_size=256 * 1024)
PACK_SIZE = 512 * 1024


def make_repo(storage: MemoryStorage | None = None) -> Repository:
    return Repository.init(
        storage or MemoryStorage(),
        PASSWORD,
        chunker=POOL_CHUNKS,
        pack_target_size=PACK_SIZE,
        kdf=FAST_KDF,
    )


def files(count: int) -> list[bytes]:
    """Noise, text and a mix, 0-1.5 MB each; file 5 repeats file 1 (deduplicated)."""
    rng = random.Random(11)
    words = b"pipeline chunk pack zstd worker thread order index "
    out: list[bytes] = []
    for i in range(count):
        size = rng.randint(0, 1_500_000)
        if i % 3 == 0:
            out.append(rng.randbytes(size))
        elif i % 3 == 1:
            out.append((words * (size // len(words) + 1))[:size])
        else:
            out.append(rng.randbytes(size // 2) + words * (size // 2 // len(words)))
    if count > 5:
        out[5] = out[1]
    return out


def read_back(repo: Repository, result: FileResult) -> bytes:
    return b"".join(repo.read_chunk(c) for c in result.chunk_ids)


def test_threaded_writer_stores_what_a_sequential_read_expects() -> None:
    assert POOL_CHUNKS.min_size >= repo_writer.ASYNC_MIN
    data = files(12)
    lazy_repo = make_repo()
    twin = MemoryStorage()  # the same keys, so the same chunk IDs
    for name in lazy_repo.storage.list():
        twin.put(name, lazy_repo.storage.get(name))
    eager_repo = Repository.open(twin, PASSWORD)
    with lazy_repo.writer() as w:
        lazy = [w.add_file(io.BytesIO(d)) for d in data]  # sizes read only after the flush
    eager: list[FileResult] = []
    with eager_repo.writer() as w:
        for d in data:
            result = w.add_file(io.BytesIO(d))
            assert result.stored_size <= result.original_size  # waits for this file only
            eager.append(result)
    for d, a, b in zip(data, lazy, eager, strict=True):
        assert (a.chunk_ids, a.content_id, a.original_size) == (b.chunk_ids, b.content_id, len(d))
        assert (a.stored_size, a.new_stored_bytes, a.dedup_saved_bytes) == (
            b.stored_size,
            b.new_stored_bytes,
            b.dedup_saved_bytes,
        )
        assert a == b
        assert read_back(lazy_repo, a) == d
    assert lazy[5].dedup_saved_bytes == len(data[5]) and lazy[5].new_stored_bytes == 0
    assert lazy[1].new_stored_bytes == lazy[1].stored_size < len(data[1]) // 5
    # Chunk sizes in the index are those the results summed.
    for result in lazy:
        locs = [lazy_repo.chunk_location(c) for c in result.chunk_ids]
        assert sum(loc.stored_size for loc in locs if loc) == result.stored_size
    reopened = Repository.open(lazy_repo.storage, PASSWORD)
    check = reopened.verify(read_data=True)
    assert check.ok, check.errors
    assert len(reopened.index) == len(lazy_repo.index)


def test_content_id_is_keyed_blake3_of_the_whole_content() -> None:
    repo = make_repo()
    single = b"one chunk only" * 100
    multi = files(3)[0][:1_000_000]
    with repo.writer() as w:
        one = w.add_file(io.BytesIO(single))
        many = w.add_file(io.BytesIO(multi))
        empty = w.add_file(io.BytesIO(b""))
    assert len(one.chunk_ids) == 1 and one.content_id == repo.content_id(single)
    assert one.content_id == one.chunk_ids[0]
    assert len(many.chunk_ids) > 1 and many.content_id == repo.content_id(multi)
    assert empty.chunk_ids == () and empty.content_id == repo.content_id(b"")


class FailingStorage(MemoryStorage):
    """Writes of packs start failing after ``good`` packs (a full or vanished disk)."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def put(self, name: str, data: bytes | memoryview) -> None:
        if name.startswith("data/"):
            if self.good <= 0:
                raise DestinationError("Cannot write to the destination: disk full")
            self.good -= 1
        super().put(name, data)


@pytest.mark.parametrize("good", [0, 2])
def test_a_failing_destination_raises_in_the_caller(good: int) -> None:
    storage = FailingStorage(good=10**9)
    repo = make_repo(storage)
    storage.good = good
    data = files(8)
    with pytest.raises(DestinationError, match="disk full"):
        with repo.writer() as w:
            for d in data:
                w.add_file(io.BytesIO(d))
    assert not list(storage.list("snapshots/"))
    # What was stored is consistent: each stored pack is indexed, and verify accepts it.
    assert len(list(storage.list("data/"))) == good
    storage.good = 10**9
    again = Repository.open(storage, PASSWORD)
    check = again.verify(read_data=True)
    assert check.ok, check.errors
    # The next writer stores everything missing; a snapshot then reads back.
    with again.writer() as w:
        results = [w.add_file(io.BytesIO(d)) for d in data]
    for d, r in zip(data, results, strict=True):
        assert read_back(again, r) == d


def test_writer_stays_usable_after_a_failed_pack() -> None:
    storage = FailingStorage(good=10**9)
    repo = make_repo(storage)
    storage.good = 0
    w = repo.writer()
    data = files(4)
    with pytest.raises(DestinationError):
        for d in data:
            w.add_file(io.BytesIO(d))
        w.flush()
    # Packs already handed to the store thread fail too; their errors come with the next call
    # that looks at finished packs: settle them all while the destination is still full.
    with contextlib.suppress(DestinationError):
        w.flush()
    storage.good = 10**9
    results = [w.add_file(io.BytesIO(d)) for d in data]  # chunks of the failed packs again
    w.flush()
    for d, r in zip(data, results, strict=True):
        assert read_back(repo, r) == d
    assert repo.verify(read_data=True).ok


def test_dropped_writer_leaves_its_finished_packs_stored() -> None:
    repo = make_repo()
    # incompressible and many packs long, so packs are finished while add_file runs
    data = random.Random(5).randbytes(12 * PACK_SIZE)
    w = repo.writer()
    w.add_file(io.BytesIO(data))
    del w  # a job that dies: finished packs still reach the destination, indexed
    # the store thread finishes in the background: wait (bounded) until it has
    deadline = time.monotonic() + 10
    while True:
        packs = list(repo.storage.list("data/"))
        indexes = list(repo.storage.list("index/"))
        if (packs and len(indexes) == len(packs)) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert packs and len(indexes) == len(packs)
    assert Repository.open(repo.storage, PASSWORD).verify(read_data=True).ok


def test_small_chunks_in_batches_eager_and_lazy_sizes_agree() -> None:
    # Chunks under ASYNC_MIN go to the pool in batches; asking a size while its batch is
    # still open seals that batch in the caller's thread, and later chunks start a new one.
    small = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
    assert small.max_size < repo_writer.ASYNC_MIN
    rng = random.Random(3)
    data = [rng.randbytes(rng.randint(0, 40_000)) for _ in range(60)] + [b"same" * 900] * 3
    first = Repository.init(
        MemoryStorage(), PASSWORD, chunker=small, pack_target_size=96 * 1024, kdf=FAST_KDF
    )
    twin = MemoryStorage()  # the same keys, so the same chunks
    for name in first.storage.list():
        twin.put(name, first.storage.get(name))
    repos = [first, Repository.open(twin, PASSWORD)]
    eager = []
    with repos[0].writer() as w:
        for d in data:
            r = w.add_file(io.BytesIO(d))
            eager.append((r.stored_size, r.new_stored_bytes))
    with repos[1].writer() as w:
        results = [w.add_file(io.BytesIO(d)) for d in data]
    lazy = [(r.stored_size, r.new_stored_bytes) for r in results]
    assert eager == lazy
    assert lazy[-1][1] == 0 and lazy[-2][1] == 0  # the repeated file is deduplicated
    for d, r in zip(data, results, strict=True):
        assert read_back(repos[1], r) == d
    assert all(repo.verify(read_data=True).ok for repo in repos)
