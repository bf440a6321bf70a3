"""Small helpers shared by the store's query modules. (The text rule of what the store keeps as
JSON text is ``opencbs.model.text``.)"""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current instant, UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000
