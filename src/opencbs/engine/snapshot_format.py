"""The snapshot format: metadata object and the tree of entries with their chunk lists.

A snapshot is ``snapshots/<id>`` (64 hex), one sealed JSON object (associated data
``b"opencbs:snapshot:<id>"``) holding the metadata, the entry count and the IDs of the *tree
chunks*. The tree is the stream of entry records below, cut into content-defined chunks and
stored in packs like file data, so an unchanged part of a tree deduplicates against the previous
snapshot and a large tree never has to be in memory at once.

The metadata's ``set_name`` came later within version 1: a reader ignores keys it does not know,
so older agents read newer objects, and this one reads older objects without it (``None``).

Hard links (issue 15) came the same way: flag 16 of an entry record marks a regular file that
had more than one name (``st_nlink > 1``) when scanned, whose ``inode`` and ``device`` (recorded
for every entry since the first version) are then its link identity, as in ``tar``, restic and
borg. No field is added, so the records keep their layouts and version 1 stays: a reader that
does not know the flag ignores it (it reads every flag it does not know as absent) and restores
each name as a file of its own, as before; this one reads a record without it as a file with one
name (``Entry.hard_link`` false), so every older snapshot reads as it always did.

Entry record: ``uvarint(len(body)) ‖ body``. A body has one of two layouts, told apart by flag 8;
the writer uses the fixed one whenever the values fit it (one ``struct.unpack_from`` reads all
numbers back), else the variable one. Both are read.

Fixed layout (flag 8), little-endian::

    flags       u8: 1 link target present, 2 link to a directory, 4 content ID present, 8 fixed,
                16 hard link (a regular file with more than one name: Entry.hard_link)
    etype       1 ASCII byte: F, D or L (EntryType)
    path_len    u16          target_len  u16 (0 without flag 1)     content_len  u8 (0 without 4)
    chunks      u32 count
    size, mtime_ns, ctime_ns        i64 each
    mode, uid, gid                  u32 each
    inode, device                   u64 each
    path ‖ [target] ‖ [content] ‖ count × 32-byte chunk IDs

Variable layout (flag 8 clear)::

    flags       u8 (as above, without 8)
    etype       1 ASCII byte
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
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opencbs.engine.crypto import ID_SIZE
from opencbs.engine.entries import Entry
from opencbs.engine.repo_errors import CorruptData
from opencbs.reports.vocabulary import EntryType

SNAPSHOT_PREFIX = "snapshots/"
_FORMAT = "opencbs-snapshot"
_VERSION = 1
_LINK, _LINK_TO_DIR, _CONTENT, _FIXED, _HARD_LINK = 1, 2, 4, 8, 16
_HEAD = struct.Struct("<BBHHBIqqqIIIQQ")
_HEAD_SIZE = _HEAD.size
_REF_HEAD = struct.Struct("<BBHHBI")  # the fixed layout's first fields (RefScanner)
_ETYPES: dict[int, EntryType] = {ord(t.value): t for t in EntryType}
_ETYPE_CODES: dict[EntryType, int] = {t: ord(t.value) for t in EntryType}
_PIECE = 64 * 1024

TreeItem = tuple[Entry, tuple[bytes, ...]]


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot records about its job.

    ``time_ns``: nanoseconds since the epoch (UTC) when the backup started; ``sources``: the
    backed-up source paths as raw bytes; ``parent_id``: the snapshot this one was compared with;
    ``set_name``: the backup set's name when the job ran (``None`` in snapshots written before
    it was recorded: readers then name the set by ``set_id``; the name is for people, the ID
    decides).
    """

    time_ns: int
    set_id: str
    destination_id: str
    job_id: str
    hostname: str
    sources: tuple[bytes, ...] = ()
    parent_id: str | None = None
    set_name: str | None = None


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
        "set_name": m.set_name,
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
            set_name=_optional_text(doc.get("set_name")),
        )
        tree = tuple(bytes.fromhex(c) for c in doc["tree"])
        return SnapshotInfo(snapshot_id, meta, int(doc["entry_count"]), tree)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"snapshot {snapshot_id}: malformed: {exc}") from exc


