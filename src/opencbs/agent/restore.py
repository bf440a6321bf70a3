"""Restoring a snapshot (one backup job of a set) into a target folder.

:func:`restore` writes every entry of the snapshot — or only those at or under the chosen
``paths`` — below ``target``: an entry of source path ``/home/ann/doc.txt`` is written to
``<target>/home/ann/doc.txt``. Regular files get their content (every chunk is checked against
its ID by ``Repository.read_chunk``, and the whole content against the entry's content ID),
mode and modification time; directories their mode and modification time (set after their
content, deepest first); symbolic links their target (never followed) and modification time.
The names of one hard-linked file are made hard links of one file again (``agent.restore_links``:
its content written once; a link that cannot be made is a warning and a copy).

The target itself is left as it is: a snapshot's ``/`` entry (a backup of ``/``) maps to the
target, whose mode, owner and times are never changed; every other entry maps to a path below.

Owners and special bits (issue 11): by default the files belong to the user running the
restore (also root) and modes keep their permission bits only (``mode & 0o777``: set-user-ID,
set-group-ID and sticky bits are dropped), so a restore never makes a set-user-ID program of
someone else's, nor a file of uid 0 that the user did not ask for. ``same_owner=True``
(``opencbs restore --same-owner``) restores the owner and group by their numeric IDs, and the
special bits with them; a refused ``chown`` (an unprivileged user may only give files to itself
and its groups) is then a path not restored (below), and that path keeps its permission bits
only. Owners are set before modes, since ``chown`` clears set-user-ID bits.

Paths that cannot be written: a path the target refuses — a directory where the snapshot has
a file, permission denied, a name too long, an owner that cannot be set — is recorded in
``RestoreResult.failed`` (the first ``FAILED_LISTED``; ``failed_count`` counts them all) and the
restore goes on with the other entries; nothing is raised for them (``complete`` is then
false). A partly written file is removed. A full, read-only or failing target file system
(``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EIO``) stops the restore instead (``OSError``): every
later path would fail the same way. A non-directory where the snapshot has a directory (a file
or a link, restored or planted) is replaced by the directory, and any existing non-directory
where the snapshot has a file or link is replaced (the link itself, never what it points to).

Sparse files: content is written with ``pwrite`` and every all-zero run of whole 4 KiB blocks
(aligned in the file) is skipped, then the file is cut to its size, so zeros become holes on
file systems that support them; the content is byte-identical either way.

Damage: a file whose chunk is damaged or missing (``CorruptData``/``ChunkNotFound``), or whose
content fails its content ID or size, is removed (no file with silently wrong content is left)
and recorded in ``RestoreResult.damaged``; the restore goes on with the other entries. A tree
that cannot be read to its end stops the restore there (recorded too). When anything was
damaged, :func:`restore` raises :class:`RestoreIncomplete` at the end, carrying the result (so a
command exits non-zero); ``strict=False`` returns the result instead.

Nothing is ever written outside ``target``:

- a snapshot path that is not absolute, or holds a ``.``/``..``/empty component or a NUL byte,
  and a ``/`` entry that is not a directory, is refused (``UnsafePath``; nothing of that entry
  is written);
- every directory is entered with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's
  descriptor, and every file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to its
  directory's descriptor, so a symbolic link in the target (restored or planted, also one
  planted during the restore) is never traversed.

What the target already holds (issue 15, point 8): ``overwrite`` (``agent.restore_overwrite
.Overwrite``) says what happens to a non-directory already at a path the restore writes:
``REFUSE`` raises ``RestoreConflict`` naming the first one before anything is written,
``ALWAYS`` replaces it (the default of this function, as before), ``IF_CHANGED`` leaves a file
or link that already matches the entry, ``NEVER`` leaves every one; those left are counted in
``RestoreResult.kept``, what ``NEVER`` cannot restore below one in ``RestoreResult.blocked``;
no choice modifies a file outside the target through a hard link planted in it
(``agent.restore_overwrite``). Existing directories are merged into, never conflicts.

Paths are bytes throughout, so names that are not UTF-8 are restored exactly.

Progress: given a ``progress`` callback, :func:`restore` first reads the snapshot tree once
without writing anything, to know the totals (entries, regular files and their bytes, of the
selection); this pass costs about 2 % of a restore of 20,000 small files (0.05 s of 2.3 s),
less for bigger files. The callback then gets a :class:`RestoreProgress` at most every
``PROGRESS_INTERVAL`` seconds (also during a big file, chunk by chunk), and once more at the end
(``finished=True``) with counts equal to the result's — also when the restore then raises
:class:`RestoreIncomplete`. If the first pass cannot read the tree, the totals are ``None`` and
the restore goes on as without a callback (the damage is recorded as usual).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opencbs.agent.restore_links import HardLinks, link_identity
from opencbs.agent.restore_overwrite import (
    InTheWay,
    Keeper,
    KeptInTheWay,
    Overwrite,
    RestoreConflict,
    first_conflict,
    in_the_way,
    target_is_empty,
)
from opencbs.agent.snapshot_lookup import LATEST, AmbiguousJobId, latest_snapshot
from opencbs.destinations.base import Storage
from opencbs.engine.entries import Entry, display_path
from opencbs.engine.repo_errors import (
    ChunkNotFound,
    CorruptData,
    RepositoryError,
    SnapshotNotFound,
)
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.reports.vocabulary import EntryType
from opencbs.reports.wording import plural

__all__ = [
    "FAILED_LISTED",
    "DamagedFile",
    "FailedPath",
    "Overwrite",
    "RestoreConflict",
    "RestoreIncomplete",
    "RestoreProgress",
    "RestoreResult",
    "UnsafePath",
    "find_snapshot",
    "refuse_conflicts",
    "restore",
]

log = logging.getLogger(__name__)

_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{64}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: Holes are made of aligned all-zero blocks of this many bytes.
HOLE_BLOCK = 4096
_ZERO_BLOCK = bytes(HOLE_BLOCK)
#: Seconds between two progress calls, at least (the final call is always made).
PROGRESS_INTERVAL = 0.25
#: At most this many paths not restored are listed in a result (all are counted).
FAILED_LISTED = 1000
#: Errors of the target file system as a whole: they stop the restore (module docstring).
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
#: The permission bits kept without ``same_owner`` (no set-user-ID, set-group-ID, sticky).
_PERMISSION_BITS = 0o777


class UnsafePath(RepositoryError):
    """A snapshot path that would escape the restore target (relative, ``..``, NUL)."""

    code = "restore_unsafe_path"

    def __init__(self, path: bytes) -> None:
        super().__init__(f"Refusing to restore unsafe path {display_path(path)}")
        self.path = path


@dataclass(frozen=True, slots=True)
class DamagedFile:
    """An entry that could not be restored: its ``path`` (display form; ``snapshot <id>`` for
    an unreadable tree) and why (``message``, naming the chunk when one is at fault)."""

    path: str
    message: str


@dataclass(frozen=True, slots=True)
class FailedPath:
    """A path the target refused: its ``path`` in the snapshot (display form) and why
    (``reason``, one line: the system's words, e.g. "permission denied")."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore wrote: the ``snapshot_id``, counts of ``files``, ``dirs`` and ``links``
    fully restored, content ``bytes`` written, the unsafe paths ``skipped`` (display form), the
    ``damaged`` entries that were not restored, the paths the target refused: ``failed``
    (the first ``FAILED_LISTED``) and ``failed_count`` (all of them), and the existing paths
    left as they were (``kept``: ``Overwrite.IF_CHANGED`` and ``NEVER``), the entries not
    restored because ``NEVER`` kept a non-directory where the snapshot has a folder above
    them (``blocked``), and the other ``warnings`` (one line each: a hard link that could not
    be made, written as a copy; a path in the way of ``blocked`` entries)."""

    snapshot_id: str
    files: int
    dirs: int
    links: int
    bytes: int
    skipped: tuple[str, ...]
    damaged: tuple[DamagedFile, ...] = ()
    failed: tuple[FailedPath, ...] = ()
    failed_count: int = 0
    kept: int = 0
    warnings: tuple[str, ...] = ()
    blocked: int = 0

    @property
    def complete(self) -> bool:
        """Whether every selected entry was restored: nothing damaged, no path refused by the
        target (unsafe paths aside, and the ``blocked`` ones: ``NEVER`` asked to keep their way
        blocked; a warning each)."""
        return not self.damaged and not self.failed_count


@dataclass(frozen=True, slots=True)
class RestoreProgress:
    """How far a restore is: counts so far of ``files``, ``dirs`` and ``links`` restored and
    content ``bytes`` written (as :class:`RestoreResult`; ``bytes`` also counts the part of the
    file being written), ``entries_done`` (selected entries handled so far: restored, damaged or
    skipped as unsafe), and the totals of the selection — ``entries_total``, ``files_total``
    (regular files), ``bytes_total`` (the sum of their sizes) — or ``None`` when the tree could
    not be read ahead. ``current``: the entry being restored (display form); ``finished``: this
    is the last call, whose counts equal the result's."""

    snapshot_id: str
    files: int
    dirs: int
    links: int
    bytes: int
    entries_done: int
    entries_total: int | None
    files_total: int | None
    bytes_total: int | None
    current: str = ""
    finished: bool = False


@dataclass(frozen=True, slots=True)
class _Totals:
    entries: int
    files: int
    bytes: int


class RestoreIncomplete(CorruptData):
    """A restore that wrote everything it could, but some entries were damaged in the
    repository. ``result`` is the :class:`RestoreResult` (``result.damaged`` lists them)."""

    code = "restore_incomplete"

    def __init__(self, result: RestoreResult) -> None:
        first = result.damaged[0]
        more = f" and {len(result.damaged) - 1} more" if len(result.damaged) > 1 else ""
        super().__init__(
            f"Restore incomplete: {first.path} is damaged ({first.message}){more}; "
            f"{plural(result.files, 'file')} restored"
        )
        self.result = result


def find_snapshot(
    repo: Repository,
    snapshot_or_job_id: str,
    *,
    set_id: str | None = None,
    destination_id: str | None = None,
    set_names: Mapping[str, str] | None = None,
) -> SnapshotInfo:
    """The snapshot of that ID (64 hex), or the one snapshot of the backup job of that ID
    (``yyyy-MM-dd-HH-mm-ss``), or with ``latest`` the newest of the set
    (``agent.snapshot_lookup.latest_snapshot``; ``set_names``, set ID → name, words its
    errors); optionally of one set and destination. Raises ``SnapshotNotFound`` (``NoSnapshot``
    for ``latest``), ``SeveralSets`` (``latest``, no set, several in the destination), and
    ``AmbiguousJobId`` when more than one snapshot has the job ID (none is picked:
    ``agent.snapshot_lookup``)."""
    if snapshot_or_job_id == LATEST:
        return latest_snapshot(
            repo.list_snapshots(), set_id=set_id, destination_id=destination_id, names=set_names
        )
    if _SNAPSHOT_ID.match(snapshot_or_job_id):
        try:
            return repo.snapshot_info(snapshot_or_job_id)
        except SnapshotNotFound:
            pass
    found = [
        i
        for i in repo.list_snapshots()
        if i.meta.job_id == snapshot_or_job_id
        and (set_id is None or i.meta.set_id == set_id)
        and (destination_id is None or i.meta.destination_id == destination_id)
    ]
    if not found:
        raise SnapshotNotFound(snapshot_or_job_id)
    if len(found) > 1:
        raise AmbiguousJobId(snapshot_or_job_id, [i.id for i in found])
    return found[0]


def restore(
    storage: Storage,
    password: str | bytes,
    snapshot_or_job_id: str,
    target: str | bytes | os.PathLike[str],
    *,
    paths: Iterable[str | bytes] | None = None,
    set_id: str | None = None,
    destination_id: str | None = None,
    strict: bool = True,
    same_owner: bool = False,
    progress: Callable[[RestoreProgress], None] | None = None,
    repository: Repository | None = None,
    overwrite: Overwrite = Overwrite.ALWAYS,
    stopped: Callable[[RestoreResult], None] | None = None,
) -> RestoreResult:
    """Restore a snapshot (by snapshot ID, job ID or ``latest``, see :func:`find_snapshot`) below
    ``target`` (created if missing). ``paths``: restore only the entries at or under these
    source paths (absolute; default everything). ``same_owner``: restore owners (numeric
    uid/gid) and set-user-ID, set-group-ID and sticky bits (default: neither, whoever runs it;
    see the module docstring).
    ``progress``: called with a :class:`RestoreProgress` a few times per second at most and
    once at the end (see the module docstring); an exception it raises ends the restore.
    ``repository``: the repository of ``storage`` opened already (``password`` then unused).
    The target is created only once the snapshot is found. ``overwrite``: what happens to
    what the target holds already (module docstring). ``stopped``: called with the result so
    far when the restore stops by an exception once it has begun writing.

    Raises ``SnapshotNotFound``, ``WrongPassword``, ``RestoreConflict`` (``REFUSE``, the target
    holds a path the restore would replace; nothing written), ``CorruptData`` (the snapshot
    object is damaged), ``RestoreIncomplete`` (after restoring everything else, when entries were
    damaged; not with ``strict=False``), ``DestinationError`` and ``OSError`` (the target
    cannot be opened, or its file system is full, read-only or failing). Unsafe snapshot paths
    are skipped and paths the target refuses are not restored; both are listed in the result,
    and the restore goes on (not an exception, even with ``strict``).
    """
    repo = repository if repository is not None else Repository.open(storage, password)
    info = find_snapshot(repo, snapshot_or_job_id, set_id=set_id, destination_id=destination_id)
    wanted = None if paths is None else [_strip(os.fsencode(p)) for p in paths]
    target_b = os.fsencode(os.fspath(target))
    os.makedirs(target_b, exist_ok=True)
    totals = _totals(repo, info, wanted) if progress is not None else None
    if overwrite is Overwrite.REFUSE:
        refuse_conflicts(repo, info.id, target_b, paths=wanted)
    root = os.open(target_b, _DIR_FLAGS)
    before = os.fstat(root)  # the target's own times: what is created in it changes them
    writer = _Restorer(repo, root, same_owner=same_owner, overwrite=overwrite)
    if progress is not None:
        writer.reporter = _Reporter(info.id, totals, progress, writer)
        writer.reporter.report(force=True)
    try:
        _, items = repo.load_snapshot(info.id)
        try:
            for entry, chunk_ids in items:
                if wanted is not None and not _selected(entry.path, wanted):
                    continue
                writer.restore_entry(entry, chunk_ids)
                writer.entries_done += 1
                if writer.reporter is not None:
                    writer.reporter.report(entry)
        except (CorruptData, ChunkNotFound) as exc:  # the tree itself: nothing after is known
            log.debug("snapshot %s tree unreadable: %s", info.id, exc.message)
            writer.damaged.append(
                DamagedFile(f"snapshot {info.id}", f"tree unreadable: {exc.message}")
            )
        writer.finish_dirs()
    except BaseException:
        if stopped is not None:
            stopped(writer.result(info.id))
        raise
    finally:
        with contextlib.suppress(OSError):  # left alone: as they were before the restore
            os.utime(root, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.close(root)
    result = writer.result(info.id)
    if writer.reporter is not None:
        writer.reporter.report(force=True, finished=True)
    if strict and result.damaged:
        raise RestoreIncomplete(result)
    return result


def _selected(path: bytes, wanted: Sequence[bytes]) -> bool:
    return any(_within(path, w) for w in wanted)


def refuse_conflicts(
    repo: Repository,
    snapshot_id: str,
    target: str | bytes | os.PathLike[str],
    *,
    paths: Iterable[str | bytes] | None = None,
) -> None:
    """What :func:`restore` with ``Overwrite.REFUSE`` checks before writing (also for a caller
    that wants it said before it shows anything): raises ``RestoreConflict`` naming the first
    path of ``target`` holding a non-directory where snapshot ``snapshot_id`` (its ``paths``,
    as :func:`restore` takes them) would write (``restore_overwrite.first_conflict``). A
    missing, empty or unreadable target, or a tree that cannot be read, passes (the restore
    then says what is wrong)."""
    wanted = None if paths is None else [_strip(os.fsencode(p)) for p in paths]
    target_b = os.fsencode(os.fspath(target))

    def selection() -> Iterator[tuple[bytes, ...]]:
        _, items = repo.load_snapshot(snapshot_id)
        for entry, _chunks in items:
            if wanted is None or _selected(entry.path, wanted):
                with contextlib.suppress(UnsafePath):
                    if parts := _components(entry.path):
                        yield parts

    try:
        root = os.open(target_b, _DIR_FLAGS)
    except OSError:
        return
    try:
        found = None if target_is_empty(root) else first_conflict(root, target_b, selection())
    except (CorruptData, ChunkNotFound):
        return
    finally:
        os.close(root)
    if found is not None:
        raise RestoreConflict(found)


def _totals(repo: Repository, info: SnapshotInfo, wanted: Sequence[bytes] | None) -> _Totals | None:
    """The selection's entry count, regular file count and their bytes, read from the tree
    without writing anything; ``None`` when the tree cannot be read to its end."""
    entries = files = size = 0
    linked: set[tuple[int, int, bytes | None]] = set()  # a hard-linked file's content: once
    try:
        _, items = repo.load_snapshot(info.id)
        for entry, _chunks in items:
            if wanted is not None and not _selected(entry.path, wanted):
                continue
            entries += 1
            if entry.etype is EntryType.FILE:
                files += 1
                if entry.hard_link:
                    identity = link_identity(entry)
                    if identity in linked:
                        continue
                    linked.add(identity)
                size += entry.size
    except (CorruptData, ChunkNotFound):
        return None  # the restore itself records the damage
    return _Totals(entries, files, size)


class _Reporter:
    """Calls the progress callback with the restorer's counts, at most every
    ``PROGRESS_INTERVAL`` seconds unless forced (private)."""

    def __init__(
        self,
        snapshot_id: str,
        totals: _Totals | None,
        callback: Callable[[RestoreProgress], None],
        writer: _Restorer,
    ) -> None:
        self.snapshot_id = snapshot_id
        self.totals = totals
        self.callback = callback
        self.writer = writer
        self.partial = 0  # bytes written of the file being restored
        self.last = 0.0

    def report(
        self, entry: Entry | None = None, *, force: bool = False, finished: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        w, t = self.writer, self.totals
        self.callback(
            RestoreProgress(
                self.snapshot_id,
                w.files,
                w.dirs,
                w.links,
                w.bytes + self.partial,
                w.entries_done,
                t.entries if t else None,
                t.files if t else None,
                t.bytes if t else None,
                display_path(entry.path) if entry is not None else "",
                finished,
            )
        )


def _strip(path: bytes) -> bytes:
    return path.rstrip(b"/") or b"/"


def _within(path: bytes, top: bytes) -> bool:
    return top == b"/" or path == top or path.startswith(top + b"/")


def _components(path: bytes) -> tuple[bytes, ...]:
    """The components of an absolute snapshot path; raises ``UnsafePath``."""
    if not path.startswith(b"/") or b"\x00" in path:
        raise UnsafePath(path)
    parts = tuple(path[1:].split(b"/")) if path != b"/" else ()
    if path.endswith(b"/") and path != b"/":
        raise UnsafePath(path)
    if any(p in (b"", b".", b"..") for p in parts):
        raise UnsafePath(path)
    return parts


class _Restorer:
    """Writes entries below the directory descriptor ``root`` (private)."""

    def __init__(
        self, repo: Repository, root: int, *, same_owner: bool, overwrite: Overwrite
    ) -> None:
        self.repo = repo
        self.root = root
        self.same_owner = same_owner
        self.files = self.dirs = self.links = self.bytes = 0
        self.entries_done = 0
        self.reporter: _Reporter | None = None
        self.skipped: list[str] = []
        self.damaged: list[DamagedFile] = []
        self.failed: list[FailedPath] = []
        self.failed_count = 0
        self.kept = 0
        self.in_the_way = InTheWay()
        self.keeper: Keeper | None = None
        if overwrite in (Overwrite.IF_CHANGED, Overwrite.NEVER):
            self.keeper = Keeper(overwrite, repo.keys.hasher)
        self.dirs_meta: list[tuple[tuple[bytes, ...], Entry]] = []  # parts, entry
        self.hard_links = HardLinks(self._parent)  # names of one file linked again (issue 15)

    def result(self, snapshot_id: str) -> RestoreResult:
        """What was restored so far, as the result of the restore of ``snapshot_id``."""
        return RestoreResult(
            snapshot_id,
            self.files,
            self.dirs,
            self.links,
            self.bytes,
            tuple(self.skipped),
            tuple(self.damaged),
            tuple(self.failed),
            self.failed_count,
            self.kept,
            (*self.hard_links.warnings, *self.in_the_way.warnings()),
            self.in_the_way.blocked,
        )

    def restore_entry(self, entry: Entry, chunk_ids: Sequence[bytes]) -> None:
        """Write one entry; an unsafe path is skipped, a path the target refuses is recorded
        as failed (both logged); raises ``OSError`` only for ``_FATAL_ERRNOS``."""
        try:
            parts = _components(entry.path)
            if not parts and entry.etype is not EntryType.DIRECTORY:
                raise UnsafePath(entry.path)  # only a directory can be the target itself
        except UnsafePath as exc:
            log.warning("%s", exc)
            self.skipped.append(display_path(entry.path))
            return
        try:
            self.write(parts, entry, chunk_ids)
        except KeptInTheWay as stop:
            self.kept += self.in_the_way.count(parts, stop)
        except OSError as exc:
            if exc.errno in _FATAL_ERRNOS:
                raise
            self.fail(entry, exc)

    def fail(self, entry: Entry, exc: OSError) -> None:
        """Record ``entry`` as not restored, for the reason ``exc`` gives."""
        reason = _reason(exc)
        log.debug("cannot restore %s: %s", display_path(entry.path), reason)
        self.failed_count += 1
        if len(self.failed) < FAILED_LISTED:
            self.failed.append(FailedPath(display_path(entry.path), reason))

    def _mode(self, entry: Entry, *, owner_set: bool) -> int:
        """The mode to give: special bits only when the owner was restored too."""
        mode = stat.S_IMODE(entry.mode)
        return mode if owner_set else mode & _PERMISSION_BITS

    def _chown(
        self, target: int | bytes, entry: Entry, dir_fd: int | None = None
    ) -> OSError | None:
        """With ``same_owner``, give ``target`` (a descriptor, or a name in ``dir_fd``, never
        followed) the entry's owner; the refusal, if any, is returned (the caller sets the
        rest, then raises it). ``None`` when done or not asked."""
        if not self.same_owner:
            return None
        try:
            if isinstance(target, int):
                os.fchown(target, entry.uid, entry.gid)
            else:
                os.chown(target, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            why = _reason(exc)
            return OSError(exc.errno, f"cannot set owner {entry.uid}:{entry.gid}: {why}")
        return None

    def _set_meta(self, fd: int, entry: Entry) -> None:
        """Owner (when asked), mode and mtime of an open file or directory; raises the
        ``chown`` refusal after setting the rest."""
        refused = self._chown(fd, entry)
        os.fchmod(fd, self._mode(entry, owner_set=self.same_owner and refused is None))
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        if refused is not None:
            raise refused

    @contextmanager
    def _parent(self, parts: Sequence[bytes], *, create: bool = True) -> Iterator[int]:
        """A descriptor of the directory ``parts`` below the root, entered component by
        component without following links (created 0o700 when missing; a non-directory in the
        way replaced, or ``KeptInTheWay`` raised when the keeper keeps it)."""
        fd = os.dup(self.root)
        try:
            for depth, name in enumerate(parts):
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o700, dir_fd=fd)
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if not create or exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if self.keeper is not None and not self.keeper.replaces_in_the_way:
                        raise in_the_way(fd, name, depth) from exc
                    os.unlink(name, dir_fd=fd)  # a link or file where a directory belongs
                    os.mkdir(name, 0o700, dir_fd=fd)
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def write(self, parts: tuple[bytes, ...], entry: Entry, chunk_ids: Sequence[bytes]) -> None:
        """Write one entry at ``parts`` (non-empty unless a directory: the target itself,
        whose metadata is left alone). Raises ``OSError``."""
        if entry.etype is EntryType.DIRECTORY:
            with self._parent(parts):
                pass
            if parts:
                self.dirs_meta.append((parts, entry))
            self.dirs += 1
            return
        with self._parent(parts[:-1]) as dfd:
            name = parts[-1]
            if self.keeper is not None and self.keeper.decide(
                dfd, name, parts, entry, links=self.hard_links
            ):
                self.kept += 1
                return
            _remove_non_dir(dfd, name)
            if entry.etype is EntryType.LINK:
                self._write_link(dfd, name, entry)
                return
            if self.hard_links.link(dfd, parts, entry):
                self.files += 1
                return
            try:
                self._write_file(dfd, name, entry, chunk_ids)
            except (CorruptData, ChunkNotFound) as exc:
                log.debug("%s not restored: %s", display_path(entry.path), exc.message)
                self.damaged.append(DamagedFile(display_path(entry.path), exc.message))
                os.unlink(name, dir_fd=dfd)
                return
            self.files += 1
            self.hard_links.written(dfd, name, parts, entry)

    def _write_link(self, dfd: int, name: bytes, entry: Entry) -> None:
        os.symlink(entry.link_target or b"", name, dir_fd=dfd)
        refused = self._chown(name, entry, dfd)
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dfd, follow_symlinks=False)
        if refused is not None:
            raise refused
        self.links += 1

    def _write_file(self, dfd: int, name: bytes, entry: Entry, chunk_ids: Sequence[bytes]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
        try:
            try:
                size = self._write_content(fd, entry, chunk_ids)
            except (CorruptData, ChunkNotFound):
                raise  # a damaged file: reported, and removed by the caller
            except BaseException:
                # no partly written file is left under its name: a full disk, the destination
                # failing mid-file (an S3 server gone), Ctrl-C
                _unlink_quietly(dfd, name)
                raise
            self.bytes += size
            self._set_meta(fd, entry)
        finally:
            os.close(fd)

    def _write_content(self, fd: int, entry: Entry, chunk_ids: Sequence[bytes]) -> int:
        """Write and check the content of ``entry`` into ``fd``; its size in bytes. Raises
        ``CorruptData``/``ChunkNotFound`` (damage) and ``OSError``."""
        hasher = self.repo.keys.hasher()
        size = 0
        reporter = self.reporter
        try:
            for chunk_id in chunk_ids:
                data = self.repo.read_chunk(chunk_id)
                hasher.update(data)
                _write_sparse(fd, data, size)
                size += len(data)
                if reporter is not None:
                    reporter.partial = size
                    reporter.report(entry)
        finally:
            if reporter is not None:
                reporter.partial = 0
        if entry.content_id is not None and hasher.digest() != entry.content_id:
            raise CorruptData("content does not match its ID")
        if size != entry.size:
            raise CorruptData(f"{plural(size, 'byte')} restored, {entry.size} expected")
        os.ftruncate(fd, size)  # a trailing hole: the size is set here
        return size

    def finish_dirs(self) -> None:
        """Set the directories' owners (when asked), modes and mtimes, deepest first (after
        their content); a directory that refuses is recorded as failed (not counted)."""
        for parts, entry in sorted(self.dirs_meta, key=lambda d: len(d[0]), reverse=True):
            try:
                with self._parent(parts, create=False) as fd:
                    self._set_meta(fd, entry)
            except OSError as exc:
                if exc.errno in _FATAL_ERRNOS:
                    raise
                self.dirs -= 1
                self.fail(entry, exc)


def _reason(exc: OSError) -> str:
    """One line saying why ``exc`` happened, in the system's words, lower case first."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _unlink_quietly(dfd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError as exc:
        log.debug("cannot remove %r: %s", name, exc)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _write_sparse(fd: int, data: bytes, offset: int) -> None:
    """Write ``data`` at file ``offset``, skipping every run of whole ``HOLE_BLOCK``-aligned
    (in the file) all-zero blocks, which stay holes (the caller sets the final size)."""
    view = memoryview(data)
    if _ZERO_BLOCK not in data:
        _pwrite_all(fd, view, offset)
        return
    n = len(data)
    start = 0  # data[start:] is neither written nor skipped yet
    pos = 0
    while True:
        found = data.find(_ZERO_BLOCK, pos)
        if found < 0:
            break
        block = found + (-(offset + found)) % HOLE_BLOCK  # first aligned block from there
        if block + HOLE_BLOCK > n:
            break
        if not data.startswith(_ZERO_BLOCK, block):
            pos = block + 1  # every zero block from found..block aligns to this one
            continue
        end = block + HOLE_BLOCK
        while end + HOLE_BLOCK <= n and data.startswith(_ZERO_BLOCK, end):
            end += HOLE_BLOCK
        if block > start:
            _pwrite_all(fd, view[start:block], offset + start)
        start = pos = end
    if start < n:
        _pwrite_all(fd, view[start:], offset + start)


def _remove_non_dir(dfd: int, name: bytes) -> None:
    """Unlink whatever non-directory is at ``name`` (a link is removed, not followed)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(
            errno.EISDIR, "a directory exists where a file belongs", os.fsdecode(name)
        )
    os.unlink(name, dir_fd=dfd)
