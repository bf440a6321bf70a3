"""A file whose read fails part-way (``Writer.add_file`` raising the source's ``OSError``): the
chunks it added that are still in the writer are taken back and never written; those in a
finished pack are stored; the writer stays consistent (the same content added again is stored
and reads back, ``verify`` finds nothing wrong)."""

from __future__ import annotations

import errno
import io
import random

import pytest

from opencbs.destinations.memory import MemoryStorage
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repository import FileResult, Repository

PASSWORD = "take back pass"
FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
# Chunks of 64-256 KiB: many chunks in a few MiB, each through the worker pool.
CHUNKS = ChunkerParams(min_size=64 * 1024, avg_size=128 * 1024, max_size=256 * 1024)


class FailingRead:
    """Gives ``data`` in pieces of at most ``n`` bytes, then raises ``OSError(EIO)``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= len(self.data):
            raise OSError(errno.EIO, "Input/output error")
        piece = self.data[self.pos : self.pos + (n if n > 0 else len(self.data))]
        self.pos += len(piece)
        return piece


def _repo(pack_target_size: int) -> Repository:
    return Repository.init(
        MemoryStorage(),
        PASSWORD,
        chunker=CHUNKS,
        pack_target_size=pack_target_size,
        kdf=FAST_KDF,
    )


def _indexed(repo: Repository) -> set[bytes]:
    return {cid for _pack, chunks in repo.index.by_pack() for cid, _loc in chunks}


def _read_back(repo: Repository, result: FileResult) -> bytes:
    return b"".join(repo.read_chunk(c) for c in result.chunk_ids)


def test_chunks_of_a_failed_read_still_in_the_writer_are_never_written() -> None:
    rng = random.Random(5)
    before, failing, after = rng.randbytes(700_000), rng.randbytes(3 << 20), rng.randbytes(9_999)
    repo = _repo(16 << 20)  # one open pack: nothing leaves the writer before the flush
    writer = repo.writer()
    a = writer.add_file(io.BytesIO(before))
    with pytest.raises(OSError, match="Input/output error"):
        writer.add_file(FailingRead(failing))
    c = writer.add_file(io.BytesIO(after))
    writer.flush()
    assert _indexed(repo) == set(a.chunk_ids) | set(c.chunk_ids)
    assert _read_back(repo, a) == before and _read_back(repo, c) == after
    assert repo.verify(read_data=True).ok


def test_taken_back_chunks_are_forgotten_at_once() -> None:
    data = random.Random(6).randbytes(2 << 20)
    repo = _repo(16 << 20)
    writer = repo.writer()
    with pytest.raises(OSError):
        writer.add_file(FailingRead(data))
    complete = writer.add_file(io.BytesIO(data))
    first = complete.chunk_ids[0]  # also the failed read's first chunk
    assert complete.dedup_saved_bytes == 0  # nothing found of the failed read
    writer.flush()
    assert repo.has_chunk(first) and _read_back(repo, complete) == data


def test_chunks_already_in_a_finished_pack_stay_stored_and_the_writer_stays_sound() -> None:
    rng = random.Random(7)
    failing, later = rng.randbytes(4 << 20), rng.randbytes(1 << 20)
    repo = _repo(512 * 1024)  # packs finish every half MiB: most of the failed read ships
    writer = repo.writer()
    with pytest.raises(OSError):
        writer.add_file(FailingRead(failing))
    c = writer.add_file(io.BytesIO(failing + later))
    writer.flush()
    assert _read_back(repo, c) == failing + later
    # what is indexed is c's chunks and, of the failed read, only what had shipped
    assert set(c.chunk_ids) <= _indexed(repo)
    assert repo.verify(read_data=True).ok
