"""The new snapshot's entries on the agent's disk while the job reads its sources.

``Repository.commit_snapshot`` flushes the open writer and so cannot take entries while files
are still being read: the entries (with their chunk IDs) wait in a temporary file, written once
and read once, sequentially, instead of in memory. A block is ``marshal`` of 1,024 entries'
fields and chunk IDs (about 100 bytes plus 33 per chunk each; faster to write and read than tree
records); the file's size is about that of the snapshot tree before compression, so disk, not
memory, bounds it.
"""

from __future__ import annotations

import marshal
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

from opencbs.engine.entries import Entry
from opencbs.engine.snapshot_format import TreeItem
from opencbs.reports.vocabulary import EntryType

__all__ = ["EntrySpool"]

#: Entries per block (one ``marshal`` dump each).
_BLOCK_RECORDS = 1024
#: One spooled entry: the fields of ``Entry`` in order, then its chunk IDs.
_SpoolRecord = tuple[
    bytes,
    str,
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    int,
    bytes | None,
    bool,
    bytes | None,
    bool,
    tuple[bytes, ...],
]


class EntrySpool:
    """The entries of the new snapshot in walk order, with their chunk IDs: :meth:`add` each,
    then read them back once with :meth:`items`; :meth:`close` removes the file."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="opencbs-tree-")
        self.records: list[_SpoolRecord] = []  # not yet written to the file
        self.count = 0  # entries spooled

    def add(self, entry: Entry, chunk_ids: Sequence[bytes]) -> None:
        """Spool one entry (once per entry of the job: keep it cheap)."""
        self.count += 1
        records = self.records
        records.append(
            (
                entry.path,
                entry.etype.value,
                entry.size,
                entry.mtime_ns,
                entry.ctime_ns,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.inode,
                entry.device,
                entry.link_target,
                entry.link_to_dir,
                entry.content_id,
                entry.hard_link,
                tuple(chunk_ids),
            )
        )
        if len(records) >= _BLOCK_RECORDS:
            _dump_block(self.file, records)
            records.clear()

    def items(self) -> Iterator[TreeItem]:
        """The spooled entries with their chunk IDs, in the order spooled (read once)."""
        if self.records:
            _dump_block(self.file, self.records)
            self.records.clear()
        return _read_blocks(self.file)

    def close(self) -> None:
        """Remove the file."""
        self.file.close()


def _dump_block(spool: IO[bytes], records: list[_SpoolRecord]) -> None:
    """One block: its length (8 bytes, little-endian), then ``marshal`` of the records
    (``marshal.load`` from a file reads in small pieces; ``loads`` of a whole block does not)."""
    data = marshal.dumps(records)
    spool.write(len(data).to_bytes(8, "little"))
    spool.write(data)


def _read_blocks(spool: IO[bytes]) -> Iterator[TreeItem]:
    """The spooled entries with their chunk IDs, in the order spooled."""
    spool.flush()
    spool.seek(0)
    types = {t.value: t for t in EntryType}
    while True:
        head = spool.read(8)
        if not head:
            return
        records: list[_SpoolRecord] = marshal.loads(spool.read(int.from_bytes(head, "little")))
        for (
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
            to_dir,
            content,
            hard,
            chunk_ids,
        ) in records:
            yield (
                Entry(
                    path,
                    types[etype],
                    size,
                    mtime,
                    ctime,
                    mode,
                    uid,
                    gid,
                    inode,
                    device,
                    target,
                    to_dir,
                    content,
                    hard,
                ),
                chunk_ids,
            )
