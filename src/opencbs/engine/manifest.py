"""The snapshot list (object ``manifest``): which snapshots a repository holds, authenticated,
so that a removed snapshot or an older list put back by whoever holds the storage is noticed.

The object is sealed JSON (associated data ``b"opencbs:manifest"``)::

    {"format": "opencbs-manifest", "version": 1, "generation": N,
     "snapshots": [<id>, ...], "removed": [<id>, ...]}

- ``generation`` grows by one (at least) with every list written; ``snapshots`` are the IDs of
  every snapshot the repository holds; ``removed`` the IDs deleted on purpose (forget,
  ``prune.py``), which are never listed again. Snapshot objects need no hash here: each is
  sealed with its own ID as associated data and an ID is written once, so it cannot be
  replaced by other bytes.
- The list is replaced with a conditional write (``Storage.put_if``) against the version read:
  two backups committing at once (two agents, or two jobs of one) never lose each other's
  snapshot; the one whose read went stale reads again and retries
  (``Repository.record_snapshots``).
- A backup writes its snapshot first, then a new list (``Repository.record_snapshots``). A
  crash in between leaves a stored snapshot the list does not name: *unrecorded*, never a
  problem; the next list names it (after it authenticates).
- Damage the list shows by itself: a listed snapshot that is not stored (removed). A
  ``removed`` one still stored is a forget stopped between the list and the deletes
  (``prune.forget_snapshots``): a leftover, never listed again, deleted by the next forget or
  prune. What it cannot show by itself is a rollback (an older list put
  back with the older snapshots): the agent remembers, outside the storage, the newest list it
  wrote or checked (an :class:`Anchor`, ``<data_dir>/snapshot-lists/<repository ID>.json``), and
  a list older than that, or missing, or of the same generation without a snapshot the agent
  remembers, is a problem (:func:`check_snapshot_list`).

A repository made before the list existed has none until its next backup writes one; from then
on its config says it has one (``RepositoryConfig.snapshot_list``), so a deleted list is a
problem even without an anchor.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opencbs.destinations.base import ObjectNotFound, Storage
from opencbs.engine.crypto import Keys
from opencbs.engine.repo_errors import CorruptData
from opencbs.fileio import write_atomic

__all__ = [
    "ANCHOR_FOLDER",
    "MANIFEST_NAME",
    "Anchor",
    "ListCheck",
    "Manifest",
    "anchor_path",
    "check_snapshot_list",
    "load_anchor",
    "read_manifest",
    "read_manifest_versioned",
    "remember",
    "write_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest"
#: Folder of the anchors in the agent's ``data_dir``.
ANCHOR_FOLDER = "snapshot-lists"
_AAD = b"opencbs:manifest"
_FORMAT = "opencbs-manifest"
_ANCHOR_FORMAT = "opencbs-snapshot-list-anchor"
_VERSION = 1
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Manifest:
    """One snapshot list: its ``generation``, the ``snapshots`` listed, the ``removed`` ones
    and ``digest``, the keyed BLAKE3 (hex) of the stored object (tells two lists of one
    generation apart)."""

    generation: int
    snapshots: frozenset[str]
    removed: frozenset[str]
    digest: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """What the agent remembers of a repository's list: its ``generation``, ``digest`` and
    ``snapshots`` (module docstring)."""

    repo_id: str
    generation: int
    digest: str
    snapshots: frozenset[str]


@dataclass(frozen=True, slots=True)
class ListCheck:
    """Outcome of :func:`check_snapshot_list`: ``problems`` as (subject, message) pairs, the
    ``unrecorded`` snapshots (stored, not yet listed: not a problem) and the ``leftovers``
    (removed, object still stored: a forget stopped halfway; not a problem, the next forget or
    prune deletes them)."""

    problems: tuple[tuple[str, str], ...]
    unrecorded: tuple[str, ...]
    leftovers: tuple[str, ...] = ()


def _ids(value: Any, what: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(
        isinstance(i, str) and _ID_RE.match(i) for i in value
    ):
        raise CorruptData(f"{what}: malformed snapshot IDs")
    return frozenset(value)


def read_manifest(storage: Storage, keys: Keys) -> Manifest | None:
    """The repository's snapshot list, or ``None`` when it has none. Raises ``CorruptData``
    (fails authentication or decoding) and ``DestinationError``."""
    try:
        sealed = storage.get(MANIFEST_NAME)
    except ObjectNotFound:
        return None
    return _opened(sealed, keys)


def read_manifest_versioned(
    storage: Storage, keys: Keys
) -> tuple[Manifest | CorruptData | None, str | None]:
    """The stored list and its storage version (for a conditional :func:`write_manifest`):
    ``(None, None)`` when there is none; a list that fails authentication or decoding comes
    back as its ``CorruptData`` error with its version (so it can be replaced). Raises
    ``DestinationError``."""
    try:
        sealed, version = storage.get_versioned(MANIFEST_NAME)
    except ObjectNotFound:
        return None, None
    try:
        return _opened(sealed, keys), version
    except CorruptData as exc:
        return exc, version


def _opened(sealed: bytes, keys: Keys) -> Manifest:
    """The list of a stored object. Raises ``CorruptData``."""
    plain = keys.unseal(sealed, _AAD, what="snapshot list")
    try:
        doc = json.loads(plain)
        if doc["format"] != _FORMAT or doc["version"] != _VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        generation = doc["generation"]
        if type(generation) is not int or generation < 0:
            raise ValueError("bad generation")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"snapshot list: unreadable ({exc})") from None
    snapshots = _ids(doc.get("snapshots"), "snapshot list")
    removed = _ids(doc.get("removed"), "snapshot list")
    return Manifest(generation, snapshots, removed, keys.chunk_id(sealed).hex())


def write_manifest(
    storage: Storage,
    keys: Keys,
    generation: int,
    snapshots: Iterable[str],
    *,
    removed: Iterable[str] = (),
    replacing: tuple[str | None] | None = None,
) -> Manifest:
    """Store a snapshot list of ``generation`` (one atomic put, replacing the previous) and
    return it. With ``replacing=(version,)``, only if the stored list is still that version
    (``None``: only if there is none): ``Storage.put_if``, raising ``PreconditionFailed``
    when another writer replaced it meanwhile. Raises ``DestinationError``."""
    snap, gone = frozenset(snapshots), frozenset(removed)
    doc = {
        "format": _FORMAT,
        "version": _VERSION,
        "generation": generation,
        "snapshots": sorted(snap),
        "removed": sorted(gone),
    }
    sealed = keys.seal(json.dumps(doc, separators=(",", ":")).encode("ascii"), _AAD)
    if replacing is None:
        storage.put(MANIFEST_NAME, sealed)
    else:
        storage.put_if(MANIFEST_NAME, sealed, version=replacing[0])
    return Manifest(generation, snap, gone, keys.chunk_id(sealed).hex())


def check_snapshot_list(
    manifest: Manifest | None,
    present: Set[str],
    anchor: Anchor | None,
    *,
    required: bool,
) -> ListCheck:
    """Compare the list (``None``: none stored) with the snapshots ``present`` in the storage
    and with what the agent remembers (``anchor``, or ``None``); ``required``: the repository
    says it has a list. Pure; the rules are the module docstring's."""
    problems: dict[str, str] = {}
    leftovers: tuple[str, ...] = ()
    if manifest is None:
        if anchor is not None:
            problems["snapshot list"] = (
                f"missing; this agent remembers generation {anchor.generation} of it"
            )
        elif required:
            problems["snapshot list"] = "missing (the repository had one)"
        unrecorded: Set[str] = present
    else:
        gen = manifest.generation
        for sid in sorted(manifest.snapshots - present):
            problems[f"snapshot {sid}"] = f"removed: named by the snapshot list (generation {gen})"
        leftovers = tuple(sorted(manifest.removed & present))
        if anchor is not None and gen < anchor.generation:
            problems["snapshot list"] = (
                f"rolled back: generation {gen} < {anchor.generation} remembered by this agent"
            )
        unrecorded = present - manifest.snapshots - manifest.removed
    if anchor is not None and (manifest is None or manifest.generation <= anchor.generation):
        for sid in sorted(anchor.snapshots - present):
            problems.setdefault(
                f"snapshot {sid}",
                f"removed: this agent remembers it (snapshot list generation {anchor.generation})",
            )
    return ListCheck(tuple(problems.items()), tuple(sorted(unrecorded)), leftovers)


