"""Browsing snapshots without restoring them: the entries at and under a path (``opencbs ls``),
the entries whose path or name matches a pattern (``opencbs find``), and the changes between two
snapshots (``opencbs diff``).

Everything streams a snapshot's tree (``Repository.load_snapshot``, read chunk by chunk), so
memory does not grow with the number of entries, except :func:`diff_snapshots`, which holds
what the classifier holds (``engine.classify``: the changed entries, 8 bytes per file of the
older snapshot).

Order: a snapshot's entries are in walk order (``classify.path_sort_key``: depth first, each
folder's names sorted by bytes), as a backup commits them. The subtree of a path is then one
run of entries right after it, so :func:`entries_under` stops reading at its end.

The change kinds of :func:`diff_snapshots` are the job report's (cbs-api.md §5) because they
come from the same classifier a backup job runs (``classify.classify_pairs`` then
``classify.resolve_sources``), with the older snapshot as the previous one and the newer
snapshot's entries as the scan: a diff of a job's snapshot against its parent shows what that
job's report listed (new, upd, pmt, del, mov, cpy).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from opencbs.engine.classify import Classification, classify_pairs, pair_by_path, resolve_sources
from opencbs.engine.entries import Entry, display_path
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.engine.snapshot_format import TreeItem

__all__ = [
    "PathMatcher",
    "diff_snapshots",
    "entries_under",
    "find_in_snapshots",
    "parent_of",
    "snapshot_entries",
]


def parent_of(path: bytes) -> bytes:
    """The folder of an absolute snapshot path (``/`` for a top-level name and for ``/``)."""
    parent = path.rpartition(b"/")[0]
    return parent or b"/"


def _key(path: bytes) -> bytes:
    return path.replace(b"/", b"\x00")  # classify.path_sort_key, inlined (once per entry)


def snapshot_entries(repo: Repository, snapshot_id: str) -> Iterator[Entry]:
    """The entries of a snapshot in walk order, read chunk by chunk (no chunk IDs). Raises
    ``SnapshotNotFound``, ``CorruptData`` and ``ChunkNotFound`` (while iterating)."""
    _info, items = repo.load_snapshot(snapshot_id)
    return (entry for entry, _chunks in items)


def entries_under(
    items: Iterable[TreeItem],
    top: bytes,
    *,
    recursive: bool,
    roots: Sequence[bytes] = (),
) -> Iterator[TreeItem]:
    """The items of a walk-ordered tree at ``top`` and under it: with ``recursive`` every
    entry of the subtree, else ``top`` itself, its direct children, and each of ``roots`` (the
    snapshot's source paths) that lies deeper under ``top`` with no other root above it (so a
    folder above the sources, which the snapshot has no entry of, lists the sources it
    holds). ``top`` is an absolute raw path; ``/`` is the whole tree. Stops reading after the
    subtree (the rest of the tree is never read)."""
    whole = top == b"/"
    top_key = _key(top)
    inside = top_key + b"\x00"
    depth = 0 if whole else top.count(b"/")
    deeper_roots = _deeper_roots(top, roots)
    for item in items:
        path = item[0].path
        if whole:
            if recursive or path == b"/" or path.count(b"/") == 1 or path in deeper_roots:
                yield item
            continue
        key = _key(path)
        if key == top_key:
            yield item
        elif key.startswith(inside):
            if recursive or path.count(b"/") == depth + 1 or path in deeper_roots:
                yield item
        elif key > top_key:
            return  # past the subtree: walk order puts nothing of it later


def _deeper_roots(top: bytes, roots: Sequence[bytes]) -> frozenset[bytes]:
    """The roots under ``top`` below its direct children with no other root above them."""
    prefix = b"/" if top == b"/" else top + b"/"
    under = [r for r in roots if r.startswith(prefix) and r != top]
    return frozenset(
        r
        for r in under
        if not any(o != r and r.startswith(o.rstrip(b"/") + b"/") for o in under)
        and r.count(b"/") > (1 if top == b"/" else top.count(b"/") + 1)
    )


@dataclass(frozen=True, slots=True)
class PathMatcher:
    """A glob pattern (``fnmatch``: ``*``, ``?``, ``[…]``; ``*`` crosses ``/``) matched against
    an entry's whole path as reports show it (``display_path``) when the pattern holds a
    ``/``, else against its name (the last component). ``ignore_case`` folds case."""

    pattern: str
    ignore_case: bool = False

    def compiled(self) -> re.Pattern[str]:
        """The pattern as a regular expression (``fnmatch.translate``)."""
        flags = re.IGNORECASE if self.ignore_case else 0
        return re.compile(fnmatch.translate(self.pattern), flags | re.DOTALL)

    def matches(self, items: Iterable[TreeItem]) -> Iterator[TreeItem]:
        """The items whose path (or name) matches, in the order given."""
        rx = self.compiled()
        whole = "/" in self.pattern
        for item in items:
            path = item[0].path
            shown = display_path(path if whole else path.rpartition(b"/")[2] or path)
            if rx.match(shown):
                yield item


def find_in_snapshots(
    repo: Repository, infos: Iterable[SnapshotInfo], matcher: PathMatcher
) -> Iterator[tuple[SnapshotInfo, Entry]]:
    """Each entry of each snapshot of ``infos`` (in that order, each tree in walk order) whose
    path or name ``matcher`` matches, with its snapshot; one tree streamed at a time. Raises
    ``CorruptData``, ``ChunkNotFound`` (a tree that cannot be read)."""
    for info in infos:
        _info, items = repo.load_snapshot(info.id)
        for entry, _chunks in matcher.matches(items):
            yield info, entry


def diff_snapshots(repo: Repository, older: str, newer: str) -> Classification:
    """The changes from snapshot ``older`` to snapshot ``newer`` of ``repo`` (both 64-hex IDs),
    classified as a backup job classifies its scan against the previous snapshot (module
    docstring): ``Classification.changes`` in walk order, each with its kind, entry (the older
    one for ``del``), reason and, for a move or copy, ``from_path``. The older tree is read
    twice when copies need their sources named. Raises ``SnapshotNotFound``, ``CorruptData``,
    ``ChunkNotFound``."""
    pairs = pair_by_path(snapshot_entries(repo, older), snapshot_entries(repo, newer))
    result = classify_pairs(pairs)
    if result.sources_wanted:
        result = resolve_sources(result, snapshot_entries(repo, older))
    return result
