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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opencbs.destinations.base import ObjectNotFound, Storage
from opencbs.engine.chunk_index import INDEX_PREFIX, USED, ChunkIndex
from opencbs.engine.crypto import Keys
from opencbs.engine.locks import LockTiming, RepositoryLock
from opencbs.engine.packs import DATA_PREFIX, PackBuilder, PackEntry, pack_id_of_name, pack_name
from opencbs.engine.repo_errors import ChunkNotFound, CorruptData, RepositoryError
from opencbs.engine.repo_writer import store_pack
from opencbs.engine.snapshot_format import RefScanner, SnapshotInfo, snapshot_name
from opencbs.engine.usage import StorageUsage, storage_usage

__all__ = [
    "DELETIONS_PREFIX",
    "ForgetResult",
    "PendingDeletion",
    "PruneResult",
    "Prunable",
    "UseScan",
    "exclude_condemned",
    "forget_snapshots",
    "prune",
    "read_pending",
    "mark_used",
]

log = logging.getLogger(__name__)

DELETIONS_PREFIX = "deletions/"
_FORMAT = "opencbs-pending-deletion"
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

    def reload_index(self) -> None: ...

    def reload_all_indexes(self) -> list[str]: ...

    def add_index_object(self, name: str, pack_id: str, entries: Sequence[PackEntry]) -> None: ...

    def index_objects_gone(self) -> bool: ...

    def drop_from_indexes(self, pack_ids: Collection[str]) -> None: ...

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
class UseScan:
    """What ``mark_used`` read: the snapshot IDs (``read``) and the chunks they use that no
    index lists (``missing``: only in packs a prune set aside, or lost)."""

    read: frozenset[str]
    missing: set[bytes]


def _snapshot_infos(repo: Prunable, skip: frozenset[str]) -> list[SnapshotInfo]:
    """Every stored snapshot not in ``skip``. Raises ``CorruptData`` for one that cannot be
    read (a prune must not guess what a damaged snapshot uses)."""
    infos: list[SnapshotInfo] = []
    for sid in repo.snapshot_ids():
        if sid in skip:
            continue
        try:
            infos.append(repo.snapshot_info(sid))
        except RepositoryError as exc:
            if not repo.storage.exists(snapshot_name(sid)):
                continue  # removed meanwhile by a forget
            raise CorruptData(
                f"snapshot {sid} cannot be read ({exc}); prune stops so as not to delete "
                "what it may use: run `opencbs verify`"
            ) from None
    return infos


def mark_used(
    repo: Prunable, progress: Progress | None = None, *, known: UseScan | None = None
) -> UseScan:
    """Mark in the repository's index every chunk a stored snapshot uses (``ChunkIndex
    .marker``: tree chunks and entries' chunks); with ``known`` only the snapshots it did not
    read. No set of chunk IDs is built: a used chunk's bit is set in its location. Raises
    ``CorruptData`` or ``ChunkNotFound`` (a snapshot cannot be read whole),
    ``DestinationError``."""
    skip = known.read if known is not None else frozenset()
    infos = _snapshot_infos(repo, skip)
    locations, missing = repo.index.marker()
    if known is not None:
        missing = known.missing
    for number, info in enumerate(infos):
        if progress is not None:
            progress(f"reading snapshot {number + 1} of {len(infos)}")
        for cid in info.tree:
            v = locations.get(cid)
            if v is None:
                missing.add(cid)
            else:
                locations[cid] = v | USED
        scanner = RefScanner(f"snapshot {info.id} tree")
        for tree_chunk in info.tree:
            scanner.mark(repo.read_chunk(tree_chunk), locations, missing)
        scanner.finish()
    return UseScan(skip | {i.id for i in infos}, missing)


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
        repo.reload_all_indexes()  # fresh: no chunk marked used, nothing set aside
        scan = _mark(repo, opts, result, progress)
    now = time.time_ns()
    due = [p for p in read_pending(storage, keys) if now - p.created_ns >= opts.grace * 1e9]
    if due and not opts.dry_run:
        with RepositoryLock(storage, keys, "exclusive", "prune", timing=opts.timing) as lock:
            _sweep(repo, due, result, lock=lock, known=scan, progress=progress)
    sizes = dict(_pack_sizes(storage))
    pending = {p for d in read_pending(storage, keys) for p in d.packs} & sizes.keys()
    result.pending = len(pending)
    if not opts.dry_run:  # a dry run's are what it would condemn
        result.bytes_pending = sum(sizes[p] for p in pending)
    result.bytes_after = sum(sizes.values())
    if opts.usage:
        result.usage = storage_usage(repo)
    result.duration = time.monotonic() - started
    return result


def _pack_sizes(storage: Storage) -> Iterable[tuple[str, int]]:
    for name, size in storage.list_sizes(DATA_PREFIX):
        pack_id = pack_id_of_name(name)
        if pack_id is not None:
            yield pack_id, size


def _condemned(storage: Storage, keys: Keys) -> set[str]:
    return {p for pending in read_pending(storage, keys) for p in pending.packs}


