"""Small helpers shared by the store's query modules."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current instant, UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000
