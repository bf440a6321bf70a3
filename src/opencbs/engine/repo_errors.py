"""Errors of the repository format (packs, indexes, snapshots, keys).

Storage failures underneath are ``opencbs.destinations.DestinationError`` and pass through
unchanged; these classes say what is wrong with the repository itself.
"""

from __future__ import annotations

from opencbs.errors import ExitCode, OpenCBSError


class RepositoryError(OpenCBSError):
    """The repository cannot be used as asked (missing, already there, malformed)."""

    code = "repository"
    exit_code = ExitCode.UNAVAILABLE


class RepositoryNotFound(RepositoryError):
    """No repository (no key file) at the destination. ``where`` is shown as given: callers
    that talk to a person pass the destination's path."""

    code = "repository_not_found"

    def __init__(self, where: str) -> None:
        super().__init__(
            f"No repository at {where}",
            hint="check the destination path; a repository is created there by the first "
            "`opencbs backup` to it",
        )


class RepositoryExists(RepositoryError):
    """``init`` on a destination that already holds a repository."""

    code = "repository_exists"

    def __init__(self, where: str) -> None:
        super().__init__(
            f"A repository already exists at {where}",
            hint="Open it with its password, or choose an empty destination.",
        )


class WrongPassword(RepositoryError):
    """The encryption password does not unlock the repository's key file."""

    code = "repository_password"
    exit_code = ExitCode.CREDENTIALS

    def __init__(self) -> None:
        super().__init__(
            "Wrong encryption password for this repository",
            hint="Use the encryption password of the backup set that created the destination.",
        )


class KeyFileRefused(RepositoryError):
    """A key file refused before any key derivation runs: too large, or asking for Argon2id
    costs outside the accepted bounds (``crypto.KDF_LIMITS``), as a damaged or crafted one
    would."""

    code = "repository_keyfile"
    exit_code = ExitCode.REFUSED

    def __init__(self, why: str) -> None:
        super().__init__(
            f"Key file refused: {why}",
            hint="the key file (keys/default) is damaged or was replaced; put back a copy "
            "of it from another copy of the repository",
        )


class CorruptData(RepositoryError):
    """Stored bytes fail authentication, hashing or decoding: the destination is damaged or
    was tampered with."""

    code = "corrupt_data"
    exit_code = ExitCode.REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="Run a verify with data reading; restore from another copy.")


#: What the message of a ``DamagedConfig`` says (a failed job's message is known by it:
#: ``cli.backup_run.print_job_failure``).
CONFIG_DAMAGED = "its config object is damaged"


def damaged_config_hint(where: str) -> str:
    """The next step for a repository in ``where`` (a folder, an ``s3://`` URL) whose config
    object is damaged (``DamagedConfig``)."""
    return (
        f"put back {where.rstrip('/')}/config from a copy of the destination (its backups "
        "cannot be read without it); or move the destination away and back up into a new, "
        "empty folder or prefix (a full backup)"
    )


class DamagedConfig(CorruptData):
    """A repository whose key file opens but whose ``config`` object is missing or damaged:
    nothing in it can be read or written until the object is put back (a verify cannot check
    it either). ``where``: the destination, as its storage names it (a folder, an
    ``s3://`` URL); ``why``: what is wrong with the object."""

    code = "repository_config_damaged"

    def __init__(self, where: str, why: str) -> None:
        RepositoryError.__init__(
            self,
            f"the repository in {where} cannot be opened: {CONFIG_DAMAGED} ({why})",
            hint=damaged_config_hint(where),
        )


class ChunkNotFound(RepositoryError):
    """A chunk ID that no index of the repository knows."""

    code = "chunk_not_found"

    def __init__(self, chunk_id: bytes) -> None:
        super().__init__(f"Chunk {chunk_id.hex()} is not in the repository")
        self.chunk_id = chunk_id


class SnapshotNotFound(RepositoryError):
    """No snapshot of that ID."""

    code = "snapshot_not_found"
    exit_code = ExitCode.NOT_FOUND

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"Snapshot {snapshot_id} not found")
        self.snapshot_id = snapshot_id
