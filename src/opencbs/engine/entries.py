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
    ``link_to_dir`` whether it points at a directory. ``hard_link``: a regular file with more
    than one name (``st_nlink > 1``) when scanned; its ``(device, inode)`` is then its *link
    identity*, shared by every name of the file (as ``tar``, restic and borg keep it): names of
    one job with the same identity and content are restored as hard links of one file
    (``agent.restore_links``) and its content is read once (issue 15).
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
    hard_link: bool = False


def with_content_id(e: Entry, content_id: bytes | None) -> Entry:
    """``e`` with ``content_id``: ``replace(e, content_id=content_id)`` without ``replace``'s
    per-field work (it runs once per file of a job)."""
    return Entry(
        e.path,
        e.etype,
        e.size,
        e.mtime_ns,
        e.ctime_ns,
        e.mode,
        e.uid,
        e.gid,
        e.inode,
        e.device,
        e.link_target,
        e.link_to_dir,
        content_id,
        e.hard_link,
    )


def display_path(path: bytes) -> str:
    """A path for reports and terminals: its UTF-8 text, with each byte that is not UTF-8 shown
    as ``\\xNN`` and a literal backslash doubled, so two different names never look alike."""
    if b"\\" not in path:
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return path.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def parse_display_path(text: str) -> bytes:
    """The raw path that :func:`display_path` shows as ``text`` (its inverse:
    ``parse_display_path(display_path(p)) == p`` for every ``bytes`` ``p``): ``\\\\`` is one
    backslash, ``\\xNN`` (two hex digits, either case) the byte ``NN``, every other character its
    UTF-8 (a lone surrogate from a command line decoded with ``surrogateescape`` becomes its
    original byte). The escapes the CLI adds on a terminal read back too: ``\\n``, ``\\r``,
    ``\\t`` and ``\\uXXXX``/``\\UXXXXXXXX`` (a format character such as U+202E), so a path
    copied from the screen names the file. Raises ``ValueError`` for a backslash followed by
    anything else (then ``text`` is not in display form)."""
    if "\\" not in text:
        return text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            out += text[i:].encode("utf-8", "surrogateescape")
            break
        out += text[i:j].encode("utf-8", "surrogateescape")
        if text.startswith("\\\\", j):
            out += b"\\"
            i = j + 2
        elif text.startswith("\\x", j) and _is_hex2(text[j + 2 : j + 4]):
            out.append(int(text[j + 2 : j + 4], 16))
            i = j + 4
        elif text[j + 1 : j + 2] in _SHOWN_CONTROLS:
            out += _SHOWN_CONTROLS[text[j + 1]]
            i = j + 2
        elif (width := _UNICODE_ESCAPES.get(text[j + 1 : j + 2], 0)) and _is_hex(
            text[j + 2 : j + 2 + width], width
        ):
            out += chr(int(text[j + 2 : j + 2 + width], 16)).encode("utf-8", "surrogatepass")
            i = j + 2 + width
        else:
            raise ValueError(f"not a path in display form (lone backslash at {j}): {text!r}")
    return bytes(out)


def _is_hex2(s: str) -> bool:
    return _is_hex(s, 2)


def _is_hex(s: str, width: int) -> bool:
    return len(s) == width and all(c in "0123456789abcdefABCDEF" for c in s)


#: How a terminal shows a name's control characters and format characters (``cli.common``'s
#: ``show_name``, on top of :func:`display_path`): read back as the name's own bytes.
_SHOWN_CONTROLS = {"n": b"\n", "r": b"\r", "t": b"\t"}
_UNICODE_ESCAPES = {"u": 4, "U": 8}
