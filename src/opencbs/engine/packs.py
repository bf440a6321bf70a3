"""Pack files: many sealed chunks in one destination object, with their own sealed header.

Layout of ``data/<first 2 hex of id>/<id>``::

    magic  b"OCBSPK\\x00\\x01"                      8 bytes
    blob*  sealed chunk payloads, back to back      (chunk ID as associated data)
    header sealed list of PackEntry records         (associated data b"opencbs:pack-header")
    hlen   length of the sealed header              4 bytes, little-endian

Header plaintext: ``b"H"``, entry count (u32 LE), then per chunk ``chunk id (32) ‖ offset (u64)
‖ length (u32) ‖ stored size (u32) ‖ original size (u32)``, all little-endian. The pack ID is the
plain BLAKE3 hex digest of the whole pack file, so anyone can check a pack's integrity, but only
the key holder can read what it holds. Because each pack carries its header, the repository
index can be rebuilt from the packs alone.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass

import blake3

from opencbs.destinations.base import Storage
from opencbs.engine.crypto import ID_SIZE, OVERHEAD, Keys
from opencbs.engine.repo_errors import CorruptData

MAGIC = b"OCBSPK\x00\x01"
HEADER_AAD = b"opencbs:pack-header"
DATA_PREFIX = "data/"

_RECORD = struct.Struct("<32sQIII")
#: One entry record (chunk ID, offset, length, stored size, original size), as the header and
#: index objects hold it.
RECORD = _RECORD
_COUNT = struct.Struct("<I")
_TRAILER = struct.Struct("<I")
#: The pack's last 4 bytes: the length of its sealed header.
TRAILER = _TRAILER


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one chunk sits in a pack.

    ``offset``/``length``: the sealed blob's byte range in the pack file; ``stored_size``: bytes
    of the chunk after compression (the "zipped" size, before encryption overhead);
    ``original_size``: bytes of the chunk.
    """

    chunk_id: bytes
    offset: int
    length: int
    stored_size: int
    original_size: int


def pack_name(pack_id: str) -> str:
    """The destination name of a pack: ``data/<2 hex>/<pack id>``."""
    return f"{DATA_PREFIX}{pack_id[:2]}/{pack_id}"


