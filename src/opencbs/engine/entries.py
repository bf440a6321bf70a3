"""What the engine knows of one path of a backup source: the scan's view and the snapshot's.

Paths are raw bytes (``os.fsencode`` of the full source path): a name that is not UTF-8 is kept
exactly and never merged with another. ``display_path`` renders one for reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from opencbs.reports.vocabulary import EntryType


@dataclass(frozen=True, slots=True)
class Entry:
    """One path: a regular file, a directory or a symbolic link (never followed).

    Times are nanoseconds since the epoch; ``size`` is bytes (0 for directories; the target's
    length for links); ``mode`` is the full ``st_mode``; ``content_id`` is the keyed BLAKE3 hash
    of the whole content of a regular file when known (always known in a snapshot, ``None`` in a
    fresh scan until the file is read); ``link_target`` is the raw target of a symbolic link and
    ``link_to_dir`` whether it points at a directory.
    """

    path: bytes
    etype: EntryType
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int
    inode: int
    device: int
    link_target: bytes | None = None
    link_to_dir: bool = False
    content_id: bytes | None = None


def display_path(path: bytes) -> str:
    """A path for reports and terminals: its UTF-8 text, with each byte that is not UTF-8 shown
    as ``\\xNN`` and a literal backslash doubled, so two different names never look alike."""
    if b"\\" not in path:
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return path.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
