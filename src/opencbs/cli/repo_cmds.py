"""``opencbs verify`` and ``snapshots``: the agent's commands on a destination's repository
directly (no server). ``restore`` is ``cli.restore_cmd``'s, named here too (the command table
of ``cli.main``).

``verify`` checks the repository, each problem one line on stdout and one error line counting
them (exit code 8 when it finds damage); ``snapshots`` lists the completed jobs with their
set's name, of one set (``--set``) or hosts (``--host``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import click
from rich.markup import escape as escape_markup

from opencbs.agent.retention import decide
from opencbs.agent.snapshot_lookup import (
    MIN_PREFIX,
    SetNotInDestination,
    accepted_set_names,
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
from opencbs.cli.common import (
    JSON,
    activity,
    console,
    echo,
    note,
    print_json,
    print_table,
    show_name,
)
from opencbs.cli.keep_options import keep_options, rules_of_flags
from opencbs.cli.restore_cmd import (
    PathsNotRestored,
    TargetUnwritable,
    restore,
    restore_json,
)
from opencbs.destinations.base import DestinationError, Storage
from opencbs.destinations.local import LocalStorage
from opencbs.engine.entries import display_path
from opencbs.engine.manifest import load_anchor, remember
from opencbs.engine.repo_verify import VerifyProblem
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.reports.timefmt import local_zone
from opencbs.reports.wording import plural
from opencbs.settings import Settings

__all__ = [
    "PathsNotRestored",
    "TargetUnwritable",
    "restore",
    "restore_json",
    "snapshots",
    "verify",
]


def _problem_json(problem: VerifyProblem) -> dict[str, object]:
    """One problem of ``verify --json``: ``subject`` and ``message`` always; for a damaged
    pack also ``chunks`` (each damaged chunk checked: ``id``, ``message``) and ``use``."""
    out: dict[str, object] = {"subject": problem.subject, "message": problem.message}
    if problem.use is not None:
        out["chunks"] = [{"id": c.chunk_id, "message": c.message} for c in problem.chunks]
        use = problem.use
        out["use"] = {
            "chunks": use.chunks,
            "chunks_indexed": use.chunks_indexed,
            "snapshots": use.snapshots,
            "files": use.files,
            "trees": use.trees,
        }
    return out


@click.command()
@REPOSITORY
@click.option(
    "--read-data", is_flag=True, help="Also read, decrypt and hash every stored chunk (slow)."
)
@JSON
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def verify(
    settings: Settings,
    *,
    destination: str,
    read_data: bool,
    as_json: bool,
    encryption_password_file: Path | None,
) -> int:
    """Check a destination's repository: every pack (present, and as long as its index
    says) and every chunk every snapshot references, and its snapshot list (no snapshot
    removed, no older list put back than this agent remembers); with --read-data every stored
    byte. Each damaged object is one `damaged:` line on stdout (a pack once, with how many of
    its chunks are damaged and what uses them); then one error line on stderr with their
    number, and exit code 8."""
    address = given_destination(settings, destination)
    repo_password = encryption_password(settings, encryption_password_file)
    storage, repo = open_existing_repository(settings, address, repo_password)
    anchor = load_anchor(settings.data_dir, repo.config.repo_id)
    with reading_lock(settings, repo, "verify"), activity(f"verifying {address}", quiet=as_json):
        _clean_interrupted_uploads(storage)
        result = repo.verify(read_data=read_data, anchor=anchor)
    if result.ok:
        _remember_list(settings, repo)
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "snapshots": result.snapshots,
                "packs": result.packs,
                "chunks_read": result.chunks_read,
                "errors": [_problem_json(p) for p in result.errors],
                "notes": list(result.notes),
            }
        )
    else:
        for text in result.notes:  # no damage: for a person, on stderr
            note(f"opencbs: {text}")
        for p in result.errors:
            echo(f"damaged: {show_name(p.subject)}: {show_name(p.message)}")
        checked = (
            f"{plural(result.snapshots, 'snapshot')}, {plural(result.packs, 'pack')}, "
            f"{plural(result.chunks_read, 'chunk')} read"
        )
        echo(f"ok: {checked}" if result.ok else f"checked: {checked}")
    if result.ok:
        return ExitCode.SUCCESS
    what = "listed above" if not as_json else "listed in the JSON document"
    note(
        f"opencbs: error: the repository at {show_name(str(address))} is damaged: "
        f"{plural(len(result.errors), 'problem')} ({what})"
    )
    note(f"hint: {verify_hint(result.errors)}")
    return ExitCode.REFUSED


def _of_missing_packs(problem: VerifyProblem) -> bool:
    """Whether ``problem`` comes of a pack (or chunk) no longer at the destination (the words
    of ``engine.repo_verify``), not of bytes damaged or a snapshot list changed."""
    return problem.message.startswith("indexed pack is missing") or problem.message.endswith(
        ("is missing", "not stored")
    )


def verify_hint(problems: Sequence[VerifyProblem]) -> str:
    """The hint after ``verify`` found ``problems``: what helps, and only what is true (issue
    12). A backup stores the data of a missing pack again (``agent.backup``:
    ``reconcile_packs``) while the sources still hold it; restore and verify then find each
    chunk in its new pack (``ChunkIndex.copies``), so the older snapshots are whole again.
    Damaged bytes are not stored again by a backup (its chunks count as stored). There is no
    repair yet."""
    if all(_of_missing_packs(p) for p in problems):
        return (
            "the next backup stores the data of the missing packs again from the sources, as "
            "far as they still hold it; every snapshot whose data is then stored again is whole "
            "(run verify after it): restore what you need before the sources change"
        )
    return (
        "restore what you can (`opencbs restore`); a backup does not store damaged data "
        "again (there is no repair yet): for a sound copy, back up to a new destination too "
        "(`opencbs backup --set NAME --add-destination PATH`)"
    )


@click.command()
@REPOSITORY
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="Only snapshots of this backup set (its name as recorded in the snapshots or "
    "accepted by this agent, or its ID).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="Only snapshots made on this host (its name as the Host column shows it; "
    "repeatable: any of them).",
)
@keep_options
@JSON
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def snapshots(
    settings: Settings,
    *,
    destination: str,
    set_ref: str | None,
    hosts: tuple[str, ...],
    keep_within: str | None,
    as_json: bool,
    encryption_password_file: Path | None,
    **keeps: int,
) -> None:
    """List the snapshots (completed backup jobs) in a destination, oldest first, with their
    backup set's name (as the job recorded it, or as this agent accepted the set) and ID.
    With --keep-* flags (as `opencbs forget` takes them) a "Kept by" column names the rules
    that keep each snapshot, or "remove" (each set's snapshots judged apart)."""
    rules = rules_of_flags(keeps, keep_within)
    address = given_destination(settings, destination)
    repo_password = encryption_password(settings, encryption_password_file)
    _storage, repo = open_existing_repository(settings, address, repo_password, load_index=False)
    infos = repo.list_snapshots()
    accepted = accepted_set_names(settings.data_dir)
    names = set_names(infos, accepted)
    set_ids = None
    if set_ref is not None:
        set_ids = set_ids_named(infos, set_ref, accepted)
        if not set_ids:
            held = sorted({i.meta.set_id for i in infos})
            raise SetNotInDestination(
                set_ref, [set_label(i, names) for i in held], where=show_name(str(address))
            )
    tz = local_zone(settings.timezone)
    chosen = select_snapshots(infos, set_ids=set_ids, hosts=hosts)
    rows = _snapshot_rows(chosen, names, tz)
    if rules is not None:
        kept = {d.id: d.reasons for ds in decide(chosen, rules, tz=tz).values() for d in ds}
        for row in rows:
            row["kept_by"] = list(kept.get(row["id"], ()))
    if as_json:
        print_json(rows)
        return
    title = _listing_title(len(rows), str(address), set_ref, hosts)
    if not rows:  # a title, not an empty table's frame
        echo(title)
        return
    _print_snapshots(rows, escape_markup(title))  # a table's title goes through rich's markup


def _listing_title(n: int, destination: str, set_ref: str | None, hosts: Sequence[str]) -> str:
    """``3 snapshots of set docs on host vm in /srv/b`` (the filters as given; escaped for the
    terminal)."""
    of_set = f" of set {set_ref}" if set_ref is not None else ""
    on_host = f" on host {' or '.join(hosts)}" if hosts else ""
    title = f"{plural(n, 'snapshot')}{of_set}{on_host} in {destination}"
    return show_name(title)


def _snapshot_rows(
    infos: Sequence[SnapshotInfo], names: Mapping[str, str], tz: tzinfo
) -> list[dict[str, Any]]:
    """The ``snapshots --json`` document: one object per snapshot (``backup_set_name``: the
    name, ``None`` when unknown)."""
    rows: list[dict[str, Any]] = []
    for info in infos:
        m = info.meta
        when = datetime.fromtimestamp(m.time_ns / 1e9, tz).isoformat(timespec="seconds")
        rows.append(
            {
                "id": info.id,
                "time": when,
                "time_ns": m.time_ns,
                "job_id": m.job_id,
                "backup_set_id": m.set_id,
                "backup_set_name": names.get(m.set_id),
                "destination_id": m.destination_id,
                "hostname": m.hostname,
                "sources": [display_path(s) if isinstance(s, bytes) else str(s) for s in m.sources],
                "entries": info.entry_count,
            }
        )
    return rows


#: The terminal width from which ``opencbs snapshots`` shows the set's ID beside its name.
_SET_ID_WIDTH = 140
#: The terminal width below which ``opencbs snapshots`` leaves out the Time column (the job ID
#: is the job's start time to the second).
_TIME_WIDTH = 100


def _print_snapshots(rows: Sequence[Mapping[str, Any]], title: str) -> None:
    """The snapshot table: the short ID (``MIN_PREFIX`` characters, as restic shows it:
    the shortest prefix ``restore`` takes), the time to the minute in the local zone (the
    ``--json`` document has it to the second; left out below ``_TIME_WIDTH`` columns, where the
    job ID says it), the job ID, the set by name (its ID when no name is known; at most 18
    characters, cut with "…"), a Set ID column when the terminal is at least
    ``_SET_ID_WIDTH`` wide (always when not a terminal), the host (at most 12), and the
    sources, which keep at least 12 characters and fold: one snapshot fits 80 columns."""
    width = console().width
    with_id, with_time = width >= _SET_ID_WIDTH, width >= _TIME_WIDTH
    columns = [
        "ID",
        *(["Time"] if with_time else []),
        "Job",
        "Set",
        *(["Set ID"] if with_id else []),
        "Host",
        "Sources",
        *(["Kept by"] if rows and "kept_by" in rows[0] else []),
    ]
    table = []
    for r in rows:
        cells = [r["id"][:MIN_PREFIX]]
        if with_time:
            cells.append(datetime.fromisoformat(r["time"]).strftime("%Y-%m-%d %H:%M"))
        cells += [r["job_id"], r["backup_set_name"] or r["backup_set_id"]]
        if with_id:
            cells.append(r["backup_set_id"])
        table.append([*cells, r["hostname"], r["sources"]])
        if "kept_by" in r:
            table[-1].append(", ".join(r["kept_by"]) or "remove")
    print_table(
        title,
        columns,
        table,
        no_wrap=[c for c in columns if c not in ("Sources", "Kept by")],
        shortened={"Set": 18, "Host": 12},
        least={"Sources": 12},
    )


def _remember_list(settings: Settings, repo: Repository) -> None:
    """After a clean verify, remember the repository's snapshot list in the agent's data dir
    (``engine.manifest``), so a later rollback is noticed here too; a failure is a note."""
    try:
        listed = repo.snapshot_list()
        if listed is not None:
            remember(settings.data_dir, repo.config.repo_id, listed)
    except (OSError, OpenCBSError) as exc:
        note(f"opencbs: cannot remember the snapshot list in {settings.data_dir}: {exc}")


def _clean_interrupted_uploads(storage: Storage) -> None:
    """Before a verify: abort the multipart uploads an agent killed mid-upload left in an S3
    destination (parts that cost money and that nothing lists; ``S3Storage
    .remove_stale_temporaries``). A failure is a note: the verify says what it finds."""
    if isinstance(storage, LocalStorage):
        return  # a folder's leftover temporaries are the next backup's to remove
    clean = getattr(storage, "remove_stale_temporaries", None)
    if clean is None:
        return
    try:
        removed = clean()
    except DestinationError as exc:
        note(f"opencbs: cannot clean up interrupted uploads in the destination: {exc.message}")
        return
    if removed:
        note(f"opencbs: aborted {plural(removed, 'interrupted upload')} left in the destination")
