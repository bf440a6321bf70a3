"""Walk the source paths of a backup set into :class:`~opencbs.engine.entries.Entry` values.

The scan is the one place that reads the source tree's metadata, and it turns every OS error
into a soft :class:`ScanWarning` (style.md item 4): the job goes on, and the directory whose
listing or entry could not be read is recorded as *incomplete*, so that nothing under it is
reported deleted (cbs-api.md §5, ``del``). A directory the scan emitted completed exactly when
it is not in :attr:`Scan.incomplete_dirs`; pass that set to ``classify.classify`` (or
``lambda: scan.incomplete_dirs`` to ``classify.classify_pairs`` while the scan streams).

Rules:

- Paths are bytes throughout (``os.fsencode``), so names that are not UTF-8 survive exactly.
- Symbolic links are never followed: a link is an entry of type ``L`` whose ``link_target`` is
  ``os.readlink``'s bytes, ``size`` their length, and ``link_to_dir`` whether the target
  resolves to a directory. A source that is itself a link is that link, not its target.
- Each source is itself an entry (a directory, normally — cbs-api.md §5: "each source folder
  counts as a directory entry of the first job"); it is made absolute, and a source inside
  another source is dropped. A missing source is a warning and is incomplete.
- Order: depth-first, pre-order, each directory's names sorted by bytes, sources in the same
  order — that is ``classify.path_sort_key`` order, which ``classify`` merges on.
- Only regular files, directories and symbolic links are entries; sockets, FIFOs and device
  files are not backed up, each named in a warning ("a FIFO (named pipe): not backed up"), so
  a job that meets one ends with warnings; never silently (issue 15). Their directory stays
  complete. What the filters leave out is not warned about.
- A file or link listed in a directory and gone by the time it is ``lstat``-ed (or its link
  read) *vanished during the scan*: a warning naming it, no entry, and the directory stays
  complete — the file is gone, so a previous backup of it is reported deleted, once. Only
  when the directory itself is no longer the one listed (removed, or renamed away: its path no
  longer leads to the same device and inode) is the directory made incomplete instead. Any
  other error on an entry (permissions, I/O) makes its directory incomplete.
- ``content_id`` is always ``None``: reading content is the caller's step, planned with
  ``classify.needs_content``.
- A regular file with more than one name (``st_nlink > 1``: a hard link) is an entry of each
  name with ``hard_link`` set; its ``(device, inode)`` is what tells the names of one file
  apart from others (issue 15). Names outside the sources are not looked for.

Filters (:class:`ScanFilter`): glob patterns (``fnmatch``, case-sensitive). A pattern holding a
``/`` is matched against the full path, where ``*`` and ``?`` match ``/`` too (``*/.cache``
matches every ``.cache``); a pattern without one is matched against the entry's name alone, in
any folder (``node_modules``, ``*.tmp``), as restic and rsync read such patterns.

1. Excludes win: an entry matching an exclude pattern is skipped, and an excluded directory is
   not walked (its subtree is pruned). Sources are filtered too.
2. Without include patterns every other entry is kept. With include patterns, an entry is kept
   when it, or one of its ancestor directories, matches an include pattern; a directory that
   does not is still walked, and is emitted (just before its first kept descendant) only if
   something under it is kept. Sources are always emitted.

Cache folders: a directory holding a valid ``CACHEDIR.TAG`` (a regular file, not a link, whose
content begins with :data:`CACHEDIR_SIGNATURE`: the Cache Directory Tagging Specification,
https://bford.info/cachedir/, written by pip, cargo, ccache, …) is backed up as the directory
and that tag file only: its other contents are left out (as GNU tar's ``--exclude-caches``;
restoring gives back the empty, still tagged folder). A tag without the signature is an
ordinary file. This holds for every backup (``ScanFilter.exclude_caches``, on by default).

Memory: the walk holds one sorted listing (``os.DirEntry`` per name) for each directory on the
current path, plus the warnings and the incomplete directories.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from opencbs.engine.classify import path_sort_key
from opencbs.engine.entries import Entry, display_path
from opencbs.reports.vocabulary import EntryType

logger = logging.getLogger(__name__)

#: The warning of a source that cannot be looked at (``{why}``: the system's reason). Its
#: entries of the previous backup stay in the new snapshot (the source is left incomplete:
#: ``incomplete_dirs``, docs/architecture.md), so the text says so: nothing is reported deleted.
SOURCE_MISSING = (
    "source not found or unreadable ({why}); "
    "not reported deleted: its entries of an earlier backup, if any, stay in the snapshot"
)

__all__ = [
    "CACHEDIR_SIGNATURE",
    "CACHEDIR_TAG",
    "SOURCE_MISSING",
    "Scan",
    "ScanFilter",
    "ScanWarning",
    "scan",
]

#: The name of a cache directory's tag file, and the bytes it begins with
#: (https://bford.info/cachedir/).
CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


@dataclass(frozen=True, slots=True)
class ScanWarning:
    """A soft error of the scan: the full ``path`` concerned and a one-line ``message``."""

    path: bytes
    message: str


@dataclass(frozen=True, slots=True)
class ScanFilter:
    """Include and exclude glob patterns over full paths (bytes), and whether the contents of
    folders tagged as caches are left out (``exclude_caches``); rules in the module docstring.

    Build one from text or bytes with :meth:`of`.
    """

    include: tuple[bytes, ...] = ()
    exclude: tuple[bytes, ...] = ()
    exclude_caches: bool = True

    @classmethod
    def of(
        cls, include: Iterable[bytes | str] = (), exclude: Iterable[bytes | str] = ()
    ) -> ScanFilter:
        """A filter from patterns given as ``str`` (``os.fsencode``-d) or ``bytes``."""
        return cls(tuple(map(os.fsencode, include)), tuple(map(os.fsencode, exclude)))

    def excludes(self, path: bytes) -> bool:
        """Whether ``path`` matches an exclude pattern (module docstring)."""
        if not self.exclude:
            return False
        return _matches(path, self.exclude)

    def includes(self, path: bytes) -> bool:
        """Whether ``path`` matches an include pattern (always true without include patterns)."""
        if not self.include:
            return True
        return _matches(path, self.include)


def _matches(path: bytes, patterns: tuple[bytes, ...]) -> bool:
    """Whether ``path`` matches one of ``patterns``: the full path for a pattern holding a
    ``/``, the last component for one without."""
    name = path.rpartition(b"/")[2]
    return any(fnmatch.fnmatchcase(path if b"/" in p else name, p) for p in patterns)


@dataclass(slots=True)
class _Frame:
    """A directory on the walk's current path."""

    path: bytes
    ident: tuple[int, int]  # (device, inode) of the directory when it was listed
    kept: bool  # the directory or an ancestor matched an include pattern
    pending: Entry | None  # the directory's entry, not emitted yet (nothing under it kept yet)
    children: Iterator[os.DirEntry[bytes]] = field(default_factory=lambda: iter(()))


