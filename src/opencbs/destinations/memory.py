"""A destination held in a dict: for tests and for dry runs. Implements ``Storage``."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from opencbs.destinations.base import (
    DestinationError,
    ObjectNotFound,
    PreconditionFailed,
    check_name,
    check_prefix,
)


def _version(data: bytes) -> str:
    """The version tag of an object (its BLAKE2b-128 digest, hex), as ``LocalStorage``'s."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class MemoryStorage:
    """Objects in process memory; lost when the process ends. Thread-safe."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self._objects)} objects)"

    def put(self, name: str, data: bytes | memoryview) -> None:
        """See ``Storage.put``."""
        check_name(name)
        blob = bytes(data)
        with self._lock:
            self._objects[name] = blob

    def get(self, name: str) -> bytes:
        """See ``Storage.get``."""
        check_name(name)
        with self._lock:
            try:
                return self._objects[name]
            except KeyError:
                raise ObjectNotFound(name) from None

    def get_versioned(self, name: str) -> tuple[bytes, str]:
        """See ``Storage.get_versioned``."""
        data = self.get(name)
        return data, _version(data)

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        """See ``Storage.put_if`` (compared and replaced under the storage's lock). Raises
        ``PreconditionFailed``."""
        check_name(name)
        blob = bytes(data)
        with self._lock:
            held = self._objects.get(name)
            if (None if held is None else _version(held)) != version:
                raise PreconditionFailed(name)
            self._objects[name] = blob
        return _version(blob)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """See ``Storage.get_range``."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        data = self.get(name)
        if offset + length > len(data):
            raise DestinationError(f"Object {name!r} is shorter than {offset + length} bytes")
        return data[offset : offset + length]

    def list(self, prefix: str = "") -> Iterator[str]:
        """See ``Storage.list``."""
        check_prefix(prefix)
        with self._lock:
            names = sorted(n for n in self._objects if n.startswith(prefix))
        return iter(names)

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """See ``Storage.list_sizes``."""
        check_prefix(prefix)
        with self._lock:
            found = sorted((n, len(b)) for n, b in self._objects.items() if n.startswith(prefix))
        return iter(found)

    def delete(self, name: str) -> None:
        """See ``Storage.delete``."""
        check_name(name)
        with self._lock:
            self._objects.pop(name, None)

    def exists(self, name: str) -> bool:
        """See ``Storage.exists``."""
        check_name(name)
        with self._lock:
            return name in self._objects

    # Test helpers -------------------------------------------------------------------------

    def truncate(self, name: str, size: int) -> None:
        """Keep only the first ``size`` bytes of an object (tests of a cut-off pack)."""
        with self._lock:
            self._objects[name] = self._objects[name][:size]

    def tamper(self, name: str, offset: int, xor: int = 0x01) -> None:
        """Flip bits of one byte of an object in place (tests of corruption detection)."""
        with self._lock:
            data = bytearray(self._objects[name])
            data[offset] ^= xor
            self._objects[name] = bytes(data)