def _mark(
    repo: Prunable, opts: PruneOptions, result: PruneResult, progress: Progress | None
) -> UseScan:
    """Phase 1: condemn unused packs and repack mostly unused ones (module docstring); returns
    what the snapshots' scan read."""
    storage, index = repo.storage, repo.index
    if not opts.dry_run:
        for sid in repo.removed_leftovers():  # what an interrupted forget left
            storage.delete(snapshot_name(sid))
    scan = mark_used(repo, progress)
    result.snapshots = len(scan.read)
    condemned_before = _condemned(storage, repo.keys)
    sizes = dict(_pack_sizes(storage))
    result.bytes_before = sum(sizes.values())
    usage = index.pack_usage(excluded=condemned_before)
    unused: dict[str, int] = {}
    for pack_id, (used_bytes, _used, total_bytes, _count) in usage.items():
        if pack_id in condemned_before or pack_id not in sizes:
            continue
        # a used pack's header is not waste: its unused bytes are its unused chunks'
        unused[pack_id] = total_bytes - used_bytes if used_bytes else sizes[pack_id]
    doomed = [p for p in unused if usage[p][0] == 0]
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
        return scan
    if doomed or repack:
        kept = _repack(repo, repack, condemned_before, result=result, progress=progress)
        chosen = [*doomed, *(p for p in repack if p not in kept)]
        result.condemned = len(chosen)
        if chosen:
            _write_pending(storage, repo.keys, chosen)
    return scan


def _repack(
    repo: Prunable,
    packs: list[str],
    condemned: set[str],
    *,
    result: PruneResult,
    progress: Progress | None,
) -> set[str]:
    """Copy the used chunks of ``packs`` into new packs (each chunk's seal checked first);
    returns the packs to keep after all (a chunk failed its check: it stays where it is)."""
    storage, index = repo.storage, repo.index
    kept: set[str] = set()
    builder = PackBuilder()
    for number, (pack_id, chunks) in enumerate(index.used_in(set(packs), condemned).items()):
        if progress is not None:
            progress(f"repacking pack {number + 1} of {len(packs)}")
        data = storage.get(pack_name(pack_id))
        for cid, loc in chunks:
            blob = data[loc.offset : loc.offset + loc.length]
            try:  # the seal (AES-GCM, the chunk ID its associated data) proves it intact
                repo.keys.unseal(blob, cid, what=f"chunk {cid.hex()}")
            except CorruptData as exc:
                log.warning("keeping pack %s: %s", pack_id, exc)
                kept.add(pack_id)
                continue
            if len(builder) and builder.size + len(blob) > repo.pack_target_size:
                _store(repo, builder, result)
                builder = PackBuilder()
            builder.add(cid, blob, loc.stored_size, loc.original_size)
        del data
    if len(builder):
        _store(repo, builder, result)
    return kept


def _store(repo: Prunable, builder: PackBuilder, result: PruneResult) -> None:
    size = builder.size
    pack_id, entries = store_pack(repo.storage, repo.keys, builder)
    repo.add_index_object(INDEX_PREFIX + pack_id, pack_id, entries)
    result.packs_written += 1
    result.bytes_written += size


def _sweep(
    repo: Prunable,
    due: list[PendingDeletion],
    result: PruneResult,
    *,
    lock: RepositoryLock,
    known: UseScan,
    progress: Progress | None,
) -> None:
    """Phase 2 under the exclusive lock: delete the due condemned packs no snapshot needs
    (``known``: what the mark's scan read; a snapshot never changes, so only those committed
    since are read now, unless index objects the mark had read are gone: then all again)."""
    storage = repo.storage
    if repo.index_objects_gone():
        repo.reload_all_indexes()
        scan = mark_used(repo, progress)
    else:
        repo.reload_index()
        scan = mark_used(repo, progress, known=known)
    index = repo.index
    doomed = {p for d in due for p in d.packs}
    rescued = index.used_only_in(doomed, also=scan.missing)
    if rescued:
        log.warning("%d condemned packs hold data a snapshot uses now; they are kept", len(rescued))
        result.kept = len(rescued)
    delete = doomed - rescued
    if lock.lost.is_set():
        raise RepositoryError(
            "the exclusive lock was taken over during the prune", "run the prune again"
        )
    present = dict(_pack_sizes(storage))
    repo.drop_from_indexes(delete)  # new index objects first, then the old ones deleted
    for pack_id in sorted(delete):
        if pack_id in present:
            storage.delete(pack_name(pack_id))
            result.deleted += 1
            result.bytes_freed += present[pack_id]
    for pending in due:
        storage.delete(pending.name)


def require_chunks(repo: Prunable, chunk_ids: Iterable[bytes]) -> None:
    """Raise ``ChunkNotFound`` for the first chunk of ``chunk_ids`` no index lists."""
    for cid in chunk_ids:
        if cid not in repo.index:
            raise ChunkNotFound(cid)
