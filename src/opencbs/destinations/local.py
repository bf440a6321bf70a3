"""A destination in a local folder (or a mounted NAS share).

Each object is one file at ``<root>/<name>``. ``put`` writes a temporary dot-file in the target
folder, fsyncs it, renames it over the name with ``os.replace`` and fsyncs the folder, so a crash
leaves the old object or the new one. Temporary files never show in ``list``; a process killed
mid-``put`` leaves its temporary file behind, which ``remove_stale_temporaries`` deletes.

``put_if`` holds an exclusive ``flock`` on ``<root>/.lock-<name, "/" as "-">`` while it compares
the object's version (the BLAKE2b digest of its content) and replaces it, so conditional writers
of any process on this machine, or on machines sharing a NAS whose locks work, take turns. The
lock files stay (removing one would race its next user); dot-names never show in ``list``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from opencbs.destinations.base import (
    DestinationError,
    ObjectNotFound,
    PreconditionFailed,
    check_name,
    check_prefix,
)
from opencbs.fileio import write_atomic, write_new_file

_TMP_PREFIX = ".tmp-"
_LOCK_PREFIX = ".lock-"


def content_version(data: bytes | memoryview) -> str:
    """The version tag of an object's content (``put_if``): its BLAKE2b-128 digest, hex."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created mode 0600 when missing)
    for the block; without ``fcntl`` (Windows) the block runs unlocked. Raises ``OSError``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def _translated(action: str, name: str, *, reading: bool = True) -> Iterator[None]:
    """Turn ``OSError`` raised inside the block into ``DestinationError``; when ``reading``, a
    missing file (or a file where a folder should be) is ``ObjectNotFound``."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if not reading:
            raise DestinationError(f"Cannot {action} {name!r} in the destination: {exc}") from exc
        raise ObjectNotFound(name) from exc
    except OSError as exc:
        raise DestinationError(
            f"Cannot {action} {name!r} in the destination: {exc.strerror or exc}",
            hint="Check that the destination folder is mounted, writable and not full.",
        ) from exc


def _folder_error(action: str, root: Path, exc: OSError) -> DestinationError:
    """The error of a destination folder that cannot be created or written, naming the path."""
    return DestinationError(
        f"Cannot {action} {root}: {exc.strerror or exc}",
        hint="Choose a folder you can create and write (its disk mounted, writable and not "
        "full), or check the --destination path.",
    )


#: Modes of what a local destination creates: the repository is the owner's alone (its key file
#: holds the wrapped keys; everything else is encrypted, but its sizes and times still tell).
FILE_MODE = 0o600
DIR_MODE = 0o700


class LocalStorage:
    """Objects as files under ``root``. Implements ``Storage``.

    ``root`` is created (mode 0700) by the first ``put``, never by reading: opening, listing or
    getting from a folder that does not exist finds nothing and leaves no folder behind."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """``fsync=False`` skips the flushes to disk (tests only: a crash may lose data)."""
        self.root = Path(root)
        self._fsync = fsync
        self._root_made = False

    def _make_root(self) -> None:
        """Create ``root`` when missing (once per instance; harmless when racing)."""
        if self._root_made:
            return
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise _folder_error("create the destination folder", self.root, exc) from exc
        self._root_made = True

    def check_writable(self) -> None:
        """Check, without leaving anything behind, that objects can be stored here: the folder
        (and any missing parents) is created when missing, a temporary file is written in it
        and deleted, then what was created is removed again. For a destination about to be
        named to the server: a folder that cannot be used fails before anything is recorded.
        Raises ``DestinationError`` saying what failed."""
        missing: list[Path] = []
        folder = self.root.absolute()
        while not os.path.lexists(folder) and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        made: list[Path] = []
        try:
            for path in reversed(missing):
                try:
                    path.mkdir(mode=DIR_MODE)
                except FileExistsError:
                    continue  # made meanwhile by someone else: not ours to remove
                except OSError as exc:
                    raise _folder_error("create the destination folder", self.root, exc) from exc
                made.append(path)
            probe = self.root / f"{_TMP_PREFIX}probe-{secrets.token_hex(8)}"
            try:
                self._write_file(probe, b"")
            except OSError as exc:
                raise _folder_error("write in the destination folder", self.root, exc) from exc
            finally:
                with contextlib.suppress(OSError):
                    probe.unlink()
        finally:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()

    def is_empty(self) -> bool:
        """Whether the folder is missing or holds nothing, dot-files included, but the
        temporary files of an interrupted ``put`` (``.tmp-*`` files: a first backup killed
        while creating the repository) and the lock files of ``put_if`` (``.lock-*``: one
        killed before its key file was stored): the only folder a new repository may be created in
        (``agent.targets``: a destination is empty or already a repository, never a folder of
        someone else's files; a new object never takes a temporary file's name). A file is not
        empty; a path under a file is missing (creating it fails: ``check_writable``). Raises
        ``DestinationError`` when it cannot be listed."""
        try:
            with os.scandir(self.root) as found:
                return all(
                    e.name.startswith((_TMP_PREFIX, _LOCK_PREFIX))
                    and e.is_file(follow_symlinks=False)
                    for e in found
                )
        except FileNotFoundError:
            return True
        except NotADirectoryError:
            return not os.path.lexists(self.root)
        except OSError as exc:
            raise _folder_error("list the destination folder", self.root, exc) from exc

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def __str__(self) -> str:
        """The folder, as messages and logs name the destination."""
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def put(self, name: str, data: bytes | memoryview) -> None:
        """See ``Storage.put``."""
        path = self._path(name)
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(8)}")
        self._make_root()
        with _translated("write", name, reading=False):
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            write_atomic(path, data, fsync=self._fsync, temporary=tmp, write_file=self._write_file)

    def _write_file(self, tmp: Path, data: bytes | memoryview) -> None:
        """Write ``data`` to the new file ``tmp`` (and fsync it). ``OSError`` propagates: ``put``
        removes ``tmp`` and translates it (a full disk is ``ENOSPC``). Tests override this to
        simulate a destination that fills up mid-job."""
        write_new_file(tmp, data, mode=FILE_MODE, fsync=self._fsync)

    def get(self, name: str) -> bytes:
        """See ``Storage.get``."""
        path = self._path(name)
        with _translated("read", name):
            return path.read_bytes()

    def get_versioned(self, name: str) -> tuple[bytes, str]:
        """See ``Storage.get_versioned`` (the version is ``content_version`` of the bytes)."""
        data = self.get(name)
        return data, content_version(data)

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        """See ``Storage.put_if`` (module docstring: a ``flock`` per name). Raises
        ``PreconditionFailed``, ``DestinationError``."""
        path = self._path(name)
        self._make_root()
        lock = self.root / f"{_LOCK_PREFIX}{name.replace('/', '-')}"
        with _translated("write", name, reading=False), _locked(lock):
            try:
                current: str | None = content_version(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != version:
                raise PreconditionFailed(name)
            self.put(name, data)
        return content_version(data)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """See ``Storage.get_range``."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        path = self._path(name)
        with _translated("read", name), open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise DestinationError(
                f"Object {name!r} is shorter than {offset + length} bytes",
                hint="The destination may be damaged; run a verify.",
            )
        return data

    def list(self, prefix: str = "") -> Iterator[str]:
        """See ``Storage.list``."""
        return (name for name, _entry in self._listed(prefix))

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """See ``Storage.list_sizes`` (one ``stat`` per object, done as the caller iterates;
        an object deleted meanwhile is skipped)."""
        for name, entry in self._listed(prefix):
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DestinationError(
                    f"Cannot check {name!r} in the destination: {exc.strerror or exc}"
                ) from exc
            yield name, size

    def _listed(self, prefix: str) -> tuple[tuple[str, os.DirEntry[str]], ...]:
        """The objects under ``prefix`` with their folder entries, sorted by name."""
        check_prefix(prefix)
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        base = folder + "/" if folder else ""
        with _translated("list", prefix or "/", reading=False):
            found = sorted(self._walk(start, base), key=lambda item: item[0])
        return tuple((n, e) for n, e in found if n.startswith(prefix))

    def _walk(self, folder: Path, base: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), f"{base}{entry.name}/")
            else:
                yield base + entry.name, entry

    def remove_stale_temporaries(self, older_than: float = 3600.0) -> int:
        """Delete the temporary files of ``put`` calls that never finished (a process killed
        mid-write leaves its ``.tmp-*`` file) last modified more than ``older_than`` seconds
        ago; returns how many were deleted. A live ``put`` writes its file within seconds, far
        less than the default hour, so running this beside other writers is safe.
        Raises ``DestinationError`` when the destination cannot be listed."""
        limit = time.time() - older_than
        removed = 0
        with _translated("clean up", "/", reading=False):
            for dirpath, _dirnames, filenames in os.walk(self.root):
                for name in filenames:
                    if not name.startswith(_TMP_PREFIX):
                        continue
                    path = os.path.join(dirpath, name)
                    with contextlib.suppress(FileNotFoundError):
                        if os.lstat(path).st_mtime < limit:
                            os.unlink(path)
                            removed += 1
        return removed

    def delete(self, name: str) -> None:
        """See ``Storage.delete``."""
        path = self._path(name)
        with contextlib.suppress(ObjectNotFound), _translated("delete", name):
            path.unlink()

    def exists(self, name: str) -> bool:
        """See ``Storage.exists``."""
        path = self._path(name)
        with _translated("check", name, reading=False):
            return path.is_file()
