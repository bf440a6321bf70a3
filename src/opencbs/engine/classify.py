"""Classification of a job's entries against the previous snapshot (cbs-api.md §5).

Pure functions over :class:`~opencbs.engine.entries.Entry` values: no ``os``, no I/O, no
database (style.md items 2 and 3). Two steps, gather then decide:

1. **Plan** — :func:`needs_content` says, per current regular file, whether its content must be
   read and hashed, or whether unchanged metadata (type, size, ``mtime_ns``, ``ctime_ns``,
   inode) lets it reuse the previous content id without reading (:func:`reuse_content`).
2. **Classify** — :func:`classify` (or :func:`classify_pairs` over the stream of
   :func:`pair_by_path`) turns the previous and current entries into :class:`Change` values, one
   per reported entry, each with the :class:`Reason` it was classified so.

Rules (cbs-api.md §5, "What counts where"), with the choices made where §5 is silent:

====  ===========================================================================================
new   a current path with no previous entry (or of another type), that is neither a move nor a
      copy. Directories and symbolic links are always ``new`` (never moves or copies). A new
      name of a hard-linked file (below) is ``new`` too, never a copy.
upd   regular file: same path, content id differs. Symbolic link: same path, target differs.
pmt   same path, same content (file) or target (link), but mode, owner (uid/gid) or — for files
      and links — ``mtime_ns`` changed (a ``touch`` is ``pmt``). Directories: mode or owner only;
      a directory whose only change is ``mtime_ns`` is not reported. A change of ``ctime_ns``,
      inode or device alone is not reported (it is recorded in the new snapshot all the same).
      A file whose path became a name of another, hard-linked file, or stopped being one (its
      inode changed and ``hard_link`` with it: ``ln -f a b`` makes ``b`` a second name of
      ``a``) is ``pmt`` (:attr:`Reason.LINKED`, :attr:`Reason.UNLINKED`); the file that
      merely gained or lost a name (same inode: only its link count changed) is not reported.
del   a previous path that is gone, reported only when no ancestor directory of it (nor the path
      itself) is in ``incomplete_dirs``; otherwise it is *carried* (see below).
mov   a regular file that vanished (a deletable previous path) while the same file appeared at
      a new path: same ``(device, inode)`` with equal non-empty content or equal size and
      ``mtime_ns``; or, failing that, the same non-empty content id. Inode matches are made
      first, over all candidates; then content matches. Each vanished path is the source of at
      most one move, chosen first in walk order. A move is reported once, in ``mov`` only.
cpy   a new regular file (not a move) of non-empty content already in the backup — in the
      previous snapshot, in ``known_content``, or in a file stored earlier in this job (earlier
      in walk order: an updated or new file, or another copy).
====  ===========================================================================================

- **Type change** (file became directory, …): the old entry is ``del`` and the new one ``new``
  (both with :attr:`Reason.TYPE_CHANGED`), so that path is in two lists — the only case. The old
  entry may instead be the source of a move, and a new regular file may be a move or a copy.
- **Empty files** (size 0) all have "the same content": they are never copies, and never moves by
  content; a move by inode needs equal size and ``mtime_ns``.
- **Carried entries**: a previous path that is missing now but lies under a directory (or source)
  whose scan did not complete is not deleted: :attr:`Classification.carried` lists it, and the
  caller writes it into the new snapshot unchanged. Carried entries are never move sources.
- A renamed directory is ``del`` D + ``new`` D, its files are moves; a renamed link is ``del`` L
  + ``new`` L.
- **Hard links** (issue 15): the names of one file are the current regular files with
  ``hard_link`` set and the same ``(device, inode)`` and content id. Each name is a path of its
  own, so each is reported by the rules above — except that a name which is neither a move nor
  the file's first appearance is ``new`` with :attr:`Reason.HARD_LINK`, not a copy: it appeared
  (not at a path of the previous snapshot) while another name of the file comes before it in
  walk order or was already at its path before. So a new file with two names is two ``new``
  entries (the second stored nothing), and a new name of a file backed up before is ``new``.

Order: paths are compared in *walk order*, :func:`path_sort_key` — bytes order with ``/`` lowest,
i.e. a depth-first walk with each directory's names sorted by bytes. Plain bytes order is not
the same (``b"a-b" < b"a/x"`` but the walk visits ``a/x`` first), so inputs must be in walk order.

Memory and time: :func:`classify_pairs` is a streaming merge, O(P + C) time plus sorting the
changes. Matched paths (same path on both sides) are decided on the fly and dropped; it holds
only (a) the unmatched candidates — every previous-only entry (deleted, moved away or carried:
that is decided after the last pair, when the scan's incomplete directories are final) and every
appeared regular file, (b) the changes and carried entries it returns, and (c) when
``known_content`` is ``None``, the 64-bit hash of each non-empty previous file's content id in an
``array('q')`` — 8 bytes per previous file (plus the array's growth slack), no path (issue 4:
at most about 150 bytes per previous file), and (d) the hash of the link identity of each
hard-linked file with a name at a path it had before (a set of ints: about 70 bytes per such
file; a false match, astronomically unlikely, would make a new file ``new`` rather than a copy).
So memory is O(changed paths) + 8 bytes per previous file + (d); with ``known_content`` (the
repository's content index, which must include every content of the previous snapshot),
O(changed paths) + (d).

Copy sources, two passes: (c) tells only that a new file's content is *probably* in the
previous snapshot (a hash match; a false match among 64-bit hashes is astronomically unlikely but
is handled). Such a copy comes out of :func:`classify_pairs` *tentative*: ``cpy`` with
:attr:`Reason.CONTENT_ALREADY_STORED` and ``from_path`` ``None``, its content id in
:attr:`Classification.sources_wanted`. :func:`resolve_sources` then streams the previous
snapshot once more, names each copy's source (the first previous path in walk order with that
exact content id) and, should a content id have no previous file after all, turns the copy into
what it would have been without the match (``cpy`` of a file of this job, or ``new``). Its memory
is O(copies). :func:`classify` does both passes. With ``known_content`` no copy is tentative, and
a copy's ``from_path`` is known only when its source is a vanished file or a file of this job.
"""

