"""A read-only view of a repository's snapshots as a file system (``opencbs mount``), served
through FUSE by ``mfusepy`` (ctypes bindings of libfuse 3, or 2; no C build step: the libfuse
shared library is needed only when a mount runs, see :func:`load_fuse`).

Layout of the mount::

    /snapshots/<time>/…     one folder per snapshot, named by the job's start time in the
                            agent's time zone (``2026-12-05T17:20:01``; a second snapshot of the
                            same second gets ``-<8 hex of its ID>``); inside, the snapshot's
                            paths as backed up (``/snapshots/<time>/home/ann/doc.txt``)
    /snapshots/latest       a symbolic link to the newest snapshot's folder
    /ids/<8 hex>            a symbolic link per snapshot ID (``../snapshots/<time>``)

The snapshots are those listed when the mount starts. A snapshot's tree is read the first time
one of its paths is looked at, streamed into an on-disk index (``engine.tree_index``, in a
temporary folder removed at unmount), so memory does not grow with its size (measured here:
the first listing of a snapshot of 100,000 entries takes 1.0 s, of a million 14 s, indexed into
60 MB on disk; the ``opencbs mount`` process peaks at 91 and 94 MiB RSS; a lookup then takes
about 20 µs). File content is
read from the repository on demand, chunk by chunk (each chunk checked against its ID by
``Repository.read_chunk``), with the last chunks read kept (``CACHE_BYTES``). A damaged or
missing chunk fails that read with ``EIO`` and is named on stderr once per file; everything
else stays readable. A snapshot forgotten while the mount runs (``opencbs forget`` in another
process) leaves the view the first time it is looked at: ``ENOENT``, said once on stderr. No
error reaches libfuse as an exception: each operation answers an errno (``_answer``).
Entries show their mode, owner, size and times as backed up.

FUSE callbacks run on one thread (libfuse's ``-s``), so the view needs no locking.
"""

from __future__ import annotations

import bisect
import ctypes.util
import errno
import functools
import logging
import os
import shutil
import stat
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from types import ModuleType
from typing import Any

from opencbs.destinations.base import DestinationError, ObjectNotFound
from opencbs.engine.repo_errors import ChunkNotFound, RepositoryError, SnapshotNotFound
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.engine.tree_index import IndexedEntry, TreeIndex
from opencbs.errors import ExitCode, OpenCBSError

__all__ = [
    "CACHE_BYTES",
    "FUSE_HINT",
    "FuseUnavailable",
    "MountView",
    "Stat",
    "load_fuse",
    "serve_mount",
    "snapshot_folder_names",
]

log = logging.getLogger(__name__)

#: Bytes of decrypted chunks kept for reads (the last chunks read; a sequential read of a big
#: file decrypts each chunk once).
CACHE_BYTES = 64 * 1024 * 1024
#: Seconds the kernel keeps a path's attributes and lookups (a snapshot never changes).
CACHE_SECONDS = 300
#: What to do when FUSE is missing (Debian and Ubuntu package names).
FUSE_HINT = (
    "install FUSE 3 (Debian/Ubuntu: apt-get install fuse3; Fedora: dnf install fuse3) and make "
    "sure /dev/fuse exists (in a container: --device /dev/fuse --cap-add SYS_ADMIN); browse "
    "without it with `opencbs ls`, `find` and `diff`"
)
_DIR_MODE = stat.S_IFDIR | 0o555
_LINK_MODE = stat.S_IFLNK | 0o777
_SNAPSHOTS, _IDS, _LATEST = b"snapshots", b"ids", b"latest"
_SHORT_ID = 8


class FuseUnavailable(OpenCBSError):
    """FUSE cannot be used here: no ``/dev/fuse``, no libfuse shared library, or libfuse
    refused the mount (exit code 7, ``UNAVAILABLE``)."""

    code = "fuse_unavailable"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, hint: str = FUSE_HINT) -> None:
        super().__init__(message, hint)


