"""Read-ahead of small files in a helper process (issue 4, "Speed": reading overlapped with the
rest of the pipeline on the second core).

The agent handles files one at a time, in walk order, in one thread. On a cold page cache each
small file's read waits for the disk; asking the kernel to read the next files early
(``posix_fadvise(WILLNEED)``) lets the disk work on many at once, but that call itself costs
tens of microseconds of kernel time per file. Made from the agent's thread it held up everything
else; made from threads it cost more in GIL hand-offs than it saved (measured: 100,000 small
files, 24.5 s in the agent's thread, 30.9 s from a helper thread). So a helper *process*
(``readahead_child.py``, standard library only) makes the calls, on the other core, for the
paths the agent sends it, while the agent stores the files before them.

Only the files the agent will read are sent (never an unchanged file: its content is not
read). Paths travel in messages of at most ``PIPE_BUF`` bytes over a non-blocking pipe: a
message either goes whole or, when the helper is behind, is dropped (those files are read
cold, nothing else changes). The helper ends when the pipe closes, so an agent killed with
SIGKILL leaves no process behind for longer than its current call.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import select
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["ReadAhead"]

_CHILD = Path(__file__).with_name("readahead_child.py")
#: Bytes of one message (header included): at most PIPE_BUF, so a write is whole or nothing.
_MESSAGE_MAX = min(getattr(select, "PIPE_BUF", 4096), 4096)


class ReadAhead:
    """The helper process and the batch of paths not yet sent to it.

    The process starts on the first :meth:`add` (a job that reads nothing starts none). If it
    cannot start, read-ahead is off for the job (logged at debug level); nothing raises.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._batch: list[bytes] = []
        self._size = 5  # bytes of the batch once marshalled (an upper bound; list header)
        self._added = 0  # paths given to add
        self._flushed = 0  # of them, sent or dropped
        self._off = False
        self.sent = 0  #: paths handed to the helper
        self.dropped = 0  #: paths not sent: the helper was behind (or gone)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, path: bytes) -> int:
        """Queue ``path`` (a regular file the agent is about to read) for read-ahead; returns
        its number, for :meth:`is_sent`. Queued paths go when a message is full, or at
        :meth:`send`."""
        no = self._added
        self._added += 1
        if self._off:
            self._flushed = self._added
            return no
        size = len(path) + 5  # marshal: type byte and 4-byte length per bytes object
        if self._size + size > _MESSAGE_MAX - 2:
            self.send()
        if self._size + size > _MESSAGE_MAX - 2:
            self._flushed = self._added  # a path too long for one message: read cold
            return no
        self._batch.append(path)
        self._size += size
        return no

    def is_sent(self, no: int) -> bool:
        """Whether path number ``no`` has left the queue (sent, or dropped)."""
        return no < self._flushed

    def send(self) -> None:
        """Hand the queued paths to the helper now (without waiting)."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._size = 5
        self._flushed = self._added
        if self._fd < 0 and not self._start():
            return
        body = marshal.dumps(batch)
        try:
            os.write(self._fd, len(body).to_bytes(2, "little") + body)
            self.sent += len(batch)
        except BlockingIOError:
            self.dropped += len(batch)
        except OSError as exc:  # the helper is gone
            log.debug("read-ahead stopped: %s", exc)
            self.dropped += len(batch)
            self._off = True

    def close(self) -> None:
        """Stop the helper (it ends at the closed pipe) and wait for it briefly."""
        log.debug("read-ahead: %d paths sent, %d dropped", self.sent, self.dropped)
        self._off = True
        self._batch = []
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:  # stuck in a call on a hung file system
                proc.kill()
                proc.wait()

    def _start(self) -> bool:
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_CHILD)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            log.debug("read-ahead off: cannot start its helper: %s", exc)
            self._off = True
            return False
        assert self._proc.stdin is not None
        self._fd = os.dup(self._proc.stdin.fileno())
        self._proc.stdin.close()
        os.set_blocking(self._fd, False)
        return True
