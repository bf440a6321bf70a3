"""What a repository stores, as the server's storage statistics count it (GetUserStorageStat,
the quota; cbs-api.md): bytes as stored (compressed and sealed, after dedupe), split into what
the newest snapshot uses (the data) and what only older snapshots use (the retention area).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from opencbs.destinations.base import Storage
from opencbs.engine.chunk_index import ChunkIndex
from opencbs.engine.entries import Entry
from opencbs.engine.packs import pack_sizes
from opencbs.engine.prune_scan import UsedSet
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.snapshot_format import RefScanner, SnapshotInfo
from opencbs.reports.vocabulary import EntryType

__all__ = ["NewestUse", "StorageUsage", "storage_usage"]

log = logging.getLogger(__name__)

_FILE = ord("F")


class Measurable(Protocol):
    """What ``storage_usage`` needs of a ``Repository``."""

    @property
    def storage(self) -> Storage: ...

    @property
    def index(self) -> ChunkIndex: ...

    def snapshot_ids(self) -> list[str]: ...

    def snapshot_info(self, snapshot_id: str) -> SnapshotInfo: ...

    def read_chunk(self, chunk_id: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """What a repository stores (bytes as stored: compressed and sealed, after dedupe):
    ``stored_size`` (every pack), ``data_size`` (the chunks the newest snapshot uses),
    ``retain_size`` (the chunks only older snapshots use: the retention area), the files of
    the newest snapshot (``data_count``), the file versions only older ones hold
    (``retain_count``: distinct contents), and the ``snapshot_count``."""

    stored_size: int
    data_size: int
    data_count: int
    retain_size: int
    retain_count: int
    snapshot_count: int


class NewestUse:
    """The chunks and file contents of a snapshot being committed, counted as its items pass
    (``observe``) into ``Repository.commit_snapshot``, so that ``storage_usage`` right after
    the job need not read the tree it just wrote (``snapshot_id`` set once it is committed)."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.chunks = UsedSet(capacity)
        self.contents = UsedSet(capacity)
        self.files = 0
        self.snapshot_id: str | None = None

    def observe(
        self, items: Iterable[tuple[Entry, Sequence[bytes]]]
    ) -> Iterator[tuple[Entry, Sequence[bytes]]]:
        """``items`` unchanged, each counted on its way."""
        chunks, contents = self.chunks, self.contents
        for entry, chunk_ids in items:
            if entry.etype is EntryType.FILE and entry.content_id is not None:
                self.files += 1
                contents.add(entry.content_id)
            for chunk_id in chunk_ids:
                chunks.add(chunk_id)
            yield entry, chunk_ids


def storage_usage(repo: Measurable, newest_use: NewestUse | None = None) -> StorageUsage:
    """Read every snapshot (newest first) and measure the repository; a snapshot that cannot
    be read is left out of the figures from the tree chunk that failed on (``verify`` reports
    it). Raises ``DestinationError``.

    Memory: the trees are read one chunk at a time, and chunks and contents are counted in
    ``prune_scan.UsedSet`` tables (8 bytes of ID each, 12-24 bytes a chunk), so measuring a
    100,000-file repository after each job adds a few MiB, not the 50 a dict of IDs and the
    whole trees took (``bench/README.md``). Two IDs with the same first 8 bytes would count
    as one (odds about 1 in 10^9 at a million chunks): these are figures, not a prune.
    ``newest_use``: the newest snapshot's figures counted as it was committed (its tree is
    then not read again), used when that snapshot is still the newest."""
    infos: list[SnapshotInfo] = []
    for sid in repo.snapshot_ids():
        try:
            infos.append(repo.snapshot_info(sid))
        except RepositoryError as exc:
            log.debug("storage figures leave out snapshot %s: %s", sid, exc)
    infos.sort(key=lambda i: (i.meta.time_ns, i.id), reverse=True)
    seeded = newest_use is not None and bool(infos) and newest_use.snapshot_id == infos[0].id
    if newest_use is not None and seeded:  # its chunks and contents counted as it was committed
        newest, current, data_count = newest_use.chunks, newest_use.contents, newest_use.files
        for tree_chunk in infos[0].tree:
            newest.add(tree_chunk)
    else:  # sized for the newest snapshot at once (a table grows by rehashing every key)
        size = 2 * infos[0].entry_count if infos else 0
        newest, current, data_count = UsedSet(size), UsedSet(size), 0
    every, older = UsedSet(), UsedSet()  # chunks of older snapshots; their other contents
    for number, info in enumerate(infos):
        if number == 0 and seeded:
            continue
        try:
            data_count += _measure_snapshot(
                repo, info, newest if number == 0 else every, (current, older), newest=number == 0
            )
        except RepositoryError as exc:
            log.debug("storage figures leave out snapshot %s: %s", info.id, exc)
    data = retain = 0
    for cid, length in repo.index.lengths():
        if cid in newest:
            data += length
        elif cid in every:
            retain += length
    stored = sum(pack_sizes(repo.storage).values())
    return StorageUsage(stored, data, data_count, retain, len(older), len(infos))


def _measure_snapshot(
    repo: Measurable,
    info: SnapshotInfo,
    chunks: UsedSet,
    contents: tuple[UsedSet, UsedSet],
    *,
    newest: bool,
) -> int:
    """Add the chunks of ``info``'s snapshot to ``chunks`` and its file contents to
    ``contents``: the ``newest`` snapshot's to the first table, an older one's not in the first
    to the second; returns the newest snapshot's file count (0 for an older one). Raises
    ``RepositoryError``."""
    current, older = contents
    files = 0
    scanner = RefScanner(f"snapshot {info.id} tree")
    for tree_chunk in info.tree:
        chunks.add(tree_chunk)
        for etype, content, ids in scanner.feed(repo.read_chunk(tree_chunk)):
            if etype == _FILE and content is not None:
                if newest:
                    files += 1
                    current.add(content)
                elif content in current:
                    continue  # the newest snapshot holds this content: its chunks are counted
                else:
                    older.add(content)
            for i in range(0, len(ids), 32):
                chunks.add_key(int.from_bytes(ids[i : i + 8], "little") or 1)
    scanner.finish()
    return files
