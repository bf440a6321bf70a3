"""``display_path`` and its inverse ``parse_display_path``: a path as reports show it maps
back to the exact raw bytes, for every byte string (Hypothesis) and known answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opencbs.engine.entries import display_path, parse_display_path

#: Bytes with many backslashes, 'x', hex digits and invalid UTF-8 lead bytes.
_TRICKY = st.binary(max_size=40) | st.lists(
    st.sampled_from(
        [
            b"\\",
            b"x",
            b"4",
            b"f",
            b"/",
            b"\xff",
            b"\xc3",
            b"\xa9",
            b"\xed\xa0\x80",
            "é".encode(),
            b"a",
        ]
    ),
    max_size=20,
).map(b"".join)


@given(_TRICKY)
def test_parse_inverts_display(path: bytes) -> None:
    assert parse_display_path(display_path(path)) == path


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"/home/ann/doc.txt", "/home/ann/doc.txt"),
        (b"/a/caf\xc3\xa9", "/a/café"),
        (b"/a/\xff\xfe", "/a/\\xff\\xfe"),
        (b"/a\\b", "/a\\\\b"),
        (b"/a\\xff", "/a\\\\xff"),
    ],
)
def test_known_answers(raw: bytes, shown: str) -> None:
    assert display_path(raw) == shown
    assert parse_display_path(shown) == raw


def test_upper_case_hex_and_surrogate_escapes() -> None:
    assert parse_display_path("/a/\\xFF") == b"/a/\xff"
    assert parse_display_path(b"/a/\xff".decode("utf-8", "surrogateescape")) == b"/a/\xff"


@pytest.mark.parametrize("text", ["/a\\b", "/a\\x4", "/a\\xzz", "/a\\"])
def test_not_display_form(text: str) -> None:
    with pytest.raises(ValueError, match="display form"):
        parse_display_path(text)


@pytest.mark.parametrize(
    ("shown", "raw"),
    [
        ("/r/new\\nline.txt", b"/r/new\nline.txt"),
        ("/r/tab\\tname", b"/r/tab\tname"),
        ("/r/cr\\r", b"/r/cr\r"),
        ("/r/bidi\\u202etxt.exe", "/r/bidi\u202etxt.exe".encode()),
        ("/r/tag\\U000e0001", "/r/tag\U000e0001".encode()),
        ("/r/back\\\\nslash", b"/r/back\\nslash"),
    ],
)
def test_a_path_as_the_terminal_shows_it_reads_back(shown: str, raw: bytes) -> None:
    """What ``show_name`` prints for a name (``\\n``, ``\\t``, ``\\u202e``) names the file again,
    so a path copied from a report or ``--verbose`` works with ``restore --path``."""
    from opencbs.cli.common import show_name

    assert parse_display_path(shown) == raw
    assert show_name(raw) == shown
