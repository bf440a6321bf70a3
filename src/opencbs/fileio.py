"""Writing a file whole: the one atomic-write helper of opencbs (used by the local destination,
the agent's report spool and the agent settings file that ``quickstart`` writes).

Nothing of ours is imported here: every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic", "write_new_file"]


def write_new_file(path: Path, data: bytes | memoryview, *, mode: int, fsync: bool) -> None:
    """Create ``path`` (it must not exist: ``O_EXCL``) with permission bits ``mode`` (narrowed
    by the umask), write ``data`` and, with ``fsync``, flush it to the disk. Raises
    ``OSError``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(fd, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot
    be opened (Windows). Raises ``OSError``."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open folders
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes | memoryview,
    *,
    mode: int = 0o600,
    fsync: bool = True,
    temporary: Path | None = None,
    write_file: Callable[[Path, bytes | memoryview], None] | None = None,
) -> None:
    """``path`` holds ``data`` whole afterwards, or keeps what it held (a crash or an error
    midway leaves no partial file under its name).

    The data goes to a new temporary file beside it (``temporary``, default
    ``.<name>.<random>.tmp`` in the same folder), which is renamed over ``path``; with
    ``fsync`` (the default) the file and then the folder are flushed to the disk, so the new
    content survives a power loss once this returns. ``mode``: the file's permission bits
    (default 0600: spool records and settings files may hold what only their owner should read).
    ``write_file(tmp, data)`` replaces the writing of the temporary file (tests simulate a full
    disk with it). The temporary file is removed when anything fails. Raises ``OSError``."""
    tmp = temporary or path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        if write_file is not None:
            write_file(tmp, data)
        else:
            write_new_file(tmp, data, mode=mode, fsync=fsync)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)