from __future__ import annotations

import logging
import stat
import time
from array import array
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from opencbs.engine.entries import Entry, display_path, with_content_id
from opencbs.reports.vocabulary import FILE_LISTS, EntryType, ReportList

logger = logging.getLogger(__name__)

__all__ = [
    "Change",
    "Classification",
    "Reason",
    "classify",
    "classify_pairs",
    "needs_content",
    "pair_by_path",
    "path_sort_key",
    "resolve_sources",
    "reuse_content",
    "under_incomplete",
]


def path_sort_key(path: bytes) -> bytes:
    """The walk-order key of a path: its bytes with ``/`` mapped to ``\\x00``.

    Sorting by it gives a depth-first, pre-order walk with each directory's names sorted by
    bytes (a directory right before its subtree), which is the order of ``engine.scan``.
    """
    return path.replace(b"/", b"\x00")


class Reason(Enum):
    """Why an entry was classified so (style.md item 3). The value is the human text."""

    NEW_PATH = "the path did not exist before and its content is not in the backup"
    TYPE_CHANGED = "the path changed type (file, directory, link): old entry deleted, new added"
    CONTENT_CHANGED = "size, times or inode changed and the content hash differs"
    LINK_TARGET_CHANGED = "the symbolic link's target changed"
    MODE_CHANGED = "content unchanged; permissions (mode) changed"
    OWNER_CHANGED = "content unchanged; owner or group changed"
    MTIME_ONLY = "content unchanged; only the modification time changed (touch)"
    SAME_INODE_NEW_PATH = "the same file (device and inode, same content) appeared at a new path"
    SAME_CONTENT_NEW_PATH = "a file with the same content hash appeared at a new path"
    CONTENT_ALREADY_STORED = "new path whose content is already in the backup"
    HARD_LINK = "another name (hard link) of a file backed up at an earlier name; stored once"
    LINKED = "content unchanged; the path is now a name of a hard-linked file (another inode)"
    UNLINKED = "content unchanged; the path is no longer a hard link but a file of its own"
    CONTENT_STORED_THIS_JOB = "new path whose content equals a file stored earlier in this job"
    PATH_GONE = "the path no longer exists and the scan of its directory completed"

    @property
    def text(self) -> str:
        """The human text of the reason."""
        return self.value