class Scan:
    """One walk of the sources; iterate it once.

    Iterating yields :class:`Entry` and :class:`ScanWarning` values in walk order
    (:meth:`entries` yields the entries only). Once the walk has finished (:attr:`finished`),
    :attr:`incomplete_dirs` holds every directory or source whose scan did not complete, and
    :attr:`warnings` every warning; :attr:`completed_dirs` counts the directories that did.
    """

    def __init__(self, sources: Iterable[bytes | str], filters: ScanFilter | None = None) -> None:
        self.sources: tuple[bytes, ...] = _normalize_sources(sources)
        self.filters = filters if filters is not None else ScanFilter()
        self.completed_dirs = 0
        self._incomplete: set[bytes] = set()
        self._warnings: list[ScanWarning] = []
        self._started = False
        self._finished = False

    @property
    def finished(self) -> bool:
        """Whether the walk has run to its end."""
        return self._finished

    @property
    def incomplete_dirs(self) -> frozenset[bytes]:
        """Directories and sources not completely scanned (final once :attr:`finished`)."""
        return frozenset(self._incomplete)

    @property
    def warnings(self) -> tuple[ScanWarning, ...]:
        """The warnings so far, in walk order."""
        return tuple(self._warnings)

    def __iter__(self) -> Iterator[Entry | ScanWarning]:
        if self._started:
            raise RuntimeError("a Scan can be iterated only once")
        self._started = True
        return self._walk()

    def entries(self) -> Iterator[Entry]:
        """Iterate the walk yielding only entries (warnings are kept in :attr:`warnings`)."""
        for item in self:
            if isinstance(item, Entry):
                yield item

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self) -> Iterator[Entry | ScanWarning]:
        for source in self.sources:
            yield from self._walk_source(source)
        self._finished = True

    def _walk_source(self, root: bytes) -> Iterator[Entry | ScanWarning]:
        if self.filters.excludes(root):
            logger.debug("source %s excluded", display_path(root))
            return
        try:
            st = os.lstat(root)
        except OSError as error:
            self._incomplete.add(root)
            yield self._warn(root, SOURCE_MISSING.format(why=_reason(error)))
            return
        try:
            entry = self._entry(root, st)
        except OSError as error:
            self._incomplete.add(root)
            yield self._warn(root, f"cannot read symbolic link: {_reason(error)}")
            return
        if entry is None:
            self._incomplete.add(root)
            yield self._warn(root, "source is not a file, directory or link")
            return
        yield entry
        if entry.etype is EntryType.DIRECTORY:
            yield from self._walk_tree(root, _ident(entry), kept=self.filters.includes(root))

    def _walk_tree(
        self, root: bytes, ident: tuple[int, int], *, kept: bool
    ) -> Iterator[Entry | ScanWarning]:
        stack: list[_Frame] = []
        yield from self._enter(stack, _Frame(root, ident, kept, None))
        while stack:
            frame = stack[-1]
            child = next(frame.children, None)
            if child is None:
                stack.pop()
                if frame.path not in self._incomplete:
                    self.completed_dirs += 1
                continue
            yield from self._visit(stack, frame, child)

    def _enter(self, stack: list[_Frame], frame: _Frame) -> Iterator[ScanWarning]:
        """List the frame's directory (sorted by name) and push it."""
        children: list[os.DirEntry[bytes]] = []
        try:
            with os.scandir(frame.path) as listing:
                for child in listing:
                    children.append(child)
        except OSError as error:
            self._incomplete.add(frame.path)
            yield self._warn(frame.path, f"cannot read directory: {_reason(error)}")
        if self.filters.exclude_caches and _is_cache(children):
            logger.debug("cache folder %s: its tag only", display_path(frame.path))
            children = [c for c in children if c.name == CACHEDIR_TAG]
        children.sort(key=lambda child: child.name)
        frame.children = iter(children)
        stack.append(frame)

    def _visit(
        self, stack: list[_Frame], parent: _Frame, child: os.DirEntry[bytes]
    ) -> Iterator[Entry | ScanWarning]:
        path = _join(parent.path, child.name)
        if self.filters.excludes(path):
            logger.debug("excluded %s", display_path(path))
            return
        try:
            st = child.stat(follow_symlinks=False)
        except OSError as error:
            yield self._entry_error(parent, path, "cannot stat", error)
            return
        try:
            entry = self._entry(path, st)
        except OSError as error:
            yield self._entry_error(parent, path, "cannot read symbolic link", error)
            return
        kept = parent.kept or self.filters.includes(path)
        if entry is None:
            if kept:  # never silent (issue 15): named, and the job ends with a warning
                yield self._warn(path, f"{_special_kind(st.st_mode)}: not backed up")
            return
        if entry.etype is EntryType.DIRECTORY:
            if kept:
                yield from _flush(stack)
                yield entry
            frame = _Frame(path, _ident(entry), kept, None if kept else entry)
            yield from self._enter(stack, frame)
        elif kept:
            yield from _flush(stack)
            yield entry

    def _entry(self, path: bytes, st: os.stat_result) -> Entry | None:
        """The entry of ``path`` from its ``lstat``; ``None`` for a type that is not backed up.
        Raises ``OSError`` when a link's target cannot be read."""
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                return _make_hard_link(path, st)
            return _make(path, st, EntryType.FILE, st.st_size)
        if stat.S_ISDIR(st.st_mode):
            return _make(path, st, EntryType.DIRECTORY, 0)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            to_dir = os.path.isdir(path)
            return _make_link(path, st, target, to_dir=to_dir)
        return None

    def _entry_error(self, parent: _Frame, path: bytes, action: str, error: OSError) -> ScanWarning:
        """The warning of an entry of ``parent`` that could not be read; rules in the module
        docstring (a vanished entry leaves its directory complete)."""
        if isinstance(error, FileNotFoundError) and _still(parent):
            return self._warn(path, "vanished during the scan")
        self._incomplete.add(parent.path)
        return self._warn(path, f"{action}: {_reason(error)}")

    def _warn(self, path: bytes, message: str) -> ScanWarning:
        warning = ScanWarning(path, message)
        self._warnings.append(warning)
        logger.warning("%s: %s", display_path(path), message)
        return warning


