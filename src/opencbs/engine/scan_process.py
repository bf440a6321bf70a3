"""The scan of :mod:`opencbs.engine.scan`, run in a helper process (issue 4, "Speed": the walk's
``lstat`` calls on the second core).

A backup handles its files in one thread of the agent, and on small files the walk itself
(listing directories, ``lstat`` per name, building entries) was a quarter of that thread's time.
Python threads cannot share that work (one runs Python at a time, and handing the lock back and
forth after every system call cost more than it saved: see ``agent.readahead``), so
:class:`ScanProcess` runs the very same :class:`~opencbs.engine.scan.Scan` in a child process
(``python -P -m opencbs.engine.scan_process``: without the current directory on ``sys.path``)
and reads its results from a pipe: the same entries and warnings in the same walk order, then
the incomplete directories. Same interface as ``Scan``: iterate once;
:attr:`ScanProcess.incomplete_dirs` once finished; ``sources``.

Wire format (child to parent), messages of a 4-byte little-endian length then ``marshal`` data:
a list of records, each a tuple — an entry is its first 12 ``Entry`` fields in order (without
``content_id``; ``etype`` as its one-letter value), then ``hard_link``; a warning is
``(path, message)``; the last message is the dict
``{"end": True, "incomplete": [...], "completed_dirs": n}``. The parent sends the job (sources
and filters) as one ``marshal`` message on the child's stdin.

If the child cannot be started, the walk runs in this process (``Scan``), logged at debug
level. If it ends without its last message, iterating raises :class:`ScanAborted` (its
standard error, kept in a temporary file, is in the message). A child whose parent is gone
gets a broken pipe at its next write and ends.
"""

from __future__ import annotations

import logging
import marshal
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from opencbs.engine.entries import Entry
from opencbs.engine.scan import Scan, ScanFilter, ScanWarning, _normalize_sources, _shared_int
from opencbs.reports.vocabulary import EntryType

log = logging.getLogger(__name__)

__all__ = ["ScanAborted", "ScanProcess", "read_scan_job", "scan_job"]

#: Records per message from the child.
_BATCH = 1024
_PIPE_BUFFER = 1024 * 1024


class ScanAborted(RuntimeError):
    """The scan's helper process ended before the end of the walk."""


