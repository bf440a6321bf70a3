"""The repository: the on-destination format of a backup set's content store.

Layout on the destination (every object but the key file is sealed with AES-256-GCM)::

    keys/default             key file: KDF parameters + wrapped keys (JSON, crypto.py)
    config                   repository config (sealed JSON: ID, chunker sizes, pack size, zstd)
    data/<2 hex>/<64 hex>    pack files (packs.py)
    index/<64 hex>           index objects: chunk ID -> pack, offset, length, sizes (chunk_index.py)
    snapshots/<64 hex>       snapshots: metadata + tree chunk IDs (snapshot_format.py)
    manifest                 the snapshot list: generation + every snapshot ID (manifest.py)

Write order makes every crash safe: a pack, then its index object, and a snapshot, in one
atomic ``put``, once every chunk it references is indexed; then a new snapshot list names it
(a snapshot stored but not yet listed is *unrecorded*, not damage: the next list names it).
Packs no snapshot references are harmless (a future prune may delete them). Without the
password the destination shows only object names, sizes and counts: no content, no file names,
no chunk IDs.

Typical use::

    repo = Repository.open(storage, password)
    with repo.writer() as w:
        result = w.add_file(path)            # FileResult: chunk IDs, content ID, sizes
    snapshot_id = repo.commit_snapshot(meta, [(entry, result.chunk_ids), ...])
    info, items = repo.load_snapshot(snapshot_id)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import secrets
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opencbs.destinations.base import ObjectNotFound, PreconditionFailed, Storage
from opencbs.engine.chunk_index import (
    INDEX_PREFIX,
    ChunkIndex,
    ChunkLocation,
    index_aad,
    index_records,
    seal_index,
)
from opencbs.engine.chunker import ChunkerParams, chunk_iter
from opencbs.engine.compression import decode_payload
from opencbs.engine.crypto import KdfParams, Keys, unwrap_keys, wrap_keys
from opencbs.engine.entries import Entry, display_path
from opencbs.engine.locks import Kind, LockTiming, RepositoryLock
from opencbs.engine.manifest import (
    MANIFEST_NAME,
    Anchor,
    ListCheck,
    Manifest,
    check_snapshot_list,
    read_manifest,
    read_manifest_versioned,
    write_manifest,
)
from opencbs.engine.packs import (
    DATA_PREFIX,
    PackEntry,
    pack_id_of_name,
    pack_name,
    read_pack_header,
)
from opencbs.engine.prune import exclude_condemned
from opencbs.engine.repo_errors import (
    ChunkNotFound,
    CorruptData,
    DamagedConfig,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    WrongPassword,
)
from opencbs.engine.repo_verify import VerifyProblem, VerifyResult, verify_repository
from opencbs.engine.repo_writer import ChunkResult, FileResult, Writer, upload_concurrency
from opencbs.engine.snapshot_format import (
    SNAPSHOT_PREFIX,
    SnapshotInfo,
    SnapshotMeta,
    TreeDecoder,
    TreeItem,
    decode_snapshot,
    encode_snapshot,
    encode_tree,
    snapshot_aad,
    snapshot_name,
)
from opencbs.model.sets import DEFAULT_COMPRESSION_LEVEL
from opencbs.reports.wording import plural

__all__ = [
    "ChunkLocation",
    "ChunkNotFound",
    "ChunkResult",
    "CorruptData",
    "FileResult",
    "Repository",
    "RepositoryConfig",
    "RepositoryError",
    "RepositoryExists",
    "RepositoryNotFound",
    "SnapshotInfo",
    "SnapshotMeta",
    "SnapshotNotFound",
    "VerifyProblem",
    "VerifyResult",
    "Writer",
    "WrongPassword",
]

log = logging.getLogger(__name__)

KEYFILE_NAME = "keys/default"
CONFIG_NAME = "config"
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
#: Tries of ``record_snapshots`` against other writers of the snapshot list.
LIST_WRITE_ATTEMPTS = 10
_CONFIG_AAD = b"opencbs:config"
_CONFIG_FORMAT = "opencbs-repository"
_ID_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class RepositoryConfig:
    """Settings fixed at ``init`` and shared by every writer: ``chunker`` sizes (bytes),
    ``pack_target_size`` (bytes), default zstd ``compression_level``, random ``repo_id``;
    ``snapshot_list``: the repository has a snapshot list (``manifest.py``; absent from the
    config of a repository made before it, until its first list is written)."""

    repo_id: str
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    pack_target_size: int = DEFAULT_PACK_SIZE
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    snapshot_list: bool = False

    def to_bytes(self) -> bytes:
        """The JSON plaintext of the ``config`` object."""
        c = self.chunker
        doc = {
            "format": _CONFIG_FORMAT,
            "version": 1,
            "repo_id": self.repo_id,
            "chunker": {"min_size": c.min_size, "avg_size": c.avg_size, "max_size": c.max_size},
            "pack_target_size": self.pack_target_size,
            "compression_level": self.compression_level,
        }
        if self.snapshot_list:  # an optional key: earlier opencbs versions read it still
            doc["snapshot_list"] = True
        return json.dumps(doc, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, plain: bytes) -> RepositoryConfig:
        """Inverse of ``to_bytes``; raises ``RepositoryError`` for an unknown format."""
        try:
            doc: dict[str, Any] = json.loads(plain)
            if doc["format"] != _CONFIG_FORMAT or doc["version"] != 1:
                raise ValueError(f"unsupported repository version {doc.get('version')!r}")
            ch = doc["chunker"]
            return cls(
                repo_id=str(doc["repo_id"]),
                chunker=ChunkerParams(
                    int(ch["min_size"]), int(ch["avg_size"]), int(ch["max_size"])
                ),
                pack_target_size=int(doc["pack_target_size"]),
                compression_level=int(doc["compression_level"]),
                snapshot_list=doc.get("snapshot_list") is True,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"Unreadable repository config: {exc}") from exc


def _require_empty(storage: Storage) -> None:
    """``init`` writes only into an empty destination: never over an object of someone
    else's (a ``config`` file of another program in a folder named as a destination, issue
    11). Raises ``RepositoryError`` naming the first object found."""
    found = next(iter(storage.list()), None)
    if found is not None:
        raise RepositoryError(
            f"{storage} is not empty and holds no repository (it has {found!r})",
            "choose an empty or new folder as the destination",
        )


class Repository:
    """An opened repository. Create with ``init`` or ``open``.

    Not thread-safe: use a repository and its writers from one thread (``commit_snapshot``
    flushes every writer it made). Several processes may write to one destination at once:
    object names never collide and chunks they both store are merely stored twice.
    """

    def __init__(
        self, storage: Storage, keys: Keys, config: RepositoryConfig, kdf: KdfParams
    ) -> None:
        """Internal: use ``init`` or ``open``."""
        self.storage = storage
        self.keys = keys
        self.config = config
        self._kdf = kdf
        self._index = ChunkIndex()
        self._index_names: set[str] = set()
        self._load_problems: list[VerifyProblem] = []
        self._writers: weakref.WeakSet[Writer] = weakref.WeakSet()
        self._authentic: set[str] = set()  # snapshot IDs read and authenticated
        self._generation_floor = 0  # the next list's generation exceeds this (an anchor's)
        #: The snapshot list this repository last wrote (``record_snapshots``), or ``None``.
        self.recorded: Manifest | None = None
        self._stored_bytes = 0  # ``stored_bytes``

    # Creating and opening ------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        password: str | bytes,
        *,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        chunker: ChunkerParams | None = None,
        pack_target_size: int = DEFAULT_PACK_SIZE,
        kdf: KdfParams | None = None,
    ) -> Repository:
        """Create a new repository in an empty destination and return it opened.

        Raises ``RepositoryExists`` if the destination already holds a key file,
        ``RepositoryError`` if it holds anything else (nothing is written over), and
        ``DestinationError`` if it cannot be written. ``kdf`` sets the Argon2id cost (defaults:
        8 passes over 24 MiB, ``crypto.KdfParams``).
        """
        if storage.exists(KEYFILE_NAME):
            raise RepositoryExists(str(storage))
        _require_empty(storage)
        if pack_target_size < 1024:
            raise ValueError("pack_target_size must be at least 1 KiB")
        keys = Keys.generate()
        kdf = kdf or KdfParams()
        config = RepositoryConfig(
            repo_id=secrets.token_hex(16),
            chunker=chunker or ChunkerParams(),
            pack_target_size=pack_target_size,
            compression_level=compression_level,
            snapshot_list=True,
        )
        # The key file first: a creation killed halfway leaves a key file that the password
        # opens and no config, which ``open`` completes (``_finish_init``); never a folder of
        # loose objects that the next job must refuse as someone else's. Written only if
        # absent: of two agents creating a repository in one place at once, one wins and the
        # other's keys never replace the winner's (issue 13).
        try:
            storage.put_if(KEYFILE_NAME, wrap_keys(keys, password, kdf), version=None)
        except PreconditionFailed:
            raise RepositoryExists(str(storage)) from None
        return cls._finish_init(storage, keys, kdf, config)

    @classmethod
    def _finish_init(
        cls, storage: Storage, keys: Keys, kdf: KdfParams, config: RepositoryConfig
    ) -> Repository:
        """Write the snapshot list (generation 1) and then the config of a repository whose
        key file is stored; the config last, so it is present only in a whole repository."""
        write_manifest(storage, keys, 1, ())
        storage.put(CONFIG_NAME, keys.seal(config.to_bytes(), _CONFIG_AAD))
        log.debug("initialised repository %s in %s", config.repo_id, storage)
        return cls(storage, keys, config, kdf)

    @classmethod
    def open(
        cls, storage: Storage, password: str | bytes, *, load_index: bool = True
    ) -> Repository:
        """Open an existing repository and load its index (every ``index/`` object; not with
        ``load_index=False``, for work on snapshots only: forget, listing).

        Raises ``RepositoryNotFound`` (no key file), ``WrongPassword``, ``DamagedConfig`` (a
        ``CorruptData``: the config missing or damaged) or ``DestinationError``.
        """
        try:
            keyfile = storage.get(KEYFILE_NAME)
        except ObjectNotFound:
            raise RepositoryNotFound(str(storage)) from None
        keys, kdf = unwrap_keys(keyfile, password)
        try:
            sealed = storage.get(CONFIG_NAME)
        except ObjectNotFound:
            if set(storage.list()) <= {KEYFILE_NAME, MANIFEST_NAME}:
                # a creation killed before its config (``init``): the password opened the key
                # file, so the folder is the owner's; finish it with the default settings
                log.warning("%s: completing a repository whose creation was interrupted", storage)
                config = RepositoryConfig(repo_id=secrets.token_hex(16), snapshot_list=True)
                return cls._finish_init(storage, keys, kdf, config)
            raise DamagedConfig(str(storage), "missing") from None
        try:
            config = RepositoryConfig.from_bytes(keys.unseal(sealed, _CONFIG_AAD, what="config"))
        except CorruptData as exc:
            raise DamagedConfig(str(storage), exc.message.removeprefix("config: ")) from None
        repo = cls(storage, keys, config, kdf)
        if load_index:
            repo.reload_index()
        return repo

    def change_password(self, new_password: str | bytes, kdf: KdfParams | None = None) -> None:
        """Re-wrap the keys under a new password (fresh salt; ``kdf`` may change the cost).
        Stored data is untouched. Raises ``DestinationError``."""
        self._kdf = kdf or KdfParams(
            self._kdf.time_cost, self._kdf.memory_kib, self._kdf.parallelism
        )
        self.storage.put(KEYFILE_NAME, wrap_keys(self.keys, new_password, self._kdf))

    # Index ---------------------------------------------------------------------------------

    def reload_index(self, listed: Iterable[str] | None = None) -> None:
        """Read index objects not yet loaded (those written by other writers since ``open``);
        ``listed``: the ``index/`` names when the caller listed them already.

        A damaged index object is skipped (logged at DEBUG; ``verify`` reports it, once; its
        chunks are then unknown until ``recover_indexes``)."""
        every = self.storage.list(INDEX_PREFIX) if listed is None else listed
        names = [n for n in every if n not in self._index_names]
        for name, blob in self._read_each(names):
            try:
                if isinstance(blob, ObjectNotFound):
                    raise blob
                plain = self.keys.unseal(blob, index_aad(name), what=name)
                packs = list(index_records(plain, what=name))
            except (CorruptData, ObjectNotFound) as exc:
                why = str(exc).removeprefix(f"{name}: ")
                log.debug("skipping index %s: %s", name, why)
                self._load_problems.append(VerifyProblem(name, why))
                continue
            del plain
            for pack_id, records in packs:
                self._index.add_records(pack_id, records)
            self._index_names.add(name)

    def reload_all_indexes(self) -> list[str]:
        """Forget the loaded index and read every index object again (after a prune rewrote
        them); returns the names of the objects loaded. Raises ``DestinationError``."""
        self._index = ChunkIndex()
        self._index_names = set()
        self._load_problems = []
        self.reload_index()
        return sorted(self._index_names)

    def refresh_index(self) -> bool:
        """Bring the loaded index up to date, as a job does once it holds its lock: when an
        index object it loaded is gone (a prune's sweep rewrote it, or merged it), every index
        object is read again (``reload_all_indexes``; returns ``True``); otherwise only the new
        ones are read (``reload_index``; ``False``). So a backup whose repository was opened
        before a prune's delete phase never takes the packs that prune deleted for missing
        data. Raises ``DestinationError``."""
        present = set(self.storage.list(INDEX_PREFIX))
        if self._index_names - present:
            self.reload_all_indexes()
            return True
        self.reload_index(sorted(present))
        return False

    def _read_each(self, names: list[str]) -> Iterator[tuple[str, bytes | ObjectNotFound]]:
        """Each object of ``names`` in order, read several at a time from a storage that
        uploads several at a time (an object store: each read waits on the network,
        ``repo_writer.upload_concurrency``); a missing one as its ``ObjectNotFound``. Raises
        ``DestinationError``."""

        def read(name: str) -> bytes | ObjectNotFound:
            try:
                return self.storage.get(name)
            except ObjectNotFound as exc:
                return exc

        workers = upload_concurrency(self.storage)
        if workers < 2 or len(names) < 2:
            yield from ((n, read(n)) for n in names)
            return
        with ThreadPoolExecutor(min(2 * workers, len(names))) as pool:
            yield from zip(names, pool.map(read, names), strict=True)

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether an index lists the chunk (it is stored in a finished pack)."""
        return chunk_id in self._index

    def chunk_location(self, chunk_id: bytes) -> ChunkLocation | None:
        """Where the chunk is stored (pack, byte range, sizes), or ``None``."""
        return self._index.get(chunk_id)

    def compact_indexes(self) -> int:
        """Merge every loaded index object into one new object, then delete the merged ones;
        returns how many were merged. Safe against crashes (duplicates are harmless) and against
        concurrent writers (their new objects are not touched)."""
        merged = sorted(self._index_names)
        if len(merged) < 2:
            return 0
        name = INDEX_PREFIX + secrets.token_hex(32)
        packs = [
            (pid, [PackEntry(cid, loc.offset, loc.length, loc.stored_size, loc.original_size)
                   for cid, loc in items])
            for pid, items in self._index.by_pack()
        ]  # fmt: skip
        self.storage.put(name, seal_index(self.keys, name, packs))
        self._index_names.add(name)
        for old in merged:
            self.storage.delete(old)
            self._index_names.discard(old)
        return len(merged)

    def recover_indexes(self) -> list[str]:
        """Index every pack that no index lists (a writer stopped between a pack and its index,
        or an index was lost) from the pack's own header; returns the recovered pack IDs.
        Damaged packs are skipped with a warning. Raises ``DestinationError``."""
        recovered: list[str] = []
        for name in self.storage.list(DATA_PREFIX):
            pack_id = pack_id_of_name(name)
            if pack_id is None or self._index.has_pack(pack_id):
                continue
            try:
                entries = read_pack_header(self.storage.get(name), self.keys, what=name)
            except CorruptData as exc:
                log.warning("cannot recover %s: %s", name, exc)
                continue
            index_name = INDEX_PREFIX + pack_id
            self.storage.put(index_name, seal_index(self.keys, index_name, [(pack_id, entries)]))
            self._index.add_pack(pack_id, entries)
            self._index_names.add(index_name)
            recovered.append(pack_id)
        return recovered

    def reconcile_packs(self) -> tuple[list[str], list[str]]:
        """Make the loaded index agree with the packs the destination holds, before a backup:
        chunks of indexed packs that are gone are forgotten (so this backup stores them again
        instead of deduplicating against data that no longer exists), and packs that no index
        lists are indexed from their own headers (``recover_indexes``). One listing of
        ``data/``; returns (missing pack IDs, recovered pack IDs). Raises ``DestinationError``.
        """
        present = {
            pid for pid in (pack_id_of_name(n) for n in self.storage.list(DATA_PREFIX)) if pid
        }
        missing = [pid for pid in self._index.packs() if pid not in present]
        if missing:
            forgotten = self._index.forget_packs(missing)
            log.warning(
                "%d indexed packs are missing from the destination; their %d chunks "
                "will be stored again",
                len(missing),
                forgotten,
            )
        return missing, self.recover_indexes()

    @property
    def pack_target_size(self) -> int:
        """Bytes a pack is filled to before it is stored (the config's)."""
        return self.config.pack_target_size

    def lock(self, kind: Kind, purpose: str, timing: LockTiming | None = None) -> RepositoryLock:
        """A lock on this repository (``locks.py``), to use as a context manager: ``shared``
        for a backup, restore or verify, ``exclusive`` for prune's delete phase."""
        return RepositoryLock(self.storage, self.keys, kind, purpose, timing=timing)

    def exclude_condemned(self) -> set[str]:
        """Before a backup: never deduplicate against packs a prune condemned
        (``prune.exclude_condemned``); returns their IDs. Raises ``DestinationError``."""
        return exclude_condemned(self.storage, self.keys, self._index)

    # Writing -------------------------------------------------------------------------------

    def writer(self, *, compression_level: int | None = None) -> Writer:
        """A new writer (see ``Writer``); ``compression_level`` overrides the repository's."""
        level = self.config.compression_level if compression_level is None else compression_level
        w = Writer(
            self.storage,
            self.keys,
            self._index,
            chunker=self.config.chunker,
            compression_level=level,
            pack_target_size=self.config.pack_target_size,
            on_stored=self._count_stored,
        )
        self._writers.add(w)
        return w

    def _count_stored(self, size: int) -> None:
        self._stored_bytes += size

    @property
    def stored_bytes(self) -> int:
        """Bytes of the objects this ``Repository`` object has added to the destination since
        it was opened: the packs and index objects its writers stored (``Writer.stored_bytes``:
        content and snapshot trees, compressed, encrypted, after deduplication) and the
        snapshot objects it committed. Not counted: the snapshot list (``manifest``, replaced
        in place by each commit), locks (removed when released), the config, and index
        objects written to recover or compact the index. A backup job's ``UploadSize`` is
        the growth of this figure over the job (cbs-api.md §7)."""
        return self._stored_bytes

    def content_id(self, data: bytes) -> bytes:
        """Keyed BLAKE3 (32 bytes) of a whole content (what ``FileResult.content_id`` holds);
        use ``keys.hasher()`` for streams."""
        return self.keys.chunk_id(data)

    def commit_snapshot(
        self, meta: SnapshotMeta, items: Iterable[tuple[Entry, Sequence[bytes]]]
    ) -> str:
        """Store a snapshot of ``items`` (each entry with its chunk IDs, in the order they
        should be restored) and return its ID (64 hex).

        Flushes every open writer of this repository first; stores the tree; writes the
        snapshot object in one atomic put, then a new snapshot list naming it
        (``record_snapshots``). ``items`` is consumed once, streaming. Raises ``ChunkNotFound``
        if an entry references a chunk that is not stored (nothing is committed then) and
        ``DestinationError`` on storage failure (when only the list failed, the snapshot is
        stored and the next list names it).
        """
        for w in list(self._writers):
            w.flush()
        count = 0

        def checked() -> Iterator[tuple[Entry, Sequence[bytes]]]:
            nonlocal count
            for entry, chunk_ids in items:
                for chunk_id in chunk_ids:
                    if chunk_id not in self._index:
                        log.error("%s references missing chunk", display_path(entry.path))
                        raise ChunkNotFound(chunk_id)
                count += 1
                yield entry, chunk_ids

        tree_writer = self.writer()
        tree: list[bytes] = []
        for piece in chunk_iter(encode_tree(checked()), self.config.chunker):
            tree.append(tree_writer.add_chunk(piece).chunk_id)
        tree_writer.flush()
        snapshot_id = secrets.token_hex(32)
        info = SnapshotInfo(snapshot_id, meta, count, tuple(tree))
        sealed = self.keys.seal(encode_snapshot(info), snapshot_aad(snapshot_id))
        self.storage.put(snapshot_name(snapshot_id), sealed)
        self._stored_bytes += len(sealed)
        self._authentic.add(snapshot_id)
        log.debug("committed snapshot %s: %s", snapshot_id, plural(count, "entry", "entries"))
        self.record_snapshots()
        return snapshot_id

    # The snapshot list ---------------------------------------------------------------------

    def snapshot_list(self) -> Manifest | None:
        """The stored snapshot list, or ``None`` (none yet). Raises ``CorruptData`` and
        ``DestinationError``."""
        return read_manifest(self.storage, self.keys)

    def check_snapshot_list(self, anchor: Anchor | None = None) -> ListCheck:
        """Check the snapshot list against the snapshots stored and what the agent remembers
        (``anchor``; see ``manifest.check_snapshot_list``): one listing and one small read. A
        damaged list is a problem too. With an anchor, the next list written gets a generation
        above the anchor's (so a rolled-back list is superseded). Raises ``DestinationError``.
        """
        if anchor is not None:
            self._generation_floor = max(self._generation_floor, anchor.generation)
        present = set(self.snapshot_ids())
        try:
            manifest = self.snapshot_list()
        except CorruptData as exc:
            return ListCheck((("snapshot list", exc.message),), ())
        return check_snapshot_list(manifest, present, anchor, required=self.config.snapshot_list)

    def record_snapshots(self, *, removed: Iterable[str] = ()) -> Manifest:
        """Write a new generation of the snapshot list and return it: every snapshot stored
        now that was listed or authenticates now (unrecorded ones: a backup ended before
        listing its snapshot), except ``removed`` and those removed before. A listed snapshot
        no longer stored is dropped (``check_snapshot_list`` reported it). Retention calls this
        with the IDs it deleted as ``removed``.

        The list is replaced only if no other writer replaced it since it was read
        (``Storage.put_if``); otherwise it is read again and the new list computed again, up
        to ``LIST_WRITE_ATTEMPTS`` times with a short random pause (0.05-0.5 s) between, so
        two jobs committing at once both end up listed. Raises ``DestinationError``
        (``PreconditionFailed`` when every attempt lost the race)."""
        gone_now = frozenset(removed)
        for attempt in range(1, LIST_WRITE_ATTEMPTS + 1):
            try:
                manifest = self._record_once(gone_now)
                break
            except PreconditionFailed:
                if attempt == LIST_WRITE_ATTEMPTS:
                    raise
                log.debug("snapshot list changed meanwhile (attempt %d): reading it again", attempt)
                time.sleep(random.uniform(0.05, 0.5))
        if not self.config.snapshot_list:  # a repository made before the list: say it has one
            self.config = dataclasses.replace(self.config, snapshot_list=True)
            self.storage.put(CONFIG_NAME, self.keys.seal(self.config.to_bytes(), _CONFIG_AAD))
        return manifest

    def record_removed(self, removed: Iterable[str]) -> None:
        """A new snapshot list without ``removed`` (forget: ``prune.forget_snapshots``)."""
        self.record_snapshots(removed=removed)

    def removed_leftovers(self) -> list[str]:
        """Snapshots the list says were removed whose objects are still stored (a forget
        stopped between the list and the deletes). Raises ``CorruptData``,
        ``DestinationError``."""
        manifest = self.snapshot_list()
        if manifest is None or not manifest.removed:
            return []
        return sorted(manifest.removed & set(self.snapshot_ids()))

    def _record_once(self, removed: frozenset[str]) -> Manifest:
        """Read the list, compute the next one and write it if the list is unchanged meanwhile
        (``record_snapshots``). Raises ``PreconditionFailed``, ``DestinationError``."""
        current, version = read_manifest_versioned(self.storage, self.keys)
        if isinstance(current, CorruptData):
            log.warning("replacing the damaged snapshot list: %s", current.message)
            current = None
        gone = set(removed) | (current.removed if current is not None else set())
        listed = current.snapshots if current is not None else frozenset()
        keep = {
            sid
            for sid in self.snapshot_ids()
            if sid not in gone and (sid in listed or self._authenticates(sid))
        }
        generation = max(current.generation if current else 0, self._generation_floor) + 1
        self.recorded = write_manifest(
            self.storage, self.keys, generation, keep, removed=gone, replacing=(version,)
        )
        self._generation_floor = generation
        log.debug("snapshot list generation %d: %s", generation, plural(len(keep), "snapshot"))
        return self.recorded

    def _authenticates(self, snapshot_id: str) -> bool:
        """Whether the snapshot reads and authenticates (read once per repository)."""
        if snapshot_id not in self._authentic:
            try:
                self.snapshot_info(snapshot_id)
            except (CorruptData, SnapshotNotFound):
                return False
        return True

    # Reading -------------------------------------------------------------------------------

    def list_snapshots(self, *, damaged: list[VerifyProblem] | None = None) -> list[SnapshotInfo]:
        """Every readable snapshot, oldest first (by ``meta.time_ns``, then ID).

        A damaged snapshot object (fails authentication or decoding) is skipped with a warning
        and, when ``damaged`` is given, appended to it as a ``VerifyProblem`` (subject
        ``snapshot <id>``), so one bad snapshot never hides the others; ``verify`` reports it
        too. A snapshot deleted while listing is skipped silently. Raises only
        ``DestinationError`` (the destination cannot be listed or read).
        """
        infos: list[SnapshotInfo] = []
        for sid in self.snapshot_ids():
            try:
                infos.append(self.snapshot_info(sid))
            except SnapshotNotFound:
                continue
            except CorruptData as exc:
                log.warning("skipping damaged snapshot %s: %s", sid, exc.message)
                if damaged is not None:
                    damaged.append(VerifyProblem(f"snapshot {sid}", exc.message))
        return sorted(infos, key=lambda i: (i.meta.time_ns, i.id))

    def snapshot_ids(self) -> list[str]:
        """IDs of every snapshot object, without reading them."""
        ids = (n[len(SNAPSHOT_PREFIX) :] for n in self.storage.list(SNAPSHOT_PREFIX))
        return [i for i in ids if _ID_RE.match(i)]

    def snapshot_info(self, snapshot_id: str) -> SnapshotInfo:
        """Metadata of one snapshot; raises ``SnapshotNotFound`` or ``CorruptData``."""
        if not _ID_RE.match(snapshot_id):
            raise SnapshotNotFound(snapshot_id)
        try:
            sealed = self.storage.get(snapshot_name(snapshot_id))
        except ObjectNotFound:
            raise SnapshotNotFound(snapshot_id) from None
        what = f"snapshot {snapshot_id}"
        plain = self.keys.unseal(sealed, snapshot_aad(snapshot_id), what=what)
        info = decode_snapshot(snapshot_id, plain)
        self._authentic.add(snapshot_id)
        return info

    def load_snapshot(self, snapshot_id: str) -> tuple[SnapshotInfo, Iterator[TreeItem]]:
        """A snapshot's metadata and a lazy iterator of its ``(Entry, chunk IDs)`` in commit
        order; the tree is read chunk by chunk as the iterator advances. Raises
        ``SnapshotNotFound``/``CorruptData`` (the iterator may raise ``CorruptData`` or
        ``ChunkNotFound`` later)."""
        info = self.snapshot_info(snapshot_id)
        return info, self._iter_tree(info)

    def _iter_tree(self, info: SnapshotInfo) -> Iterator[TreeItem]:
        decoder = TreeDecoder(f"snapshot {info.id} tree")
        for chunk_id in info.tree:
            yield from decoder.feed(self.read_chunk(chunk_id))
        decoder.finish()

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """The plaintext of a stored chunk, checked against its ID.

        Raises ``ChunkNotFound`` (no index lists it), ``CorruptData`` (its pack is missing, or
        the bytes fail authentication, decompression or the hash check) or ``DestinationError``.
        """
        loc = self._index.get(chunk_id)
        if loc is None:
            raise ChunkNotFound(chunk_id)
        try:
            return self._read_copy(chunk_id, loc)
        except CorruptData:
            for other in self._index.copies(chunk_id):  # a chunk stored again elsewhere
                try:
                    return self._read_copy(chunk_id, other)
                except CorruptData:
                    continue
            raise

    def _read_copy(self, chunk_id: bytes, loc: ChunkLocation) -> bytes:
        try:
            blob = self.storage.get_range(pack_name(loc.pack_id), loc.offset, loc.length)
        except ObjectNotFound:
            raise CorruptData(f"pack {loc.pack_id} is missing") from None
        return self.open_chunk(chunk_id, blob, loc.original_size)

    def forget_damaged_chunks(self, chunk_ids: Iterable[bytes]) -> None:
        """Chunks found damaged are stored again by this repository's next writer instead of
        being deduplicated against the damaged copy; reads try every copy (``read_chunk``)."""
        self._index.forget_chunks(chunk_ids)

    def open_chunk(self, chunk_id: bytes, blob: bytes, original_size: int) -> bytes:
        """Decrypt, decompress and hash-check one sealed chunk blob; raises ``CorruptData``."""
        what = f"chunk {chunk_id.hex()}"
        payload = self.keys.unseal(blob, chunk_id, what=what)
        data = decode_payload(payload, original_size, what=what)
        if self.keys.chunk_id(data) != chunk_id:
            raise CorruptData(f"{what}: content does not match its ID")
        return data

    # Checking ------------------------------------------------------------------------------

    def verify(self, *, read_data: bool = False, anchor: Anchor | None = None) -> VerifyResult:
        """Check the repository; never raises for a damaged repository (only
        ``DestinationError`` when the destination cannot be read at all).

        Always: every indexed pack exists and is as long as its index says (its size from the
        destination's listing, ``packs.least_pack_size``); the snapshot list is sound
        (``check_snapshot_list`` with ``anchor``: no listed snapshot removed, no rollback);
        every snapshot is readable and every chunk its tree and entries reference is indexed.
        With ``read_data``: every pack's bytes match its ID and every indexed chunk decrypts,
        decompresses and hashes to its ID (reads everything). A damaged pack is one problem
        (``repo_verify``: its damaged chunks under it).
        """
        result = verify_repository(self, read_data=read_data, anchor=anchor)
        if not self._load_problems:
            return result
        return dataclasses.replace(result, errors=tuple(self._load_problems) + result.errors)

    @property
    def index(self) -> ChunkIndex:
        """The in-memory index (read-only use)."""
        return self._index
