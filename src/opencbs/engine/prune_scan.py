"""What a prune reads, in bounded memory: the repository's index streamed one object at a time
(never held whole), the chunks the snapshots use as a compact set, and pack headers read by
range (``prune.py`` decides with them).

Memory: the set of used chunks keeps 8 bytes of each chunk ID in a flat table (about 12-24
bytes a used chunk); an index object, a tree chunk and a pack header are read one at a time.
A prefix shared by two chunk IDs can only make an unused chunk look used, never the other way
round: a prune may keep a little more, it never deletes what a snapshot uses. Where it must
be exact (which condemned pack holds the only copy of a used chunk) it compares whole IDs.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from opencbs.destinations.base import ObjectNotFound, Storage
from opencbs.engine.chunk_index import INDEX_PREFIX, Record, index_aad, index_records
from opencbs.engine.crypto import Keys
from opencbs.engine.packs import (
    HEADER_AAD,
    MAGIC,
    RECORD,
    TRAILER,
    decode_entries,
    pack_name,
    pack_sizes,
)
from opencbs.engine.repo_errors import CorruptData, RepositoryError
from opencbs.engine.snapshot_format import RefScanner, SnapshotInfo, snapshot_name

__all__ = [
    "IndexView",
    "Scanned",
    "UsedSet",
    "pack_records",
    "scan_snapshots",
]

log = logging.getLogger(__name__)


class Readable(Protocol):
    """What the scan needs of a ``Repository``."""

    @property
    def storage(self) -> Storage: ...

    @property
    def keys(self) -> Keys: ...

    def snapshot_ids(self) -> list[str]: ...

    def snapshot_info(self, snapshot_id: str) -> SnapshotInfo: ...

    def open_chunk(self, chunk_id: bytes, blob: bytes, original_size: int) -> bytes: ...


class UsedSet:
    """Chunks a snapshot uses, by the first 8 bytes of their ID (module docstring), in an
    open-addressing table of 64-bit keys (``array``): 8 bytes a slot, at most 2/3 full, so
    about 12-24 bytes a used chunk instead of a Python set's 60 or more."""

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 1 << max(4, (capacity - 1).bit_length())
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def key(chunk_id: bytes) -> int:
        """The table's key of ``chunk_id``: its first 8 bytes (little endian), never 0."""
        return int.from_bytes(chunk_id[:8], "little") or 1

    def add_key(self, k: int) -> None:
        """Note the chunk of key ``k`` (``key``) used."""
        table, mask = self._table, self._mask
        h = (k ^ (k >> 29)) & mask
        while True:
            found = table[h]
            if found == k:
                return
            if not found:
                break
            h = (h + 1) & mask
        table[h] = k
        self._count += 1
        if 3 * self._count > 2 * (mask + 1):
            self._grow()

    def _grow(self) -> None:
        old = self._table
        size = 2 * len(old)
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0
        for k in old:
            if k:
                self.add_key(k)

    def add(self, chunk_id: bytes) -> None:
        """Note ``chunk_id`` used."""
        self.add_key(self.key(chunk_id))

    def __contains__(self, chunk_id: object) -> bool:
        assert isinstance(chunk_id, bytes)
        k = self.key(chunk_id)
        table, mask = self._table, self._mask
        h = (k ^ (k >> 29)) & mask
        while True:
            found = table[h]
            if found == k:
                return True
            if not found:
                return False
            h = (h + 1) & mask


