"""The repository index: which pack holds each chunk, in memory and as ``index/<id>`` objects.

An index object is sealed (associated data ``b"opencbs:index:" + name``); its plaintext is
``b"I"``, the pack count (u32 LE), then per pack its raw 32-byte ID followed by the pack's
entries exactly as in the pack header (``packs.encode_entries``). A writer stores one index
object per finished pack, named after the pack, right after the pack itself; several objects
may list the same pack (harmless duplicates after a merge).

In memory each known chunk costs roughly 250 bytes (about 250 MB per million chunks, i.e. per
TiB of unique data at the default 1 MiB average chunk).
"""

from __future__ import annotations

import struct
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass

from opencbs.engine.crypto import Keys
from opencbs.engine.packs import PackEntry, decode_entries, encode_entries
from opencbs.engine.repo_errors import CorruptData

INDEX_PREFIX = "index/"

_COUNT = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    """A chunk's place: pack ID, byte ``offset``/``length`` of its sealed blob in the pack,
    ``stored_size`` (compressed bytes) and ``original_size`` (bytes)."""

    pack_id: str
    offset: int
    length: int
    stored_size: int
    original_size: int


def index_aad(name: str) -> bytes:
    """Associated data binding an index object to its name."""
    return b"opencbs:index:" + name.encode("ascii")


def encode_index(packs: Iterable[tuple[str, list[PackEntry]]]) -> bytes:
    """The plaintext of an index object listing ``(pack id, entries)`` pairs."""
    items = list(packs)
    out = bytearray(b"I" + _COUNT.pack(len(items)))
    for pack_id, entries in items:
        out += bytes.fromhex(pack_id)
        out += encode_entries(entries)
    return bytes(out)


def decode_index(plain: bytes, *, what: str) -> list[tuple[str, list[PackEntry]]]:
    """Inverse of ``encode_index``; raises ``CorruptData``."""
    if plain[:1] != b"I" or len(plain) < 1 + _COUNT.size:
        raise CorruptData(f"{what}: unknown index version")
    (count,) = _COUNT.unpack_from(plain, 1)
    pos = 1 + _COUNT.size
    result: list[tuple[str, list[PackEntry]]] = []
    for _ in range(count):
        if pos + 32 > len(plain):
            raise CorruptData(f"{what}: truncated")
        pack_id = plain[pos : pos + 32].hex()
        entries, pos = decode_entries(plain, pos + 32, what=what)
        result.append((pack_id, entries))
    if pos != len(plain):
        raise CorruptData(f"{what}: trailing bytes")
    return result


def seal_index(keys: Keys, name: str, packs: Iterable[tuple[str, list[PackEntry]]]) -> bytes:
    """The sealed index object to store under ``name``."""
    return keys.seal(encode_index(packs), index_aad(name))


def open_index(keys: Keys, name: str, sealed: bytes) -> list[tuple[str, list[PackEntry]]]:
    """The ``(pack id, entries)`` pairs of a stored index object; raises ``CorruptData``."""
    return decode_index(keys.unseal(sealed, index_aad(name), what=name), what=name)


