"""The job's totals, counted ahead of the backup (issue 12: a progress display with an ETA).

The backup's own walk (``engine.scan_process``) runs only as far ahead of the reading as its
pipe holds, so its counts are final only near the end. :class:`TotalCount` walks the same
sources with the same filters (:class:`~opencbs.engine.scan.Scan`) in another helper process,
at a lower priority (``nice`` 5), keeping nothing but two numbers: the regular files and their
bytes. It finishes long before the backup on most trees (a walk reads metadata only, and the
backup's own walk then finds the directory entries cached), as restic's scanner does.

Wire format (child to parent, one line each on stdout): ``<files> <bytes>`` every
``REPORT_EVERY`` seconds while it walks, then ``end <files> <bytes>``. The parent sends the job
(sources and filters) as one ``marshal`` message on the child's stdin, as for the scan.

The totals are for a person (a progress bar's total and ETA); nothing else depends on them.
A child that cannot start, or ends without its last line, leaves them unknown (``done`` stays
false); :meth:`TotalCount.close` ends the child whatever it is doing.
"""

from __future__ import annotations

import logging
import marshal
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

from opencbs.engine.entries import Entry
from opencbs.engine.scan import Scan, ScanFilter, _normalize_sources
from opencbs.engine.scan_process import read_scan_job, scan_job
from opencbs.reports.vocabulary import EntryType

log = logging.getLogger(__name__)

__all__ = ["TotalCount"]

#: Seconds between two lines of the counting child.
REPORT_EVERY = 0.25


class TotalCount:
    """Regular files (``files``) and their bytes (``bytes``) under ``sources`` with ``filters``,
    counted by a helper process (module docstring); ``done`` once the walk has ended."""

    def __init__(self, sources: Iterable[bytes | str], filters: ScanFilter) -> None:
        self.files = 0
        self.bytes = 0
        self.done = False
        job = scan_job(_normalize_sources(sources), filters)
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "opencbs.engine.scan_count"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
            assert self._proc.stdin is not None
            self._proc.stdin.write(marshal.dumps(job))
            self._proc.stdin.close()
        except OSError as exc:
            log.debug("no totals ahead: cannot start the counting helper: %s", exc)
            self.close()
            return
        threading.Thread(target=self._read, name="opencbs-count", daemon=True).start()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            fields = line.split()
            final = fields[:1] == [b"end"]
            try:
                files, size = (int(f) for f in fields[-2:])
            except ValueError:
                return
            self.files, self.bytes = files, size
            if final:
                self.done = True
                return

    def close(self) -> None:
        """End the counting child (if it still runs) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _child() -> None:
    """The helper process: read the job from stdin, write the counts to stdout."""
    sources, filters = read_scan_job(sys.stdin.buffer)
    os.nice(5)  # the backup comes first
    out = sys.stdout
    files = size = 0
    due = time.monotonic() + REPORT_EVERY
    for item in Scan(sources, filters):
        if isinstance(item, Entry) and item.etype is EntryType.FILE:
            files += 1
            size += item.size
            if time.monotonic() >= due:
                out.write(f"{files} {size}\n")
                out.flush()
                due = time.monotonic() + REPORT_EVERY
    out.write(f"end {files} {size}\n")
    out.flush()


if __name__ == "__main__":
    try:
        _child()
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(1)  # the parent is gone (or stopping): nothing to report to