def pack_id_of_name(name: str) -> str | None:
    """The pack ID in a destination name, or ``None`` if the name is not a pack's."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] + "/" == DATA_PREFIX and _is_hex_id(parts[2]):
        return parts[2] if parts[1] == parts[2][:2] else None
    return None


def pack_sizes(storage: Storage) -> dict[str, int]:
    """Every pack of ``storage`` with its size in bytes (pack ID -> size), from one listing
    (``Storage.list_sizes``: no pack is read). Raises ``DestinationError``."""
    sizes: dict[str, int] = {}
    for name, size in storage.list_sizes(DATA_PREFIX):
        pack_id = pack_id_of_name(name)
        if pack_id is not None:
            sizes[pack_id] = size
    return sizes


def pack_id_of(data: bytes | memoryview) -> str:
    """The ID of a pack file: BLAKE3 hex digest (64 hex characters) of its bytes."""
    return blake3.blake3(data).hexdigest()


def _is_hex_id(text: str) -> bool:
    return len(text) == 2 * ID_SIZE and all(c in "0123456789abcdef" for c in text)


def encode_entries(entries: list[PackEntry]) -> bytes:
    """Entry count (u32 LE) then the fixed-size records."""
    out = bytearray(_COUNT.pack(len(entries)))
    for e in entries:
        out += _RECORD.pack(e.chunk_id, e.offset, e.length, e.stored_size, e.original_size)
    return bytes(out)


def decode_entries(data: bytes, pos: int, *, what: str) -> tuple[list[PackEntry], int]:
    """Entries encoded by ``encode_entries`` at ``pos``; returns them and the next position.

    Raises ``CorruptData`` if ``data`` is too short.
    """
    if pos + _COUNT.size > len(data):
        raise CorruptData(f"{what}: truncated")
    (count,) = _COUNT.unpack_from(data, pos)
    pos += _COUNT.size
    end = pos + count * _RECORD.size
    if end > len(data):
        raise CorruptData(f"{what}: truncated")
    entries = [PackEntry(*fields) for fields in _RECORD.iter_unpack(data[pos:end])]
    return entries, end


class PackBuilder:
    """Collects sealed chunk payloads into one pack in memory (about the target size)."""

    def __init__(self) -> None:
        self._buf = bytearray(MAGIC)
        self._entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        """Bytes in the pack so far (without the header still to come)."""
        return len(self._buf)

    def __len__(self) -> int:
        return len(self._entries)

    def chunk_ids(self) -> list[bytes]:
        """IDs of the chunks added so far, in order."""
        return [e.chunk_id for e in self._entries]

    def add(self, chunk_id: bytes, blob: bytes, stored_size: int, original_size: int) -> None:
        """Append a sealed chunk payload."""
        entry = PackEntry(chunk_id, len(self._buf), len(blob), stored_size, original_size)
        self._buf += blob
        self._entries.append(entry)

    def without(self, chunk_ids: Collection[bytes]) -> PackBuilder:
        """A builder of this one's chunks but those of ``chunk_ids``, in the same order (a
        writer taking back a file whose read failed); this one must not be used afterwards."""
        kept = PackBuilder()
        buf = self._buf
        for e in self._entries:
            if e.chunk_id not in chunk_ids:
                blob = bytes(buf[e.offset : e.offset + e.length])
                kept.add(e.chunk_id, blob, e.stored_size, e.original_size)
        return kept

    def finish(self, keys: Keys) -> tuple[str, memoryview, list[PackEntry]]:
        """``(pack id, pack file bytes, entries)``; the builder must not be used afterwards.
        The bytes are a read-only view of the builder's buffer, not a copy (a pack is 16 MiB:
        a copy would be that much more memory at the peak)."""
        header = keys.seal(b"H" + encode_entries(self._entries), HEADER_AAD)
        self._buf += header
        self._buf += _TRAILER.pack(len(header))
        data = memoryview(self._buf).toreadonly()
        self._buf = bytearray()
        return pack_id_of(data), data, self._entries


def least_pack_size(chunks_end: int, chunk_count: int) -> int:
    """The fewest bytes a pack file can have whose chunks' sealed blobs end at byte
    ``chunks_end`` and whose header lists at least ``chunk_count`` entries: the blobs, then
    the sealed header (``OVERHEAD`` + ``b"H"`` + count + the records), then its length (the
    layout above). What ``verify`` checks each pack's size against without reading it; an
    index may place fewer chunks in a pack than its header lists (a chunk stored twice), so
    this is a lower bound, never the exact size."""
    header = OVERHEAD + 1 + _COUNT.size + chunk_count * _RECORD.size
    return chunks_end + header + _TRAILER.size


def read_pack_header(data: bytes, keys: Keys, *, what: str = "pack") -> list[PackEntry]:
    """The entries of a whole pack file, from its own header.

    Raises ``CorruptData`` if the magic, trailer or header is damaged, or an entry points
    outside the blob area.
    """
    if len(data) < len(MAGIC) + _TRAILER.size or not data.startswith(MAGIC):
        raise CorruptData(f"{what}: not a pack file")
    (hlen,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    hstart = len(data) - _TRAILER.size - hlen
    if hstart < len(MAGIC):
        raise CorruptData(f"{what}: bad header length")
    plain = keys.unseal(data[hstart : len(data) - _TRAILER.size], HEADER_AAD, what=what)
    if plain[:1] != b"H":
        raise CorruptData(f"{what}: unknown header version")
    entries, end = decode_entries(plain, 1, what=what)
    if end != len(plain):
        raise CorruptData(f"{what}: trailing bytes in header")
    for e in entries:
        if e.offset < len(MAGIC) or e.offset + e.length > hstart:
            raise CorruptData(f"{what}: entry {e.chunk_id.hex()} outside the blob area")
    return entries