class ChunkIndex:
    """Chunk ID → ``ChunkLocation`` for every chunk of every indexed pack. Not thread-safe."""

    def __init__(self) -> None:
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._chunks: dict[bytes, tuple[int, int, int, int, int]] = {}
        # further copies of a chunk stored more than once (rare: a chunk stored again after its
        # copy was found damaged, or two writers at once), read when the first copy fails
        self._copies: dict[bytes, list[tuple[int, int, int, int, int]]] = {}

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._chunks

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        """Record a pack's chunks; a chunk already known keeps its first location."""
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self._packs)
            self._packs.append(pack_id)
            self._pack_numbers[pack_id] = number
        for e in entries:
            loc = (number, e.offset, e.length, e.stored_size, e.original_size)
            first = self._chunks.setdefault(e.chunk_id, loc)
            if first is not loc and first[0] != number:
                self._copies.setdefault(e.chunk_id, []).append(loc)

    def get(self, chunk_id: bytes) -> ChunkLocation | None:
        """Where ``chunk_id`` is stored, or ``None``."""
        found = self._chunks.get(chunk_id)
        if found is None:
            return None
        number, offset, length, stored, original = found
        return ChunkLocation(self._packs[number], offset, length, stored, original)

    def copies(self, chunk_id: bytes) -> list[ChunkLocation]:
        """Every location of ``chunk_id`` after the first (usually none)."""
        return [
            ChunkLocation(self._packs[n], offset, length, stored, original)
            for n, offset, length, stored, original in self._copies.get(chunk_id, ())
            if self._packs[n] in self._pack_numbers
        ]

    def forget_chunks(self, chunk_ids: Iterable[bytes]) -> None:
        """Forget where these chunks are (their copies were found damaged), so that a writer
        stores them again. Their index objects still list the damaged copies; a later open
        may load either copy first, so ``Repository.read_chunk`` tries every copy."""
        for cid in chunk_ids:
            self._chunks.pop(cid, None)
            self._copies.pop(cid, None)

    def forget_packs(self, pack_ids: Iterable[str]) -> int:
        """Forget the chunks located in these packs (gone from the destination, or about to be
        deleted by a prune), so that a writer stores those chunks again, unless a copy of a
        chunk in another pack takes its place; returns how many chunks were forgotten."""
        numbers = {self._pack_numbers.pop(p) for p in pack_ids if p in self._pack_numbers}
        if not numbers:
            return 0
        gone = [cid for cid, loc in self._chunks.items() if loc[0] in numbers]
        forgotten = 0
        for cid in gone:
            # a copy in a pack that stays (a prune's repacked copy) takes the chunk's place
            others = [c for c in self._copies.pop(cid, ()) if c[0] not in numbers]
            others = [c for c in others if self._packs[c[0]] in self._pack_numbers]
            if others:
                self._chunks[cid] = others[0]
                if len(others) > 1:
                    self._copies[cid] = others[1:]
            else:
                del self._chunks[cid]
                forgotten += 1
        return forgotten

    def has_pack(self, pack_id: str) -> bool:
        """Whether some index lists that pack."""
        return pack_id in self._pack_numbers

    def packs(self) -> list[str]:
        """IDs of every indexed pack (not those forgotten)."""
        return [p for p in self._packs if p in self._pack_numbers]

    def by_pack(self) -> Iterator[tuple[str, list[tuple[bytes, ChunkLocation]]]]:
        """Each indexed pack with the chunks located in it, ordered by offset."""
        groups: dict[int, list[tuple[bytes, ChunkLocation]]] = {}
        for chunk_id, (number, offset, length, stored, original) in self._chunks.items():
            loc = ChunkLocation(self._packs[number], offset, length, stored, original)
            groups.setdefault(number, []).append((chunk_id, loc))
        for number, items in sorted(groups.items()):
            items.sort(key=lambda item: item[1].offset)
            yield self._packs[number], items

    # What a prune asks (prune.py) -------------------------------------------------------------

    def _locations(self) -> Iterator[tuple[bytes, tuple[int, int, int, int, int], bool]]:
        """Every ``(chunk ID, location, first)`` of a pack still indexed."""
        live = self._pack_numbers
        packs = self._packs
        for cid, loc in self._chunks.items():
            yield cid, loc, True
        for cid, locs in self._copies.items():
            for loc in locs:
                if packs[loc[0]] in live:
                    yield cid, loc, False

    def pack_usage(self, referenced: Container[bytes]) -> dict[str, list[int]]:
        """Per indexed pack ``[used bytes, used chunks, indexed bytes, indexed chunks]``: the
        sealed blobs (bytes) of the chunks ``referenced`` needs, counted in the pack of their
        first location only (a further copy is unused), and of every chunk indexed there."""
        usage: dict[str, list[int]] = {p: [0, 0, 0, 0] for p in self.packs()}
        packs = self._packs
        for cid, loc, first in self._locations():
            row = usage[packs[loc[0]]]
            row[2] += loc[2]
            row[3] += 1
            if first and cid in referenced:
                row[0] += loc[2]
                row[1] += 1
        return usage

    def chunks_in(self, pack_ids: Container[str]) -> dict[str, list[tuple[bytes, ChunkLocation]]]:
        """The chunks whose first location is in one of ``pack_ids``, by pack, by offset."""
        found: dict[str, list[tuple[bytes, ChunkLocation]]] = {}
        packs = self._packs
        for cid, (number, offset, length, stored, original) in self._chunks.items():
            pack_id = packs[number]
            if pack_id in pack_ids:
                loc = ChunkLocation(pack_id, offset, length, stored, original)
                found.setdefault(pack_id, []).append((cid, loc))
        for items in found.values():
            items.sort(key=lambda item: item[1].offset)
        return found

    def only_in(self, pack_ids: Container[str]) -> dict[bytes, str]:
        """The chunks every indexed location of which is in ``pack_ids``, with the pack of
        their first location (what deleting those packs would lose)."""
        packs = self._packs
        found = {
            cid: packs[loc[0]] for cid, loc in self._chunks.items() if packs[loc[0]] in pack_ids
        }
        for cid, locs in self._copies.items():
            if cid in found and any(
                packs[loc[0]] not in pack_ids and packs[loc[0]] in self._pack_numbers
                for loc in locs
            ):
                del found[cid]
        return found

    def entries_by_pack(self) -> list[tuple[str, list[PackEntry]]]:
        """Every indexed pack with all the chunks located in it (further copies included), by
        offset: what a new index object listing this whole index holds."""
        groups: dict[int, list[PackEntry]] = {}
        for cid, (number, offset, length, stored, original), _first in self._locations():
            groups.setdefault(number, []).append(PackEntry(cid, offset, length, stored, original))
        out: list[tuple[str, list[PackEntry]]] = []
        for number, entries in sorted(groups.items()):
            entries.sort(key=lambda e: e.offset)
            out.append((self._packs[number], entries))
        return out
