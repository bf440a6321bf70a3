"""The snapshot format: metadata object and the tree of entries with their chunk lists.

A snapshot is ``snapshots/<id>`` (64 hex), one sealed JSON object (associated data
``b"opencbs:snapshot:<id>"``) holding the metadata, the entry count and the IDs of the *tree
chunks*. The tree is the stream of entry records below, cut into content-defined chunks and
stored in packs like file data, so an unchanged part of a tree deduplicates against the previous
snapshot and a large tree never has to be in memory at once.

Entry record: ``uvarint(len(body)) ‖ body``; body::

    flags       u8: 1 link target present, 2 link to a directory, 4 content ID present
    etype       1 ASCII byte: F, D or L (EntryType)
    path        uvarint length ‖ raw bytes
    8 integers  zigzag uvarints: size, mtime_ns, ctime_ns, mode, uid, gid, inode, device
    [target]    uvarint length ‖ raw bytes          (flag 1)
    [content]   uvarint length ‖ content ID bytes   (flag 4)
    chunks      uvarint count ‖ count × 32-byte chunk IDs

uvarints are unsigned LEB128 (7 bits a byte, low first); zigzag maps 0, -1, 1, -2… to 0, 1, 2, 3….
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opencbs.engine.crypto import ID_SIZE
from opencbs.engine.entries import Entry
from opencbs.engine.repo_errors import CorruptData
from opencbs.reports.vocabulary import EntryType

SNAPSHOT_PREFIX = "snapshots/"
_FORMAT = "opencbs-snapshot"
_VERSION = 1
_LINK, _LINK_TO_DIR, _CONTENT = 1, 2, 4
_PIECE = 64 * 1024

TreeItem = tuple[Entry, tuple[bytes, ...]]


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot records about its job.

    ``time_ns``: nanoseconds since the epoch (UTC) when the backup started; ``sources``: the
    backed-up source paths as raw bytes; ``parent_id``: the snapshot this one was compared with.
    """

    time_ns: int
    set_id: str
    destination_id: str
    job_id: str
    hostname: str
    sources: tuple[bytes, ...] = ()
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A committed snapshot: its ``id``, metadata, number of entries and tree chunk IDs."""

    id: str
    meta: SnapshotMeta
    entry_count: int
    tree: tuple[bytes, ...]


def snapshot_name(snapshot_id: str) -> str:
    """``snapshots/<id>``."""
    return SNAPSHOT_PREFIX + snapshot_id


def snapshot_aad(snapshot_id: str) -> bytes:
    """Associated data binding a snapshot object to its ID."""
    return b"opencbs:snapshot:" + snapshot_id.encode("ascii")


def encode_snapshot(info: SnapshotInfo) -> bytes:
    """The JSON plaintext of a snapshot object."""
    m = info.meta
    doc = {
        "format": _FORMAT,
        "version": _VERSION,
        "time_ns": m.time_ns,
        "set_id": m.set_id,
        "destination_id": m.destination_id,
        "job_id": m.job_id,
        "hostname": m.hostname,
        "sources": [base64.b64encode(s).decode("ascii") for s in m.sources],
        "parent_id": m.parent_id,
        "entry_count": info.entry_count,
        "tree": [c.hex() for c in info.tree],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_snapshot(snapshot_id: str, plain: bytes) -> SnapshotInfo:
    """Inverse of ``encode_snapshot``; raises ``CorruptData`` for a malformed object."""
    try:
        doc: dict[str, Any] = json.loads(plain)
        if doc["format"] != _FORMAT or doc["version"] != _VERSION:
            raise ValueError(f"unknown format {doc['format']!r} version {doc['version']!r}")
        meta = SnapshotMeta(
            time_ns=int(doc["time_ns"]),
            set_id=str(doc["set_id"]),
            destination_id=str(doc["destination_id"]),
            job_id=str(doc["job_id"]),
            hostname=str(doc["hostname"]),
            sources=tuple(base64.b64decode(s, validate=True) for s in doc["sources"]),
            parent_id=None if doc["parent_id"] is None else str(doc["parent_id"]),
        )
        tree = tuple(bytes.fromhex(c) for c in doc["tree"])
        return SnapshotInfo(snapshot_id, meta, int(doc["entry_count"]), tree)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"snapshot {snapshot_id}: malformed: {exc}") from exc


# Entry records ---------------------------------------------------------------------------


def _uvarint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def encode_record(entry: Entry, chunk_ids: Sequence[bytes]) -> bytes:
    """One framed entry record. Chunk IDs must be 32 bytes each."""
    flags = (
        (_LINK if entry.link_target is not None else 0)
        | (_LINK_TO_DIR if entry.link_to_dir else 0)
        | (_CONTENT if entry.content_id is not None else 0)
    )
    body = bytearray((flags, ord(entry.etype.value)))
    _uvarint(body, len(entry.path))
    body += entry.path
    for value in (
        entry.size,
        entry.mtime_ns,
        entry.ctime_ns,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.inode,
        entry.device,
    ):
        _uvarint(body, _zigzag(value))
    if entry.link_target is not None:
        _uvarint(body, len(entry.link_target))
        body += entry.link_target
    if entry.content_id is not None:
        _uvarint(body, len(entry.content_id))
        body += entry.content_id
    _uvarint(body, len(chunk_ids))
    for chunk_id in chunk_ids:
        if len(chunk_id) != ID_SIZE:
            raise ValueError(f"chunk IDs are {ID_SIZE} bytes")
        body += chunk_id
    framed = bytearray()
    _uvarint(framed, len(body))
    return bytes(framed + body)


def encode_tree(items: Iterable[tuple[Entry, Sequence[bytes]]]) -> Iterator[bytes]:
    """The record stream of ``items``, in pieces of about 64 KiB (bytes)."""
    piece = bytearray()
    for entry, chunk_ids in items:
        piece += encode_record(entry, chunk_ids)
        if len(piece) >= _PIECE:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


class _Reader:
    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def uvarint(self) -> int:
        result = shift = 0
        data = self.data
        while True:
            if self.pos >= len(data):
                raise CorruptData(f"{self.what}: truncated record")
            byte = data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise CorruptData(f"{self.what}: truncated record")
        out = self.data[self.pos : end]
        self.pos = end
        return out


def decode_record(body: bytes, *, what: str = "tree") -> TreeItem:
    """The entry and chunk IDs of one record body (without its length prefix)."""
    r = _Reader(body, what)
    flags, etype_code = r.take(2)
    try:
        etype = EntryType(chr(etype_code))
    except ValueError:
        raise CorruptData(f"{what}: unknown entry type {etype_code}") from None
    path = r.take(r.uvarint())
    size, mtime, ctime, mode, uid, gid, inode, device = (_unzigzag(r.uvarint()) for _ in range(8))
    target = r.take(r.uvarint()) if flags & _LINK else None
    content = r.take(r.uvarint()) if flags & _CONTENT else None
    count = r.uvarint()
    raw = r.take(count * ID_SIZE)
    if r.pos != len(body):
        raise CorruptData(f"{what}: trailing bytes in record")
    chunks = tuple(raw[i : i + ID_SIZE] for i in range(0, len(raw), ID_SIZE))
    entry = Entry(
        path, etype, size, mtime, ctime, mode, uid, gid, inode, device,
        link_target=target, link_to_dir=bool(flags & _LINK_TO_DIR), content_id=content,
    )  # fmt: skip
    return entry, chunks


class TreeDecoder:
    """Decodes a record stream fed in arbitrary pieces (tree chunks)."""

    def __init__(self, what: str = "tree") -> None:
        self._rest = b""
        self._what = what

    def feed(self, data: bytes) -> Iterator[TreeItem]:
        """Yield the records completed by ``data``."""
        buf = self._rest + data if self._rest else data
        pos = 0
        while pos < len(buf):
            length, start = _try_uvarint(buf, pos)
            if length is None or start + length > len(buf):
                break
            yield decode_record(buf[start : start + length], what=self._what)
            pos = start + length
        self._rest = buf[pos:]

    def finish(self) -> None:
        """End of stream; raises ``CorruptData`` if a record is incomplete."""
        if self._rest:
            raise CorruptData(f"{self._what}: truncated at the end")


def _try_uvarint(buf: bytes, pos: int) -> tuple[int | None, int]:
    result = shift = 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    return None, pos