@dataclass(frozen=True, slots=True)
class Change:
    """One reported entry.

    ``kind`` is the report list; ``entry`` the current entry (the previous one for ``del``);
    ``from_path`` the vanished path of a move, or for a copy the path of a file with the same
    content (previous snapshot first, else this job) when known, else ``None``.
    """

    kind: ReportList
    entry: Entry
    reason: Reason
    from_path: bytes | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """The outcome of a classification.

    ``changes`` in walk order of their entry's path; ``carried`` the previous entries the caller
    must copy into the new snapshot unchanged (missing now, under an incomplete directory), in
    walk order; ``unchanged`` the number of current entries that produced no change.

    ``sources_wanted``: the content ids of the *tentative* copies (module docstring, "Copy
    sources"), whose ``from_path`` is ``None`` until :func:`resolve_sources` names it from the
    previous snapshot; empty when there is none (then no second pass is needed).
    ``fallbacks``: for each tentative copy, keyed by its path, the change it becomes if the
    previous snapshot holds no file of its content after all (used by :func:`resolve_sources`).
    """

    changes: tuple[Change, ...]
    carried: tuple[Entry, ...]
    unchanged: int
    sources_wanted: frozenset[bytes] = frozenset()
    fallbacks: Mapping[bytes, Change] = field(default_factory=dict)

    def of_kind(self, kind: ReportList) -> tuple[Change, ...]:
        """The changes of one report list, in walk order."""
        return tuple(c for c in self.changes if c.kind is kind)

    def counts(self) -> dict[ReportList, int]:
        """Number of changes per file list (every list of ``FILE_LISTS``, zeros included)."""
        counts = dict.fromkeys(FILE_LISTS, 0)
        for change in self.changes:
            counts[change.kind] += 1
        return counts


# ---------------------------------------------------------------------------------------------
# Step 1: plan the reads


def needs_content(previous: Entry | None, current: Entry) -> bool:
    """Whether ``current`` must be read and hashed before classification.

    Only regular files are read. A file needs reading unless the previous entry of the same path
    is a regular file with a known content id and the same size, ``mtime_ns``, ``ctime_ns`` and
    inode (cbs-api.md §5; the same test as borg's files cache).
    """
    if current.etype is not EntryType.FILE:
        return False
    if previous is None or previous.etype is not EntryType.FILE or previous.content_id is None:
        return True
    return (
        previous.size != current.size
        or previous.mtime_ns != current.mtime_ns
        or previous.ctime_ns != current.ctime_ns
        or previous.inode != current.inode
    )


def reuse_content(previous: Entry | None, current: Entry) -> Entry:
    """``current`` with the previous content id when :func:`needs_content` says no read is
    needed; otherwise ``current`` itself (whose content id the caller must then fill)."""
    if previous is None or current.content_id is not None or needs_content(previous, current):
        return current
    return with_content_id(current, previous.content_id)


def pair_by_path(
    previous: Iterable[Entry], current: Iterable[Entry]
) -> Iterator[tuple[Entry | None, Entry | None]]:
    """Merge two walk-ordered entry streams into ``(previous, current)`` pairs by path.

    Both inputs must be strictly increasing in :func:`path_sort_key` (raises ``ValueError``
    otherwise). Memory O(1): one entry of each side is held.
    """
    prev_it = _keyed(previous, "previous")
    cur_it = _keyed(current, "current")
    pk, prev = next(prev_it, _END)
    ck, cur = next(cur_it, _END)
    while prev is not None or cur is not None:
        if cur is None or (prev is not None and pk < ck):
            yield prev, None
            pk, prev = next(prev_it, _END)
        elif prev is None or ck < pk:
            yield None, cur
            ck, cur = next(cur_it, _END)
        else:
            yield prev, cur
            pk, prev = next(prev_it, _END)
            ck, cur = next(cur_it, _END)


_END: tuple[bytes, None] = (b"", None)


def _key(entry: Entry) -> bytes:
    return path_sort_key(entry.path)


def _keyed(entries: Iterable[Entry], side: str) -> Iterator[tuple[bytes, Entry]]:
    """``(walk-order key, entry)`` of each entry; raises ``ValueError`` out of order."""
    last: bytes | None = None
    for entry in entries:
        key = entry.path.replace(b"/", b"\x00")  # path_sort_key, inlined (once per entry)
        if last is not None and key <= last:
            raise ValueError(f"{side} entries not in walk order at {display_path(entry.path)}")
        last = key
        yield key, entry


# ---------------------------------------------------------------------------------------------
# Step 2: classify


