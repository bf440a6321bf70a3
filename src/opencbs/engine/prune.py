"""Forget and prune: removing snapshots, and freeing the data no snapshot needs, safely while
backups run (the repository layout is ``repository.py``'s; locks are ``locks.py``'s).

``forget_snapshots`` removes snapshots: a new snapshot list without them (they are in its
``removed`` set, so they never come back), then their objects. A crash between the two leaves
objects of removed snapshots: not damage; the next forget or prune deletes them.

``prune`` frees space in two phases, like kopia's maintenance, under the locks of ``locks.py``:

1. **Mark** (a shared lock: backups go on meanwhile). Read every stored snapshot and collect the
   chunks they use (tree and file chunks). A pack none of whose chunks is used is *condemned*;
   a pack with unused bytes is *repacked* (its used chunks copied, still sealed, into new packs,
   each checked first) and then condemned, most unused first, until the unused bytes left are
   at most ``max_unused`` of the repository. The condemned packs are written down in one
   ``deletions/<id>`` object (sealed JSON: when, which packs) - a *pending deletion*. A backup
   that starts later reads the pending deletions and never deduplicates against a condemned
   pack (``exclude_condemned``): it stores such a chunk again.
2. **Sweep** (the exclusive lock: no backup runs), for each pending deletion older than the
   grace period (``grace`` seconds; longer than any backup may take, so a backup that loaded
   the index before the mark has ended). Read the snapshots again: a condemned pack that
   holds a chunk a snapshot now uses and no other pack holds (a backup that deduplicated
   against it before the mark) is kept. Then, in this order: one new index object lists every
   remaining pack; the old index objects are deleted; the condemned packs are deleted; the
   pending deletions are deleted.

Crash safety: every step leaves a repository whose indexes list only packs that exist and
whose snapshots find every chunk; a crash before the new index leaves duplicates (harmless),
one after it leaves unindexed condemned packs (not damage: ``verify`` does not count them and
backups leave them alone) and the pending deletion, which the next prune finishes.
``grace=0`` marks and sweeps in one run: for when the caller knows no backup runs.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opencbs.destinations.base import ObjectNotFound, Storage
from opencbs.engine.chunk_index import INDEX_PREFIX, ChunkIndex, seal_index
from opencbs.engine.crypto import Keys
from opencbs.engine.locks import LockTiming, RepositoryLock
from opencbs.engine.packs import DATA_PREFIX, PackBuilder, pack_id_of_name, pack_name
from opencbs.engine.repo_errors import ChunkNotFound, CorruptData, RepositoryError
from opencbs.engine.repo_writer import store_pack
from opencbs.engine.snapshot_format import RefScanner, SnapshotInfo, snapshot_name

__all__ = [
    "DELETIONS_PREFIX",
    "ForgetResult",
    "PendingDeletion",
    "PruneResult",
    "Prunable",
    "References",
    "StorageUsage",
    "exclude_condemned",
    "forget_snapshots",
    "prune",
    "read_pending",
    "referenced_chunks",
    "storage_usage",
]

log = logging.getLogger(__name__)

DELETIONS_PREFIX = "deletions/"
_FORMAT = "opencbs-pending-deletion"
_FILE = ord("F")
#: Default share of the repository's bytes a prune may leave unused (restic's 5 %).
DEFAULT_MAX_UNUSED = 0.05
Progress = Callable[[str], None]


class Prunable(Protocol):
    """What prune needs of a ``Repository`` (a protocol: ``repository.py`` uses this module)."""

    @property
    def storage(self) -> Storage: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def index(self) -> ChunkIndex: ...

    @property
    def pack_target_size(self) -> int: ...

    def snapshot_ids(self) -> list[str]: ...

    def snapshot_info(self, snapshot_id: str) -> SnapshotInfo: ...

    def read_chunk(self, chunk_id: bytes) -> bytes: ...

    def open_chunk(self, chunk_id: bytes, blob: bytes, original_size: int) -> bytes: ...

    def reload_all_indexes(self) -> list[str]: ...

    def record_removed(self, removed: Iterable[str]) -> None: ...

    def removed_leftovers(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class PendingDeletion:
    """A ``deletions/<id>`` object: ``packs`` condemned at ``created_ns`` (ns since the
    epoch, the marking host's clock) by ``hostname``."""

    name: str
    created_ns: int
    packs: frozenset[str]
    hostname: str


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """``removed``: the snapshot IDs removed; ``leftovers``: objects of snapshots removed
    earlier that an interrupted forget had left, deleted now."""

    removed: tuple[str, ...]
    leftovers: tuple[str, ...]


@dataclass(slots=True)
class PruneResult:
    """What a prune did (sizes in bytes, ``duration`` in seconds): packs ``condemned`` now
    (of them ``repacked``, their used chunks copied into ``packs_written`` new packs of
    ``bytes_written``), ``deleted`` now (``bytes_freed``), ``pending`` (condemned, waiting for
    the grace period: ``bytes_pending``), ``kept`` (condemned earlier but used again),
    ``bytes_before`` and ``bytes_after`` (every pack), ``snapshots`` read; ``dry_run``;
    ``usage`` after it (with ``PruneOptions.usage``)."""

    snapshots: int = 0
    condemned: int = 0
    repacked: int = 0
    packs_written: int = 0
    bytes_written: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    pending: int = 0
    bytes_pending: int = 0
    kept: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    duration: float = 0.0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)
    usage: StorageUsage | None = None


