"""``opencbs report``: one backup job's report, readable or as the exact CBS JSON; the job named
by its ID or as ``latest``; or, with ``--list``, the user's jobs. The readable form is drawn by
``opencbs.cli.report_view``."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import click

from opencbs.cli.admin import find_user
from opencbs.cli.common import (
    JSON,
    TIMEZONE,
    console,
    note,
    open_database,
    print_json,
    show_name,
    with_settings,
)
from opencbs.cli.report_view import (
    JobLine,
    JobView,
    ReportLists,
    plural,
    print_job_list,
    print_report,
)
from opencbs.errors import (
    BackupJobNotFound,
    BackupSetNotFound,
    DestinationNotFound,
    InvalidInput,
    NotFound,
    quoted,
)
from opencbs.reports.render import render_report
from opencbs.reports.timefmt import LogTimeFormatter, is_job_id, report_time
from opencbs.reports.vocabulary import ReportList
from opencbs.settings import Settings
from opencbs.store import job_queries, sets
from opencbs.store.jobs import Job
from opencbs.store.sets import BackupSet

#: The job ID that names the newest job of the set (or of the user's one set with jobs).
LATEST = "latest"


@click.command()
@click.argument("job_id", metavar="[JOBID|latest]", required=False)
@click.option("--user", "login", required=True, metavar="LOGIN", help="Backup user.")
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="ID|NAME",
    help="Backup set (ID or name); default: the user's set that has the job.",
)
@click.option(
    "--destination",
    default=None,
    metavar="ID",
    help="Destination ID; default: the set's first destination that has the job.",
)
@click.option("--cdp", is_flag=True, help="Look among continuous-backup jobs.")
@click.option(
    "--list",
    "list_jobs",
    is_flag=True,
    help="List the user's backup jobs (of --set, --destination) instead, newest last.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Entries shown per list, or jobs with --list (readable form only).",
)
@JSON
@with_settings(TIMEZONE)
def report(
    settings: Settings,
    *,
    job_id: str | None,
    login: str,
    set_ref: str | None,
    destination: str | None,
    cdp: bool,
    list_jobs: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Show a backup job's report, or with --list the user's backup jobs.

    JOBID is the job's start time, yyyy-MM-dd-HH-mm-ss; latest is the newest job of --set, or
    of the user's one set that has jobs. --json prints exactly what GetBackupJobReport answers
    (cbs-api.md §5).
    """
    if list_jobs:
        if job_id is not None:
            raise InvalidInput("--list takes no JOBID", "drop JOBID, or drop --list")
    else:
        job_id = _checked_job_id(job_id, login)
    tz = settings.tz()
    database = open_database(settings)
    try:
        with database.read() as conn:
            owner = find_user(conn, login)
            if job_id is None:
                listing = _Listing(ref=set_ref, destination=destination, cdp=cdp, limit=limit)
                _list(conn, owner.id, login, listing, tz=tz, as_json=as_json)
                return
            if job_id == LATEST:
                bset, job_id = _latest(
                    conn, owner.id, login, ref=set_ref, destination=destination, cdp=cdp
                )
            else:
                bset = _resolve_set(
                    conn, owner.id, set_ref, job_id=job_id, destination=destination, cdp=cdp
                )
            job = job_queries.find_job(conn, bset, destination, job_id, cdp=cdp)
            if destination is None:
                _say_other_destinations(conn, bset, job, cdp=cdp)
            _show(conn, bset, job, tz=tz, limit=limit, as_json=as_json)
    except BackupJobNotFound as err:
        err.hint = err.hint or f"the user's jobs: `opencbs report --list --user {_shell(login)}`"
        raise
    finally:
        database.dispose()


def _say_other_destinations(conn: Any, bset: BackupSet, job: Job, *, cdp: bool) -> None:
    """On stderr, when another destination of ``bset`` has a job of the same ID (a set backed
    up to several destinations starts a job on each in the same second): which, and how to
    see it (``--destination ID``); the report shown is the first destination's."""
    for d in bset.destinations:
        if str(d.id) == str(job.destination_id):
            continue
        try:
            job_queries.find_job(conn, bset, str(d.id), job.job_id, cdp=cdp)
        except BackupJobNotFound:
            continue
        note(
            f"opencbs: note: destination {show_name(d.name)} ({d.id}) of this set has a job "
            f"{job.job_id} too; see it with --destination {d.id}"
        )


