"""How a count is said to a person (the CLI's summaries, a job's outcome message).

:func:`plural`: ``1 warning``, ``2 warnings``, ``1 entry``, ``3 entries``: the one rule for the
singular and plural of a counted noun, so that no output says "1 problems" or "1 files".
"""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, word: str, many: str | None = None, *, grouped: bool = False) -> str:
    """``"<count> <word>"`` with ``word`` in the singular for a count of 1 (or -1), else its
    plural: ``many`` when given (``entry``/``entries``), else ``word + "s"``. ``count`` is
    shown as given, or with ``grouped`` with a thousands separator (``1,234 files``: the
    progress display and the readable report)."""
    shown = f"{count:,}" if grouped else str(count)
    if abs(count) == 1:
        return f"{shown} {word}"
    return f"{shown} {many if many is not None else word + 's'}"