def _optional_text(value: object) -> str | None:
    """A field added later (absent or ``null`` in older snapshots); text when present, else
    ``ValueError``."""
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"expected text, got {type(value).__name__}")


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
    """One framed entry record (fixed layout when the values fit it). Chunk IDs must be 32
    bytes each (else ``ValueError``)."""
    chunks = b"".join(chunk_ids)
    if len(chunks) != len(chunk_ids) * ID_SIZE or any(len(c) != ID_SIZE for c in chunk_ids):
        raise ValueError(f"chunk IDs are {ID_SIZE} bytes")
    target = entry.link_target
    content = entry.content_id
    flags = _FIXED
    if target is not None:
        flags |= _LINK
    else:
        target = b""
    if entry.link_to_dir:
        flags |= _LINK_TO_DIR
    if content is not None:
        flags |= _CONTENT
    else:
        content = b""
    if entry.hard_link:
        flags |= _HARD_LINK
    try:
        head = _HEAD.pack(
            flags, _ETYPE_CODES[entry.etype], len(entry.path), len(target), len(content),
            len(chunk_ids), entry.size, entry.mtime_ns, entry.ctime_ns, entry.mode, entry.uid,
            entry.gid, entry.inode, entry.device,
        )  # fmt: skip
    except struct.error:
        return _encode_variable(entry, chunks, len(chunk_ids))
    length = _HEAD_SIZE + len(entry.path) + len(target) + len(content) + len(chunks)
    if length < 0x4000:
        if length < 0x80:
            frame = bytes((length,))
        else:
            frame = bytes(((length & 0x7F) | 0x80, length >> 7))
    else:
        out = bytearray()
        _uvarint(out, length)
        frame = bytes(out)
    return b"".join((frame, head, entry.path, target, content, chunks))


def _encode_variable(entry: Entry, chunks: bytes, count: int) -> bytes:
    """The variable layout (values beyond the fixed layout's ranges)."""
    flags = (
        (_LINK if entry.link_target is not None else 0)
        | (_LINK_TO_DIR if entry.link_to_dir else 0)
        | (_CONTENT if entry.content_id is not None else 0)
        | (_HARD_LINK if entry.hard_link else 0)
    )
    body = bytearray((flags, _ETYPE_CODES[entry.etype]))
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
    _uvarint(body, count)
    body += chunks
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
    """The entry and chunk IDs of one record body (without its length prefix); raises
    ``CorruptData`` for a malformed one."""
    return _decode_at(body, 0, len(body), what)


def _decode_at(buf: bytes, pos: int, end: int, what: str) -> TreeItem:
    """The record whose body is ``buf[pos:end]``."""
    if pos < end and buf[pos] & _FIXED:
        try:
            (
                flags,
                code,
                path_len,
                target_len,
                content_len,
                count,
                size,
                mtime,
                ctime,
                mode,
                uid,
                gid,
                inode,
                device,
            ) = _HEAD.unpack_from(buf, pos)
        except struct.error:
            raise CorruptData(f"{what}: truncated record") from None
        etype = _ETYPES.get(code)
        if etype is None:
            raise CorruptData(f"{what}: unknown entry type {code}")
        p = pos + _HEAD_SIZE
        q = p + path_len
        path = buf[p:q]
        if flags & _LINK:
            p = q + target_len
            target: bytes | None = buf[q:p]
        elif target_len:
            raise CorruptData(f"{what}: link target without its flag")
        else:
            target, p = None, q
        if flags & _CONTENT:
            q = p + content_len
            content: bytes | None = buf[p:q]
        elif content_len:
            raise CorruptData(f"{what}: content ID without its flag")
        else:
            content, q = None, p
        p = q + count * ID_SIZE
        if p != end:
            raise CorruptData(f"{what}: record length mismatch")
        if count == 1:
            chunks: tuple[bytes, ...] = (buf[q:p],)
        elif count == 0:
            chunks = ()
        else:
            chunks = tuple(buf[i : i + ID_SIZE] for i in range(q, p, ID_SIZE))
        entry = Entry(
            path,
            etype,
            size,
            mtime,
            ctime,
            mode,
            uid,
            gid,
            inode,
            device,
            target,
            bool(flags & _LINK_TO_DIR),
            content,
            bool(flags & _HARD_LINK),
        )
        return entry, chunks
    return _decode_variable(buf[pos:end], what)