def _checked_job_id(job_id: str | None, login: str) -> str:
    """``job_id`` when it is a backup job ID (cbs-api.md §4) or ``latest`` (any case: then
    ``LATEST``); raises ``InvalidInput`` otherwise, with the format and the ways to find one."""
    if job_id is not None and job_id.lower() == LATEST:
        return LATEST
    if job_id is not None and is_job_id(job_id):
        return job_id
    user = _shell(login)
    what = (
        "no backup job ID given"
        if job_id is None
        else f"invalid backup job ID {quoted(show_name(job_id[:100]))}"
    )
    raise InvalidInput(
        f"{what}: give the job's start time as yyyy-MM-dd-HH-mm-ss "
        f"(e.g. 2024-06-26-13-24-35), or latest",
        f"the user's jobs and sets: `opencbs report --list --user {user}`; the newest job "
        f"of a set: `opencbs report latest --user {user} --set NAME`",
    )


def _shell(word: str) -> str:
    """``word`` as a shell word in a hint: quoted, control characters escaped."""
    return shlex.quote(show_name(word))


def _show(conn: Any, bset: BackupSet, job: Job, *, tz: tzinfo, limit: int, as_json: bool) -> None:
    """Print the report of ``job`` of ``bset``: the CBS JSON, or the readable form."""
    fmt = LogTimeFormatter(tz)
    header = job.header(tz)

    def entries(lst: ReportList) -> Any:
        return job_queries.iter_entries(conn, job.pk, lst)

    if as_json:
        out = sys.stdout.buffer
        for chunk in render_report(header, entries, fmt):
            out.write(chunk)
        out.write(b"\n")
        out.flush()
        return
    dest = next((d.name for d in bset.destinations if d.id == job.destination_id), "")
    view = JobView(job=job, header=header, set_name=bset.name, destination_name=dest)
    bounds = job_queries.report_bounds(conn, job.pk)  # sequence numbers run from 0 per list

    def first(lst: ReportList, n: int) -> list[tuple[Any, ...]]:
        return job_queries.entry_page(conn, job.pk, lst, after=-1, upto=bounds[lst], limit=n)

    lists = ReportLists(
        count={lst: bound + 1 for lst, bound in bounds.items()},
        first=first,
        log=lambda: entries(ReportList.LOG),
    )
    print_report(console(), view, lists, fmt=fmt, limit=limit)


def _named_set(conn: Any, user_id: int, ref: str) -> BackupSet:
    """The user's set ``ref``: an ID, else a name. Raises ``BackupSetNotFound``."""
    if sets.parse_id(ref) is not None:
        try:
            return sets.get_set(conn, user_id, ref)
        except BackupSetNotFound:
            pass
    named = sets.find_set_by_name(conn, user_id, ref)
    if named is None:
        raise BackupSetNotFound(ref)
    return named


def _resolve_set(
    conn: Any,
    user_id: int,
    ref: str | None,
    *,
    job_id: str,
    destination: str | None,
    cdp: bool,
) -> BackupSet:
    """The set named by ``ref`` (an ID, else a name), or the only set of the user having the
    job. Raises ``BackupSetNotFound``, ``BackupJobNotFound`` or ``InvalidInput`` (ambiguous)."""
    if ref is not None:
        return _named_set(conn, user_id, ref)
    having: list[BackupSet] = []
    for summary in sets.list_sets(conn, user_id, include_removed=True):
        bset = sets.get_set(conn, user_id, summary.id)
        try:
            job_queries.find_job(conn, bset, destination, job_id, cdp=cdp)
        except (BackupJobNotFound, DestinationNotFound):
            continue
        having.append(bset)
    if not having:
        raise BackupJobNotFound(job_id)
    if len(having) > 1:
        raise InvalidInput(
            f"backup job {job_id} exists in {len(having)} backup sets",
            "choose one with --set ID: " + ", ".join(str(s.id) for s in having),
        )
    return having[0]