def load_fuse() -> ModuleType:
    """The ``mfusepy`` module, loaded with libfuse 3 when the system has it (the setting
    ``FUSE_LIBRARY_NAME`` or ``FUSE_LIBRARY_PATH`` of the environment, mfusepy's own, chooses
    otherwise). Raises ``FuseUnavailable`` when ``/dev/fuse`` is missing or no usable libfuse
    is found."""
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("FUSE is not available: /dev/fuse does not exist")
    if not ({"FUSE_LIBRARY_NAME", "FUSE_LIBRARY_PATH"} & os.environ.keys()):
        if ctypes.util.find_library("fuse3"):
            os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy  # noqa: PLC0415 - loads libfuse: only where a mount runs
    except (OSError, AttributeError, ImportError) as exc:
        raise FuseUnavailable(f"FUSE is not available: {exc}") from None
    module: ModuleType = mfusepy
    return module


@dataclass(frozen=True, slots=True)
class Stat:
    """What ``getattr`` answers of a path: full ``st_mode``, size (bytes), times (epoch ns),
    owner, link count."""

    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    uid: int = 0
    gid: int = 0
    nlink: int = 1

    def as_fuse(self) -> dict[str, int]:
        """The ``st_*`` dictionary mfusepy fills a ``struct stat`` from (times in ns)."""
        return {
            "st_mode": self.mode,
            "st_size": self.size,
            "st_nlink": self.nlink,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_mtime": self.mtime_ns,
            "st_ctime": self.ctime_ns,
            "st_atime": self.mtime_ns,
            "st_blocks": (self.size + 511) // 512,
            "st_blksize": 4096,
        }


def snapshot_folder_names(infos: Sequence[SnapshotInfo], tz: tzinfo) -> dict[bytes, SnapshotInfo]:
    """The folder name of each snapshot under ``/snapshots``: its start time to the second in
    ``tz`` (``2026-12-05T17:20:01``), with ``-<8 hex of its ID>`` for each further snapshot of
    the same second; in the order of ``infos``."""
    out: dict[bytes, SnapshotInfo] = {}
    for info in infos:
        when = datetime.fromtimestamp(info.meta.time_ns / 1e9, tz)
        name = when.strftime("%Y-%m-%dT%H:%M:%S").encode("ascii")
        if name in out:
            name += b"-" + info.id[:_SHORT_ID].encode("ascii")
        out[name] = info
    return out


def _id_names(infos: Sequence[SnapshotInfo]) -> dict[bytes, SnapshotInfo]:
    """``/ids`` names: 8 hex characters of the ID, the whole ID where two share them."""
    short: dict[str, int] = {}
    for info in infos:
        short[info.id[:_SHORT_ID]] = short.get(info.id[:_SHORT_ID], 0) + 1
    return {
        (i.id[:_SHORT_ID] if short[i.id[:_SHORT_ID]] == 1 else i.id).encode("ascii"): i
        for i in infos
    }


class _ChunkCache:
    """Decrypted chunks, the least recently read dropped past ``limit`` bytes."""

    def __init__(self, repo: Repository, limit: int) -> None:
        self.repo = repo
        self.limit = limit
        self.held = 0
        self.chunks: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, chunk_id: bytes) -> bytes:
        data = self.chunks.get(chunk_id)
        if data is not None:
            self.chunks.move_to_end(chunk_id)
            return data
        data = self.repo.read_chunk(chunk_id)
        self.chunks[chunk_id] = data
        self.held += len(data)
        while self.held > self.limit and len(self.chunks) > 1:
            _, dropped = self.chunks.popitem(last=False)
            self.held -= len(dropped)
        return data


@dataclass(frozen=True, slots=True)
class _OpenFile:
    """An open file: its path in the mount (``key``) and in its snapshot (``path``), its chunk
    IDs and where each starts in the content (bytes)."""

    key: bytes
    path: bytes
    chunk_ids: tuple[bytes, ...]
    starts: tuple[int, ...]
    size: int


