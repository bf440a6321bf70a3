"""Checking a repository: structure always, every stored byte on request.

Below ``repository.py``: ``verify_repository`` reads the repository through ``Verifiable``
(what it needs of one), and ``Repository.verify`` calls it; this module never imports
``repository.py``.

Problems are returned, never logged: the caller says each once, where it belongs (``opencbs
verify``: one line each on stdout).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from opencbs.destinations.base import ObjectNotFound, Storage
from opencbs.engine.chunk_index import ChunkIndex
from opencbs.engine.entries import display_path
from opencbs.engine.manifest import Anchor, ListCheck
from opencbs.engine.packs import DATA_PREFIX, pack_id_of, pack_id_of_name, pack_name
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.snapshot_format import SnapshotInfo, TreeItem
from opencbs.reports.wording import plural


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """One thing wrong: the ``subject`` (object name, chunk ID or path) and a message."""

    subject: str
    message: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of ``Repository.verify``: ``errors`` (empty when sound), the number of
    snapshots and indexed packs checked, the number of chunks read and hashed, and ``notes``
    (sentences for a person that are no damage, e.g. snapshots not yet in the snapshot list)."""

    errors: tuple[VerifyProblem, ...]
    snapshots: int
    packs: int
    chunks_read: int
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.errors


class Verifiable(Protocol):
    """What ``verify_repository`` reads of a repository (``Repository`` has it all)."""

    @property
    def storage(self) -> Storage: ...

    @property
    def index(self) -> ChunkIndex: ...

    def snapshot_ids(self) -> list[str]: ...

    def check_snapshot_list(self, anchor: Anchor | None = None) -> ListCheck: ...

    def load_snapshot(self, snapshot_id: str) -> tuple[SnapshotInfo, Iterator[TreeItem]]: ...

    def has_chunk(self, chunk_id: bytes) -> bool: ...

    def open_chunk(self, chunk_id: bytes, blob: bytes, original_size: int) -> bytes: ...


def verify_repository(
    repo: Verifiable, *, read_data: bool, anchor: Anchor | None = None
) -> VerifyResult:
    """Check ``repo`` (``anchor``: what this agent remembers of its snapshot list, or
    ``None``); the rules and errors are those of ``Repository.verify``."""
    errors: list[VerifyProblem] = []
    index = repo.index
    listed = repo.check_snapshot_list(anchor)
    errors.extend(VerifyProblem(subject, message) for subject, message in listed.problems)
    notes = _list_notes(listed)

    present = {pack_id_of_name(n) for n in repo.storage.list(DATA_PREFIX)}
    missing_packs = {p for p in index.packs() if p not in present}
    for pack_id in sorted(missing_packs):
        errors.append(VerifyProblem(pack_name(pack_id), "indexed pack is missing"))

    snapshot_ids = repo.snapshot_ids()
    reported: set[bytes] = set()
    for snapshot_id in snapshot_ids:
        errors.extend(_check_snapshot(repo, snapshot_id, reported))

    chunks_read = 0
    if read_data:
        for pack_id, chunks in index.by_pack():
            if pack_id in missing_packs:
                continue
            name = pack_name(pack_id)
            try:
                data = repo.storage.get(name)
            except ObjectNotFound:
                errors.append(VerifyProblem(name, "indexed pack is missing"))
                continue
            if pack_id_of(data) != pack_id:
                errors.append(VerifyProblem(name, "pack bytes do not match the pack ID"))
            for chunk_id, loc in chunks:
                chunks_read += 1
                blob = data[loc.offset : loc.offset + loc.length]
                try:
                    repo.open_chunk(chunk_id, blob, loc.original_size)
                except RepositoryError as exc:
                    errors.append(VerifyProblem(chunk_id.hex(), f"in {name}: {exc.message}"))
    return VerifyResult(tuple(errors), len(snapshot_ids), len(index.packs()), chunks_read, notes)


def _list_notes(listed: ListCheck) -> tuple[str, ...]:
    """What a person is told of snapshots the list does not name yet (no damage)."""
    n = len(listed.unrecorded)
    if not n:
        return ()
    return (
        f"{n} snapshot{'s are' if n != 1 else ' is'} not in the snapshot list yet (a backup "
        "that ended before recording it, or a repository made before the list); the next "
        "backup records them",
    )


def _check_snapshot(
    repo: Verifiable, snapshot_id: str, reported: set[bytes]
) -> list[VerifyProblem]:
    subject = f"snapshot {snapshot_id}"
    problems: list[VerifyProblem] = []
    try:
        info, items = repo.load_snapshot(snapshot_id)
    except RepositoryError as exc:
        return [VerifyProblem(subject, exc.message)]
    missing_tree = [c for c in info.tree if not repo.has_chunk(c)]
    if missing_tree:
        missing = plural(len(missing_tree), "tree chunk is", "tree chunks are")
        return [VerifyProblem(subject, f"{missing} not stored")]
    count = 0
    try:
        for entry, chunk_ids in items:
            count += 1
            for chunk_id in chunk_ids:
                if chunk_id in reported or repo.has_chunk(chunk_id):
                    continue
                reported.add(chunk_id)
                where = f"{subject}: {display_path(entry.path)}"
                problems.append(VerifyProblem(where, f"chunk {chunk_id.hex()} is not stored"))
    except RepositoryError as exc:
        problems.append(VerifyProblem(subject, f"tree unreadable: {exc.message}"))
        return problems
    if count != info.entry_count:
        problems.append(
            VerifyProblem(
                subject,
                f"tree holds {plural(count, 'entry', 'entries')}, {info.entry_count} expected",
            )
        )
    return problems