def _scope(
    conn: Any, user_id: int, ref: str | None, destination: str | None
) -> list[tuple[BackupSet, list[int] | None]]:
    """The sets to look in (``ref``, else every set of the user, removed ones too), each with
    the destinations to look in (``None``: any). With ``destination``, only the sets that have
    it. Raises ``BackupSetNotFound``, or ``DestinationNotFound`` when no such set has it."""
    if ref is not None:
        bset = _named_set(conn, user_id, ref)
        return [
            (bset, None if destination is None else job_queries.destination_ids(bset, destination))
        ]
    out: list[tuple[BackupSet, list[int] | None]] = []
    for summary in sets.list_sets(conn, user_id, include_removed=True):
        bset = sets.get_set(conn, user_id, summary.id)
        try:
            ids = None if destination is None else job_queries.destination_ids(bset, destination)
        except DestinationNotFound:
            continue
        out.append((bset, ids))
    if destination is not None and not out:
        raise DestinationNotFound(destination)
    return out


def _latest(
    conn: Any, user_id: int, login: str, *, ref: str | None, destination: str | None, cdp: bool
) -> tuple[BackupSet, str]:
    """The set and ID of the newest job of set ``ref``, or of the user's one set that has jobs.
    Raises ``NotFound`` when there is none, ``InvalidInput`` (naming the sets) when several
    sets have jobs and no ``ref`` says which."""
    newest: list[tuple[BackupSet, Job]] = []
    for bset, ids in _scope(conn, user_id, ref, destination):
        found = job_queries.newest_jobs(conn, [bset.id], cdp=cdp, destination_ids=ids, limit=1)
        newest.extend((bset, job) for job in found)
    user = _shell(login)
    if not newest:
        where = f" in backup set {quoted(ref)}" if ref is not None else ""
        raise NotFound(
            f"backup user {quoted(login)} has no {'continuous ' if cdp else ''}backup job{where}",
            f"the user's jobs: `opencbs report --list --user {user}`; "
            f"its sets: `opencbs set list {user}`",
        )
    if len(newest) > 1:
        names = ", ".join(
            f"{b.name} (ID {b.id}{', removed' if b.removed else ''})" for b, _ in newest
        )
        raise InvalidInput(
            f"backup user {quoted(login)} has jobs in {len(newest)} backup sets: {names}",
            f"choose one with --set: `opencbs report latest --user {user} "
            f"--set {shlex.quote(str(newest[0][0].id))}`",
        )
    bset, job = newest[0]
    return bset, job.job_id


@dataclass(frozen=True)
class _Listing:
    """What ``--list`` lists: the jobs of set ``ref`` (``None``: every set) and of
    ``destination`` (``None``: any), continuous-backup ones when ``cdp``; ``limit`` newest."""

    ref: str | None
    destination: str | None
    cdp: bool
    limit: int


def _list(
    conn: Any, user_id: int, login: str, listing: _Listing, *, tz: tzinfo, as_json: bool
) -> None:
    """Print the user's jobs: a table of the newest ``listing.limit``, oldest first, or every
    one as JSON."""
    ref, destination, cdp = listing.ref, listing.destination, listing.cdp
    scope = _scope(conn, user_id, ref, destination)
    set_ids = [b.id for b, _ in scope]
    dest_ids = None if destination is None else [i for _, ids in scope for i in ids or ()]
    jobs = job_queries.newest_jobs(
        conn, set_ids, cdp=cdp, destination_ids=dest_ids, limit=None if as_json else listing.limit
    )
    by_set = {b.id: b for b, _ in scope}
    lines = [_line(by_set[j.set_id], j) for j in reversed(jobs)]
    if as_json:
        print_json([_listed(line, tz) for line in lines])
        return
    total = job_queries.count_jobs(conn, set_ids, cdp=cdp, destination_ids=dest_ids)
    title = f"Backup jobs of {login}" + (f", backup set {by_set[set_ids[0]].name}" if ref else "")
    print_job_list(console(), f"{title}: {plural(total, 'job')}", lines, hidden=total - len(lines))


def _line(bset: BackupSet, job: Job) -> JobLine:
    dest = next((d.name for d in bset.destinations if d.id == job.destination_id), "")
    return JobLine(job=job, set_name=bset.name, destination_name=dest)


def _listed(line: JobLine, tz: tzinfo) -> dict[str, Any]:
    """One job of ``--list --json``, in the words of ListBackupJobStatus (cbs-api.md §7)."""
    job = line.job
    return {
        "ID": job.job_id,
        "BackupSetID": str(job.set_id),
        "BackupSetName": line.set_name,
        "DestinationID": str(job.destination_id),
        "DestinationName": line.destination_name,
        "BackupJobStatus": job.status,
        "StartTime": report_time(job.start_time, tz),
        "EndTime": report_time(job.end_time, tz),
    }