def _special_kind(mode: int) -> str:
    """What a file that is not a regular file, directory or link is, for its warning."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def scan(sources: Iterable[bytes | str], filters: ScanFilter | None = None) -> Scan:
    """A :class:`Scan` of ``sources`` (paths as ``str`` or ``bytes``) with ``filters``."""
    return Scan(sources, filters)


def _is_cache(children: list[os.DirEntry[bytes]]) -> bool:
    """Whether a directory listing holds a valid ``CACHEDIR.TAG`` (a regular file beginning
    with the signature); an unreadable tag is no tag (the folder is backed up)."""
    tag = next((c for c in children if c.name == CACHEDIR_TAG), None)
    if tag is None:
        return False
    try:
        if not tag.is_file(follow_symlinks=False):
            return False
        with open(tag.path, "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False


def _flush(stack: list[_Frame]) -> Iterator[Entry]:
    """Emit the directories on the current path not emitted yet (outermost first)."""
    for frame in stack:
        if frame.pending is not None:
            yield frame.pending
            frame.pending = None


def _make(path: bytes, st: os.stat_result, etype: EntryType, size: int) -> Entry:
    """The entry of a file or directory (``size`` in bytes) from its ``lstat``."""
    # Once per entry, so: positional everywhere (Python 3.11 specialises only calls of a
    # function without keyword-only parameters, given no keywords), Entry's fields in order.
    # Mode, owner, group and device take few values: one int object each for every entry that
    # keeps them (a job holds the entries of every new file until classification: 32 bytes
    # apiece).
    shared = _shared_int
    return Entry(
        path,
        etype,
        size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        shared(st.st_mode, st.st_mode),
        shared(st.st_uid, st.st_uid),
        shared(st.st_gid, st.st_gid),
        st.st_ino,
        shared(st.st_dev, st.st_dev),
    )


def _make_hard_link(path: bytes, st: os.stat_result) -> Entry:
    """The entry of a regular file with more than one name (``st_nlink > 1``) from its
    ``lstat``: ``hard_link`` set, so its ``(device, inode)`` is its link identity. As
    ``_make``."""
    shared = _shared_int
    return Entry(
        path,
        EntryType.FILE,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        shared(st.st_mode, st.st_mode),
        shared(st.st_uid, st.st_uid),
        shared(st.st_gid, st.st_gid),
        st.st_ino,
        shared(st.st_dev, st.st_dev),
        None,
        False,
        None,
        True,
    )


def _make_link(path: bytes, st: os.stat_result, target: bytes, *, to_dir: bool) -> Entry:
    """The entry of a symbolic link (``size``: the target's length in bytes) from its
    ``lstat``; ``to_dir``: whether the target is a directory. As ``_make``."""
    shared = _shared_int
    return Entry(
        path,
        EntryType.LINK,
        len(target),
        st.st_mtime_ns,
        st.st_ctime_ns,
        shared(st.st_mode, st.st_mode),
        shared(st.st_uid, st.st_uid),
        shared(st.st_gid, st.st_gid),
        st.st_ino,
        shared(st.st_dev, st.st_dev),
        target,
        to_dir,
    )


_SHARED_INTS: dict[int, int] = {}  # value -> the first int object of that value seen (_make)
_shared_int = _SHARED_INTS.setdefault


def _ident(entry: Entry) -> tuple[int, int]:
    return entry.device, entry.inode


def _still(frame: _Frame) -> bool:
    """Whether ``frame.path`` still leads to the directory that was listed."""
    try:
        st = os.lstat(frame.path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == frame.ident


def _join(directory: bytes, name: bytes) -> bytes:
    return directory + name if directory.endswith(b"/") else directory + b"/" + name


def _normalize_sources(sources: Iterable[bytes | str]) -> tuple[bytes, ...]:
    """Absolute bytes paths in walk order, without duplicates or sources inside another."""
    kept: list[bytes] = []
    for source in sorted({os.path.abspath(os.fsencode(s)) for s in sources}, key=path_sort_key):
        if not any(_inside(source, outer) for outer in kept):
            kept.append(source)
    return tuple(kept)


def _inside(path: bytes, directory: bytes) -> bool:
    return path == directory or path.startswith(directory.rstrip(b"/") + b"/")


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__
