"""What a repository stores (``engine.usage.storage_usage``, cbs-api.md §11) on a real
repository in memory: the newest snapshot's data, what only older ones keep (the retention
area), and the same figures when the newest snapshot was counted as it was committed
(``NewestUse``: the job's tree is then not read again)."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

from opencbs.destinations import MemoryStorage
from opencbs.engine.chunker import ChunkerParams
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.engine.usage import NewestUse, storage_usage
from opencbs.reports.vocabulary import EntryType

FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
CHUNKER = ChunkerParams(min_size=1024, avg_size=2048, max_size=4096)


def _content(seed: str, size: int = 3000) -> bytes:
    return random.Random(seed).randbytes(size)


def _items(
    repo: Repository, day: int, files: dict[str, bytes]
) -> list[tuple[Entry, Sequence[bytes]]]:
    with repo.writer() as w:
        results = {name: w.add_file(io.BytesIO(data)) for name, data in files.items()}
    items: list[tuple[Entry, Sequence[bytes]]] = [
        (Entry(b"/src", EntryType.DIRECTORY, 0, day, day, 0o40755, 0, 0, 1, 1), ())
    ]
    for n, name in enumerate(sorted(files)):
        r = results[name]
        entry = Entry(
            b"/src/" + name.encode(), EntryType.FILE, len(files[name]), day, day, 0o100644,
            0, 0, n + 2, 1, content_id=r.content_id,
        )  # fmt: skip
        items.append((entry, r.chunk_ids))
    return items


def _meta(day: int) -> SnapshotMeta:
    return SnapshotMeta(
        time_ns=1_700_000_000_000_000_000 + day * 86_400_000_000_000,
        set_id="1",
        destination_id="2",
        job_id=f"job-{day}",
        hostname="host",
    )


def test_figures_are_the_same_whether_the_newest_tree_is_read_or_was_counted() -> None:
    repo = Repository.init(MemoryStorage(), "pw", kdf=FAST_KDF, chunker=CHUNKER)
    files = {f"f{i}": _content(f"f{i}", 2000 + 900 * i) for i in range(8)}
    repo.commit_snapshot(_meta(1), _items(repo, 1, files))
    files["f1"] = _content("f1 changed")  # the old f1 only in the first snapshot
    files["dup"] = files["f2"]  # the same content under another name
    del files["f3"]
    repo.commit_snapshot(_meta(2), _items(repo, 2, files))
    files["f4"] = _content("f4 changed", 9000)
    files["new"] = _content("new", 5000)
    counted = NewestUse()
    newest_id = repo.commit_snapshot(_meta(3), counted.observe(_items(repo, 3, files)))
    counted.snapshot_id = newest_id

    read = storage_usage(repo)
    seeded = storage_usage(repo, counted)
    assert seeded == read
    assert read.snapshot_count == 3
    assert read.data_count == len(files)  # "dup" is a file of its own
    # retention: old f1, f3, old f4, each content once
    assert read.retain_count == 3
    assert 0 < read.retain_size < read.data_size < read.stored_size

    # a seed for another snapshot (not the newest any more) is not used: the tree is read
    stale = NewestUse()
    stale.snapshot_id = "0" * 64
    assert storage_usage(repo, stale) == read