# --- pending deletions ------------------------------------------------------------------------


def _aad(name: str) -> bytes:
    return b"opencbs:deletion:" + name.encode("ascii")


def read_pending(storage: Storage, keys: Keys) -> list[PendingDeletion]:
    """Every readable pending deletion, oldest first (an unreadable one is logged and
    ignored: its packs stay, which loses nothing). Raises ``DestinationError``."""
    found: list[PendingDeletion] = []
    for name in storage.list(DELETIONS_PREFIX):
        try:
            plain = keys.unseal(storage.get(name), _aad(name), what=name)
            doc: dict[str, Any] = json.loads(plain)
            if doc.get("format") != _FORMAT:
                raise ValueError("not a pending deletion")
            packs = frozenset(str(p) for p in doc["packs"])
            found.append(PendingDeletion(name, int(doc["created_ns"]), packs, str(doc["host"])))
        except ObjectNotFound:
            continue
        except (CorruptData, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable pending deletion %s: %s", name, exc)
    return sorted(found, key=lambda d: (d.created_ns, d.name))


def _write_pending(storage: Storage, keys: Keys, packs: Iterable[str]) -> PendingDeletion:
    created = time.time_ns()
    name = f"{DELETIONS_PREFIX}{created:020d}-{secrets.token_hex(8)}"
    chosen = frozenset(packs)
    host = socket.gethostname()
    doc = {"format": _FORMAT, "created_ns": created, "host": host, "packs": sorted(chosen)}
    storage.put(name, keys.seal(json.dumps(doc).encode("utf-8"), _aad(name)))
    return PendingDeletion(name, created, chosen, host)


def exclude_condemned(storage: Storage, keys: Keys, index: ChunkIndex) -> set[str]:
    """Make ``index`` forget the packs of every pending deletion (a backup must not
    deduplicate against them: a copy elsewhere takes a chunk's place, else the chunk is
    stored again); returns those pack IDs. Raises ``DestinationError``."""
    condemned: set[str] = set()
    for pending in read_pending(storage, keys):
        condemned |= pending.packs
    if condemned:
        index.forget_packs(condemned)
    return condemned


# --- what the snapshots use ---------------------------------------------------------------------


@dataclass(slots=True)
class References:
    """The chunks the stored snapshots use (``chunks``: chunk ID -> whether the newest
    snapshot uses it), how many ``snapshots`` were read, and the ``newest`` one's ID; with
    ``counting``: the files of the newest snapshot (``data_count``) and the file versions
    only older snapshots hold (``retain_count``: distinct contents)."""

    chunks: dict[bytes, bool]
    snapshots: int
    newest: str | None
    data_count: int = 0
    retain_count: int = 0


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """What a repository stores (bytes as stored: compressed and sealed, after dedupe):
    ``stored_size`` (every pack), ``data_size`` (the chunks the newest snapshot uses),
    ``retain_size`` (the chunks only older snapshots use: the retention area), the files of
    the newest snapshot (``data_count``) and the versions only older ones hold
    (``retain_count``), and the ``snapshot_count``. The figures of GetUserStorageStat
    (cbs-api.md)."""

    stored_size: int
    data_size: int
    data_count: int
    retain_size: int
    retain_count: int
    snapshot_count: int


def storage_usage(repo: Prunable, refs: References | None = None) -> StorageUsage:
    """The repository's ``StorageUsage`` (``refs``: from ``referenced_chunks(counting=True)``
    when read already). Raises as ``referenced_chunks`` does."""
    if refs is None:
        refs = referenced_chunks(repo, counting=True)
    data = retain = 0
    index = repo.index
    for cid, newest in refs.chunks.items():
        loc = index.get(cid)
        if loc is None:
            continue
        if newest:
            data += loc.length
        else:
            retain += loc.length
    stored = sum(size for _pack, size in _pack_sizes(repo.storage))
    return StorageUsage(stored, data, refs.data_count, retain, refs.retain_count, refs.snapshots)


def referenced_chunks(
    repo: Prunable, progress: Progress | None = None, *, counting: bool = False
) -> References:
    """Every chunk a stored snapshot uses (tree chunks and entries' chunks), newest snapshot
    first. Raises ``CorruptData`` or ``ChunkNotFound`` when a snapshot cannot be read whole (a
    prune must not guess what a damaged snapshot uses) and ``DestinationError``."""
    infos: list[SnapshotInfo] = []
    for sid in repo.snapshot_ids():
        try:
            infos.append(repo.snapshot_info(sid))
        except RepositoryError as exc:
            if not repo.storage.exists(snapshot_name(sid)):
                continue  # removed meanwhile by a forget
            raise CorruptData(
                f"snapshot {sid} cannot be read ({exc}); prune stops so as not to delete "
                "what it may use: run `opencbs verify`"
            ) from None
    infos.sort(key=lambda i: (i.meta.time_ns, i.id), reverse=True)
    chunks: dict[bytes, bool] = {}
    current: set[bytes] = set()  # with counting: the newest snapshot's contents
    older: set[bytes] = set()  # and the other contents of older ones
    data_count = 0
    for number, info in enumerate(infos):
        newest = number == 0
        if progress is not None:
            progress(f"reading snapshot {number + 1} of {len(infos)}")
        for cid in info.tree:
            chunks.setdefault(cid, newest)
        scanner = RefScanner(f"snapshot {info.id} tree")
        for tree_chunk in info.tree:
            for etype, content, ids in scanner.feed(repo.read_chunk(tree_chunk)):
                for i in range(0, len(ids), 32):
                    chunks.setdefault(ids[i : i + 32], newest)
                if counting and etype == _FILE and content is not None:
                    if newest:
                        data_count += 1
                        current.add(content)
                    elif content not in current:
                        older.add(content)
        scanner.finish()
    newest_id = infos[0].id if infos else None
    return References(chunks, len(infos), newest_id, data_count, len(older))


# --- forget -----------------------------------------------------------------------------------


def forget_snapshots(
    repo: Prunable, snapshot_ids: Iterable[str], *, timing: LockTiming | None = None
) -> ForgetResult:
    """Remove the snapshots ``snapshot_ids`` (module docstring), under a shared lock; their
    data stays until a prune. Raises ``RepositoryLocked``, ``DestinationError``."""
    ids = tuple(dict.fromkeys(snapshot_ids))
    with RepositoryLock(repo.storage, repo.keys, "shared", "forget", timing=timing):
        if ids:
            repo.record_removed(ids)
        leftovers = [s for s in repo.removed_leftovers() if s not in ids]
        for sid in (*ids, *leftovers):
            repo.storage.delete(snapshot_name(sid))
    if leftovers:
        log.info("deleted %d snapshot objects an interrupted forget had left", len(leftovers))
    return ForgetResult(ids, tuple(leftovers))


# --- prune ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneOptions:
    """``grace`` (seconds a condemned pack waits before it is deleted), ``max_unused`` (share
    of the repository's bytes that may stay unused, 0..1), ``dry_run``, lock ``timing``;
    ``usage``: also measure the ``StorageUsage`` after it."""

    grace: float = 24 * 3600.0
    max_unused: float = DEFAULT_MAX_UNUSED
    dry_run: bool = False
    timing: LockTiming | None = None
    usage: bool = False


def prune(
    repo: Prunable, options: PruneOptions | None = None, progress: Progress | None = None
) -> PruneResult:
    """Mark, then sweep what is due (module docstring). Raises ``RepositoryLocked``,
    ``CorruptData`` (a snapshot cannot be read: nothing is deleted), ``DestinationError``."""
    opts = options or PruneOptions()
    started = time.monotonic()
    result = PruneResult(dry_run=opts.dry_run)
    storage, keys = repo.storage, repo.keys
    with RepositoryLock(storage, keys, "shared", "prune", timing=opts.timing):
        repo.reload_all_indexes()
        refs: References | None = _mark(repo, opts, result, progress)
    if not opts.usage:
        refs = None  # not kept through the sweep, which reads its own
    due = [
        p for p in read_pending(storage, keys) if time.time_ns() - p.created_ns >= opts.grace * 1e9
    ]
    sizes = dict(_pack_sizes(storage))
    if due and not opts.dry_run:
        with RepositoryLock(storage, keys, "exclusive", "prune", timing=opts.timing) as lock:
            _sweep(repo, due, result, lock=lock, progress=progress)
        sizes = dict(_pack_sizes(storage))
    pending = {p for d in read_pending(storage, keys) for p in d.packs} & sizes.keys()
    result.pending = len(pending)
    if not opts.dry_run:  # a dry run's are what it would condemn
        result.bytes_pending = sum(sizes[p] for p in pending)
    result.bytes_after = sum(sizes.values())
    if refs is not None:
        result.usage = storage_usage(repo, refs)
    result.duration = time.monotonic() - started
    return result


def _pack_sizes(storage: Storage) -> Iterable[tuple[str, int]]:
    for name, size in storage.list_sizes(DATA_PREFIX):
        pack_id = pack_id_of_name(name)
        if pack_id is not None:
            yield pack_id, size


def _mark(
    repo: Prunable, opts: PruneOptions, result: PruneResult, progress: Progress | None
) -> References:
    """Phase 1: condemn unused packs and repack mostly unused ones (module docstring); returns
    what the snapshots use."""
    storage, index = repo.storage, repo.index
    if not opts.dry_run:
        for sid in repo.removed_leftovers():  # what an interrupted forget left
            storage.delete(snapshot_name(sid))
    # the snapshots are read with every pack indexed (a tree chunk may be in a condemned
    # pack still, deduplicated before it was condemned); then the condemned are set aside
    refs = referenced_chunks(repo, progress, counting=opts.usage)
    condemned_before = exclude_condemned(storage, repo.keys, index)
    result.snapshots = refs.snapshots
    sizes = dict(_pack_sizes(storage))
    result.bytes_before = sum(sizes.values())
    usage = index.pack_usage(refs.chunks)
    missing = [cid for cid in refs.chunks if cid not in index]
    if missing:  # used chunks only in condemned packs: the sweep keeps those packs
        log.info("%d used chunks are only in condemned packs", len(missing))
    unused: dict[str, int] = {}
    for pack_id, (used_bytes, _used, total_bytes, _count) in usage.items():
        if pack_id in condemned_before or pack_id not in sizes:
            continue
        # a used pack's header is not waste: its unused bytes are its unused chunks'
        unused[pack_id] = total_bytes - used_bytes if used_bytes else sizes[pack_id]
    doomed = [p for p, (used, *_rest) in usage.items() if p in unused and used == 0]
    # packs no index lists: a writer stopped between a pack and its index, or a sweep
    # stopped after the new index (a writer's pack indexed by the sweep is judged then)
    doomed += [p for p in sizes if not index.has_pack(p) and p not in condemned_before]
    limit = opts.max_unused * result.bytes_before
    left = sum(unused.values()) - sum(unused.get(p, 0) for p in doomed)
    repack: list[str] = []
    for pack_id in sorted(
        (p for p in unused if p not in doomed and unused[p] > 0), key=lambda p: -unused[p]
    ):
        if left <= limit:
            break
        repack.append(pack_id)
        left -= unused[pack_id]
    result.condemned = len(doomed) + len(repack)
    result.repacked = len(repack)
    if opts.dry_run:
        result.bytes_pending = sum(sizes[p] for p in (*doomed, *repack))
        return refs
    if not (doomed or repack):
        return refs
    kept = _repack(repo, repack, refs.chunks, result=result, progress=progress)
    chosen = [*doomed, *(p for p in repack if p not in kept)]
    result.condemned = len(chosen)
    if chosen:
        _write_pending(storage, repo.keys, chosen)
    return refs


def _repack(
    repo: Prunable,
    packs: list[str],
    used: dict[bytes, bool],
    *,
    result: PruneResult,
    progress: Progress | None,
) -> set[str]:
    """Copy the used chunks of ``packs`` into new packs (each chunk checked first); returns
    the packs to keep after all (a chunk failed its check: it stays where it is)."""
    storage, index = repo.storage, repo.index
    kept: set[str] = set()
    builder = PackBuilder()
    for number, (pack_id, chunks) in enumerate(index.chunks_in(set(packs)).items()):
        if progress is not None:
            progress(f"repacking pack {number + 1} of {len(packs)}")
        data = storage.get(pack_name(pack_id))
        for cid, loc in chunks:
            if cid not in used:
                continue
            blob = data[loc.offset : loc.offset + loc.length]
            try:
                repo.open_chunk(cid, blob, loc.original_size)
            except CorruptData as exc:
                log.warning("keeping pack %s: %s", pack_id, exc)
                kept.add(pack_id)
                continue
            if len(builder) and builder.size + len(blob) > repo.pack_target_size:
                _store(repo, builder, result)
                builder = PackBuilder()
            builder.add(cid, blob, loc.stored_size, loc.original_size)
    if len(builder):
        _store(repo, builder, result)
    return kept


def _store(repo: Prunable, builder: PackBuilder, result: PruneResult) -> None:
    size = builder.size
    pack_id, entries = store_pack(repo.storage, repo.keys, builder)
    repo.index.add_pack(pack_id, entries)
    result.packs_written += 1
    result.bytes_written += size


def _sweep(
    repo: Prunable,
    due: list[PendingDeletion],
    result: PruneResult,
    *,
    lock: RepositoryLock,
    progress: Progress | None,
) -> None:
    """Phase 2 under the exclusive lock: delete the due condemned packs no snapshot needs."""
    storage, keys = repo.storage, repo.keys
    old_indexes = repo.reload_all_indexes()
    index = repo.index
    doomed = {p for d in due for p in d.packs}
    refs = referenced_chunks(repo, progress)
    lose = index.only_in(doomed)
    rescued = {lose[cid] for cid in refs.chunks if cid in lose}
    del lose, refs
    if rescued:
        log.warning("%d condemned packs hold data a snapshot uses now; they are kept", len(rescued))
        result.kept = len(rescued)
    delete = doomed - rescued
    index.forget_packs(delete)
    if lock.lost.is_set():
        raise RepositoryError(
            "the exclusive lock was taken over during the prune", "run the prune again"
        )
    present = dict(_pack_sizes(storage))
    name = INDEX_PREFIX + secrets.token_hex(32)
    storage.put(name, seal_index(keys, name, index.entries_by_pack()))
    for old in old_indexes:
        storage.delete(old)
    for pack_id in sorted(delete):
        if pack_id in present:
            storage.delete(pack_name(pack_id))
            result.deleted += 1
            result.bytes_freed += present[pack_id]
    for pending in due:
        storage.delete(pending.name)
    repo.reload_all_indexes()


def require_chunks(repo: Prunable, chunk_ids: Iterable[bytes]) -> None:
    """Raise ``ChunkNotFound`` for the first chunk of ``chunk_ids`` no index lists."""
    for cid in chunk_ids:
        if cid not in repo.index:
            raise ChunkNotFound(cid)
