"""Where a backup set's repository lives: a tiny storage protocol with local-folder and
in-memory backends (architecture.md, style.md §8).

``Storage`` is the protocol; ``LocalStorage`` and ``MemoryStorage`` implement it. Every storage
failure is a ``DestinationError``.
"""

from opencbs.destinations.base import (
    DestinationError,
    InvalidObjectName,
    ObjectNotFound,
    Storage,
    check_name,
)
from opencbs.destinations.local import LocalStorage
from opencbs.destinations.memory import MemoryStorage

__all__ = [
    "DestinationError",
    "InvalidObjectName",
    "LocalStorage",
    "MemoryStorage",
    "ObjectNotFound",
    "Storage",
    "check_name",
]
