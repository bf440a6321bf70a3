"""``opencbs ls``, ``find``, ``diff`` and ``mount``: browsing a destination's snapshots without
restoring them (no server; the repository only, as ``snapshots`` and ``verify`` read it).

``ls`` lists the entries of one snapshot at and under a path, ``find`` the entries of every
snapshot whose path or name matches a glob pattern, ``diff`` the changes between two snapshots
in the job report's kinds (``engine.snapshot_browse``), and ``mount`` serves every snapshot
as a read-only file system through FUSE (``agent.mount``). A snapshot is named as ``restore``
names it: its ID, a unique prefix of at least 8 characters, a job ID, or ``latest``.

Output: one line per entry (``mode size mtime path``, ``--long`` adds the owner), data on
stdout and streamed (the lines and the ``--json`` arrays of ``ls`` and ``find`` are written as
the tree is read, never gathered in memory); counts and notes on stderr.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import click
import orjson

from opencbs.agent.restore import find_snapshot
from opencbs.agent.snapshot_lookup import (
    LATEST,
    PathNotInSnapshot,
    SetNotInDestination,
    accepted_set_names,
    expand_snapshot_prefix,
    path_candidates,
    select_snapshots,
    set_ids_named,
    set_label,
    set_names,
)
from opencbs.cli.agent_options import (
    ENCRYPTION_FILE,
    REPOSITORY,
    S3_ENDPOINT,
    S3_REGION,
    encryption_password,
    given_destination,
    open_existing_repository,
    reading_lock,
    with_agent_settings,
)
from opencbs.cli.backup_run import snapshots_command
from opencbs.cli.common import JSON, echo, note, print_json, show_name
from opencbs.engine.classify import Change
from opencbs.engine.entries import Entry, display_path
from opencbs.engine.repo_errors import SnapshotNotFound
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.engine.snapshot_browse import (
    PathMatcher,
    diff_snapshots,
    entries_under,
    find_in_snapshots,
)
from opencbs.errors import InvalidInput
from opencbs.model.destinations import DestinationAddress
from opencbs.reports.timefmt import local_zone
from opencbs.reports.vocabulary import FILE_LISTS, EntryType, ReportList
from opencbs.reports.wording import plural
from opencbs.settings import Settings

__all__ = ["diff", "find", "ls", "mount"]

SET_OPTION = click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="Only snapshots of this backup set (its name as recorded in the snapshots or "
    "accepted by this agent, or its ID); `latest` is then its newest.",
)
HOST_OPTION = click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="Only snapshots made on this host (repeatable: any of them).",
)
LONG_OPTION = click.option(
    "--long", "-l", "long", is_flag=True, help="Also show each entry's owner (uid and gid)."
)


def _kind_words() -> dict[ReportList, str]:
    """The word of each change kind, as the readable report says it (``cli.report_view``,
    imported here only: it loads the store's modules)."""
    from opencbs.cli.report_view import KINDS  # noqa: PLC0415 - ls and find do not need it

    return {kind: word for kind, word, _meaning in KINDS}


# -- shared ------------------------------------------------------------------------------------


def _open(
    settings: Settings, destination: str, password_file: Path | None
) -> tuple[DestinationAddress, Repository]:
    """The destination and its repository (opened, index loaded). Raises what
    ``open_existing_repository`` raises."""
    address = given_destination(settings, destination)
    password = encryption_password(settings, password_file)
    _storage, repo = open_existing_repository(settings, address, password)
    return address, repo


def _set_ids(
    settings: Settings, infos: list[SnapshotInfo], set_ref: str | None, address: DestinationAddress
) -> set[str] | None:
    """The set IDs ``--set`` names (``None``: any set). Raises ``SetNotInDestination``."""
    if set_ref is None:
        return None
    accepted = accepted_set_names(settings.data_dir)
    ids = set_ids_named(infos, set_ref, accepted)
    if not ids:
        names = set_names(infos, accepted)
        held = sorted({i.meta.set_id for i in infos})
        raise SetNotInDestination(
            set_ref, [set_label(i, names) for i in held], where=show_name(str(address))
        )
    return ids


def _snapshot(
    settings: Settings,
    repo: Repository,
    ref: str,
    *,
    set_ref: str | None,
    address: DestinationAddress,
) -> SnapshotInfo:
    """The snapshot ``ref`` names (as ``restore`` takes it), of set ``set_ref`` when given.
    Raises ``SnapshotNotFound`` (its hint: list the snapshots), ``AmbiguousSnapshot``,
    ``AmbiguousJobId``, ``SeveralSets``, ``SetNotInDestination``."""
    names = None
    set_id = None
    if ref == LATEST or set_ref is not None:
        infos = repo.list_snapshots()
        names = set_names(infos, accepted_set_names(settings.data_dir))
        ids = _set_ids(settings, infos, set_ref, address)
        set_id = None if ids is None or len(ids) != 1 else next(iter(ids))
    try:
        return find_snapshot(
            repo, expand_snapshot_prefix(repo, ref), set_id=set_id, set_names=names
        )
    except SnapshotNotFound as exc:
        exc.hint = exc.hint or (
            f"list them: {snapshots_command(address)} (a job ID, "
            "a snapshot ID or 8+ of its first characters, or latest)"
        )
        raise


def _when(time_ns: int, tz: tzinfo) -> str:
    """A time to the second in ``tz``: ``2026-12-05 17:20:01``."""
    return datetime.fromtimestamp(time_ns / 1e9, tz).strftime("%Y-%m-%d %H:%M:%S")


def _entry_line(entry: Entry, tz: tzinfo, *, long: bool) -> str:
    """``-rw-r--r--  1234  2026-12-05 17:20:01  /path`` (``--long``: the uid and gid after
    the mode); a link ``/path -> target``; names escaped for the terminal."""
    size = 0 if entry.etype is EntryType.DIRECTORY else entry.size
    owner = f"{entry.uid:>6} {entry.gid:>6}  " if long else ""
    line = (
        f"{stat.filemode(entry.mode)}  {owner}{size:>12}  {_when(entry.mtime_ns, tz)}  "
        f"{show_name(entry.path)}"
    )
    if entry.link_target is not None:
        line += f" -> {show_name(entry.link_target)}"
    return line


def _entry_json(entry: Entry, tz: tzinfo) -> dict[str, Any]:
    """An entry for machines: ``path`` (as reports show it), ``type`` (``F``, ``D``, ``L``:
    the report's ``Type``), ``mode`` (permission bits in octal), ``size`` (bytes), ``mtime``
    (ISO 8601 in the agent's zone) and ``mtime_ns``, ``uid``, ``gid``, ``link_target``."""
    return {
        "path": display_path(entry.path),
        "type": entry.etype.value,
        "mode": f"{stat.S_IMODE(entry.mode):04o}",
        "size": 0 if entry.etype is EntryType.DIRECTORY else entry.size,
        "mtime": datetime.fromtimestamp(entry.mtime_ns / 1e9, tz).isoformat(timespec="seconds"),
        "mtime_ns": entry.mtime_ns,
        "uid": entry.uid,
        "gid": entry.gid,
        "link_target": None if entry.link_target is None else display_path(entry.link_target),
    }


def _stream_json_array(objects: Iterable[Mapping[str, Any]]) -> None:
    """Write ``objects`` to stdout as one JSON array, each object as it comes (one a line)."""
    out = sys.stdout.buffer
    out.write(b"[")
    n = 0
    for obj in objects:
        out.write(b"\n" if n == 0 else b",\n")
        out.write(orjson.dumps(obj))
        n += 1
    out.write(b"\n]\n" if n else b"]\n")
    sys.stdout.flush()


def _write_lines(lines: Iterable[str]) -> None:
    """Write ``lines`` to stdout, each with a newline, through its buffer (a million lines of
    ``ls`` without a flush each)."""
    out = sys.stdout
    for line in lines:
        out.write(line)
        out.write("\n")
    out.flush()


# -- ls ----------------------------------------------------------------------------------------


@click.command()
@click.argument("ref", metavar="SNAPSHOT|JOBID|latest")
@click.argument("path", required=False, metavar="[PATH]")
@REPOSITORY
@SET_OPTION
@click.option(
    "--recursive",
    "-r",
    is_flag=True,
    help="With PATH: everything under it (without: PATH and what it directly holds).",
)
@LONG_OPTION
@JSON
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def ls(
    settings: Settings,
    *,
    ref: str,
    path: str | None,
    destination: str,
    set_ref: str | None,
    recursive: bool,
    long: bool,
    as_json: bool,
    encryption_password_file: Path | None,
) -> None:
    """List the entries of one snapshot, as restic's ls: without PATH every entry; with PATH
    (an absolute source path as reports show it) PATH itself and what it directly holds, or
    with --recursive everything under it. One line per entry: mode, size (bytes), modification
    time, path (a link with its target); with --json an array of objects (path, type, mode,
    size, mtime, mtime_ns, uid, gid, link_target). A PATH the snapshot does not hold is an
    error (exit code 4)."""
    address, repo = _open(settings, destination, encryption_password_file)
    tz = local_zone(settings.timezone)
    with reading_lock(settings, repo, "ls"):
        info = _snapshot(settings, repo, ref, set_ref=set_ref, address=address)
        entries = _listed(repo, info, path, recursive=recursive or path is None)
        first = next(entries, None)
        if first is None and path is not None:
            missing = PathNotInSnapshot(path, info.id)
            missing.hint = (
                "give an absolute source path as the report shows it; see what the snapshot "
                f"holds: opencbs ls {info.id[:8]} --destination {shlex.quote(destination)}"
            )
            raise missing
        shown = entries if first is None else _chain(first, entries)
        if as_json:
            _stream_json_array(_entry_json(e, tz) for e in shown)
            return
        _write_lines(_entry_line(entry, tz, long=long) for entry in shown)


def _chain(first: Entry, rest: Iterator[Entry]) -> Iterator[Entry]:
    yield first
    yield from rest


def _listed(
    repo: Repository, info: SnapshotInfo, path: str | None, *, recursive: bool
) -> Iterator[Entry]:
    """The entries ``ls`` shows: of the first reading of ``path`` (display form, then raw:
    ``snapshot_lookup.path_candidates``) that the snapshot holds anything at or under; empty
    when none does."""
    candidates = [b"/"] if path is None else path_candidates(path)
    for top in candidates:
        _info, items = repo.load_snapshot(info.id)
        found = entries_under(items, top, recursive=recursive, roots=info.meta.sources)
        first = next(found, None)
        if first is not None:
            yield first[0]
            yield from (entry for entry, _chunks in found)
            return


# -- find --------------------------------------------------------------------------------------


@click.command()
@click.argument("pattern")
@REPOSITORY
@SET_OPTION
@HOST_OPTION
@click.option(
    "--snapshot",
    "refs",
    multiple=True,
    metavar="SNAPSHOT",
    help="Only this snapshot (an ID, a prefix of 8+ characters, a job ID or latest; repeatable).",
)
@click.option("--ignore-case", "-i", is_flag=True, help="Match upper and lower case alike.")
@LONG_OPTION
@JSON
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def find(
    settings: Settings,
    *,
    pattern: str,
    destination: str,
    set_ref: str | None,
    hosts: tuple[str, ...],
    refs: tuple[str, ...],
    ignore_case: bool,
    long: bool,
    as_json: bool,
    encryption_password_file: Path | None,
) -> None:
    """Find the entries whose name matches PATTERN (a glob: *, ?, [abc]; quote it for the
    shell) in every snapshot of the destination, oldest first; a PATTERN with a / is matched
    against the whole path (* then also crosses /: '/home/*/report-*.pdf'). Each snapshot
    with matches is one heading line (its short ID, time and set) and its entries (mode,
    size, modification time, path); with --json an array of objects (snapshot_id,
    snapshot_time, and the entry's path, type, mode, size, mtime, …). No match is not an
    error (a note on stderr, exit code 0)."""
    address, repo = _open(settings, destination, encryption_password_file)
    tz = local_zone(settings.timezone)
    matcher = PathMatcher(pattern, ignore_case=ignore_case)
    with reading_lock(settings, repo, "find"):
        infos = _find_scope(settings, repo, address, set_ref=set_ref, hosts=hosts, refs=refs)
        names = set_names(infos, accepted_set_names(settings.data_dir))
        tally = _Tally()
        found = tally.counted(find_in_snapshots(repo, infos, matcher))
        if as_json:
            _stream_json_array(
                {"snapshot_id": i.id, "snapshot_time": _iso(i, tz), **_entry_json(e, tz)}
                for i, e in found
            )
        else:
            _write_lines(_found_lines(found, names, tz, long=long))
    of = f"{tally.held} of " if tally.held else ""
    note(
        f"opencbs: {plural(tally.matches, 'match', 'matches')} of {show_name(pattern)} in "
        f"{of}{plural(len(infos), 'snapshot')}"
    )


class _Tally:
    """How many matches ``find`` showed, in how many snapshots."""

    def __init__(self) -> None:
        self.matches = 0
        self.held = 0
        self._last: str | None = None

    def counted(
        self, found: Iterable[tuple[SnapshotInfo, Entry]]
    ) -> Iterator[tuple[SnapshotInfo, Entry]]:
        """``found``, counted as it passes."""
        for info, entry in found:
            if info.id != self._last:
                self._last = info.id
                self.held += 1
            self.matches += 1
            yield info, entry


def _iso(info: SnapshotInfo, tz: tzinfo) -> str:
    return datetime.fromtimestamp(info.meta.time_ns / 1e9, tz).isoformat(timespec="seconds")


def _found_lines(
    found: Iterable[tuple[SnapshotInfo, Entry]],
    names: Mapping[str, str],
    tz: tzinfo,
    *,
    long: bool,
) -> Iterator[str]:
    """The lines of the matches, under a heading line per snapshot."""
    current: str | None = None
    for info, entry in found:
        if info.id != current:
            current = info.id
            m = info.meta
            yield (
                f"snapshot {info.id[:8]} of {_when(m.time_ns, tz)} (job {m.job_id}, set "
                f"{show_name(names.get(m.set_id, m.set_id))}):"
            )
        yield "  " + _entry_line(entry, tz, long=long)


def _find_scope(
    settings: Settings,
    repo: Repository,
    address: DestinationAddress,
    *,
    set_ref: str | None,
    hosts: tuple[str, ...],
    refs: tuple[str, ...],
) -> list[SnapshotInfo]:
    """The snapshots ``find`` reads, oldest first: those named by ``--snapshot``, else every
    snapshot of ``--set``/``--host`` (every snapshot without them)."""
    if refs:
        chosen = {
            i.id: i
            for i in (_snapshot(settings, repo, r, set_ref=set_ref, address=address) for r in refs)
        }
        return sorted(chosen.values(), key=lambda i: (i.meta.time_ns, i.id))
    infos = repo.list_snapshots()
    return select_snapshots(infos, set_ids=_set_ids(settings, infos, set_ref, address), hosts=hosts)


# -- diff --------------------------------------------------------------------------------------


@click.command()
@click.argument("older", metavar="SNAPSHOT1")
@click.argument("newer", metavar="SNAPSHOT2")
@REPOSITORY
@SET_OPTION
@JSON
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def diff(
    settings: Settings,
    *,
    older: str,
    newer: str,
    destination: str,
    set_ref: str | None,
    as_json: bool,
    encryption_password_file: Path | None,
) -> None:
    """Show what changed from SNAPSHOT1 to SNAPSHOT2, in the change kinds of a job's report
    (classified as a backup job classifies its files): new, updated, permission (content
    unchanged; mode, owner or times changed), deleted, moved (FROM -> TO) and copied (same
    content as FROM). One line per change in path order, then the counts; with --json a
    document (older, newer, changes: kind, type, path, from_path, reason, size, mtime; counts)."""
    address, repo = _open(settings, destination, encryption_password_file)
    tz = local_zone(settings.timezone)
    with reading_lock(settings, repo, "diff"):
        first = _snapshot(settings, repo, older, set_ref=set_ref, address=address)
        second = _snapshot(settings, repo, newer, set_ref=set_ref, address=address)
        result = diff_snapshots(repo, first.id, second.id)
    counts = result.counts()
    if as_json:
        print_json(
            {
                "older": first.id,
                "newer": second.id,
                "changes": [_change_json(c, tz) for c in result.changes],
                "counts": {kind.key: counts[kind] for kind in FILE_LISTS},
                "unchanged": result.unchanged,
            }
        )
        return
    words = _kind_words()
    width = max(len(w) for w in words.values())
    _write_lines(_change_line(change, words, width) for change in result.changes)
    echo(
        ", ".join(f"{counts[kind]} {words[kind]}" for kind in FILE_LISTS)
        + f" ({plural(result.unchanged, 'entry', 'entries')} unchanged)"
    )


def _change_line(change: Change, words: Mapping[ReportList, str], width: int) -> str:
    """``moved       F  /old -> /new``, ``copied      F  /new (from /src)``,
    ``updated     F  /path``; names escaped for the terminal."""
    entry = change.entry
    word = words[change.kind].ljust(width)
    path = show_name(entry.path)
    if change.from_path is not None and change.kind is ReportList.MOV:
        path = f"{show_name(change.from_path)} -> {path}"
    elif change.from_path is not None:
        path += f" (from {show_name(change.from_path)})"
    return f"{word}  {entry.etype.value}  {path}"


def _change_json(change: Change, tz: tzinfo) -> dict[str, Any]:
    entry = change.entry
    return {
        "kind": change.kind.key,
        "type": entry.etype.value,
        "path": display_path(entry.path),
        "from_path": None if change.from_path is None else display_path(change.from_path),
        "reason": change.reason.text,
        "size": 0 if entry.etype is EntryType.DIRECTORY else entry.size,
        "mtime": datetime.fromtimestamp(entry.mtime_ns / 1e9, tz).isoformat(timespec="seconds"),
    }


# -- mount -------------------------------------------------------------------------------------


@click.command()
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@REPOSITORY
@SET_OPTION
@HOST_OPTION
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def mount(
    settings: Settings,
    *,
    mountpoint: Path,
    destination: str,
    set_ref: str | None,
    hosts: tuple[str, ...],
    encryption_password_file: Path | None,
) -> None:
    """Serve the destination's snapshots read-only at MOUNTPOINT (an existing folder) through
    FUSE, until unmounted (`fusermount3 -u MOUNTPOINT`, or Ctrl-C): MOUNTPOINT/snapshots/<time>/
    per snapshot with its source paths inside (file content read from the repository as it is
    read), snapshots/latest, and ids/<short ID> (links). Where FUSE is not available (no
    /dev/fuse, no libfuse 3 or 2) it says so in one line and exits with code 7."""
    from opencbs.agent.mount import load_fuse, serve_mount  # noqa: PLC0415 - libfuse lazily

    if not mountpoint.is_dir():
        raise InvalidInput(
            f"mount point {show_name(str(mountpoint))} is not a folder",
            f"create it first: mkdir -p {show_name(str(mountpoint))}",
        )
    if os.path.ismount(mountpoint):
        raise InvalidInput(
            f"something is mounted at {show_name(str(mountpoint))} already",
            f"unmount it first (fusermount3 -u {show_name(str(mountpoint))}) or choose an "
            "empty folder",
        )
    load_fuse()  # before a password is asked: where FUSE is missing, say so first
    address, repo = _open(settings, destination, encryption_password_file)
    infos = repo.list_snapshots()
    infos = select_snapshots(
        infos, set_ids=_set_ids(settings, infos, set_ref, address), hosts=hosts
    )
    shown = show_name(str(mountpoint))

    def ready() -> None:
        note(
            f"opencbs: serving {plural(len(infos), 'snapshot')} of {show_name(str(address))} "
            f"at {shown}; unmount with `fusermount3 -u {shown}` (or Ctrl-C)"
        )

    with reading_lock(settings, repo, "mount"):
        serve_mount(repo, infos, mountpoint, tz=local_zone(settings.timezone), on_ready=ready)
    note(f"opencbs: unmounted {shown}")
