"""Hard links in the snapshot format and the scan (issue 15): the link flag round-trips in both
record layouts, changes nothing but its bit (so agents that do not know it read the records as
before), records written before it read as files with one name, and the scan (in this process
and in its helper process) flags every name of a file with more than one, and nothing else."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from opencbs.engine.entries import Entry
from opencbs.engine.scan import Scan
from opencbs.engine.scan_process import ScanProcess
from opencbs.engine.snapshot_format import (
    TreeDecoder,
    _encode_variable,
    decode_record,
    encode_record,
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
LINKED = replace(FILE, hard_link=True)

#: ``FILE`` with the chunk ``CID[::-1]``, as the version before hard links wrote it (commit
#: 9f21518), in the fixed layout and in the variable one.
OLD_FIXED = bytes.fromhex(
    "8a010c460b0000002001000000d20400000000000015cd853dfe9c9717b1680871fe9c9717a4810000e803"
    "0000e8030000070000000001000001080000000000002f646174612f612e747874000102030405060708090a"
    "0b0c0d0e0f101112131415161718191a1b1c1d1e1f1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09"
    "080706050403020100"
)
OLD_VARIABLE = bytes.fromhex(
    "7304460b2f646174612f612e747874a413aab4aed8c7bfce972fe2a2c390cebfce972fc88604d00fd00f8e"
    "8080808040822020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f011f1e"
    "1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"
)


def _body(framed: bytes) -> bytes:
    """A record without its length prefix (1 or 2 bytes for these records)."""
    return framed[1:] if framed[0] < 0x80 else framed[2:]


def test_the_link_flag_round_trips_in_both_layouts() -> None:
    for entry in (FILE, LINKED):
        fixed = encode_record(entry, (CID,))
        assert _body(fixed)[0] & 8  # the fixed layout
        assert decode_record(_body(fixed)) == (entry, (CID,))
        variable = _encode_variable(entry, CID, 1)
        assert not _body(variable)[0] & 8
        assert decode_record(_body(variable)) == (entry, (CID,))
    decoder = TreeDecoder()
    items = [(LINKED, (CID,)), (FILE, ()), (replace(LINKED, path=b"/data/b.txt"), (CID,))]
    stream = b"".join(encode_tree(items))
    assert list(decoder.feed(stream)) == items
    decoder.finish()


def test_the_link_flag_is_one_bit_and_nothing_else() -> None:
    """Same length and bytes but bit 16 of the flags: a reader that does not know the flag
    (which ignores the flag bits it does not know) reads the record as the plain file."""
    for plain, linked in (
        (encode_record(FILE, (CID,)), encode_record(LINKED, (CID,))),
        (_encode_variable(FILE, CID, 1), _encode_variable(LINKED, CID, 1)),
    ):
        assert len(plain) == len(linked)
        head = len(plain) - len(_body(plain))
        assert linked[head] == plain[head] | 16
        assert linked[:head] + linked[head + 1 :] == plain[:head] + plain[head + 1 :]


def test_records_written_before_hard_links_read_as_files_with_one_name() -> None:
    for old in (OLD_FIXED, OLD_VARIABLE):
        entry, chunks = decode_record(_body(old))
        assert entry == FILE and not entry.hard_link
        assert chunks == (CID[::-1],)
        assert encode_record(entry, chunks) == OLD_FIXED  # and written back as then


def test_the_scan_flags_each_name_of_a_file_with_several(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "a").write_bytes(b"shared")
    os.link(root / "a", root / "d" / "b")
    (root / "single").write_bytes(b"one name")
    os.symlink("a", root / "sym")
    for walk in (Scan([root]), ScanProcess([root])):
        entries = {e.path: e for e in walk if isinstance(e, Entry)}
        flagged = {p for p, e in entries.items() if e.hard_link}
        assert flagged == {os.fsencode(root / "a"), os.fsencode(root / "d" / "b")}
        a, b = entries[os.fsencode(root / "a")], entries[os.fsencode(root / "d" / "b")]
        assert (a.device, a.inode) == (b.device, b.inode)
        assert entries[os.fsencode(root / "d")].etype is EntryType.DIRECTORY
