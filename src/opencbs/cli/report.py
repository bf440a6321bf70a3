"""``opencbs report``: one backup job's report, readable or as the exact CBS JSON."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from opencbs.cli.admin import find_user
from opencbs.cli.common import JSON, TIMEZONE, console, open_database, with_settings
from opencbs.errors import (
    BackupJobNotFound,
    BackupSetNotFound,
    DestinationNotFound,
    InvalidInput,
)
from opencbs.reports.fields import summary_fields
from opencbs.reports.render import file_entry, log_entry, render_report
from opencbs.reports.timefmt import LogTimeFormatter
from opencbs.reports.vocabulary import FILE_LISTS, ReportList
from opencbs.settings import Settings
from opencbs.store import job_queries, sets
from opencbs.store.sets import BackupSet


@click.command()
@click.argument("job_id", metavar="JOBID")
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
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Entries shown per list (readable form only).",
)
@JSON
@with_settings(TIMEZONE)
def report(
    settings: Settings,
    *,
    job_id: str,
    login: str,
    set_ref: str | None,
    destination: str | None,
    cdp: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Show the report of backup job JOBID (yyyy-MM-dd-HH-mm-ss).

    --json prints exactly what GetBackupJobReport answers (cbs-api.md §5).
    """
    tz = settings.tz()
    fmt = LogTimeFormatter(tz)
    database = open_database(settings)
    try:
        with database.read() as conn:
            owner = find_user(conn, login)
            bset = _resolve_set(
                conn, owner.id, set_ref, job_id=job_id, destination=destination, cdp=cdp
            )
            job = job_queries.find_job(conn, bset, destination, job_id, cdp=cdp)
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
            _print_readable(
                bset, job.destination_id, summary_fields(header), entries, fmt=fmt, limit=limit
            )
    finally:
        database.dispose()


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
        if sets.parse_id(ref) is not None:
            try:
                return sets.get_set(conn, user_id, ref)
            except BackupSetNotFound:
                pass
        named = sets.find_set_by_name(conn, user_id, ref)
        if named is None:
            raise BackupSetNotFound(ref)
        return named
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


def _print_readable(
    bset: BackupSet,
    destination_id: int,
    fields: dict[str, Any],
    entries: Any,
    *,
    fmt: LogTimeFormatter,
    limit: int,
) -> None:
    con = console()
    head = Table(title=f"Backup job {fields['ID']}", title_justify="left", show_header=False)
    head.add_column("Field", style="bold")
    head.add_column("Value", overflow="fold")
    dest = next((d for d in bset.destinations if d.id == destination_id), None)
    head.add_row("Backup set", Text(f"{bset.name} ({bset.id})"))
    head.add_row("Destination", Text(f"{dest.name if dest else ''} ({destination_id})"))
    for key, value in fields.items():
        if key != "ID" and value not in ("", None):
            head.add_row(key, Text(str(value)))
    con.print(head)
    _print_list(
        con,
        "Logs",
        ["Type", "Timestamp", "Message"],
        (log_entry(r, fmt) for r in entries(ReportList.LOG)),
        limit=limit,
    )
    for lst in FILE_LISTS:
        cols = (
            ["Type", "LastModified", "FromFile", "ToFile", "FileSize", "UnzipFilesSize", "Ratio"]
            if lst is ReportList.MOV
            else ["Type", "LastModified", "Name", "FileSize", "UnzipFilesSize", "Ratio"]
        )
        items = (file_entry(r, fmt, lst) for r in entries(lst))
        _print_list(con, lst.key, cols, items, limit=limit)


def _print_list(con: Any, title: str, cols: list[str], items: Any, *, limit: int) -> None:
    table = Table(title=title, title_justify="left")
    for c in cols:
        table.add_column(c, overflow="fold")
    count = 0
    for item in items:
        count += 1
        if count <= limit:
            table.add_row(*(Text(str(item.get(c, ""))) for c in cols))
    if count == 0:
        return
    if count > limit:
        table.caption = f"{count - limit} more not shown (--limit, or --json for all)"
    con.print(table)
