"""What a restore names, looked up before restoring: a snapshot by a unique prefix of its ID
(or by a job ID that only one snapshot has: :class:`AmbiguousJobId`, or ``latest``), and the
snapshot paths that ``--path`` arguments stand for (raw, or as reports show them); and which
snapshots ``opencbs snapshots --set/--host`` shows, with their sets' names.

``latest`` (:data:`LATEST`, restic's word) is the newest snapshot (by the job's start time) of
one backup set in the destination: of the set given (``--set``), or of the one set whose
snapshots the destination holds; when it holds several sets' snapshots and none is given, that is
an error naming them (:class:`SeveralSets`), never a guess.

A set's name: the one its newest snapshot recorded (``SnapshotMeta.set_name``, the name when the
job ran); for snapshots written before names were recorded, the name the agent accepted the set
under (its trust records, ``agent.trust``, in ``<data_dir>/agent-spool/*/``); else none (the ID is
shown). ``--set NAME|ID`` selects the sets whose ID is that, or whose name (recorded in any of
their snapshots, or accepted) is that.

``opencbs snapshots`` shows 16 characters of a 64-hex snapshot ID; any unique prefix of at
least :data:`MIN_PREFIX` hex characters names that snapshot. A path argument is tried in
display form first (``engine.entries.parse_display_path``: ``\\xNN`` a byte, ``\\\\`` a
backslash), then as the raw path (``os.fsencode``); the first that exists in the snapshot — as
an entry, or as a folder with entries under it — is the one restored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from opencbs.agent.spool import spool_base
from opencbs.agent.trust import TRUST_FILE, TrustFileError, accepted_sets
from opencbs.engine.entries import parse_display_path
from opencbs.engine.repo_errors import RepositoryError, SnapshotNotFound
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.errors import InvalidInput, NotFound

__all__ = [
    "LATEST",
    "MIN_PREFIX",
    "AmbiguousJobId",
    "AmbiguousSnapshot",
    "NoSnapshot",
    "PathNotInSnapshot",
    "SetNotInDestination",
    "SeveralSets",
    "accepted_set_names",
    "expand_snapshot_prefix",
    "latest_snapshot",
    "looks_like_prefix",
    "path_candidates",
    "resolve_paths",
    "select_snapshots",
    "set_ids_named",
    "set_label",
    "set_names",
]

#: What names the newest snapshot of a set (``restore latest``).
LATEST = "latest"

#: The shortest snapshot ID prefix accepted (hex characters).
MIN_PREFIX = 8
_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},63}}$")
_PLAIN = re.compile(r"[\w.-]+")  # a set name shown in a hint as is


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


# -- sets, hosts and latest -----------------------------------------------------------------------


class SeveralSets(InvalidInput):
    """``latest`` without ``--set`` in a destination holding snapshots of several backup sets
    (exit code 2): ``set_ids`` (two or more), named by ``names`` (set ID → name) where known."""

    code = "snapshot_latest_several_sets"

    def __init__(self, set_ids: Sequence[str], names: Mapping[str, str]) -> None:
        shown = ", ".join(set_label(s, names) for s in set_ids)
        name = names.get(set_ids[0], "")
        example = name if _PLAIN.fullmatch(name) else set_ids[0]
        super().__init__(
            f"latest is ambiguous: the destination holds snapshots of {len(set_ids)} backup "
            f"sets: {shown}",
            f"say which set's newest snapshot to restore: --set NAME|ID (e.g. --set {example})",
        )
        self.set_ids = tuple(set_ids)


class NoSnapshot(SnapshotNotFound):
    """``latest`` when the destination holds no snapshot (of the set given) (exit code 4)."""

    code = "snapshot_latest_none"

    def __init__(self, of_set: str | None) -> None:
        what = f"of backup set {of_set} " if of_set is not None else ""
        RepositoryError.__init__(
            self,
            f"no snapshot {what}in the destination: latest names nothing",
            "list what it holds: opencbs snapshots --destination PATH (a backup of the set "
            "to this destination makes one)",
        )
        self.snapshot_id = LATEST


class SetNotInDestination(NotFound):
    """``--set NAME|ID`` matching no set whose snapshots the destination holds (exit code 4);
    ``held``: the sets it holds, as :func:`set_label` shows them; ``where``: the destination
    as the message names it (shown as given)."""

    code = "snapshot_set_not_here"

    def __init__(self, ref: str, held: Sequence[str], *, where: str = "the destination") -> None:
        hint = (
            f"it holds snapshots of: {', '.join(held)}; give one of these to --set"
            if held
            else "it holds no snapshots yet"
        )
        super().__init__(f"no snapshot of backup set {ref!r} in {where}", hint)


def accepted_set_names(data_dir: Path) -> dict[str, str]:
    """Set ID → name of every set this agent accepted, over all its servers and backup users
    (the trust records ``<data_dir>/agent-spool/*/accepted-targets.json``, ``agent.trust``).
    For naming only: a record that cannot be read is skipped, an empty name left out."""
    names: dict[str, str] = {}
    try:
        roots = sorted(p.parent for p in spool_base(data_dir).glob(f"*/{TRUST_FILE}"))
    except OSError:
        return names
    for root in roots:
        try:
            accepted = accepted_sets(root)
        except TrustFileError:
            continue
        names.update({k: v.name for k, v in accepted.items() if v.name})
    return names


def set_names(infos: Iterable[SnapshotInfo], accepted: Mapping[str, str]) -> dict[str, str]:
    """Set ID → name for the sets of ``infos``: the name recorded by the set's newest snapshot
    that records one, else the ``accepted`` one (:func:`accepted_set_names`); sets with
    neither are left out."""
    recorded: dict[str, tuple[int, str]] = {}
    ids: set[str] = set()
    for info in infos:
        m = info.meta
        ids.add(m.set_id)
        if m.set_name and (m.set_id not in recorded or recorded[m.set_id][0] <= m.time_ns):
            recorded[m.set_id] = (m.time_ns, m.set_name)
    out = {i: accepted[i] for i in ids if accepted.get(i)}
    out.update({i: name for i, (_, name) in recorded.items()})
    return out


def set_label(set_id: str, names: Mapping[str, str]) -> str:
    """How a message names a set: ``'docs' (1719400000000)`` (the name quoted as Python's
    ``repr`` does, so a control character in it is shown escaped), or the ID alone when the name
    is unknown."""
    name = names.get(set_id)
    return f"{name!r} ({set_id})" if name else set_id


def set_ids_named(infos: Iterable[SnapshotInfo], ref: str, accepted: Mapping[str, str]) -> set[str]:
    """The IDs of the sets of ``infos`` that ``ref`` names: by ID, by a name one of their
    snapshots recorded, or by the name they were accepted under (module docstring)."""
    out: set[str] = set()
    for info in infos:
        m = info.meta
        if ref in (m.set_id, m.set_name) or accepted.get(m.set_id) == ref:
            out.add(m.set_id)
    return out


def select_snapshots(
    infos: Iterable[SnapshotInfo],
    *,
    set_ids: Collection[str] | None = None,
    hosts: Collection[str] = (),
) -> list[SnapshotInfo]:
    """The snapshots of ``infos`` (order kept) of one of ``set_ids`` (``None``: any set) and
    made on one of ``hosts`` (exact host names, as recorded; empty: any host)."""
    return [
        i
        for i in infos
        if (set_ids is None or i.meta.set_id in set_ids) and (not hosts or i.meta.hostname in hosts)
    ]


def latest_snapshot(
    infos: Iterable[SnapshotInfo],
    *,
    set_id: str | None = None,
    destination_id: str | None = None,
    names: Mapping[str, str] | None = None,
) -> SnapshotInfo:
    """The newest of ``infos`` (greatest ``time_ns``, then job ID, then ID) of set ``set_id``
    (and destination ``destination_id`` when given); without ``set_id``, of the one set they
    hold. ``names`` (set ID → name) only words the errors. Raises ``NoSnapshot`` (none) and
    ``SeveralSets`` (no ``set_id`` and snapshots of several sets)."""
    names = names or {}
    found = [
        i
        for i in infos
        if (set_id is None or i.meta.set_id == set_id)
        and (destination_id is None or i.meta.destination_id == destination_id)
    ]
    if not found:
        raise NoSnapshot(None if set_id is None else set_label(set_id, names))
    held = sorted({i.meta.set_id for i in found})
    if len(held) > 1:
        raise SeveralSets(held, names)
    return max(found, key=lambda i: (i.meta.time_ns, i.meta.job_id, i.id))