class MountView:
    """The mount's tree over raw paths (module docstring), without FUSE: ``stat``,
    ``list_folder``, ``read_link``, ``open``/``read``/``release``. A path that is not there
    raises ``OSError(ENOENT)``; damage in the repository ``OSError(EIO)`` (named in a warning
    on the log, once per file or snapshot); a snapshot forgotten since the mount started
    ``OSError(ENOENT)``, and it leaves the view (``_forgotten``)."""

    def __init__(
        self,
        repo: Repository,
        infos: Sequence[SnapshotInfo],
        tz: tzinfo,
        workdir: Path,
    ) -> None:
        self.repo = repo
        self.by_name = snapshot_folder_names(infos, tz)
        self.by_id = _id_names(infos)
        self.folder_of = {info.id: name for name, info in self.by_name.items()}
        newest = max(infos, key=lambda i: (i.meta.time_ns, i.id), default=None)
        self.latest = None if newest is None else self.folder_of[newest.id]
        self.started_ns = max((i.meta.time_ns for i in infos), default=0)
        self.workdir = workdir
        self.warned: set[bytes] = set()  # files and snapshots already named in a warning
        self.trees: dict[str, TreeIndex] = {}
        self.cache = _ChunkCache(repo, CACHE_BYTES)
        self.files: dict[int, _OpenFile] = {}
        self.next_handle = 1

    # -- the virtual folders -------------------------------------------------------------------

    def _split(self, path: bytes) -> tuple[list[bytes], SnapshotInfo | None, bytes]:
        """The path's first components, the snapshot it lies in (``None`` above them), and the
        path within the snapshot (``/`` at its folder)."""
        parts = [p for p in path.split(b"/") if p]
        if len(parts) >= 2 and parts[0] == _SNAPSHOTS and parts[1] in self.by_name:
            rest = b"/" + b"/".join(parts[2:])
            return parts, self.by_name[parts[1]], rest
        return parts, None, b""

    def stat(self, path: bytes) -> Stat:
        """The attributes of ``path``. Raises ``OSError`` (``ENOENT``, ``EIO``)."""
        parts, info, inner = self._split(path)
        top = Stat(_DIR_MODE, 0, self.started_ns, self.started_ns, nlink=2)
        if info is not None:
            return _stat_of(self._entry(info, inner))
        if not parts or parts in ([_SNAPSHOTS], [_IDS]):
            return top
        target = self._link_target(parts)
        if target is not None:
            return Stat(_LINK_MODE, len(target), self.started_ns, self.started_ns)
        raise _missing(path)

    def list_folder(self, path: bytes) -> Iterator[bytes]:
        """The names in folder ``path`` (``.`` and ``..`` first). Raises ``OSError``
        (``ENOENT``, ``ENOTDIR``, ``EIO``)."""
        parts, info, inner = self._split(path)
        yield from (b".", b"..")
        if info is not None:
            entry = self._entry(info, inner)
            if not entry.is_dir:
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            tree = self._tree(info)
            yield from (name for name, _mode in tree.names(inner))
        elif not parts:
            yield from (_SNAPSHOTS, _IDS)
        elif parts == [_SNAPSHOTS]:
            yield from self.by_name
            if self.latest is not None:
                yield _LATEST
        elif parts == [_IDS]:
            yield from self.by_id
        else:
            raise _missing(path)

    def read_link(self, path: bytes) -> bytes:
        """The target of symbolic link ``path``. Raises ``OSError`` (``ENOENT``, ``EINVAL``)."""
        parts, info, inner = self._split(path)
        if info is not None:
            entry = self._entry(info, inner)
            if entry.link_target is None:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return entry.link_target
        target = self._link_target(parts)
        if target is None:
            raise _missing(path)
        return target

    def _link_target(self, parts: list[bytes]) -> bytes | None:
        if parts == [_SNAPSHOTS, _LATEST] and self.latest is not None:
            return self.latest
        if len(parts) == 2 and parts[0] == _IDS and parts[1] in self.by_id:
            return b"../snapshots/" + self.folder_of[self.by_id[parts[1]].id]
        return None

    # -- snapshots -----------------------------------------------------------------------------

    def _tree(self, info: SnapshotInfo) -> TreeIndex:
        """The snapshot's index, built on first use (module docstring). Raises ``OSError``
        (``ENOENT``: the snapshot was forgotten; ``EIO``: its tree cannot be read)."""
        tree = self.trees.get(info.id)
        if tree is None:
            log.debug("indexing snapshot %s", info.id)
            file = self.workdir / f"{info.id}.sqlite"
            file.unlink(missing_ok=True)
            try:
                _, items = self.repo.load_snapshot(info.id)
                tree = TreeIndex.build(items, file, time_ns=info.meta.time_ns)
            except (SnapshotNotFound, ObjectNotFound) as exc:
                self._forgotten(info)
                raise _missing(info.id.encode()) from exc
            except (RepositoryError, DestinationError) as exc:
                self._warn_once(info.id.encode(), f"cannot read snapshot {info.id}: {exc.message}")
                raise OSError(errno.EIO, os.strerror(errno.EIO)) from exc
            self.trees[info.id] = tree
        return tree

    def _forgotten(self, info: SnapshotInfo) -> None:
        """Take a snapshot no longer in the repository out of the view, said once."""
        name = self.folder_of.pop(info.id, None)
        if name is None:
            return
        log.warning(
            "snapshot %s (%s) is no longer in the repository: it was forgotten since the "
            "mount started",
            info.id[:_SHORT_ID],
            name.decode("ascii"),
        )
        self.by_name.pop(name, None)
        self.by_id = {k: v for k, v in self.by_id.items() if v.id != info.id}
        if self.latest == name:
            rest = self.by_name.values()
            newest = max(rest, key=lambda i: (i.meta.time_ns, i.id), default=None)
            self.latest = None if newest is None else self.folder_of[newest.id]

    def _warn_once(self, key: bytes, message: str) -> None:
        """Log ``message`` as a warning the first time ``key`` (a path, a snapshot ID) fails."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s", message)

    def _entry(self, info: SnapshotInfo, inner: bytes) -> IndexedEntry:
        entry = self._tree(info).lookup(inner)
        if entry is None:
            raise _missing(inner)
        return entry

    # -- file content --------------------------------------------------------------------------

    def open(self, path: bytes) -> int:
        """A handle for reading regular file ``path``. Raises ``OSError`` (``ENOENT``,
        ``EISDIR``, ``EIO``: a chunk the index does not list)."""
        _, info, inner = self._split(path)
        if info is None:
            self.stat(path)  # ENOENT when not there
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        entry = self._entry(info, inner)
        if entry.is_dir:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        starts, offset = [], 0
        ids = tuple(entry.chunk_ids)
        for chunk_id in ids:
            loc = self.repo.chunk_location(chunk_id)
            if loc is None:
                why = ChunkNotFound(chunk_id).message
                self._warn_once(path, f"cannot read {_shown(inner)}: {why}")
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            starts.append(offset)
            offset += loc.original_size
        handle = self.next_handle
        self.next_handle += 1
        self.files[handle] = _OpenFile(
            key=path, path=inner, chunk_ids=ids, starts=tuple(starts), size=offset
        )
        return handle

    def read(self, handle: int, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes of an open file from byte ``offset`` (fewer only at its end).
        Raises ``OSError`` (``EBADF``; ``EIO``: a chunk damaged or missing, named in a
        warning)."""
        f = self.files.get(handle)
        if f is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        end = min(offset + size, f.size)
        out = bytearray()
        pos = offset
        i = bisect.bisect_right(f.starts, pos) - 1
        while pos < end and 0 <= i < len(f.chunk_ids):
            try:
                data = self.cache.get(f.chunk_ids[i])
            except (RepositoryError, DestinationError) as exc:
                self._warn_once(f.key, f"cannot read {_shown(f.path)}: {exc.message}")
                raise OSError(errno.EIO, os.strerror(errno.EIO)) from exc
            start = pos - f.starts[i]
            piece = data[start : start + (end - pos)]
            out += piece
            pos += len(piece)
            i += 1
        return bytes(out)

    def release(self, handle: int) -> None:
        """Forget an open file."""
        self.files.pop(handle, None)

    def close(self) -> None:
        """Close every snapshot index (their files are removed with the work folder)."""
        for tree in self.trees.values():
            tree.close()
        self.trees.clear()


