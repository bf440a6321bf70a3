"""The exit codes have one table (``opencbs.errors.ExitCode``); the README's table says the same
(style.md §19)."""

from __future__ import annotations

import re
from pathlib import Path

from opencbs.errors import ExitCode, OpenCBSError

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| (\d+) \| (.+) \|$")


def _readme_table() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    head = text.index("| Exit code | Meaning |")
    rows: dict[int, str] = {}
    for line in text[head:].splitlines()[2:]:
        m = _ROW.match(line)
        if m is None:
            break
        rows[int(m.group(1))] = m.group(2)
    return rows


def test_the_readme_table_is_the_enum() -> None:
    assert _readme_table() == {code.value: code.meaning for code in ExitCode}


def test_every_error_class_names_a_member() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    import opencbs.agent.client  # noqa: F401  (error classes defined outside errors.py)
    import opencbs.agent.spool  # noqa: F401
    import opencbs.destinations.base  # noqa: F401
    import opencbs.engine.repo_errors  # noqa: F401

    for cls in subclasses(OpenCBSError):
        assert isinstance(cls.exit_code, ExitCode), cls
