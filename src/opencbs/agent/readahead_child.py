"""The read-ahead helper process (see ``opencbs.agent.readahead``): announces files to the
kernel so that their content is in the page cache when the agent reads them.

Run as ``python -I -S readahead_child.py`` (standard library only, no package import, so it
starts in milliseconds with a few MiB). Reads messages from stdin until end of file: a 2-byte
little-endian length, then ``marshal`` of a list of paths (bytes). Per path: ``open`` (without
following a final symbolic link, without updating the access time where allowed),
``posix_fadvise(WILLNEED)``, ``close`` (opened non-blocking: a FIFO never blocks it). Every
error is ignored: this is only a hint; the agent reads, checks and reports each file itself.
"""

import marshal
import os
import sys


def main() -> None:
    """Serve messages from stdin until it closes (the agent finished, or died)."""
    stream = sys.stdin.buffer
    # O_NONBLOCK: a path that became a FIFO must not block the open
    plain = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    flags = plain | getattr(os, "O_NOATIME", 0)
    willneed = getattr(os, "POSIX_FADV_WILLNEED", None)
    while True:
        head = stream.read(2)
        if len(head) < 2:
            return
        body = stream.read(int.from_bytes(head, "little"))
        try:
            paths = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            return
        for path in paths:
            try:
                try:
                    fd = os.open(path, flags)
                except PermissionError:  # O_NOATIME needs ownership of the file
                    fd = os.open(path, plain)
            except OSError:
                continue
            try:
                if willneed is not None:
                    os.posix_fadvise(fd, 0, 0, willneed)
            except OSError:
                pass
            finally:
                os.close(fd)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
