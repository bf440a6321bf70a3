"""Where a backup set's repository lives: a tiny storage protocol with local-folder and
in-memory backends (architecture.md, style.md §8).

``Storage`` is the protocol; ``LocalStorage`` and ``MemoryStorage`` implement it. Every storage
failure is a ``DestinationError``. The S3 backend (``opencbs.destinations.s3``, on boto3) is
not imported here: import it where an S3 destination is opened, so local ones never load boto3.
"""

from opencbs.destinations.base import (
    DestinationError,
    InvalidObjectName,
    ObjectNotFound,
    PreconditionFailed,
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
    "PreconditionFailed",
    "Storage",
    "check_name",
]