def classify(
    previous: Mapping[bytes, Entry] | Iterable[Entry],
    current: Mapping[bytes, Entry] | Iterable[Entry],
    incomplete_dirs: Collection[bytes] = frozenset(),
    known_content: Container[bytes] | None = None,
) -> Classification:
    """Classify ``current`` against ``previous`` (cbs-api.md §5; rules in the module docstring).

    ``previous``: the previous completed snapshot (every regular file with its content id).
    ``current``: this scan's entries, each regular file with its content id — read, or reused
    through :func:`reuse_content`; a file lacking it where :func:`needs_content` is true raises
    ``ValueError``. Iterables must be in walk order (:func:`path_sort_key`); a mapping
    ``path → Entry`` is sorted here. ``incomplete_dirs``: directories and sources whose scan did
    not complete. ``known_content``: content ids stored in the repository before this job.

    Both passes (module docstring, "Copy sources"): the previous entries are held in a list for
    the second one, so memory is O(previous entries); a streaming caller uses
    :func:`classify_pairs` then :func:`resolve_sources` instead. The result has no tentative copy.
    """
    prev_list = list(_in_walk_order(previous))
    result = classify_pairs(
        pair_by_path(prev_list, _in_walk_order(current)),
        incomplete_dirs,
        known_content,
    )
    return resolve_sources(result, prev_list) if result.sources_wanted else result


def classify_pairs(
    pairs: Iterable[tuple[Entry | None, Entry | None]],
    incomplete_dirs: Collection[bytes] | Callable[[], Collection[bytes]] = frozenset(),
    known_content: Container[bytes] | None = None,
) -> Classification:
    """:func:`classify` over the walk-ordered stream of :func:`pair_by_path`, so a caller can
    read content between pairing and classifying in a single pass over scan and snapshot.

    ``incomplete_dirs`` is used only after the last pair; it may be a callable, called then, so
    that a scan still running while the pairs stream is asked once it has finished (e.g.
    ``lambda: scan.incomplete_dirs``).

    Copies of previous content may be tentative (``from_path`` ``None``, listed in
    :attr:`Classification.sources_wanted`): pass the result and the previous snapshot, streamed
    again, to :func:`resolve_sources` before reporting it.
    """
    gather = _Gather(known_content)
    for prev, cur in pairs:
        gather.add(prev, cur)
    incomplete = incomplete_dirs() if callable(incomplete_dirs) else incomplete_dirs
    return gather.finish(frozenset(incomplete))


def resolve_sources(result: Classification, previous: Iterable[Entry]) -> Classification:
    """``result`` with its tentative copies settled (module docstring, "Copy sources").

    ``previous``: the previous snapshot's entries in walk order — the same stream the
    classification was paired with, read again (it is consumed only until every wanted content
    has its source). Each tentative copy gets ``from_path`` = the first previous regular file
    (non-empty) with its exact content id; a copy whose content no previous file has becomes its
    fallback (:attr:`Classification.fallbacks`). Returns a :class:`Classification` with empty
    ``sources_wanted`` and ``fallbacks``; ``result`` itself when it has no tentative copy.
    Memory O(copies); time O(previous entries) at most. Raises what iterating ``previous``
    raises (e.g. the repository's ``CorruptData``), nothing of its own.
    """
    if not result.sources_wanted:
        return result
    wanted = set(result.sources_wanted)
    found: dict[bytes, bytes] = {}
    for prev in previous:
        content = prev.content_id
        if content is not None and content in wanted and prev.etype is EntryType.FILE and prev.size:
            found[content] = prev.path
            wanted.discard(content)
            if not wanted:
                break
    changes: list[Change] = []
    for change in result.changes:
        fallback = result.fallbacks.get(change.entry.path)
        if fallback is None or change.kind is not ReportList.CPY:
            changes.append(change)
            continue
        source = found.get(change.entry.content_id or b"")
        if source is None:
            _Gather._log(
                fallback.kind.key,
                fallback.entry,
                "no previous file has this content after all (hash match only)",
            )
            changes.append(fallback)
        else:
            changes.append(replace(change, from_path=source))
    changes.sort(key=lambda c: (_key(c.entry), c.kind))
    return Classification(tuple(changes), result.carried, result.unchanged)


def _in_walk_order(entries: Mapping[bytes, Entry] | Iterable[Entry]) -> Iterable[Entry]:
    if isinstance(entries, Mapping):
        return sorted(entries.values(), key=_key)
    return entries


