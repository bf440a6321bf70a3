"""The storage protocol every destination backend implements, its errors and its name rules.

A destination holds opaque objects (``bytes``) under names. A name is relative and
``/``-separated (``data/3f/3fa4…``); each component is non-empty, does not start with ``.``
(so ``.`` and ``..`` are impossible and backends may keep temporary files under dot-names) and
holds no ``\\`` or NUL. Names are case-sensitive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from opencbs.errors import ExitCode, OpenCBSError


class DestinationError(OpenCBSError):
    """The destination could not be read or written (I/O error, permission, full disk…).

    Every backend raises this (or a subclass) and nothing else for storage failures: OS and SDK
    errors are translated inside the backend.
    """

    code = "destination"
    exit_code = ExitCode.UNAVAILABLE


class ObjectNotFound(DestinationError):
    """No object of that name exists in the destination."""

    code = "destination_object_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"Object {name!r} not found in the destination")
        self.name = name


class PreconditionFailed(DestinationError):
    """A conditional write (``Storage.put_if``) found another version of the object than the
    one expected: another writer changed it meanwhile. Read it again and retry."""

    code = "destination_precondition_failed"

    def __init__(self, name: str) -> None:
        super().__init__(f"Object {name!r} was changed by another writer meanwhile")
        self.name = name


class InvalidObjectName(DestinationError):
    """A name that is empty, absolute, escapes the root or uses a reserved component."""

    code = "destination_invalid_name"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"Invalid object name {name!r}: {why}")
        self.name = name


def check_name(name: str) -> str:
    """Return ``name`` unchanged if it is a valid object name; raise ``InvalidObjectName``."""
    if not name:
        raise InvalidObjectName(name, "empty")
    if name.startswith("/"):
        raise InvalidObjectName(name, "absolute")
    if "\\" in name or "\x00" in name:
        raise InvalidObjectName(name, "contains a backslash or NUL")
    if ":" in name.split("/", 1)[0]:
        raise InvalidObjectName(name, "looks like a drive or URL")
    for part in name.split("/"):
        if not part:
            raise InvalidObjectName(name, "empty component")
        if part.startswith("."):
            raise InvalidObjectName(name, "component starts with '.'")
    return name


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start valid names (``""``, ``"data/"``, ``"snapshots/ab"``)."""
    if prefix:
        # A prefix ending in "/" or in a partial component is valid if "<prefix>x" is a name.
        check_name(prefix + "x")
    return prefix


@runtime_checkable
class Storage(Protocol):
    """A flat store of named immutable objects (the destination of a repository).

    All methods raise ``DestinationError`` on storage failures and ``InvalidObjectName`` for a
    bad name; nothing else escapes. Implementations must be safe to call from several threads.
    """

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``name`` atomically: readers see the old object, or none, or
        all of ``data``, never a part. Replaces an existing object."""
        ...

    def get(self, name: str) -> bytes:
        """The whole object; raises ``ObjectNotFound`` if there is none."""
        ...

    def get_versioned(self, name: str) -> tuple[bytes, str]:
        """The whole object and its version tag (an opaque string: an S3 ETag, a digest of a
        file), for a later ``put_if``; raises ``ObjectNotFound``."""
        ...

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        """Store ``data`` under ``name`` only if the object's current version is ``version``
        (``None``: only if there is no object of that name), atomically with respect to other
        ``put_if`` calls of any process or machine sharing the destination; returns the new
        version. Raises ``PreconditionFailed`` when another writer got there first (nothing is
        written then). The snapshot list is written this way (issue 13: two writers never
        overwrite each other's snapshot)."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the object from byte ``offset``; raises ``ObjectNotFound``, or
        ``DestinationError`` if the object is shorter than ``offset + length``."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Names starting with ``prefix`` (a plain string prefix), in ascending order."""
        ...

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(name, size in bytes)`` of the objects ``list(prefix)`` names, in the same order:
        what a listing tells without reading (a stat; an object store's listing carries it),
        so ``verify`` checks each pack's length against its index cheaply."""
        ...

    def delete(self, name: str) -> None:
        """Remove the object; deleting a missing object is not an error (idempotent)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether an object of that name exists."""
        ...
