"""The storage of a destination, opened from its address (``model.destinations``): a local
folder (``destinations.local``) or an S3 bucket and prefix (``destinations.s3``, imported only
when an S3 destination is used, so a local backup never loads the S3 library).

What the agent needs to open S3 is :class:`S3Access`: its credentials (its own config, or
``None`` for the standard AWS chain: environment variables, shared credentials file) and the
folder where it journals its open multipart uploads (so the next job aborts those a killed
process left: ``S3Storage.remove_stale_temporaries``). It never leaves the agent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencbs.destinations.base import Storage
from opencbs.destinations.local import LocalStorage
from opencbs.errors import ConfigError, OpenCBSError
from opencbs.model.destinations import DestinationAddress

if TYPE_CHECKING:
    from opencbs.destinations.s3 import S3Credentials

__all__ = [
    "UPLOAD_JOURNAL",
    "MISCONFIGURED",
    "S3Access",
    "UnusableStorage",
    "open_storage",
    "storage_key",
]

#: Folder of the agent's ``data_dir`` where open multipart uploads are journaled.
UPLOAD_JOURNAL = "s3-uploads"


@dataclass(frozen=True)
class S3Access:
    """How this agent reaches S3: an access key of its own (both empty: the standard AWS
    chain; one without the other: ``ConfigError``), a ``profile`` of the shared credentials
    file, ``journal_dir`` for its open
    multipart uploads (``None``: not journaled) and ``retry_seconds`` (``S3Tuning``). The
    secret never shows in ``repr``."""

    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    profile: str = ""
    journal_dir: Path | None = None
    retry_seconds: float = 60.0

    def credentials(self) -> S3Credentials | None:
        """The credentials for ``destinations.s3`` (``None``: the standard chain)."""
        from opencbs.destinations.s3 import S3Credentials

        if bool(self.access_key_id) != bool(self.secret_access_key):
            given, missing = (
                ("s3_access_key_id", "s3_secret_access_key")
                if self.access_key_id
                else ("s3_secret_access_key", "s3_access_key_id")
            )
            raise ConfigError(
                f"{given} is set but {missing} is not",
                f"give both (the config file, or OPENCBS_{missing.upper()}), or neither to use "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the shared credentials file",
            )
        if not (self.access_key_id or self.secret_access_key or self.profile):
            return None
        return S3Credentials(
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            profile=self.profile,
        )


def open_storage(
    address: DestinationAddress, access: S3Access | None = None, *, fsync: bool = True
) -> Storage:
    """The storage at ``address``: ``LocalStorage`` (``fsync`` as there) or ``S3Storage``
    with ``access`` (default: the standard AWS chain, no journal). Nothing is contacted or
    created yet. Raises ``InvalidInput`` for an address without a place."""
    if address.s3 is None:
        assert address.path is not None
        return LocalStorage(address.path, fsync=fsync)
    from opencbs.destinations.s3 import S3Storage, S3Tuning

    access = access or S3Access()
    return S3Storage(
        address.s3,
        access.credentials(),
        tuning=S3Tuning(retry_seconds=access.retry_seconds),
        journal_dir=access.journal_dir,
    )


def storage_key(storage: Storage) -> str | None:
    """The identity of a storage's place, as ``DestinationAddress.key`` gives it (the absolute
    folder, or the S3 location's key); ``None`` for a storage without a place (in memory)."""
    if isinstance(storage, LocalStorage):
        return os.path.abspath(storage.root)
    location = getattr(storage, "location", None)
    key = getattr(location, "key", None)
    return key if isinstance(key, str) else None


#: Codes of destination errors that are the destination's settings, not its state: a job
#: failing for them exits 7, "cannot be used" (README's exit codes), not 9.
MISCONFIGURED = frozenset({"destination_credentials", "destination_bucket_missing"})


class UnusableStorage:
    """The storage of a destination that could not be used at the start of a job (its S3
    server down, its credentials refused, its bucket missing, its repository's config
    damaged: a ``DestinationError`` or ``DamagedConfig``): every call raises ``error``
    again. A job given it ends ``BS_STOP_BY_SYSTEM_ERROR`` with the reason in its log and is
    reported to the server like any failed job (issue 13), instead of no job at all."""

    def __init__(self, where: str, error: OpenCBSError) -> None:
        self.where = where
        self.error = error

    def __str__(self) -> str:
        return self.where

    @property
    def misconfigured(self) -> bool:
        """Whether the error is the destination's settings (credentials refused, a bucket
        missing: :data:`MISCONFIGURED`), not a server down."""
        return self.error.code in MISCONFIGURED

    def _fail(self, *_args: object, **_kwargs: object) -> Any:
        raise self.error

    put = get = get_versioned = put_if = get_range = _fail
    list = list_sizes = delete = exists = _fail
