"""The two record layouts of snapshot trees: fixed (written when the values fit) and variable
(written for larger values; also what earlier versions wrote): both read back, and a damaged
fixed record is ``CorruptData``, never another error or a wrong entry."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from opencbs.engine.entries import Entry
from opencbs.engine.repo_errors import CorruptData
from opencbs.engine.snapshot_format import (
    SnapshotInfo,
    SnapshotMeta,
    TreeDecoder,
    _encode_variable,
    decode_record,
    decode_snapshot,
    encode_record,
    encode_snapshot,
    encode_tree,
)
from opencbs.reports.vocabulary import EntryType

CID = bytes(range(32))
FILE = Entry(
    b"/data/a.txt",
    EntryType.FILE,
    1234,
    1_700_000_000_123_456_789,
    1_700_000_000_987_654_321,
    0o100644,
    1000,
    1000,
    2**40 + 7,
    2049,
    content_id=CID,
)
LINK = Entry(
    b"/data/l", EntryType.LINK, 3, -5, 0, 0o120777, 0, 0, 9, 1, link_target=b"dir", link_to_dir=True
)
HUGE = Entry(b"/x", EntryType.DIRECTORY, 2**70, -(2**66), 0, 2**40, 2**33, 0, 2**64, 0)


def _body(framed: bytes) -> bytes:
    """A record without its length prefix (1 or 2 bytes for these small records)."""
    return framed[1:] if framed[0] < 0x80 else framed[2:]


def test_fixed_layout_for_ordinary_values_variable_for_huge_ones() -> None:
    assert _body(encode_record(FILE, (CID,)))[0] & 8
    assert _body(encode_record(LINK, ()))[0] & 8
    assert not _body(encode_record(HUGE, ()))[0] & 8
    for entry, chunks in ((FILE, (CID, CID[::-1], CID)), (LINK, ()), (HUGE, (CID,))):
        assert decode_record(_body(encode_record(entry, chunks))) == (entry, chunks)


def test_variable_records_of_earlier_writers_are_read_in_a_mixed_stream() -> None:
    old = _encode_variable(FILE, CID + CID, 2)
    assert not _body(old)[0] & 8
    stream = old + encode_record(LINK, ()) + _encode_variable(LINK, b"", 0)
    decoder = TreeDecoder()
    out = [item for i in range(len(stream)) for item in decoder.feed(stream[i : i + 1])]
    decoder.finish()
    assert out == [(FILE, (CID, CID)), (LINK, ()), (LINK, ())]


def test_long_records_use_longer_length_prefixes() -> None:
    chunks = tuple(i.to_bytes(32, "big") for i in range(600))  # about 19 KiB: a 3-byte prefix
    items = [(FILE, chunks), (LINK, ())]
    stream = b"".join(encode_tree(items))
    decoder = TreeDecoder()
    assert list(decoder.feed(stream)) == items
    decoder.finish()


def test_chunk_ids_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encode_record(FILE, (CID[:31], CID + b"x"))
    with pytest.raises(ValueError, match="32 bytes"):
        encode_record(FILE, (b"short",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b[:-1], "length mismatch"),
        (lambda b: b + b"\0", "length mismatch"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:1] + b"Q" + b[2:], "unknown entry type"),
        (lambda b: bytes([b[0] & ~4]) + b[1:], "content ID without its flag"),
    ],
)
def test_damaged_fixed_records_are_corrupt_data(change: object, message: str) -> None:
    body = _body(encode_record(FILE, (CID,)))
    with pytest.raises(CorruptData, match=message):
        decode_record(change(body))  # type: ignore[operator]


def _meta(**changes: Any) -> SnapshotMeta:
    base = SnapshotMeta(1, "17", "18", "2024-06-26-13-24-35", "vm", (b"/data",), None)
    return dataclasses.replace(base, **changes)


def test_the_set_name_is_recorded_and_older_objects_without_it_are_read() -> None:
    info = SnapshotInfo("a" * 64, _meta(set_name="docs"), 3, (CID,))
    assert decode_snapshot(info.id, encode_snapshot(info)) == info
    doc = json.loads(encode_snapshot(info))
    del doc["set_name"]  # as written before the name was recorded
    old = decode_snapshot(info.id, json.dumps(doc).encode())
    assert old.meta == _meta() and old.meta.set_name is None
    doc["set_name"] = 7
    with pytest.raises(CorruptData):
        decode_snapshot(info.id, json.dumps(doc).encode())
