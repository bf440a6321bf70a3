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
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opencbs.destinations.base import ObjectNotFound, Storage
from opencbs.engine.chunk_index import (
    INDEX_PREFIX,
    ChunkIndex,
    encode_records,
    index_aad,
    index_records,
)
from opencbs.engine.crypto import Keys
from opencbs.engine.locks import LockTiming, RepositoryLock
from opencbs.engine.packs import PackBuilder, pack_name, pack_sizes
from opencbs.engine.prune_scan import (
    IndexView,
    Scanned,
    UsedSet,
    index_objects_of,
    only_copies,
    pack_records,
    read_header,
    scan_snapshots,
)
from opencbs.engine.repo_errors import CorruptData, RepositoryError
from opencbs.engine.repo_writer import store_pack
from opencbs.engine.snapshot_format import SnapshotInfo, snapshot_name
from opencbs.engine.usage import StorageUsage, storage_usage

__all__ = [
    "DELETIONS_PREFIX",
    "ForgetResult",
    "PendingDeletion",
    "PruneResult",
    "Prunable",
    "exclude_condemned",
    "forget_snapshots",
    "prune",
    "read_pending",
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
    """Mark, then sweep what is due (module docstring), reading the index one object at a
    time (``prune_scan``: memory bounded by the number of used chunks, about 60 bytes each,
    not by the index). Raises ``RepositoryLocked``, ``CorruptData`` (a snapshot cannot be
    read: nothing is deleted), ``DestinationError``."""
    opts = options or PruneOptions()
    started = time.monotonic()
    result = PruneResult(dry_run=opts.dry_run)
    storage, keys = repo.storage, repo.keys
    with RepositoryLock(storage, keys, "shared", "prune", timing=opts.timing):
        scan = _mark(repo, opts, result, progress)
    now = time.time_ns()
    due = [p for p in read_pending(storage, keys) if now - p.created_ns >= opts.grace * 1e9]
    if due and opts.dry_run:  # what the sweep would delete (unless a snapshot uses it again)
        sizes = pack_sizes(storage)
        packs = {p for d in due for p in d.packs} & sizes.keys()
        result.deleted = len(packs)
        result.bytes_freed = sum(sizes[p] for p in packs)
    if due and not opts.dry_run:
        with RepositoryLock(storage, keys, "exclusive", "prune", timing=opts.timing) as lock:
            _sweep(repo, due, result, lock=lock, known=scan, progress=progress)
    del scan
    sizes = pack_sizes(storage)
    pending = {p for d in read_pending(storage, keys) for p in d.packs} & sizes.keys()
    result.pending = len(pending)
    if not opts.dry_run:  # a dry run's are what it would condemn
        result.bytes_pending = sum(sizes[p] for p in pending)
    result.bytes_after = sum(sizes.values())
    if opts.usage:
        repo.reload_all_indexes()
        result.usage = storage_usage(repo)
    result.duration = time.monotonic() - started
    return result


def _condemned(storage: Storage, keys: Keys) -> set[str]:
    return {p for pending in read_pending(storage, keys) for p in pending.packs}


def _pack_use(
    repo: Prunable, used: UsedSet, condemned: set[str]
) -> tuple[IndexView, dict[str, list[int]]]:
    """Per pack not ``condemned``: ``[used bytes, indexed bytes]`` (sealed blobs), from one
    pass over the index; a used chunk stored in several packs counts as used in the first
    met only (its other copies are waste: a killed prune's repacked pack, two writers at
    once), so a later repack drops them. Packs are met in index-object order, then the packs
    no index lists."""
    view = IndexView()
    use: dict[str, list[int]] = {}
    counted = UsedSet()
    for pack_id, records in pack_records(repo.storage, repo.keys, view=view):
        if pack_id in condemned:
            continue
        row = use.setdefault(pack_id, [0, 0])
        for record in records:
            row[1] += record[2]
            cid = record[0]
            if cid in used and cid not in counted:
                counted.add(cid)
                row[0] += record[2]
    return view, use


def _mark(
    repo: Prunable, opts: PruneOptions, result: PruneResult, progress: Progress | None
) -> Scanned:
    """Phase 1: condemn unused packs and repack mostly unused ones (module docstring); returns
    what the snapshots' scan read."""
    storage = repo.storage
    if not opts.dry_run:
        for sid in repo.removed_leftovers():  # what an interrupted forget left
            storage.delete(snapshot_name(sid))
        clean = getattr(storage, "remove_stale_temporaries", None)
        if clean is not None:
            clean()  # what writes of a killed process left (temporary files, uploads)
    if progress is not None:
        progress("reading the snapshots")
    scan = scan_snapshots(repo)
    result.snapshots = len(scan.read)
    condemned_before = _condemned(storage, repo.keys)
    view, use = _pack_use(repo, scan.used, condemned_before)
    sizes = view.sizes
    result.bytes_before = sum(sizes.values())
    # a used pack's header is not waste: its unused bytes are its unused chunks'
    unused = {
        p: (total - used_bytes if used_bytes else sizes[p])
        for p, (used_bytes, total) in use.items()
        if p in sizes
    }
    doomed = [p for p in unused if use[p][0] == 0]
    if view.damaged:  # a pack in no readable index might be used: condemn none of them
        doomed = [p for p in doomed if p not in view.unindexed]
    # the share is of what stays: the used data (restic's --max-unused)
    limit = opts.max_unused * sum(row[0] for row in use.values())
    left = sum(unused.values()) - sum(unused[p] for p in doomed)
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
        kept = _repack(repo, repack, scan.used, result=result, sizes=sizes)
        chosen = [*doomed, *(p for p in repack if p not in kept)]
        result.condemned = len(chosen)
        if chosen:
            _write_pending(storage, repo.keys, chosen)
    return scan


#: Pack size of a prune's repacked packs (bytes; at most the repository's): what a repack
#: holds in memory at once.
REPACK_PACK_SIZE = 4 * 1024 * 1024


def _repack(
    repo: Prunable,
    packs: list[str],
    used: UsedSet,
    *,
    result: PruneResult,
    sizes: dict[str, int],
) -> set[str]:
    """Copy the used chunks of ``packs`` (from their own headers, read by range) into new
    packs, each chunk's seal checked first; returns the packs to keep after all (a header or
    chunk failed its check: it stays where it is)."""
    storage, keys = repo.storage, repo.keys
    target = min(repo.pack_target_size, REPACK_PACK_SIZE)
    kept: set[str] = set()
    builder = PackBuilder()
    for pack_id in packs:
        name = pack_name(pack_id)
        try:
            records = read_header(storage, keys, pack_id, sizes[pack_id])
        except CorruptData as exc:
            log.warning("keeping pack %s: %s", pack_id, exc)
            kept.add(pack_id)
            continue
        for cid, offset, length, stored, original in records:
            if cid not in used:
                continue
            blob = storage.get_range(name, offset, length)
            try:  # the seal (AES-GCM, the chunk ID its associated data) proves it intact
                keys.unseal(blob, cid, what=f"chunk {cid.hex()}")
            except CorruptData as exc:
                log.warning("keeping pack %s: %s", pack_id, exc)
                kept.add(pack_id)
                continue
            if len(builder) and builder.size + len(blob) > target:
                _store(repo, builder, result)
                builder = PackBuilder()
            builder.add(cid, blob, stored, original)
    if len(builder):
        _store(repo, builder, result)
    return kept


def _store(repo: Prunable, builder: PackBuilder, result: PruneResult) -> None:
    size = builder.size
    store_pack(repo.storage, repo.keys, builder)
    result.packs_written += 1
    result.bytes_written += size


def _sweep(
    repo: Prunable,
    due: list[PendingDeletion],
    result: PruneResult,
    *,
    lock: RepositoryLock,
    known: Scanned,
    progress: Progress | None,
) -> None:
    """Phase 2 under the exclusive lock: delete the due condemned packs no snapshot needs
    (``known``: what the mark's scan read; a snapshot never changes, so only those committed
    since are read now)."""
    storage, keys = repo.storage, repo.keys
    if progress is not None:
        progress("checking the condemned packs")
    scan = scan_snapshots(repo, known)
    doomed = {p for d in due for p in d.packs}
    view = IndexView()
    rescued = only_copies(storage, keys, doomed, used=scan.used, view=view)
    if rescued:
        log.warning("%d condemned packs hold data a snapshot uses now; they are kept", len(rescued))
        result.kept = len(rescued)
    delete = doomed - rescued
    if lock.lost.is_set():
        raise RepositoryError(
            "the exclusive lock was taken over during the prune", "run the prune again"
        )
    _drop_from_indexes(storage, keys, view, delete)  # new objects first, then the old deleted
    for pack_id in sorted(delete):
        if pack_id in view.sizes:
            storage.delete(pack_name(pack_id))
            result.deleted += 1
            result.bytes_freed += view.sizes[pack_id]
    for pending in due:
        storage.delete(pending.name)


#: Packs an index object a prune rewrites lists at most (so it reads back in bounded memory).
INDEX_OBJECT_PACKS = 64


def _drop_from_indexes(
    storage: Storage, keys: Keys, view: IndexView, gone: Collection[str]
) -> None:
    """Take packs out of the stored index: each index object listing one is replaced by new
    objects (of at most ``INDEX_OBJECT_PACKS`` packs) listing its other packs, written first;
    then it is deleted. A crash in between leaves duplicates, which are harmless. Raises
    ``CorruptData`` (an index object to rewrite is damaged), ``DestinationError``."""
    gone = set(gone)
    for name in index_objects_of(view, gone):
        plain = keys.unseal(storage.get(name), index_aad(name), what=name)
        kept = [(p, r) for p, r in index_records(plain, what=name) if p not in gone]
        del plain
        for i in range(0, len(kept), INDEX_OBJECT_PACKS):
            new = INDEX_PREFIX + secrets.token_hex(32)
            part = kept[i : i + INDEX_OBJECT_PACKS]
            storage.put(new, keys.seal(encode_records(part), index_aad(new)))
        storage.delete(name)