def under_incomplete(path: bytes, incomplete_dirs: Collection[bytes]) -> bool:
    """Whether ``path`` or one of its ancestor directories is in ``incomplete_dirs`` — i.e.
    whether a vanished ``path`` must be carried rather than deleted (cbs-api.md §5, ``del``)."""
    if not incomplete_dirs:
        return False
    while True:
        if path in incomplete_dirs:
            return True
        parent = path.rpartition(b"/")[0]
        if not parent and path.startswith(b"/") and path != b"/":
            parent = b"/"
        if not parent or parent == path:
            return False
        path = parent


class _Gather:
    """The mutable state of one classification (private; see the module docstring)."""

    def __init__(self, known: Container[bytes] | None) -> None:
        self.known = known
        self.changes: list[Change] = []
        self.carried: list[Entry] = []
        self.unchanged = 0
        self.missing: list[Entry] = []  # previous-only entries: deleted or carried at the end
        self.vanished: list[tuple[Entry, Reason]] = []  # deletable regular files
        self.appeared: list[tuple[Entry, Reason]] = []  # regular files without a same-path file
        # content id -> a vanished path; filled only with ``known`` (see _gone)
        self.backup_paths: dict[bytes, bytes] = {}
        # hash(content id) of each non-empty previous file, in walk order; only without ``known``
        self.backup_hashes = array("q")
        self.wanted: set[bytes] = set()  # content ids of tentative copies
        self.fallbacks: dict[bytes, Change] = {}  # tentative copy path -> change without a match
        self.job_paths: dict[bytes, bytes] = {}  # content id -> first path stored this job
        self._hits: set[int] | None = None  # hashes of appeared contents found in backup_hashes
        # link identity (device, inode, content id) of an appeared hard-linked file -> its
        # first appeared name in walk order; hash of the identity of each hard-linked file of
        # which a name was at its path before (module docstring, "Memory")
        self.link_first: dict[tuple[int, int, bytes | None], bytes] = {}
        self.link_kept: set[int] = set()

    # -- streaming ----------------------------------------------------------------------------

    def add(self, prev: Entry | None, cur: Entry | None) -> None:
        if prev is not None and self.known is None:
            self._remember_backup(prev)
        if prev is not None and cur is not None:
            if prev.etype is cur.etype:
                self._same_path(prev, cur)
            else:
                self._log("type", prev, f"{prev.etype.value}→{cur.etype.value}")
                self._gone(prev, Reason.TYPE_CHANGED)
                self._arrived(cur, Reason.TYPE_CHANGED)
        elif prev is not None:
            self.missing.append(prev)
        elif cur is not None:
            self._arrived(cur, Reason.NEW_PATH)

    def _remember_backup(self, prev: Entry) -> None:
        if prev.etype is EntryType.FILE and prev.size > 0 and prev.content_id is not None:
            self.backup_hashes.append(hash(prev.content_id))

    def _in_previous(self, content: bytes) -> bool:
        """Whether a previous file's content id hashes like ``content`` (a probable match).

        One linear pass over the hashes for the first question, answering every appeared file's
        content at once (no sort, so no transient copy of the array)."""
        if self._hits is None:
            asked = {
                hash(cur.content_id)
                for cur, _ in self.appeared
                if cur.content_id is not None and cur.size > 0
            }
            self._hits = {h for h in self.backup_hashes if h in asked} if asked else set()
            self.backup_hashes = array("q")
        return hash(content) in self._hits

    def _same_path(self, prev: Entry, cur: Entry) -> None:
        if cur.etype is EntryType.FILE:
            cur = _with_content(prev, cur)
            if cur.hard_link:
                self.link_kept.add(hash((cur.device, cur.inode, cur.content_id)))
        decision = _compare(prev, cur)
        if decision is None:
            self.unchanged += 1
            self._log("-", cur, "unchanged")
            return
        kind, reason = decision
        self._emit(Change(kind, cur, reason), prev)
        if kind is ReportList.UPD and cur.content_id is not None and cur.size > 0:
            self.job_paths.setdefault(cur.content_id, cur.path)

    def _gone(self, prev: Entry, reason: Reason) -> None:
        if prev.etype is EntryType.FILE:
            self.vanished.append((prev, reason))
            if self.known is not None and prev.size > 0 and prev.content_id is not None:
                self.backup_paths.setdefault(prev.content_id, prev.path)
        else:
            self._emit(Change(ReportList.DEL, prev, reason))

    def _arrived(self, cur: Entry, reason: Reason) -> None:
        if cur.etype is EntryType.FILE:
            cur = _with_content(None, cur)
            if cur.hard_link:
                self.link_first.setdefault((cur.device, cur.inode, cur.content_id), cur.path)
            self.appeared.append((cur, reason))
        else:
            self._emit(Change(ReportList.NEW, cur, reason))

    # -- end of stream: moves, copies, deletions ----------------------------------------------

    def finish(self, incomplete: frozenset[bytes]) -> Classification:
        for prev in self.missing:
            if under_incomplete(prev.path, incomplete):
                self._log("carried", prev, "missing under a directory whose scan is incomplete")
                self.carried.append(prev)
            else:
                self._gone(prev, Reason.PATH_GONE)
        self.missing.clear()
        self.vanished.sort(key=lambda item: _key(item[0]))
        moves = _match_moves([e for e, _ in self.vanished], [e for e, _ in self.appeared])
        used = {m.from_path for m in moves.values()}
        for cur, reason in self.appeared:
            move = moves.get(cur.path)
            self._emit(move if move is not None else self._new_or_copy(cur, reason))
        for prev, reason in self.vanished:
            if prev.path not in used:
                self._emit(Change(ReportList.DEL, prev, reason))
        self.changes.sort(key=lambda c: (_key(c.entry), c.kind))
        return Classification(
            tuple(self.changes),
            tuple(self.carried),
            self.unchanged,
            frozenset(self.wanted),
            self.fallbacks,
        )

    def _new_or_copy(self, cur: Entry, reason: Reason) -> Change:
        content = cur.content_id
        if cur.hard_link:
            key = (cur.device, cur.inode, content)
            if hash(key) in self.link_kept or self.link_first.get(key, cur.path) != cur.path:
                return Change(ReportList.NEW, cur, Reason.HARD_LINK)
        if content is None or cur.size == 0:  # empty files are never copies
            return Change(ReportList.NEW, cur, reason)
        earlier = self.job_paths.get(content)
        if earlier is not None and path_sort_key(earlier) > _key(cur):
            earlier = None
        self.job_paths[content] = cur.path if earlier is None else earlier
        if earlier is not None:
            otherwise = Change(ReportList.CPY, cur, Reason.CONTENT_STORED_THIS_JOB, earlier)
        else:
            otherwise = Change(ReportList.NEW, cur, reason)
        if self.known is None:
            if not self._in_previous(content):
                return otherwise
            self.wanted.add(content)  # tentative: resolve_sources names the previous path
            self.fallbacks[cur.path] = otherwise
            return Change(ReportList.CPY, cur, Reason.CONTENT_ALREADY_STORED)
        if content in self.backup_paths or content in self.known:
            source = self.backup_paths.get(content, earlier)
            return Change(ReportList.CPY, cur, Reason.CONTENT_ALREADY_STORED, source)
        return otherwise

    def _emit(self, change: Change, prev: Entry | None = None) -> None:
        self.changes.append(change)
        if logger.isEnabledFor(logging.DEBUG):
            detail = change_detail(prev, change)
            text = f"{change.reason.text} ({detail})" if detail else change.reason.text
            self._log(change.kind.key, change.entry, text)

    @staticmethod
    def _log(label: str, entry: Entry, text: str) -> None:
        """One decision on the debug log: ``<list or label> <path>: <why>``."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s: %s", label, display_path(entry.path), text)


def _with_content(prev: Entry | None, cur: Entry) -> Entry:
    """``cur`` with a content id: its own, or the previous one when no read was needed."""
    if cur.content_id is not None:
        return cur
    if prev is not None and not needs_content(prev, cur):
        return with_content_id(cur, prev.content_id)
    raise ValueError(f"content id required for {display_path(cur.path)} (needs_content is true)")


def _compare(prev: Entry, cur: Entry) -> tuple[ReportList, Reason] | None:
    """The change of a path whose type is the same in both entries, or ``None`` if unchanged."""
    if cur.etype is EntryType.FILE and prev.content_id != cur.content_id:
        return ReportList.UPD, Reason.CONTENT_CHANGED
    if cur.etype is EntryType.LINK and prev.link_target != cur.link_target:
        return ReportList.UPD, Reason.LINK_TARGET_CHANGED
    reason = _attribute_reason(prev, cur, with_mtime=cur.etype is not EntryType.DIRECTORY)
    return None if reason is None else (ReportList.PMT, reason)


def _attribute_reason(prev: Entry, cur: Entry, *, with_mtime: bool) -> Reason | None:
    if prev.mode != cur.mode:
        return Reason.MODE_CHANGED
    if prev.uid != cur.uid or prev.gid != cur.gid:
        return Reason.OWNER_CHANGED
    if prev.hard_link != cur.hard_link and prev.inode != cur.inode:
        return Reason.LINKED if cur.hard_link else Reason.UNLINKED
    if with_mtime and prev.mtime_ns != cur.mtime_ns:
        return Reason.MTIME_ONLY
    return None


def _match_moves(vanished: list[Entry], appeared: list[Entry]) -> dict[bytes, Change]:
    """Pair appeared regular files with vanished ones: inode matches first, then content
    matches; each vanished file used once; both lists in walk order. Keyed by the new path."""
    moves: dict[bytes, Change] = {}
    by_inode: dict[tuple[int, int], list[Entry]] = {}
    for old in vanished:
        by_inode.setdefault((old.device, old.inode), []).append(old)
    used: set[bytes] = set()
    for new in appeared:
        for old in by_inode.get((new.device, new.inode), ()):
            if old.path not in used and _same_file(old, new):
                used.add(old.path)
                moves[new.path] = Change(ReportList.MOV, new, Reason.SAME_INODE_NEW_PATH, old.path)
                break
    by_content: dict[bytes, list[Entry]] = {}
    for old in vanished:
        if old.path not in used and old.size > 0 and old.content_id is not None:
            by_content.setdefault(old.content_id, []).append(old)
    for new in appeared:
        candidates = by_content.get(new.content_id or b"") if new.size > 0 else None
        if new.path in moves or not candidates:
            continue
        old = candidates.pop(0)
        used.add(old.path)
        moves[new.path] = Change(ReportList.MOV, new, Reason.SAME_CONTENT_NEW_PATH, old.path)
    return moves


def _same_file(old: Entry, new: Entry) -> bool:
    """Same inode is the same file when the content is equal and non-empty, or when size and
    ``mtime_ns`` are unchanged (the only test for empty files)."""
    if old.size == new.size and old.mtime_ns == new.mtime_ns:
        return True
    return new.size > 0 and old.content_id is not None and old.content_id == new.content_id


#: The attributes of an entry whose change :func:`change_detail` names.
DETAIL_FIELDS = (
    "size",
    "mtime_ns",
    "ctime_ns",
    "mode",
    "uid",
    "gid",
    "inode",
    "link_target",
    "hard_link",
)


def change_detail(prev: Entry | None, change: Change) -> str:
    """What differs, for a person: ``from <path>`` for a move or copy, else each attribute of
    ``DETAIL_FIELDS`` that differs from ``prev`` (``size 4→12, mode 0644→0600, mtime …``:
    permission bits in octal, times as local date and time, a link's target as a path); ``""`` when
    there is nothing to say. The debug log and the agent's ``--verbose`` say it so."""
    if change.from_path is not None:
        return f"from {display_path(change.from_path)}"
    if prev is None:
        return ""
    cur = change.entry
    diffs = [
        f"{name.removesuffix('_ns')} {_shown(name, getattr(prev, name))}→"
        f"{_shown(name, getattr(cur, name))}"
        for name in DETAIL_FIELDS
        if getattr(prev, name) != getattr(cur, name)
    ]
    return ", ".join(diffs)


def _shown(name: str, value: object) -> str:
    """One attribute's value as :func:`change_detail` says it: ``mode`` as its permission bits
    in octal (``0644``; the file type never differs within one path's change), a time
    (``mtime_ns``, ``ctime_ns``: epoch ns) as the local date and time to the nanosecond
    (``2026-12-05 11:02:42.409342196``), ``link_target`` as a path (``display_path``),
    anything else as it is."""
    if name == "mode" and isinstance(value, int):
        return f"{stat.S_IMODE(value):04o}"
    if name.endswith("_ns") and isinstance(value, int):
        seconds, ns = divmod(value, 1_000_000_000)
        return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seconds))}.{ns:09d}"
    if isinstance(value, bytes):
        return display_path(value)
    return str(value)
