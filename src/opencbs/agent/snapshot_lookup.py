"""What a restore names, looked up before restoring: a snapshot by a unique prefix of its ID
(or by a job ID that only one snapshot has: :class:`AmbiguousJobId`), and the snapshot paths
that ``--path`` arguments stand for (raw, or as reports show them).

``opencbs snapshots`` shows 16 characters of a 64-hex snapshot ID; any unique prefix of at
least :data:`MIN_PREFIX` hex characters names that snapshot. A path argument is tried in
display form first (``engine.entries.parse_display_path``: ``\\xNN`` a byte, ``\\\\`` a
backslash), then as the raw path (``os.fsencode``); the first that exists in the snapshot — as
an entry, or as a folder with entries under it — is the one restored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from opencbs.engine.entries import parse_display_path
from opencbs.engine.repository import Repository
from opencbs.errors import InvalidInput, NotFound

__all__ = [
    "MIN_PREFIX",
    "AmbiguousJobId",
    "AmbiguousSnapshot",
    "PathNotInSnapshot",
    "expand_snapshot_prefix",
    "looks_like_prefix",
    "path_candidates",
    "resolve_paths",
]

#: The shortest snapshot ID prefix accepted (hex characters).
MIN_PREFIX = 8
_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},63}}$")


class AmbiguousSnapshot(InvalidInput):
    """A snapshot ID prefix that more than one snapshot starts with (exit code 2)."""

    code = "snapshot_ambiguous"

    def __init__(self, prefix: str, matches: Sequence[str]) -> None:
        shown = ", ".join(m[:16] for m in matches[:5]) + (", …" if len(matches) > 5 else "")
        super().__init__(
            f"snapshot ID prefix {prefix} is ambiguous: {len(matches)} snapshots "
            f"start with it ({shown})",
            "give more characters of the ID (`opencbs snapshots --json` shows them in full)",
        )


class AmbiguousJobId(InvalidInput):
    """A job ID that more than one snapshot of the selection has (exit code 2): jobs of two
    backup sets (or destinations) sharing the repository in one second, or a report delivered
    a second later than its job ran (``agent.spool``). Never resolved by picking one."""

    code = "job_id_ambiguous"

    def __init__(self, job_id: str, snapshot_ids: Sequence[str]) -> None:
        shown = ", ".join(i[:16] for i in snapshot_ids)
        super().__init__(
            f"job ID {job_id} names {len(snapshot_ids)} snapshots ({shown})",
            "restore one by its snapshot ID (or 8+ of its first characters; "
            "`opencbs snapshots --destination PATH` lists them with their set), "
            "or give --set NAME|ID",
        )
        self.job_id = job_id
        self.snapshot_ids = tuple(snapshot_ids)


class PathNotInSnapshot(NotFound):
    """A ``--path`` that names nothing in the snapshot (exit code 4)."""

    code = "path_not_in_snapshot"

    def __init__(self, path: str, snapshot_id: str) -> None:
        super().__init__(
            f"path {path} not found in snapshot {snapshot_id[:16]}",
            "give an absolute source path as the report shows it, or a folder "
            "above it; see the job's report (or restore without --path)",
        )


def looks_like_prefix(ref: str) -> bool:
    """Whether ``ref`` is 8 to 63 lower-case hex characters (a snapshot ID prefix)."""
    return bool(_PREFIX.match(ref))


def expand_snapshot_prefix(repo: Repository, ref: str) -> str:
    """The full ID of the one snapshot whose ID starts with ``ref`` when ``ref`` is 8 to 63
    lower-case hex characters; ``ref`` unchanged otherwise (a full ID, a job ID) and when no
    snapshot matches (the restore then says it is not found). Raises ``AmbiguousSnapshot``.
    Reads only the names of the snapshot objects."""
    if not looks_like_prefix(ref):
        return ref
    matches = sorted(i for i in repo.snapshot_ids() if i.startswith(ref))
    if len(matches) > 1:
        raise AmbiguousSnapshot(ref, matches)
    return matches[0] if matches else ref


def path_candidates(arg: str) -> list[bytes]:
    """The raw paths ``arg`` may stand for, display form first, then raw; trailing slashes
    removed (``/`` stays)."""
    out: list[bytes] = []
    try:
        out.append(parse_display_path(arg))
    except ValueError:
        pass
    out.append(os.fsencode(arg))
    stripped = [p.rstrip(b"/") or b"/" for p in out]
    return list(dict.fromkeys(stripped))


def _within(path: bytes, top: bytes) -> bool:
    return top == b"/" or path == top or path.startswith(top + b"/")


def resolve_paths(repo: Repository, snapshot_id: str, args: Sequence[str]) -> list[bytes]:
    """For each of ``args``, the raw snapshot path it names (:func:`path_candidates`, the first
    with an entry at or under it), in order. Reads the snapshot's tree once. Raises
    ``PathNotInSnapshot`` (the first argument that names nothing), ``SnapshotNotFound``,
    ``CorruptData``, ``ChunkNotFound``."""
    candidates = [path_candidates(a) for a in args]
    flat = {c for cs in candidates for c in cs}
    present: set[bytes] = set()
    _, items = repo.load_snapshot(snapshot_id)
    for entry, _chunks in items:
        for c in flat - present:
            if _within(entry.path, c):
                present.add(c)
        if present == flat:
            break
    chosen: list[bytes] = []
    for arg, cs in zip(args, candidates, strict=True):
        found = next((c for c in cs if c in present), None)
        if found is None:
            raise PathNotInSnapshot(arg, snapshot_id)
        chosen.append(found)
    return chosen
