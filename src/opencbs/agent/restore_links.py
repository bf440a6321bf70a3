"""Restoring hard links: the names of one hard-linked file of a snapshot become hard links of one
file again (issue 15), as ``tar``, restic and borg restore them.

The names of one file are the snapshot's regular files with ``Entry.hard_link`` set and the same
link identity ``(device, inode)`` and content id (a name whose content differs was read at
another moment: it is a file of its own). The restore writes the first name of each file it
meets (in the snapshot's walk order, among the entries selected) as usual, then
:meth:`HardLinks.written` remembers where; each later name is :meth:`HardLinks.link`-ed to it
with ``os.link`` instead of being written again: no content is read from the repository, and
the names share one inode, as they did.

Never outside the target: both names are given relative to directory descriptors the restore
opened below its target without following links (``_Restorer._parent``), the first name is
checked to be still the regular file the restore wrote before the link is made (same device,
inode, size, modification and change times: an inode number alone may be reused by a file
created after the first was removed), and the new name after (``linkat`` without following a
link, so a link planted in the meantime is linked as itself, then removed).

A link that cannot be made — another file system (``EXDEV``), too many links (``EMLINK``), a file
system without hard links (``EPERM``), the first name gone or replaced — is a warning (logged,
and kept in :attr:`HardLinks.warnings`) and the name is restored as a copy: its content written
from the repository, as before issue 15.

A snapshot written before hard links were recorded has no ``hard_link`` flags: each name is
restored as a file of its own, as then.

Memory: one small record per hard-linked file restored (its path components and inode).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from opencbs.engine.entries import Entry, display_path

__all__ = ["HardLinks", "OpenParent", "link_identity"]

log = logging.getLogger(__name__)

#: How the restore opens a directory below its target without following links:
#: ``open_parent(parts, create=False)`` gives its descriptor (``_Restorer._parent``).
OpenParent = Callable[..., AbstractContextManager[int]]

_Identity = tuple[int, int, bytes | None]


def link_identity(entry: Entry) -> _Identity:
    """What names one hard-linked file in a snapshot: the device and inode it had when backed
    up, and its content ID (an inode number reused for another file has other content)."""
    return (entry.device, entry.inode, entry.content_id)


#: What tells the file a restore wrote from another: device, inode, size, mtime and ctime (ns).
_Stamp = tuple[int, int, int, int, int]


class HardLinks:
    """The hard-linked files of one restore (module docstring): where the first name of each
    was written, the names linked (:attr:`linked`), the names copied because a link failed
    (:attr:`copied`) and their warnings (:attr:`warnings`, one line each)."""

    def __init__(self, open_parent: OpenParent) -> None:
        self.open_parent = open_parent
        self.first: dict[_Identity, tuple[tuple[bytes, ...], _Stamp]] = {}
        self.linked = 0
        self.copied = 0
        self.warnings: list[str] = []

    def link(self, dfd: int, parts: Sequence[bytes], entry: Entry) -> bool:
        """Make the name ``parts[-1]`` in the directory descriptor ``dfd`` (the entry's parent,
        ``parts`` its components below the target) a hard link of the name restored first of
        ``entry``'s file. ``True`` when done (nothing else to write: content, mode, owner and
        times are the first name's); ``False`` when the caller must write the entry: it is no
        hard link, no name of its file was restored yet, or the link failed (then a warning is
        logged). Raises ``OSError`` only for a full or read-only target (``ENOSPC``,
        ``EDQUOT``, ``EROFS``, ``EIO``)."""
        if not entry.hard_link:
            return False
        identity = link_identity(entry)
        first = self.first.get(identity)
        if first is None:
            return False
        where, stamp = first
        try:
            with self.open_parent(where[:-1], create=False) as sfd:
                if _stamp(sfd, where[-1]) != stamp:
                    raise OSError(errno.ESTALE, "the name restored first was replaced since")
                os.link(where[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            now = _stamp(dfd, parts[-1])  # the link changed the file's ctime (its link count)
            if now is None or now[:2] != stamp[:2]:
                os.unlink(parts[-1], dir_fd=dfd)
                raise OSError(errno.ESTALE, "the new link was replaced since")
            self.first[identity] = (where, now)
        except OSError as exc:
            if exc.errno in _FATAL_ERRNOS:
                raise
            self._copy_instead(entry, where, exc)
            return False
        self.linked += 1
        return True

    def first_inode(self, entry: Entry) -> tuple[int, int] | None:
        """Device and inode of the name restored (or kept) first of ``entry``'s hard-linked
        file, as recorded; ``None`` when it is no hard link or none is known yet."""
        if not entry.hard_link:
            return None
        first = self.first.get((entry.device, entry.inode, entry.content_id))
        return None if first is None else (first[1][0], first[1][1])

    def written(self, dfd: int, name: bytes, parts: Sequence[bytes], entry: Entry) -> None:
        """After ``entry`` was written whole at ``name`` in ``dfd`` (``parts``: its components
        below the target) — or kept there, a regular file with one name only holding the
        entry's content (``agent.restore_overwrite.Keeper.decide``) —: remember it as its
        file's first name when it is a hard link and none is known yet. Raises nothing (a name
        that cannot be looked at is not linked to)."""
        if not entry.hard_link:
            return
        identity = link_identity(entry)
        if identity in self.first:
            return
        try:
            stamp = _stamp(dfd, name)
        except OSError as exc:
            log.debug("%s: not linked to: %s", display_path(entry.path), exc)
            return
        if stamp is not None:
            self.first[identity] = (tuple(parts), stamp)

    def _copy_instead(self, entry: Entry, where: Sequence[bytes], exc: OSError) -> None:
        self.copied += 1
        first = display_path(b"/" + b"/".join(where))
        why = exc.strerror or str(exc)
        text = (
            f"{display_path(entry.path)}: cannot restore as a hard link of {first} "
            f"({why[:1].lower() + why[1:]}); restored as a copy"
        )
        self.warnings.append(text)
        log.debug("%s", text)  # said by the caller (RestoreResult.warnings)


#: Errors of the target file system as a whole (as ``agent.restore``): they stop the restore.
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def _stamp(dfd: int, name: bytes) -> _Stamp | None:
    """What tells the regular file ``name`` in ``dfd`` (not followed) from another; ``None``
    when it is not a regular file. Raises ``OSError``."""
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