@dataclass(slots=True)
class IndexView:
    """One pass's view of the stored index: each index object's name and packs
    (``objects``), the packs of the destination with their sizes (``sizes``), the packs no
    readable index lists (``unindexed``: read from their own headers) and whether some index
    object could not be read (``damaged``)."""

    objects: dict[str, frozenset[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    unindexed: set[str] = field(default_factory=set)
    damaged: bool = False


def pack_records(
    storage: Storage, keys: Keys, *, view: IndexView
) -> Iterator[tuple[str, list[Record]]]:
    """Every ``(pack ID, records)`` the index lists, one index object at a time, then those
    of the packs no index lists, from the packs' own headers (a pack whose header cannot be
    read is skipped: it is never condemned, as nothing is known of it). Fills ``view``.
    Raises ``DestinationError``."""
    view.sizes = pack_sizes(storage)
    listed: set[str] = set()
    for name in list(storage.list(INDEX_PREFIX)):
        try:
            plain = keys.unseal(storage.get(name), index_aad(name), what=name)
            packs = list(index_records(plain, what=name))
        except ObjectNotFound:
            continue
        except CorruptData as exc:
            log.warning("prune: skipping the damaged index object %s: %s", name, exc)
            view.damaged = True
            continue
        del plain
        view.objects[name] = frozenset(p for p, _r in packs)
        for pack_id, records in packs:
            listed.add(pack_id)
            yield pack_id, records
        del packs
    view.unindexed = set(view.sizes) - listed
    for pack_id in sorted(view.unindexed):
        try:
            yield pack_id, read_header(storage, keys, pack_id, view.sizes[pack_id])
        except (CorruptData, ObjectNotFound) as exc:
            log.warning("prune: the pack %s is in no index and unreadable: %s", pack_id, exc)


def read_header(storage: Storage, keys: Keys, pack_id: str, size: int) -> list[Record]:
    """A pack's records from its own header, read by range (the trailer, then the header).
    Raises ``CorruptData``, ``DestinationError``."""
    name = pack_name(pack_id)
    if size < len(MAGIC) + TRAILER.size:
        raise CorruptData(f"{name}: not a pack file")
    (hlen,) = TRAILER.unpack(storage.get_range(name, size - TRAILER.size, TRAILER.size))
    start = size - TRAILER.size - hlen
    if start < len(MAGIC):
        raise CorruptData(f"{name}: bad header length")
    plain = keys.unseal(storage.get_range(name, start, hlen), HEADER_AAD, what=name)
    if plain[:1] != b"H":
        raise CorruptData(f"{name}: unknown header version")
    _entries, end = decode_entries(plain, 1, what=name)  # checks the count and length
    if end != len(plain):
        raise CorruptData(f"{name}: trailing bytes in header")
    records = list(RECORD.iter_unpack(plain[1 + 4 : end]))
    for _cid, offset, length, _stored, _original in records:
        if offset < len(MAGIC) or offset + length > start:
            raise CorruptData(f"{name}: an entry points outside the blob area")
    return records


def tree_locations(
    storage: Storage, keys: Keys, wanted: Collection[bytes]
) -> dict[bytes, tuple[str, int, int, int]]:
    """Where the chunks ``wanted`` (tree chunks, a few hundred) are: chunk ID -> (pack ID,
    offset, length, original size), from one pass over the index. Raises
    ``DestinationError``."""
    found: dict[bytes, tuple[str, int, int, int]] = {}
    if not wanted:
        return found
    for pack_id, records in pack_records(storage, keys, view=IndexView()):
        for cid, offset, length, _stored, original in records:
            if cid in wanted and cid not in found:
                found[cid] = (pack_id, offset, length, original)
    return found


@dataclass(slots=True)
class Scanned:
    """What ``scan_snapshots`` read: the snapshot IDs (``read``) and the chunks they use
    (``used``)."""

    read: frozenset[str]
    used: UsedSet


def _infos(repo: Readable, skip: Collection[str]) -> list[SnapshotInfo]:
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


def scan_snapshots(repo: Readable, known: Scanned | None = None) -> Scanned:
    """Note every chunk a stored snapshot uses (tree chunks and entries' chunks) in a
    ``UsedSet``; with ``known`` only the snapshots it did not read, into its set. Raises
    ``CorruptData`` (a snapshot or tree chunk cannot be read: a prune must not guess what it
    uses), ``DestinationError``."""
    skip = known.read if known is not None else frozenset()
    used = known.used if known is not None else UsedSet()
    infos = _infos(repo, skip)
    trees = {cid for info in infos for cid in info.tree}
    where = tree_locations(repo.storage, repo.keys, trees)
    add = used.add_key
    for info in infos:
        scanner = RefScanner(f"snapshot {info.id} tree")
        for cid in info.tree:
            used.add(cid)
            loc = where.get(cid)
            if loc is None:
                raise CorruptData(f"snapshot {info.id}: tree chunk {cid.hex()} is not stored")
            pack_id, offset, length, original = loc
            blob = repo.storage.get_range(pack_name(pack_id), offset, length)
            scanner.use(repo.open_chunk(cid, blob, original), add)
        scanner.finish()
    return Scanned(skip | {i.id for i in infos}, used)


def only_copies(
    storage: Storage, keys: Keys, doomed: Collection[str], *, used: UsedSet, view: IndexView
) -> set[str]:
    """Of the packs ``doomed``, those holding a used chunk no other pack holds (whole IDs
    compared): one pass over the index (which fills ``view``), a second only when some used
    chunk is in a doomed pack. Raises ``DestinationError``."""
    inside: dict[bytes, str] = {}
    for pack_id, records in pack_records(storage, keys, view=view):
        if pack_id in doomed:
            for record in records:
                if record[0] in used:
                    inside.setdefault(record[0], pack_id)
    if not inside:
        return set()
    for pack_id, records in pack_records(storage, keys, view=IndexView()):
        if pack_id not in doomed:
            for record in records:
                inside.pop(record[0], None)
    return set(inside.values())


def index_objects_of(view: IndexView, packs: Iterable[str]) -> list[str]:
    """The index objects of ``view`` listing one of ``packs``."""
    gone = set(packs)
    return sorted(name for name, listed in view.objects.items() if listed & gone)
