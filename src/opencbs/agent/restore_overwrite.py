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
Either way what is left is counted in ``RestoreResult.kept``.

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

from opencbs.engine.entries import Entry, display_path
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.reports.vocabulary import EntryType

__all__ = ["Keeper", "Overwrite", "RestoreConflict", "first_conflict", "target_is_empty"]

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
    keeps it: the entry (and everything below) is counted as kept (private to the restore)."""


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
        if st.st_mtime_ns == entry.mtime_ns:
            return True
        return self._same_content(dfd, name, entry)

    def _same_content(self, dfd: int, name: bytes, entry: Entry) -> bool:
        """Whether the regular file ``name`` holds the entry's content (its content ID); when it
        does, its modification time is set to the entry's (the next comparison is quick)."""
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
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