def _stat_of(entry: IndexedEntry) -> Stat:
    size = len(entry.link_target) if entry.link_target is not None else entry.size
    return Stat(
        entry.mode,
        0 if entry.is_dir else size,
        entry.mtime_ns,
        entry.ctime_ns,
        entry.uid,
        entry.gid,
        2 if entry.is_dir else 1,
    )


def _missing(path: bytes) -> OSError:
    return OSError(errno.ENOENT, os.strerror(errno.ENOENT), os.fsdecode(path))


def _shown(path: bytes) -> str:
    from opencbs.engine.entries import display_path  # noqa: PLC0415

    return display_path(path)


def _errno_of(exc: Exception) -> int:
    """The errno a FUSE operation answers for ``exc``: its own for an ``OSError``, ``ENOENT``
    for what is not there (a snapshot, an object of the destination), ``EIO`` for the rest
    (damage, a destination that cannot be read, a fault of this module)."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, (SnapshotNotFound, ObjectNotFound)):
        return errno.ENOENT
    return errno.EIO


def _answer(operation: Callable[..., Any]) -> Callable[..., Any]:
    """``operation`` with every exception it raises turned into an ``OSError`` of an errno
    (``_errno_of``), which mfusepy answers as such: none reaches mfusepy's own handler, which
    would print a traceback and answer ``EINVAL``. What is not an ``OSError`` already is named
    in a warning (its traceback only at debug level)."""

    @functools.wraps(operation)
    def wrapper(self: _Operations, path: str, *args: Any) -> Any:
        try:
            return operation(self, path, *args)
        except OSError as exc:
            if exc.errno:
                raise
            failure: Exception = exc
        except Exception as exc:  # noqa: BLE001 - libfuse gets an errno, never an exception
            failure = exc
        code = _errno_of(failure)
        if code != errno.ENOENT:
            text = failure.message if isinstance(failure, OpenCBSError) else repr(failure)
            log.warning("cannot %s %s: %s", operation.__name__, _shown(os.fsencode(path)), text)
            log.debug("%s of %s failed", operation.__name__, path, exc_info=failure)
        raise OSError(code, os.strerror(code)) from None

    return wrapper


class _Operations:
    """The FUSE operations mfusepy calls (its path strings are the raw names decoded with
    ``surrogateescape``), each a call of the ``MountView`` that answers an errno for any error
    (``_answer``)."""

    use_ns = True  # times in ns (mfusepy)

    def __init__(self, view: MountView, on_ready: Callable[[], None]) -> None:
        self.view = view
        self.on_ready = on_ready

    @_answer
    def init(self, path: str) -> None:
        self.on_ready()

    @_answer
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        return self.view.stat(os.fsencode(path)).as_fuse()

    @_answer
    def readdir(self, path: str, fh: int) -> list[str]:
        return [os.fsdecode(n) for n in self.view.list_folder(os.fsencode(path))]

    @_answer
    def readlink(self, path: str) -> str:
        return os.fsdecode(self.view.read_link(os.fsencode(path)))

    @_answer
    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return self.view.open(os.fsencode(path))

    @_answer
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.view.read(fh, size, offset)

    @_answer
    def release(self, path: str, fh: int) -> int:
        self.view.release(fh)
        return 0

    @_answer
    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


def serve_mount(
    repo: Repository,
    infos: Sequence[SnapshotInfo],
    mountpoint: Path,
    *,
    tz: tzinfo,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Mount the snapshots ``infos`` of ``repo`` read-only at ``mountpoint`` and serve them in
    the foreground until unmounted (``fusermount3 -u``, or Ctrl-C, SIGTERM or SIGHUP, which
    libfuse turns into an unmount; either is a normal return); ``on_ready`` is called once the
    mount is in place. Raises ``FuseUnavailable`` (``load_fuse``, or libfuse refused the mount:
    its reason is on stderr)."""
    fuse = load_fuse()
    workdir = Path(tempfile.mkdtemp(prefix="opencbs-mount-"))
    view = MountView(repo, infos, tz, workdir)
    mounted = False

    def ready() -> None:
        nonlocal mounted
        mounted = True
        on_ready()

    try:
        options: dict[str, Any] = {
            "foreground": True,
            "nothreads": True,
            "ro": True,
            # a snapshot never changes: the kernel may keep what it read and looked up
            "kernel_cache": True,
            "attr_timeout": CACHE_SECONDS,
            "entry_timeout": CACHE_SECONDS,
        }
        fuse.FUSE(_Operations(view, ready), os.fspath(mountpoint), fsname="opencbs", **options)
    except RuntimeError as exc:
        if not mounted:
            raise FuseUnavailable(
                f"cannot mount at {mountpoint}: libfuse refused it (code {exc}; its reason is "
                "above)",
                "check that the mount point is a folder you own and nothing is mounted there "
                "already, and that fusermount3 is installed (apt-get install fuse3); in a "
                "container: --device /dev/fuse --cap-add SYS_ADMIN",
            ) from None
        # libfuse ends its loop with a code when a signal (Ctrl-C, SIGTERM, SIGHUP) stopped
        # it, and has unmounted by then: the normal end of a mount
        log.debug("FUSE loop ended with code %s", exc)
    finally:
        view.close()
        shutil.rmtree(workdir, ignore_errors=True)