def _decode_variable(body: bytes, what: str) -> TreeItem:
    """A record body in the variable layout."""
    r = _Reader(body, what)
    flags, etype_code = r.take(2)
    etype = _ETYPES.get(etype_code)
    if etype is None:
        raise CorruptData(f"{what}: unknown entry type {etype_code}")
    path = r.take(r.uvarint())
    size, mtime, ctime, mode, uid, gid, inode, device = [_unzigzag(r.uvarint()) for _ in range(8)]
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
        hard_link=bool(flags & _HARD_LINK),
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
        spans, rest = _spans(buf)
        self._rest = buf[rest:]
        what = self._what
        for start, end in spans:
            yield _decode_at(buf, start, end, what)

    def finish(self) -> None:
        """End of stream; raises ``CorruptData`` if a record is incomplete."""
        if self._rest:
            raise CorruptData(f"{self._what}: truncated at the end")


class RefScanner:
    """Reads only what a prune needs from a record stream fed in pieces (tree chunks): per
    record its entry type code, content ID and chunk IDs, without building ``Entry`` objects
    (several times faster than ``TreeDecoder``; the records are checked as far as that needs).
    """

    def __init__(self, what: str = "tree") -> None:
        self._rest = b""
        self._what = what

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes | None, bytes]]:
        """Yield ``(etype code, content ID or None, chunk IDs joined)`` of each record
        completed by ``data`` (the chunk IDs: ``count * 32`` bytes). Raises ``CorruptData``."""
        buf = self._rest + data if self._rest else data
        spans, rest = _spans(buf)
        self._rest = buf[rest:]
        head = _REF_HEAD
        for start, end in spans:
            if end - start >= _HEAD_SIZE and buf[start] & _FIXED:
                flags, code, path_len, target_len, content_len, count = head.unpack_from(buf, start)
                q = start + _HEAD_SIZE + path_len + target_len
                content = buf[q : q + content_len] if flags & _CONTENT else None
                q += content_len
                if q + count * ID_SIZE != end:
                    raise CorruptData(f"{self._what}: record length mismatch")
                yield code, content, buf[q:end]
            else:
                entry, chunks = _decode_at(buf, start, end, self._what)
                yield _ETYPE_CODES[entry.etype], entry.content_id, b"".join(chunks)

    def use(self, data: bytes, add: Callable[[int], None]) -> None:
        """``feed`` for a prune, which needs only the chunk IDs: the first 8 bytes of each
        chunk ID of the records completed by ``data`` go to ``add`` as an int (little endian,
        0 as 1: ``prune_scan.UsedSet.add_key``). Raises ``CorruptData``."""
        buf = self._rest + data if self._rest else data
        spans, rest = _spans(buf)
        self._rest = buf[rest:]
        unpack = _REF_HEAD.unpack_from
        key = int.from_bytes
        head_size = _HEAD_SIZE
        for start, end in spans:
            if end - start >= head_size and buf[start] & _FIXED:
                _flags, _code, path_len, target_len, content_len, count = unpack(buf, start)
                q = start + head_size + path_len + target_len + content_len
                if q + count * ID_SIZE != end:
                    raise CorruptData(f"{self._what}: record length mismatch")
                for i in range(q, end, ID_SIZE):
                    add(key(buf[i : i + 8], "little") or 1)
            else:
                for cid in _decode_at(buf, start, end, self._what)[1]:
                    add(key(cid[:8], "little") or 1)

    def finish(self) -> None:
        """End of stream; raises ``CorruptData`` if a record is incomplete."""
        if self._rest:
            raise CorruptData(f"{self._what}: truncated at the end")


def _spans(buf: bytes) -> tuple[list[tuple[int, int]], int]:
    """The ``(start, end)`` of the body of each whole record at the start of ``buf`` (a
    ``uvarint`` length, then the body), and where the incomplete rest begins."""
    size = len(buf)
    pos = 0
    spans: list[tuple[int, int]] = []
    while pos < size:
        # The length prefix: one or two bytes inline, longer ones by the general reader.
        b0 = buf[pos]
        if b0 < 0x80:
            length, start = b0, pos + 1
        elif pos + 1 < size and buf[pos + 1] < 0x80:
            length, start = (b0 & 0x7F) | (buf[pos + 1] << 7), pos + 2
        else:
            got, start = _try_uvarint(buf, pos)
            if got is None:
                break
            length = got
        end = start + length
        if end > size:
            break
        spans.append((start, end))
        pos = end
    return spans, pos


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
