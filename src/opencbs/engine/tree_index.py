"""A snapshot's tree as an on-disk table, for lookups by path and listings by folder
(``opencbs mount``), built by streaming the tree once: memory stays flat however many entries
the snapshot has (a million-entry tree is about 150 MB on disk, none of it held in Python).

The table is SQLite (the standard library's ``sqlite3``) in a file the caller names (a
temporary folder of the mount), one row per entry keyed by ``(parent folder, name)``, both raw
bytes; the snapshot's root ``/`` is the row ``(b"", b"")``. A folder above the snapshot's
sources (``/home`` of a source ``/home/ann``), which the snapshot has no entry of, gets a row of
its own (``IndexedEntry.synthetic``: a directory, mode ``0o555``, the snapshot's time) so every
entry is reachable from the root.

The rows are written in the tree's walk order (``engine.classify.path_sort_key``), which puts a
folder before its content; the folders missing above an entry are found with a stack of the
folders of the current path (memory: the depth of the tree).
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opencbs.engine.crypto import ID_SIZE
from opencbs.engine.entries import Entry
from opencbs.engine.snapshot_format import TreeItem
from opencbs.reports.vocabulary import EntryType

__all__ = ["IndexedEntry", "TreeIndex", "split_path"]

_SCHEMA = """
CREATE TABLE entry (
    parent BLOB NOT NULL,
    name BLOB NOT NULL,
    etype TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    link_target BLOB,
    chunks BLOB NOT NULL,
    synthetic INTEGER NOT NULL,
    PRIMARY KEY (parent, name)
) WITHOUT ROWID
"""
_COLUMNS = "etype, size, mtime_ns, ctime_ns, mode, uid, gid, link_target, chunks, synthetic"
_INSERT = f"INSERT OR REPLACE INTO entry (parent, name, {_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_INSERT_SYNTHETIC = _INSERT.replace("OR REPLACE", "OR IGNORE")
_BATCH = 5000
#: The mode of a folder the snapshot has no entry of (read-only for everyone).
SYNTHETIC_MODE = stat.S_IFDIR | 0o555


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """The row key ``(parent folder, name)`` of an absolute raw path; ``(b"", b"")`` for
    ``/``."""
    if path == b"/":
        return b"", b""
    parent, _, name = path.rpartition(b"/")
    return parent or b"/", name


@dataclass(frozen=True, slots=True)
class IndexedEntry:
    """What the index holds of one path: the snapshot entry's type, size (bytes), times (epoch
    ns), full ``st_mode``, owner, link target and chunk IDs (joined, 32 bytes each);
    ``synthetic`` for a folder the snapshot has no entry of."""

    etype: str
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int
    link_target: bytes | None
    chunks: bytes
    synthetic: bool

    @property
    def chunk_ids(self) -> list[bytes]:
        """The content's chunk IDs in order."""
        c = self.chunks
        return [c[i : i + ID_SIZE] for i in range(0, len(c), ID_SIZE)]

    @property
    def is_dir(self) -> bool:
        """Whether the path is a folder."""
        return stat.S_ISDIR(self.mode)


class TreeIndex:
    """One snapshot's tree in an SQLite file (module docstring). Use from one thread."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con

    @classmethod
    def build(cls, items: Iterable[TreeItem], path: Path, *, time_ns: int) -> TreeIndex:
        """Write the walk-ordered ``items`` of a snapshot taken at ``time_ns`` (epoch ns: the
        times of the synthetic folders) into a new table in file ``path``. Raises what
        iterating ``items`` raises (``CorruptData``, ``ChunkNotFound``, ``DestinationError``)
        and ``sqlite3.Error`` (the file cannot be written)."""
        con = sqlite3.connect(path, check_same_thread=False)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.execute(_SCHEMA)
            builder = _Builder(con, time_ns)
            builder.add_synthetic([b"/"])
            for entry, chunk_ids in items:
                builder.add(entry, chunk_ids)
            builder.flush()
            con.commit()
        except BaseException:
            con.close()
            raise
        return cls(con)

    def lookup(self, path: bytes) -> IndexedEntry | None:
        """The entry at ``path`` (absolute, raw), or ``None``."""
        row = self._con.execute(
            f"SELECT {_COLUMNS} FROM entry WHERE parent = ? AND name = ?", split_path(path)
        ).fetchone()
        return None if row is None else _entry(row)

    def names(self, folder: bytes) -> Iterator[tuple[bytes, int]]:
        """The ``(name, st_mode)`` of each entry directly in ``folder``, by name (bytes
        order); read as iterated."""
        parent = folder if folder == b"/" else folder.rstrip(b"/")
        cursor = self._con.execute(
            "SELECT name, mode FROM entry WHERE parent = ? ORDER BY name", (parent,)
        )
        for name, mode in cursor:
            yield bytes(name), int(mode)

    def close(self) -> None:
        """Close the table's file (the caller removes it)."""
        self._con.close()


def _entry(row: Any) -> IndexedEntry:
    """An ``IndexedEntry`` of a row of ``_COLUMNS``."""
    etype, size, mtime, ctime, mode, uid, gid, target, chunks, synthetic = row
    return IndexedEntry(etype, size, mtime, ctime, mode, uid, gid, target, chunks, bool(synthetic))


def _is_within(folder: bytes, path: bytes) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    return folder == b"/" or path == folder or path.startswith(folder + b"/")


class _Builder:
    """Rows written in batches, with the folders missing above each entry (module docstring)."""

    def __init__(self, con: sqlite3.Connection, time_ns: int) -> None:
        self.con = con
        self.time_ns = time_ns
        self.rows: list[tuple[object, ...]] = []
        self.synthetic: list[tuple[object, ...]] = []
        self.folders: list[bytes] = [b"/"]  # the folders of the current path, root first

    def add(self, entry: Entry, chunk_ids: Iterable[bytes]) -> None:
        path = entry.path
        key = split_path(path)
        parent = key[0] or b"/"
        folders = self.folders
        while folders and not _is_within(folders[-1], parent):
            folders.pop()
        if folders[-1] != parent:
            self.add_synthetic(_between(folders[-1], parent))
        self.rows.append(
            (
                *key,
                entry.etype.value,
                entry.size,
                entry.mtime_ns,
                entry.ctime_ns,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.link_target,
                b"".join(chunk_ids),
                0,
            )
        )
        if entry.etype is EntryType.DIRECTORY and path != b"/":
            folders.append(path)
        if len(self.rows) >= _BATCH:
            self.flush()

    def add_synthetic(self, paths: Iterable[bytes]) -> None:
        """Rows for folders the snapshot may have no entry of (a later real entry wins)."""
        for path in paths:
            self.synthetic.append(
                (*split_path(path), "D", 0, self.time_ns, self.time_ns, SYNTHETIC_MODE)
                + (0, 0, None, b"", 1)
            )
            if path != b"/":
                self.folders.append(path)

    def flush(self) -> None:
        if self.synthetic:
            self.con.executemany(_INSERT_SYNTHETIC, self.synthetic)
            self.synthetic.clear()
        if self.rows:
            self.con.executemany(_INSERT, self.rows)
            self.rows.clear()


def _between(known: bytes, folder: bytes) -> list[bytes]:
    """The folders from below ``known`` down to ``folder`` (an ancestor of ``folder``, or
    ``/``), outermost first."""
    out: list[bytes] = []
    path = folder
    while path != known and path not in (b"/", b""):
        out.append(path)
        path = split_path(path)[0]
    return out[::-1]
