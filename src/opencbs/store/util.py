"""Small helpers shared by the store's query modules."""

from __future__ import annotations

import re
import time


def now_ms() -> int:
    """The current instant, UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: str) -> bool:
    """Whether ``value`` can be stored, compared and served as text by every database and as
    JSON: valid Unicode (no lone surrogate, as a path that is not UTF-8 has once decoded with
    ``surrogateescape``, or ``"\ud800"`` in a JSON body) and no NUL character (PostgreSQL
    refuses it). The API checks parameters with it too (``api.params``)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_text(value: str) -> str:
    """``value`` as valid Unicode for a message or an answer: unchanged when it is; else with
    backslashes doubled, each byte of a ``surrogateescape`` decoding as ``\\xNN`` and any
    other lone surrogate as ``\\uXXXX`` (the form of ``opencbs.engine.entries.display_path``).
    NUL characters are shown as ``\\x00``."""
    if is_text(value):
        return value
    return _SURROGATE.sub(_escape, value.replace("\\", "\\\\")).replace("\x00", "\\x00")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
