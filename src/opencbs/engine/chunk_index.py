"""The repository index: which pack holds each chunk, in memory and as ``index/<id>`` objects.

An index object is sealed (associated data ``b"opencbs:index:" + name``); its plaintext is
``b"I"``, the pack count (u32 LE), then per pack its raw 32-byte ID followed by the pack's
entries exactly as in the pack header (``packs.encode_entries``). A writer stores one index
object per finished pack, named after the pack, right after the pack itself; several objects
may list the same pack (harmless duplicates after a merge).

In memory each known chunk costs roughly 150 bytes (``ChunkIndex``: about 150 MB per million
chunks, i.e. per TiB of unique data at the default 1 MiB average chunk).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from opencbs.engine.crypto import Keys
from opencbs.engine.packs import RECORD, PackEntry, decode_entries, encode_entries
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


_M32 = (1 << 32) - 1
_M40 = (1 << 40) - 1
Record = tuple[bytes, int, int, int, int]


def _unpacked(v: int) -> tuple[int, int, int, int, int]:
    return v & _M32, (v >> 32) & _M40, (v >> 72) & _M32, (v >> 104) & _M32, v >> 136


def index_records(plain: bytes, *, what: str) -> Iterator[tuple[str, list[Record]]]:
    """The ``(pack id, records)`` of an index object's plaintext without building
    ``PackEntry`` objects (each record ``(chunk id, offset, length, stored, original)``), as
    ``ChunkIndex.add_records`` takes them. Raises ``CorruptData``."""
    for pack_id, entries_end in _pack_spans(plain, what=what):
        start, end = entries_end
        yield pack_id, list(RECORD.iter_unpack(plain[start:end]))


def _pack_spans(plain: bytes, *, what: str) -> Iterator[tuple[str, tuple[int, int]]]:
    if plain[:1] != b"I" or len(plain) < 1 + _COUNT.size:
        raise CorruptData(f"{what}: unknown index version")
    (count,) = _COUNT.unpack_from(plain, 1)
    pos = 1 + _COUNT.size
    spans = []
    for _ in range(count):
        if pos + 32 + _COUNT.size > len(plain):
            raise CorruptData(f"{what}: truncated")
        pack_id = plain[pos : pos + 32].hex()
        (n,) = _COUNT.unpack_from(plain, pos + 32)
        start = pos + 32 + _COUNT.size
        end = start + n * RECORD.size
        if end > len(plain):
            raise CorruptData(f"{what}: truncated")
        spans.append((pack_id, (start, end)))
        pos = end
    if pos != len(plain):
        raise CorruptData(f"{what}: trailing bytes")
    yield from spans


def encode_records(packs: Iterable[tuple[str, list[Record]]]) -> bytes:
    """``encode_index`` of raw records (``index_records``)."""
    items = list(packs)
    out = bytearray(b"I" + _COUNT.pack(len(items)))
    pack = RECORD.pack
    for pack_id, records in items:
        out += bytes.fromhex(pack_id)
        out += _COUNT.pack(len(records))
        for record in records:
            out += pack(*record)
    return bytes(out)


class ChunkIndex:
    """Chunk ID → ``ChunkLocation`` for every chunk of every indexed pack. Not thread-safe.

    A location is kept as one int: pack number (32 bits), offset (40), length, stored and
    original size (32 each) (about 50 bytes instead of a tuple's 200), so a chunk
    costs about 150 bytes here (its ID, the int and the dict's slot)."""

    def __init__(self) -> None:
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._chunks: dict[bytes, int] = {}
        # further copies of a chunk stored more than once (a chunk stored again after its copy
        # was found damaged, two writers at once, or a prune's repacked copy until the sweep),
        # read when the first copy fails
        self._copies: dict[bytes, list[int]] = {}

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._chunks

    def _number(self, pack_id: str) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self._packs)
            self._packs.append(pack_id)
            self._pack_numbers[pack_id] = number
        return number

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        """Record a pack's chunks; a chunk already known keeps its first location."""
        self.add_records(
            pack_id,
            ((e.chunk_id, e.offset, e.length, e.stored_size, e.original_size) for e in entries),
        )

    def add_records(self, pack_id: str, records: Iterable[Record]) -> None:
        """``add_pack`` for raw ``(chunk id, offset, length, stored, original)`` records
        (``index_records``)."""
        number = self._number(pack_id)
        chunks = self._chunks
        for cid, offset, length, stored, original in records:
            loc = number | offset << 32 | length << 72 | stored << 104 | original << 136
            first = chunks.setdefault(cid, loc)
            if first != loc and first & _M32 != number:
                self._copies.setdefault(cid, []).append(loc)

    def _location(self, v: int) -> ChunkLocation:
        number, offset, length, stored, original = _unpacked(v)
        return ChunkLocation(self._packs[number], offset, length, stored, original)

    def get(self, chunk_id: bytes) -> ChunkLocation | None:
        """Where ``chunk_id`` is stored, or ``None``."""
        found = self._chunks.get(chunk_id)
        return None if found is None else self._location(found)

    def copies(self, chunk_id: bytes) -> list[ChunkLocation]:
        """Every location of ``chunk_id`` after the first (usually none)."""
        return [
            self._location(v)
            for v in self._copies.get(chunk_id, ())
            if self._packs[v & _M32] in self._pack_numbers
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
        gone = [cid for cid, v in self._chunks.items() if v & _M32 in numbers]
        forgotten = 0
        live = self._pack_numbers
        for cid in gone:
            # a copy in a pack that stays (a prune's repacked copy) takes the chunk's place
            others = [
                v
                for v in self._copies.pop(cid, ())
                if v & _M32 not in numbers and self._packs[v & _M32] in live
            ]
            if others:
                self._chunks[cid] = others[0]
                if len(others) > 1:
                    self._copies[cid] = others[1:]
            else:
                del self._chunks[cid]
                forgotten += 1
        return forgotten

    def lengths(self) -> Iterator[tuple[bytes, int]]:
        """Each indexed chunk's ID and stored length in its pack (bytes), first copies only."""
        for chunk_id, v in self._chunks.items():
            yield chunk_id, (v >> 72) & _M32

    def has_pack(self, pack_id: str) -> bool:
        """Whether some index lists that pack."""
        return pack_id in self._pack_numbers

    def packs(self) -> list[str]:
        """IDs of every indexed pack (not those forgotten)."""
        return [p for p in self._packs if p in self._pack_numbers]

    def by_pack(self) -> Iterator[tuple[str, list[tuple[bytes, ChunkLocation]]]]:
        """Each indexed pack with the chunks located in it, ordered by offset."""
        groups: dict[int, list[tuple[bytes, ChunkLocation]]] = {}
        for chunk_id, v in self._chunks.items():
            groups.setdefault(v & _M32, []).append((chunk_id, self._location(v)))
        for number, items in sorted(groups.items()):
            items.sort(key=lambda item: item[1].offset)
            yield self._packs[number], items
