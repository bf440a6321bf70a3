"""What a restore does with what the target already holds (issue 15, point 8; restic's
``restore --overwrite``).

:class:`Overwrite` names the choices. ``REFUSE`` (what ``opencbs restore`` does without
``--overwrite``): before anything is written, the selection is compared with the target
(:func:`first_conflict`) and the first path that would be replaced is named in a
:class:`RestoreConflict`; nothing is written then. ``ALWAYS`` replaces whatever non-directory is
in the way (what a restore did before). ``IF_CHANGED`` leaves a file that already holds the
entry's content (:meth:`Keeper.keeps`: same size and modification time, or same size and the
same content ID when read) and a link with the same target, replacing what differs.
``NEVER`` leaves every existing non-directory as it is (and what the snapshot has below a
non-directory that stands where it has a directory) and restores only what is missing.
Either way what is left is counted in ``RestoreResult.kept``: only paths that existed in the
target. What ``NEVER`` does not restore below a non-directory kept where the snapshot has a
folder (:class:`InTheWay`) is counted apart (``RestoreResult.blocked``) and said in one warning
per such path (the restore job then ends with a warning).

Nothing outside the target is modified (issue 15): a regular file of the target with more than
one name (``st_nlink > 1``) may be a hard link of a file outside, so ``IF_CHANGED`` never keeps
it (keeping it may set its time): it is replaced — the name unlinked, a new file written — and
the file outside keeps its content and attributes. ``NEVER`` leaves it as it is, untouched.

Hard-linked files (``agent.restore_links``): a name kept that is a regular file of the target,
its only name, holding the entry's content, becomes the first name of its hard-linked file
(:meth:`Keeper.decide`): the names of that file missing in the target are restored as hard
links of it, as a full restore would. A name that exists but is not a name of the file already
restored or kept is, with ``IF_CHANGED``, replaced by a hard link of it; ``NEVER`` keeps it.

What is a conflict: an existing file, link or other non-directory at a path the selection
would write, or standing where the selection has a directory (it would be removed). An
existing directory where the selection has a directory is not one (its content is merged);
an existing directory where the selection has a file or link is not replaced by any choice
(that path is "not restored", as before), so it is not a conflict either.

Every look into the target goes through directory descriptors opened with ``O_NOFOLLOW``
below the target's, as the restore itself writes (``agent.restore``): a link in the target is
never followed, so nothing outside it is looked at.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Protocol

from opencbs.agent.restore_links import HardLinks
from opencbs.engine.entries import Entry, display_path
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.reports.vocabulary import EntryType
from opencbs.reports.wording import plural

__all__ = [
    "InTheWay",
    "Keeper",
    "Overwrite",
    "RestoreConflict",
    "first_conflict",
    "target_is_empty",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_BLOCK = 1 << 20


class Overwrite(StrEnum):
    """What a restore does with a non-directory already at a path it restores (module
    docstring): ``refuse`` (default of ``opencbs restore``), ``always``, ``if-changed``,
    ``never``."""

    REFUSE = "refuse"
    ALWAYS = "always"
    IF_CHANGED = "if-changed"
    NEVER = "never"


#: The choices ``--overwrite`` takes (``refuse`` is what no ``--overwrite`` means).
CHOICES: tuple[str, ...] = tuple(o.value for o in Overwrite if o is not Overwrite.REFUSE)


class RestoreConflict(OpenCBSError):
    """The target already holds a file, link or other non-directory where the restore would
    write (``Overwrite.REFUSE``): nothing was written. ``path`` is that path in the target
    (display form). Exit code 5 (conflict)."""

    code = "restore_conflict"
    exit_code = ExitCode.CONFLICT

    def __init__(self, path: str) -> None:
        super().__init__(
            f"the target already holds {path}: not overwritten (nothing was restored)",
            "choose --overwrite always (replace what is there), if-changed (replace only "
            "what differs) or never (keep what is there, restore what is missing), or "
            "restore into an empty --target",
        )
        self.path = path


def target_is_empty(root: int) -> bool:
    """Whether the directory open at descriptor ``root`` has no entry at all."""
    with os.scandir(root) as entries:
        return next(iter(entries), None) is None


class _Walker:
    """Directories below ``root`` entered without following links, the current chain kept
    open so that entries in walk order cost one ``open`` per directory (private)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.chain: list[tuple[bytes, int]] = []

    def __enter__(self) -> _Walker:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cut(0)

    def _cut(self, keep: int) -> None:
        for _, fd in self.chain[keep:]:
            os.close(fd)
        del self.chain[keep:]

    def enter(self, dirs: Sequence[bytes]) -> tuple[int | None, int | None]:
        """``(descriptor of dirs, None)`` when every directory exists; ``(None, i)`` when
        component ``i`` is a non-directory (a file or link in the way); ``(None, None)`` when
        one is missing or cannot be entered (nothing below it is in the way)."""
        same = 0
        while same < min(len(self.chain), len(dirs)) and self.chain[same][0] == dirs[same]:
            same += 1
        self._cut(same)
        for i in range(same, len(dirs)):
            parent = self.chain[-1][1] if self.chain else self.root
            try:
                fd = os.open(dirs[i], _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    return None, i
                return None, None
            self.chain.append((dirs[i], fd))
        return (self.chain[-1][1] if self.chain else self.root), None


def _shown(target: bytes, parts: Sequence[bytes]) -> str:
    return display_path(os.path.join(target, *parts))


def first_conflict(root: int, target: bytes, selection: Iterable[Sequence[bytes]]) -> str | None:
    """The first path of the target (display form: ``target`` joined with the components)
    that the selection (the components of each entry's path, the snapshot's ``/`` left out)
    would replace, whatever the entry's type: an existing non-directory (module docstring);
    ``None`` when there is none. ``root``: the target's open descriptor. Reads only; raises
    nothing for a path it cannot look at."""
    with _Walker(root) as walker:
        for parts in selection:
            dfd, blocked = walker.enter(parts[:-1])
            if blocked is not None:
                return _shown(target, parts[: blocked + 1])
            if dfd is None:
                continue
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                return _shown(target, parts)
    return None


class KeptInTheWay(Exception):
    """A non-directory stands where the snapshot has a directory and ``Overwrite.NEVER``
    keeps it: ``depth`` is its index in the entry's path components, ``kind`` what it is ("a
    file", "a link", "a special file") (private to the restore: :meth:`InTheWay.count`)."""

    def __init__(self, depth: int, kind: str) -> None:
        super().__init__(depth, kind)
        self.depth = depth
        self.kind = kind


def in_the_way(dfd: int, name: bytes, depth: int) -> KeptInTheWay:
    """The :class:`KeptInTheWay` for the non-directory ``name`` in ``dfd`` (not followed), at
    index ``depth`` of the entry's components."""
    try:
        mode = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    kind = "a link" if stat.S_ISLNK(mode) else "a file" if stat.S_ISREG(mode) else "a special file"
    return KeptInTheWay(depth, kind)


class InTheWay:
    """The non-directories ``Overwrite.NEVER`` keeps where the snapshot has a folder, and how
    many entries of the selection below each were not restored (module docstring)."""

    def __init__(self) -> None:
        self.below: dict[tuple[bytes, ...], tuple[str, int]] = {}  # components → kind, count

    def count(self, parts: Sequence[bytes], stop: KeptInTheWay) -> bool:
        """Count the entry of components ``parts`` stopped by ``stop``: ``True`` when it is the
        path in the way itself (an existing path, kept), ``False`` when it is below it (not
        restored: :attr:`blocked`)."""
        where = tuple(parts[: stop.depth + 1])
        kind, n = self.below.get(where, (stop.kind, 0))
        below = len(where) < len(parts)
        self.below[where] = (kind, n + below)
        return not below

    @property
    def blocked(self) -> int:
        """Entries not restored because a non-directory kept is in their way."""
        return sum(n for _, n in self.below.values())

    def warnings(self) -> list[str]:
        """One line per path in the way with entries not restored below it (its snapshot path,
        display form), e.g. ``/d/b: a file where the snapshot has a folder: its 15 entries not
        restored (--overwrite never)``."""
        return [
            f"{display_path(b'/' + b'/'.join(where))}: {kind} where the snapshot has a folder: "
            f"its {plural(n, 'entry', 'entries')} not restored (--overwrite never)"
            for where, (kind, n) in self.below.items()
            if n
        ]


class Hasher(Protocol):
    """An incremental content hasher (``engine.crypto.Keys.hasher``'s keyed BLAKE3)."""

    def update(self, data: bytes, /) -> object: ...

    def digest(self) -> bytes: ...


class Keeper:
    """Decides, for ``Overwrite.IF_CHANGED`` and ``NEVER``, whether what is at a path is left
    as it is. ``new_hasher``: makes the repository's content hasher (``repo.keys.hasher``), to
    compare a file's content with the entry's content ID."""

    def __init__(self, mode: Overwrite, new_hasher: Callable[[], Hasher]) -> None:
        self.mode = mode
        self._new_hasher = new_hasher

    @property
    def replaces_in_the_way(self) -> bool:
        """Whether a non-directory where a directory belongs is replaced (not ``NEVER``)."""
        return self.mode is not Overwrite.NEVER

    def keeps(self, dfd: int, name: bytes, entry: Entry) -> bool:
        """Whether the non-directory at ``name`` in ``dfd`` stays as it is instead of being
        replaced by ``entry`` (a file or link). A directory there is never "kept": the caller
        reports it as not restored, as before."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            return False
        if self.mode is Overwrite.NEVER:
            return True
        if entry.etype is EntryType.LINK:
            return stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dfd) == (
                entry.link_target or b""
            )
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return False
        if st.st_nlink > 1:
            return False  # maybe a name of a file outside the target: replaced, never touched
        if st.st_mtime_ns == entry.mtime_ns:
            return True
        return self._same_content(dfd, name, entry, set_time=True)

    def decide(
        self, dfd: int, name: bytes, parts: Sequence[bytes], entry: Entry, *, links: HardLinks
    ) -> bool:
        """:meth:`keeps`, for the entry of components ``parts``, and for a hard-linked file's
        name (module docstring): ``True`` when it is a name of the file ``links`` restored or
        kept already (nothing to do); with ``IF_CHANGED``, ``False`` for any other existing
        name (it is replaced by a hard link of that file). A name kept that can be its file's
        first name is given to ``links`` (:meth:`HardLinks.written`)."""
        first = links.first_inode(entry)
        if first is None:
            kept = self.keeps(dfd, name, entry)
            if kept and entry.hard_link and self._whole(dfd, name, entry):
                links.written(dfd, name, parts, entry)
            return kept
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) == first:
            return True
        return self.mode is Overwrite.NEVER and self.keeps(dfd, name, entry)

    def _whole(self, dfd: int, name: bytes, entry: Entry) -> bool:
        """Whether ``name`` is a regular file with one name only, holding the entry's content
        (same size, and same time or content ID); reads, changes nothing."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != entry.size:
            return False
        return st.st_mtime_ns == entry.mtime_ns or self._same_content(
            dfd, name, entry, set_time=False
        )

    def _same_content(self, dfd: int, name: bytes, entry: Entry, *, set_time: bool) -> bool:
        """Whether the regular file ``name`` holds the entry's content (its content ID); when it
        does and ``set_time``, its modification time is set to the entry's (the next comparison
        is quick; the caller checked it has one name only)."""
        if entry.content_id is None:
            return False
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError:
            return False
        try:
            hasher = self._new_hasher()
            while block := os.read(fd, _READ_BLOCK):
                hasher.update(block)
            if hasher.digest() != entry.content_id:
                return False
            if set_time:
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