class ScanProcess:
    """:class:`~opencbs.engine.scan.Scan` of ``sources`` with ``filters``, walked by a child
    process (module docstring). Iterate once; then read :attr:`incomplete_dirs`."""

    def __init__(self, sources: Iterable[bytes | str], filters: ScanFilter | None = None) -> None:
        self.sources: tuple[bytes, ...] = _normalize_sources(sources)
        self.filters = filters if filters is not None else ScanFilter()
        self.completed_dirs = 0
        self._incomplete: frozenset[bytes] = frozenset()
        self._started = False
        self._finished = False
        self._local: Scan | None = None

    @property
    def finished(self) -> bool:
        """Whether the walk has run to its end."""
        return self._local.finished if self._local is not None else self._finished

    @property
    def incomplete_dirs(self) -> frozenset[bytes]:
        """Directories and sources not completely scanned (final once :attr:`finished`)."""
        if self._local is not None:
            return self._local.incomplete_dirs
        return self._incomplete

    def __iter__(self) -> Iterator[Entry | ScanWarning]:
        if self._started:
            raise RuntimeError("a Scan can be iterated only once")
        self._started = True
        return self._walk()

    def _walk(self) -> Iterator[Entry | ScanWarning]:
        errors = tempfile.TemporaryFile(prefix="opencbs-scan-")
        try:
            proc = subprocess.Popen(
                # -P: not the current directory first on sys.path (a types.py there would run)
                [sys.executable, "-P", "-m", "opencbs.engine.scan_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                bufsize=_PIPE_BUFFER,
                close_fds=True,
            )
        except OSError as exc:
            errors.close()
            log.debug("scanning in this process: cannot start the scan helper: %s", exc)
            self._local = Scan(self.sources, self.filters)
            yield from self._local
            return
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(marshal.dumps(scan_job(self.sources, self.filters)))
                proc.stdin.close()
            except OSError:
                pass  # it died already: reported below, at the missing end
            yield from self._read(proc.stdout)
            if not self._finished:
                proc.wait()
                raise ScanAborted(_died(proc, errors))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            errors.close()

    def _read(self, pipe: IO[bytes]) -> Iterator[Entry | ScanWarning]:
        types = {t.value: t for t in EntryType}
        shared = _shared_int
        while True:
            head = pipe.read(4)
            if len(head) < 4:
                return
            body = pipe.read(int.from_bytes(head, "little"))
            message: Any = marshal.loads(body)
            if isinstance(message, dict):
                self._incomplete = frozenset(message["incomplete"])
                self.completed_dirs = int(message["completed_dirs"])
                self._finished = True
                return
            for rec in message:
                if len(rec) == 2:
                    yield ScanWarning(rec[0], rec[1])
                    continue
                (path, etype, size, mtime, ctime, mode, uid, gid, inode, device) = rec[:10]
                target, to_dir, hard = rec[10:]
                yield Entry(
                    path,
                    types[etype],
                    size,
                    mtime,
                    ctime,
                    shared(mode, mode),
                    shared(uid, uid),
                    shared(gid, gid),
                    inode,
                    shared(device, device),
                    target,
                    to_dir,
                    None,
                    hard,
                )


def scan_job(sources: Iterable[bytes], filters: ScanFilter) -> dict[str, Any]:
    """The job a walking helper process is sent on its stdin (``marshal``): ``sources`` and
    ``filters`` (module docstring; also ``engine.scan_count``)."""
    return {
        "sources": list(sources),
        "include": list(filters.include),
        "exclude": list(filters.exclude),
        "exclude_caches": filters.exclude_caches,
    }


def read_scan_job(stream: IO[bytes]) -> tuple[list[bytes], ScanFilter]:
    """The sources and filters of :func:`scan_job`, read whole from ``stream`` (a helper's
    stdin)."""
    job = marshal.loads(stream.read())
    filters = ScanFilter(tuple(job["include"]), tuple(job["exclude"]), job["exclude_caches"])
    return list(job["sources"]), filters


def _died(proc: subprocess.Popen[bytes], errors: IO[bytes]) -> str:
    errors.seek(0)
    lines = errors.read().decode("utf-8", "replace").strip().splitlines()
    detail = f": {lines[-1]}" if lines else ""
    return f"the scan's helper process ended early (exit code {proc.returncode}){detail}"


def _child() -> None:
    """The helper process: read the job from stdin, write the walk to stdout."""
    sources, filters = read_scan_job(sys.stdin.buffer)
    scan = Scan(sources, filters)
    out = sys.stdout.buffer
    write = out.write
    batch: list[tuple[Any, ...]] = []
    for item in scan:
        if isinstance(item, Entry):
            batch.append(
                (
                    item.path,
                    item.etype.value,
                    item.size,
                    item.mtime_ns,
                    item.ctime_ns,
                    item.mode,
                    item.uid,
                    item.gid,
                    item.inode,
                    item.device,
                    item.link_target,
                    item.link_to_dir,
                    item.hard_link,
                )
            )
        else:
            batch.append((item.path, item.message))
        if len(batch) >= _BATCH:
            data = marshal.dumps(batch)
            write(len(data).to_bytes(4, "little") + data)
            batch = []
            out.flush()
    if batch:
        data = marshal.dumps(batch)
        write(len(data).to_bytes(4, "little") + data)
    end = marshal.dumps(
        {
            "end": True,
            "incomplete": sorted(scan.incomplete_dirs),
            "completed_dirs": scan.completed_dirs,
        }
    )
    write(len(end).to_bytes(4, "little") + end)
    out.flush()


if __name__ == "__main__":
    try:
        _child()
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(1)  # the parent is gone (or stopping): nothing to report to
