"""Encodings of the repository format: entry records, tree streams, pack headers, payloads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencbs.engine.chunk_index import decode_index, encode_index
from opencbs.engine.compression import Codec, decode_payload, encode_payload
from opencbs.engine.crypto import Keys
from opencbs.engine.entries import Entry
from opencbs.engine.packs import PackBuilder, pack_id_of, pack_id_of_name, read_pack_header
from opencbs.engine.repo_errors import CorruptData
from opencbs.engine.snapshot_format import (
    TreeDecoder,
    decode_record,
    encode_record,
    encode_tree,
)
from opencbs.reports.vocabulary import EntryType

big = st.integers(min_value=-(2**70), max_value=2**70)
unsigned = st.integers(min_value=0, max_value=2**128)
entries = st.builds(
    Entry,
    path=st.binary(min_size=1, max_size=300),
    etype=st.sampled_from(EntryType),
    size=unsigned,
    mtime_ns=big,
    ctime_ns=big,
    mode=unsigned,
    uid=unsigned,
    gid=unsigned,
    inode=unsigned,
    device=unsigned,
    link_target=st.none() | st.binary(max_size=100),
    link_to_dir=st.booleans(),
    content_id=st.none() | st.binary(min_size=32, max_size=32),
)
chunk_lists = st.lists(st.binary(min_size=32, max_size=32), max_size=5).map(tuple)
items = st.lists(st.tuples(entries, chunk_lists), max_size=30)


@settings(max_examples=200, deadline=None)
@given(entry=entries, chunk_ids=chunk_lists)
def test_record_round_trip(entry: Entry, chunk_ids: tuple[bytes, ...]) -> None:
    framed = encode_record(entry, chunk_ids)
    decoder = TreeDecoder()
    assert list(decoder.feed(framed)) == [(entry, chunk_ids)]
    decoder.finish()


@settings(max_examples=60, deadline=None)
@given(tree=items, cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=10))
def test_tree_stream_in_any_pieces(
    tree: list[tuple[Entry, tuple[bytes, ...]]], cuts: list[int]
) -> None:
    stream = b"".join(encode_tree(tree))
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    decoder = TreeDecoder()
    out: list[tuple[Entry, tuple[bytes, ...]]] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        out.extend(decoder.feed(stream[a:b]))
    decoder.finish()
    assert out == tree


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_records_raise_corrupt_data_only(garbage: bytes) -> None:
    try:
        decode_record(garbage)
    except CorruptData:
        pass


def test_truncated_tree_is_detected() -> None:
    entry = Entry(b"/a", EntryType.FILE, 1, 2, 3, 4, 5, 6, 7, 8)
    framed = encode_record(entry, ())
    decoder = TreeDecoder()
    assert list(decoder.feed(framed[:-1])) == []
    with pytest.raises(CorruptData):
        decoder.finish()


def test_pack_header_round_trip_and_tamper() -> None:
    keys = Keys.generate()
    builder = PackBuilder()
    builder.add(b"\x01" * 32, b"blob-one", 5, 10)
    builder.add(b"\x02" * 32, b"blob-two!", 6, 12)
    pack_id, view, entries = builder.finish(keys)
    assert view.readonly  # a view of the builder's buffer, not a copy
    data = bytes(view)
    assert pack_id == pack_id_of(data) == pack_id_of(view)
    assert pack_id_of_name(f"data/{pack_id[:2]}/{pack_id}") == pack_id
    assert pack_id_of_name(f"data/zz/{pack_id}") is None
    assert read_pack_header(data, keys) == entries
    assert data[entries[1].offset : entries[1].offset + entries[1].length] == b"blob-two!"
    damaged = bytearray(data)
    damaged[-10] ^= 1
    with pytest.raises(CorruptData):
        read_pack_header(bytes(damaged), keys)
    with pytest.raises(CorruptData):
        read_pack_header(b"not a pack at all", keys)
    assert decode_index(encode_index([(pack_id, entries)]), what="i") == [(pack_id, entries)]


def test_payload_flags() -> None:
    payload, stored = encode_payload(b"a" * 1000)
    assert payload[0] == Codec.ZSTD and stored == len(payload) - 1 < 100
    assert decode_payload(payload, 1000) == b"a" * 1000
    raw, stored = encode_payload(b"xyz")
    assert raw == b"\x00xyz" and stored == 3
    with pytest.raises(CorruptData):
        decode_payload(b"\x07abc", 3)
    with pytest.raises(CorruptData):
        decode_payload(payload, 999)  # size bound: never inflates past the recorded size
    with pytest.raises(CorruptData):
        decode_payload(b"\x01not zstd", 8)
