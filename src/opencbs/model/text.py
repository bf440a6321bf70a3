"""The text rule: a string the server stores and serves as JSON text (a backup set's name,
sources and filter patterns, a destination's name and settings, a CBS call's parameters) must be
valid Unicode without NUL.

Why: PostgreSQL refuses NUL in text and JSON, and no JSON encoder can write a lone surrogate,
which is what a path that is not UTF-8 becomes once decoded with ``surrogateescape`` (or what a
``"\\ud800"`` escape in a JSON body gives). Names *inside* a source may be any bytes: they travel
in job reports in their display form (``\\xNN``), not here.

``is_text`` tests the rule, ``require_text`` raises ``InvalidInput`` (with a hint) where a value
would be stored, and ``shown_text`` makes any string fit to show in a message or an answer.
"""

from __future__ import annotations

import re

from opencbs.errors import InvalidInput

__all__ = ["PATTERN_HINT", "SOURCE_HINT", "is_text", "require_text", "shown_text"]

#: What to do about a backup set's source path that is not UTF-8 text.
SOURCE_HINT = (
    "a backup set's sources are stored as UTF-8 text: rename that folder or file to a "
    "UTF-8 name, or give its parent folder as the source (names inside a source may "
    "be any bytes)"
)
#: What to do about a filter pattern that is not UTF-8 text.
PATTERN_HINT = "give the pattern in UTF-8"

_SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: str) -> bool:
    """Whether ``value`` can be stored, compared and served as text by every database and as
    JSON: valid Unicode (no lone surrogate, as a path that is not UTF-8 has once decoded with
    ``surrogateescape``, or ``"\\ud800"`` in a JSON body) and no NUL character (PostgreSQL
    refuses it)."""
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


def require_text(value: str, what: str, hint: str = "") -> None:
    """Raise ``InvalidInput`` naming ``what`` (e.g. ``"source"``) and showing ``value`` in
    display form unless ``value`` is valid UTF-8 text without NUL (``is_text``): message
    ``"<what> <value> is not valid UTF-8 text"`` or ``"… holds a NUL character"``, with
    ``hint``."""
    if is_text(value):
        return
    problem = "holds a NUL character" if "\x00" in value else "is not valid UTF-8 text"
    raise InvalidInput(f"{what} {shown_text(value)} {problem}", hint)