def anchor_path(data_dir: Path, repo_id: str) -> Path | None:
    """Where the agent remembers the list of repository ``repo_id``:
    ``<data_dir>/snapshot-lists/<repo_id>.json`` (``None`` for an ID unfit for a file name)."""
    if not _REPO_ID_RE.match(repo_id):
        return None
    return data_dir / ANCHOR_FOLDER / f"{repo_id}.json"


def load_anchor(data_dir: Path, repo_id: str) -> Anchor | None:
    """What the agent remembers of repository ``repo_id``'s list, or ``None`` (never saved,
    or unreadable: logged as a warning). Never raises."""
    path = anchor_path(data_dir, repo_id)
    if path is None:
        return None
    try:
        doc = json.loads(path.read_bytes())
        if doc["format"] != _ANCHOR_FORMAT or doc["repo_id"] != repo_id:
            raise ValueError("not an anchor of this repository")
        generation, digest = doc["generation"], doc["digest"]
        if type(generation) is not int or not isinstance(digest, str):
            raise ValueError("malformed")
        return Anchor(repo_id, generation, digest, _ids(doc["snapshots"], str(path)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, CorruptData) as exc:
        log.warning("ignoring the unreadable snapshot-list anchor %s: %s", path, exc)
        return None


def remember(data_dir: Path, repo_id: str, manifest: Manifest) -> bool:
    """Save ``manifest`` as what the agent remembers of repository ``repo_id`` (atomically,
    mode 0600), unless it remembers a newer generation already; returns whether it saved.
    Raises ``OSError`` (the data dir cannot be written)."""
    path = anchor_path(data_dir, repo_id)
    if path is None:
        return False
    known = load_anchor(data_dir, repo_id)
    if known is not None and known.generation > manifest.generation:
        return False
    doc = {
        "format": _ANCHOR_FORMAT,
        "repo_id": repo_id,
        "generation": manifest.generation,
        "digest": manifest.digest,
        "snapshots": sorted(manifest.snapshots),
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1).encode("ascii"))
    return True
