"""Counts in sentences for people: "1 problem", "2 problems" (the CLI's outputs, the
agent's and the engine's messages).

English plural rule: the singular for exactly one, the plural otherwise (also for 0).
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, plural unless ``n == 1``: ``counted(1, "file")`` is ``"1 file"``,
    ``counted(3, "directory", "directories")`` is ``"3 directories"``. ``plural`` defaults to
    ``noun + "s"``; a noun phrase works too (``counted(2, "path not restored", "paths not
    restored")``)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
