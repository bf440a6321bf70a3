"""Checking a repository: structure always, every stored byte on request.

Below ``repository.py``: ``verify_repository`` reads the repository through ``Verifiable``
(what it needs of one), and ``Repository.verify`` calls it; this module never imports
``repository.py``.

Problems are returned, never logged: the caller says each once, where it belongs (``opencbs
verify``: one line each on stdout). A problem is one damaged object: a damaged pack is one
problem naming how many of its chunks are damaged and which snapshots and files use them, its
chunks listed under it (``VerifyProblem.chunks``), never one problem each.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from opencbs.destinations.base import DestinationError, ObjectNotFound, Storage
from opencbs.engine.chunk_index import ChunkIndex, ChunkLocation
from opencbs.engine.entries import display_path
from opencbs.engine.manifest import Anchor, ListCheck
from opencbs.engine.packs import (
    least_pack_size,
    pack_id_of,
    pack_name,
    pack_sizes,
)
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.snapshot_format import SnapshotInfo, TreeItem
from opencbs.reports.wording import plural


@dataclass(frozen=True, slots=True)
class ChunkProblem:
    """One damaged chunk of a damaged pack: its ID (64 hex) and what is wrong with it (the
    ID not repeated)."""

    chunk_id: str
    message: str


@dataclass(frozen=True, slots=True)
class PackUse:
    """What a damaged pack's damaged chunks hold: ``chunks`` damaged of ``chunks_indexed``
    the index places in the pack, used by ``files`` distinct paths in ``snapshots``
    snapshots, and by the file lists (trees) of ``trees`` snapshots."""

    chunks: int
    chunks_indexed: int
    snapshots: int
    files: int
    trees: int


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """One damaged object: the ``subject`` (object name, snapshot or path) and a message;
    for a pack, ``use`` (what its damage affects) and ``chunks`` (its damaged chunks that
    were checked one by one: read, or cut off by a short pack)."""

    subject: str
    message: str
    chunks: tuple[ChunkProblem, ...] = ()
    use: PackUse | None = None


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

    sizes = pack_sizes(repo.storage)
    damages: list[_PackDamage] = []
    chunks_read = 0
    checked: set[str] = set()
    for pack_id, chunks in index.by_pack():
        checked.add(pack_id)
        damage = _PackDamage(pack_id, chunks)
        chunks_read += damage.check(repo, sizes.get(pack_id), read_data=read_data, present=sizes)
        if damage.findings == [MISSING] and not damage.damaged:
            notes += (_nothing_lost(pack_id),)  # each chunk has a copy in a pack that is there
        elif damage.is_damaged:
            damages.append(damage)
    for pack_id in index.packs():  # every chunk of it located in another pack
        if pack_id not in checked and pack_id not in sizes:
            # nothing is lost (a later backup stored its chunks again, or two writers stored
            # them at once): said, not counted as damage
            notes += (_nothing_lost(pack_id),)
    damaged = {cid: d for d in damages for cid in d.damaged}

    snapshot_ids = repo.snapshot_ids()
    reported: set[bytes] = set()
    for snapshot_id in snapshot_ids:
        errors.extend(_check_snapshot(repo, snapshot_id, reported, damaged))
    errors.extend(d.problem() for d in damages)
    return VerifyResult(tuple(errors), len(snapshot_ids), len(index.packs()), chunks_read, notes)


@dataclass(slots=True)
class _PackDamage:
    """What is wrong with one indexed pack, gathered while checking it and while walking the
    snapshots that use its damaged chunks."""

    pack_id: str
    chunks: list[tuple[bytes, ChunkLocation]]
    findings: list[str] = field(default_factory=list)
    damaged: dict[bytes, str] = field(default_factory=dict)  # chunk → why ("" if not checked)
    snapshots: set[str] = field(default_factory=set)
    files: set[bytes] = field(default_factory=set)
    trees: set[str] = field(default_factory=set)
    unread: set[str] = field(default_factory=set)  # snapshots whose file list is unreadable

    def check(
        self,
        repo: Verifiable,
        size: int | None,
        *,
        read_data: bool,
        present: Container[str] = (),
    ) -> int:
        """Check the pack (``size``: its bytes per the listing, ``None`` when absent):
        its size against its index and, with ``read_data``, its bytes and every chunk;
        returns how many chunks were read. A missing pack's chunks that the index also knows
        in a pack that is there (``present``: IDs of the packs listed) are not damaged."""
        data: bytes | None = None
        if size is not None and read_data:
            try:
                data = repo.storage.get(pack_name(self.pack_id))
            except ObjectNotFound:
                size = None
            else:
                size = len(data)
        if size is None:
            self.findings.append(MISSING)
            copied = {
                cid
                for cid, _ in self.chunks
                if any(c.pack_id in present for c in repo.index.copies(cid))
            }
            self.damaged = dict.fromkeys((cid for cid, _ in self.chunks if cid not in copied), "")
            return 0
        end = max(loc.offset + loc.length for _, loc in self.chunks)
        least = least_pack_size(end, len(self.chunks))
        if size < least:
            self.findings.append(f"cut short: {size:,} bytes where its index needs {least:,}")
            for cid, loc in self.chunks:
                if loc.offset + loc.length > size:
                    self.damaged[cid] = f"cut off (its bytes end at {loc.offset + loc.length:,})"
        if data is None:
            return 0
        if not self.findings and pack_id_of(data) != self.pack_id:  # cut short says it
            self.findings.append("pack bytes do not match the pack ID")
        for cid, loc in self.chunks:
            if cid in self.damaged:
                continue
            try:
                repo.open_chunk(cid, data[loc.offset : loc.offset + loc.length], loc.original_size)
            except RepositoryError as exc:
                self.damaged[cid] = exc.message.removeprefix(f"chunk {cid.hex()}: ")
        return len(self.chunks)

    @property
    def is_damaged(self) -> bool:
        """Whether anything is wrong with the pack."""
        return bool(self.findings or self.damaged)

    def problem(self) -> VerifyProblem:
        """The one problem said of this pack: what is wrong with it, how many of its chunks
        are damaged and what uses them."""
        use = PackUse(
            len(self.damaged),
            len(self.chunks),
            len(self.snapshots),
            len(self.files),
            len(self.trees),
        )
        chunks = tuple(ChunkProblem(cid.hex(), why) for cid, why in self.damaged.items() if why)
        parts = list(self.findings)
        indexed = plural(use.chunks_indexed, "chunk")
        if self.findings == [MISSING]:
            parts.append(f"its {indexed} lost" if self.chunks else "")
        elif use.chunks:
            parts.append(f"{use.chunks} of {indexed} damaged")
        else:
            parts.append(f"its {indexed} intact")
        if use.chunks:
            parts[-1] += f", {self._used_by(use)}"
        parts = [part for part in parts if part]
        return VerifyProblem(pack_name(self.pack_id), "; ".join(parts), chunks, use)

    def _used_by(self, use: PackUse) -> str:
        """Whom the damaged chunks are used by, for a person (the file named when one)."""
        said: list[str] = []
        if len(self.files) == 1:
            [path] = self.files
            said.append(f"{display_path(path)} in {plural(use.snapshots, 'snapshot')}")
        elif use.files:
            said.append(f"{plural(use.files, 'file')} in {plural(use.snapshots, 'snapshot')}")
        if use.trees:
            said.append(f"the file list of {plural(use.trees, 'snapshot')}")
        unread = len(self.unread - self.snapshots - self.trees)
        maybe = plural(unread, "snapshot whose file list is", "snapshots whose file lists are")
        if said:
            also = f"; maybe also by {maybe} unreadable" if unread else ""
            return "used by " + " and ".join(said) + also
        return f"maybe used by {maybe} unreadable" if unread else "used by no snapshot"


#: What verify says of an indexed pack that is not at the destination.
MISSING = "indexed pack is missing"


def _nothing_lost(pack_id: str) -> str:
    """The note for a missing pack none of whose chunks is lost."""
    return (
        f"{pack_name(pack_id)}: {MISSING}; every chunk it held is stored in another pack, so "
        "nothing is lost"
    )


def _list_notes(listed: ListCheck) -> tuple[str, ...]:
    """What a person is told of snapshots the list does not name yet (no damage)."""
    notes: tuple[str, ...] = ()
    n = len(listed.unrecorded)
    if n:
        notes += (
            f"{n} snapshot{'s are' if n != 1 else ' is'} not in the snapshot list yet (a "
            "backup that ended before recording it, or a repository made before the list); "
            "the next backup records them",
        )
    n = len(listed.leftovers)
    if n:
        notes += (
            f"{n} removed snapshot{'s are' if n != 1 else ' is'} still stored (a forget "
            "stopped halfway); the next forget or prune deletes them",
        )
    return notes


def _check_snapshot(
    repo: Verifiable,
    snapshot_id: str,
    reported: set[bytes],
    damaged: dict[bytes, _PackDamage],
) -> list[VerifyProblem]:
    """The problems of one snapshot; notes in ``damaged`` which snapshots and files use
    the chunks of damaged packs (an unreadable file list whose chunks are in a damaged pack is
    said by that pack, not again here)."""
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
    tree_damage = [damaged[c] for c in info.tree if c in damaged]
    for pack in tree_damage:
        pack.trees.add(snapshot_id)
    count = 0
    try:
        for entry, chunk_ids in items:
            count += 1
            for chunk_id in chunk_ids:
                in_pack = damaged.get(chunk_id)
                if in_pack is not None:
                    in_pack.snapshots.add(snapshot_id)
                    in_pack.files.add(entry.path)
                if chunk_id in reported or repo.has_chunk(chunk_id):
                    continue
                reported.add(chunk_id)
                where = f"{subject}: {display_path(entry.path)}"
                problems.append(VerifyProblem(where, f"chunk {chunk_id.hex()} is not stored"))
    except (RepositoryError, DestinationError) as exc:
        if tree_damage:  # the damaged pack says it (a cut-off chunk: DestinationError)
            for pack in {id(d): d for d in damaged.values()}.values():
                pack.unread.add(snapshot_id)  # its files' use of any damaged pack is unknown
            return problems
        if not isinstance(exc, RepositoryError):
            raise
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
