"""What a repository stores, as the server's storage statistics count it (GetUserStorageStat,
the quota; cbs-api.md): bytes as stored (compressed and sealed, after dedupe), split into what
the newest snapshot uses (the data) and what only older snapshots use (the retention area).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from opencbs.destinations.base import Storage
from opencbs.engine.chunk_index import ChunkIndex
from opencbs.engine.packs import pack_sizes
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.snapshot_format import RefScanner, SnapshotInfo

__all__ = ["StorageUsage", "storage_usage"]

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


def storage_usage(repo: Measurable) -> StorageUsage:
    """Read every snapshot (newest first) and measure the repository; a snapshot that cannot
    be read is left out of the figures (``verify`` reports it). Raises ``DestinationError``."""
    infos: list[SnapshotInfo] = []
    for sid in repo.snapshot_ids():
        try:
            infos.append(repo.snapshot_info(sid))
        except RepositoryError as exc:
            log.debug("storage figures leave out snapshot %s: %s", sid, exc)
    infos.sort(key=lambda i: (i.meta.time_ns, i.id), reverse=True)
    chunks: dict[bytes, bool] = {}  # chunk ID -> the newest snapshot uses it
    current: set[bytes] = set()  # the newest snapshot's contents
    older: set[bytes] = set()  # the other contents of older ones
    data_count = 0
    for number, info in enumerate(infos):
        newest = number == 0
        for cid in info.tree:
            chunks.setdefault(cid, newest)
        scanner = RefScanner(f"snapshot {info.id} tree")
        try:
            trees = [repo.read_chunk(tree_chunk) for tree_chunk in info.tree]
        except RepositoryError as exc:
            log.debug("storage figures leave out snapshot %s: %s", info.id, exc)
            continue
        for tree in trees:
            for etype, content, ids in scanner.feed(tree):
                for i in range(0, len(ids), 32):
                    chunks.setdefault(ids[i : i + 32], newest)
                if etype == _FILE and content is not None:
                    if newest:
                        data_count += 1
                        current.add(content)
                    elif content not in current:
                        older.add(content)
        scanner.finish()
    data = retain = 0
    index = repo.index
    for cid, newest in chunks.items():
        loc = index.get(cid)
        if loc is not None:
            if newest:
                data += loc.length
            else:
                retain += loc.length
    stored = sum(pack_sizes(repo.storage).values())
    return StorageUsage(stored, data, data_count, retain, len(older), len(infos))
