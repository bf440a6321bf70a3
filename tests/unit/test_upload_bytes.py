"""What a job wrote to its destination (``UploadSize``, cbs-api.md §7; issue 15, point 12),
counted by the repository as it writes: ``Writer.stored_bytes`` and ``Repository.stored_bytes``
equal, to the byte, the growth of the destination's packs, index objects and snapshots, also
after deduplication (a second copy of stored content adds nothing) and for a writer closed
before its end (a stopped job); a spooled finish keeps the figure for a later delivery. The
report's sizes of a symbolic link are its target's length.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from opencbs.agent.report_entries import FileSizes, entry_sizes, file_entry
from opencbs.agent.spool import FinishRecord, JobSpool, JobStart
from opencbs.destinations.memory import MemoryStorage
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.classify import Change, Reason
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.reports.vocabulary import EntryType, JobStatus, ReportList

PASSWORD = "upload bytes"
CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
PACK_SIZE = 256 * 1024
#: What a job adds to the repository (``Repository.stored_bytes``).
ADDED = ("data/", "index/", "snapshots/")


def _repo(storage: MemoryStorage) -> Repository:
    return Repository.init(
        storage,
        PASSWORD,
        chunker=CHUNKS,
        pack_target_size=PACK_SIZE,
        kdf=KdfParams(time_cost=1, memory_kib=8, parallelism=1),
    )


def _bytes(storage: MemoryStorage, prefixes: tuple[str, ...] = ADDED) -> int:
    return sum(size for p in prefixes for _, size in storage.list_sizes(p))


def _entry(path: bytes, size: int, content_id: bytes | None = None) -> Entry:
    return Entry(path, EntryType.FILE, size, 1, 1, 0o100644, 0, 0, 7, 9, content_id=content_id)


def _meta(job_id: str) -> SnapshotMeta:
    return SnapshotMeta(
        time_ns=1_700_000_000_000_000_000,
        set_id="1",
        destination_id="2",
        job_id=job_id,
        hostname="host",
        sources=(b"/src",),
        parent_id=None,
    )


def test_stored_bytes_are_the_growth_of_the_destination() -> None:
    storage = MemoryStorage()
    repo = _repo(storage)
    data = random.Random(1).randbytes(1_500_000)
    before = _bytes(storage)
    writer = repo.writer()
    result = writer.add_file(io.BytesIO(data))
    writer.flush()
    content = _bytes(storage, ("data/", "index/")) - before
    assert writer.stored_bytes == repo.stored_bytes == content > len(data)  # random: sealed whole
    entry = _entry(b"/src/a", len(data), result.content_id)
    repo.commit_snapshot(_meta("2026-01-01-00-00-00"), [(entry, result.chunk_ids)])
    assert repo.stored_bytes == _bytes(storage) - before  # and the tree and the snapshot
    assert repo.stored_bytes - content < 4096


def test_a_second_copy_of_stored_content_uploads_only_its_snapshot() -> None:
    storage = MemoryStorage()
    repo = _repo(storage)
    data = random.Random(2).randbytes(2_000_000)
    with repo.writer() as w:
        first = w.add_file(io.BytesIO(data))
    repo.commit_snapshot(
        _meta("2026-01-01-00-00-00"),
        [(_entry(b"/src/a", len(data), first.content_id), first.chunk_ids)],
    )
    base, grown = repo.stored_bytes, _bytes(storage)

    with repo.writer() as w:
        again = w.add_file(io.BytesIO(data))
    assert w.stored_bytes == 0  # every chunk deduplicated: nothing written
    assert again.stored_size > len(data) * 0.99  # what the old UploadSize counted
    items = [
        (_entry(b"/src/a", len(data), first.content_id), first.chunk_ids),
        (_entry(b"/src/b", len(data), again.content_id), again.chunk_ids),
    ]
    repo.commit_snapshot(_meta("2026-01-01-00-01-00"), items)
    uploaded = repo.stored_bytes - base
    assert uploaded == _bytes(storage) - grown  # the tree's pack, its index, the snapshot
    assert 0 < uploaded < 4096


def test_a_writer_closed_early_counts_the_packs_it_stored() -> None:
    """A stopped job: its open pack is dropped, the finished ones are stored and counted.
    ``add_chunk`` waits for each chunk's compression, so the packs it filled are finished."""
    storage = MemoryStorage()
    repo = _repo(storage)
    rng = random.Random(3)
    chunks = [rng.randbytes(100_000) for _ in range(9)]  # 900 kB: 3 packs of 256 KiB, and more
    writer = repo.writer()
    for chunk in chunks:
        writer.add_chunk(chunk)
    writer.close()
    assert writer.stored_bytes == repo.stored_bytes == _bytes(storage)
    assert 2 * PACK_SIZE < writer.stored_bytes < 900_000  # the open pack was dropped


def _change(entry: Entry, kind: ReportList = ReportList.NEW) -> Change:
    return Change(kind, entry, Reason.NEW_PATH)


def test_a_link_entry_shows_its_targets_length() -> None:
    target = b"../some/where/\xffraw"
    link = Entry(
        b"/src/link", EntryType.LINK, len(target), 1, 1, 0o120777, 0, 0, 3, 9, link_target=target
    )
    assert entry_sizes(link, None) == FileSizes(len(target), len(target))
    for kind in (ReportList.NEW, ReportList.DEL, ReportList.PMT):
        entry = file_entry(_change(link, kind), None)
        assert (entry.type, entry.size, entry.unzip_size) == ("L", 18, 18)
    directory = Entry(b"/src/d", EntryType.DIRECTORY, 4096, 1, 1, 0o40755, 0, 0, 4, 9)
    assert (file_entry(_change(directory), FileSizes(5, 9)).size, entry_sizes(directory, None)) == (
        0,
        FileSizes(),
    )
    regular = _entry(b"/src/f", 9)
    assert file_entry(_change(regular), FileSizes(5, 9)).size == 5


def test_a_spooled_finish_keeps_the_uploaded_bytes(tmp_path: Path) -> None:
    """A report delivered later (``agent.delivery``) finishes its job with the figure the job
    had; the finish of an older agent's spool has none (the server then keeps its own)."""
    spool = JobSpool.create(tmp_path, JobStart("1", "2", 1_700_000_000_000))
    finish = FinishRecord(JobStatus.STOP_BY_USER, 10, 4, 1_700_000_001_000, uploaded_bytes=123)
    spool.write_finish(finish)
    assert JobSpool.open(spool.path).finish() == finish
    older = json.loads((spool.path / "finish.json").read_text())
    del older["uploaded_bytes"]
    (spool.path / "finish.json").write_text(json.dumps(older))
    assert JobSpool.open(spool.path).finish() == FinishRecord(
        JobStatus.STOP_BY_USER, 10, 4, 1_700_000_001_000
    )
