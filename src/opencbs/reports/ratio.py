"""The ratio rule of cbs-api.md §4."""

from __future__ import annotations


def zip_ratio(stored: int, unzipped: int) -> str:
    """Return the saving of compression as the CBS string ``"N%"``.

    ``N = floor((unzipped - stored) * 100 / unzipped)``, clamped to 0..100; ``"0%"`` when
    ``unzipped`` is 0 (cbs-api.md §4). Sizes are bytes.

    >>> zip_ratio(6827033, 10268480)
    '33%'
    """
    if unzipped <= 0:
        return "0%"
    n = ((unzipped - stored) * 100) // unzipped
    return f"{min(100, max(0, n))}%"
