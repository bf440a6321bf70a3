"""``opencbs demo``: a ready-to-try server on the embedded SQLite default.

It creates the data directory, a system user, a backup user with a backup set and a local
destination, loads the vendor's example report (cbs-api.md §5, ``GetBackupJobReport.txt``),
delivers a second small job through the store's job functions, prints a ready-to-paste ``curl``
for the example's report, and serves. Running it again reuses what exists.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from datetime import tzinfo
from importlib import resources
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Connection

from opencbs.cli.common import (
    JSON,
    TIMEZONE,
    echo,
    open_database,
    print_json,
    with_settings,
)
from opencbs.cli.serve import HOST, IDLE, PORT, serve_database
from opencbs.errors import BackupJobNotFound, ExitCode
from opencbs.model.passwords import PasswordRule
from opencbs.reports.timefmt import job_id_at, parse_report_time
from opencbs.reports.vocabulary import JobMode, JobStatus, ReportList, SystemRole
from opencbs.settings import Settings
from opencbs.store import job_queries, jobs, report_import, sets, users
from opencbs.store.db import Database
from opencbs.store.sets import BackupSet

SYSUSER = "admin"
LOGIN = "demo"
SET_NAME = "Demo files"
SOURCE = "C:\\Users\\Administrator"
SECOND_JOB_START = "2024-06-27 13:24:35"  # a day after the vendor's example, server zone


@dataclass(frozen=True)
class DemoResult:
    """What the demo set up. ``sysuser_password`` is ``None`` when the system user existed."""

    data_dir: str
    database_url: str
    sysuser: str
    sysuser_password: str | None
    login_name: str
    backup_set_id: str
    destination_id: str
    example_job_id: str
    second_job_id: str
    created: list[str]


def vendor_example() -> dict[str, Any]:
    """The ``Data`` of the vendor's example GetBackupJobReport answer (packaged with opencbs)."""
    text = (
        resources.files("opencbs.reports")
        .joinpath("data/vendor_example.json")
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)["Data"]
    return data


def set_up_demo(db: Database, tz: tzinfo, data_dir: Path, rule: PasswordRule) -> DemoResult:
    """Create (or reuse) everything of the demo in one transaction; generated passwords meet
    ``rule`` (the setting ``password_min_length``)."""
    created: list[str] = []
    with db.write() as conn:
        password = None
        if users.get_system_user(conn, SYSUSER) is None:
            password = rule.generate()
            users.add_system_user(conn, SYSUSER, password, SystemRole.ADMIN, rule=rule)
            created.append(f"system user {SYSUSER}")
        owner = users.find_backup_user(conn, LOGIN)
        if owner is None:
            owner = users.add_backup_user(
                conn, LOGIN, rule.generate(), alias="Demo user", rule=rule
            )
            created.append(f"backup user {LOGIN}")
        bset = _demo_set(conn, owner.id, data_dir, created)
        dest_id = bset.destinations[0].id
        example = vendor_example()
        if not _has_job(conn, bset, example["ID"]):
            report_import.import_report(conn, bset, dest_id, example, tz=tz)
            created.append(f"job {example['ID']}")
        second = _deliver_second_job(conn, bset, dest_id, tz=tz, created=created)
    return DemoResult(
        data_dir=str(data_dir),
        database_url=db.engine.url.render_as_string(hide_password=True),
        sysuser=SYSUSER,
        sysuser_password=password,
        login_name=LOGIN,
        backup_set_id=str(bset.id),
        destination_id=str(dest_id),
        example_job_id=str(example["ID"]),
        second_job_id=second,
        created=created,
    )


def _demo_set(conn: Connection, user_id: int, data_dir: Path, created: list[str]) -> BackupSet:
    bset = sets.find_set_by_name(conn, user_id, SET_NAME)
    if bset is None:
        bset = sets.add_set(conn, user_id, SET_NAME, {"sources": [SOURCE]})
        created.append(f"backup set {SET_NAME}")
    if not bset.destinations:
        sets.add_destination(
            conn,
            user_id,
            bset.id,
            name="Local",
            dest_type="LOCAL",
            settings={"path": str(data_dir / "demo-destination")},
        )
        created.append("destination Local")
    return sets.get_set(conn, user_id, bset.id)


def _has_job(conn: Connection, bset: BackupSet, job_id: str) -> bool:
    try:
        job_queries.find_job(conn, bset, None, job_id, cdp=False)
    except BackupJobNotFound:
        return False
    return True


def _deliver_second_job(
    conn: Connection, bset: BackupSet, dest_id: int, *, tz: tzinfo, created: list[str]
) -> str:
    """A small job delivered as an agent would: start, one batch of entries, finish."""
    start = parse_report_time(SECOND_JOB_START, tz)
    job_id = job_id_at(start, tz)
    if _has_job(conn, bset, job_id):
        return job_id
    job = jobs.start_job(
        conn,
        bset,
        dest_id,
        tz=tz,
        start_ms=start,
        mode=JobMode.SCHEDULED,
        from_ip="127.0.0.1",
        run_version="opencbs demo",
    )
    jobs.append_batch(conn, job.pk, 0, _second_job_entries(start))
    jobs.finish_job(
        conn,
        job.pk,
        JobStatus.STOP_SUCCESS_WITH_WARNING,
        end_ms=start + 9000,
        dedupe_original_size=92_160,
        dedupe_saving=20_480,
    )
    created.append(f"job {job_id}")
    return job_id


def _second_job_entries(start: int) -> list[jobs.EntryIn]:
    src = SOURCE + "\\Documents\\"
    t = start - 86_400_000
    E = jobs.EntryIn
    log, new, upd, pmt = ReportList.LOG, ReportList.NEW, ReportList.UPD, ReportList.PMT
    return [
        E(log, "start", "Start [opencbs demo]", mtime_ms=start + 1000),
        E(log, "info", "Using destination Local", mtime_ms=start + 2000),
        E(new, "D", src + "2024", mtime_ms=t),
        E(new, "F", src + "2024\\plan.docx", mtime_ms=t, size=20_480, unzip_size=51_200),
        E(upd, "F", src + "budget.xlsx", mtime_ms=t, size=16_384, unzip_size=40_960),
        E(pmt, "F", src + "readme.txt", mtime_ms=t, size=512, unzip_size=1_024),
        E(ReportList.DEL, "F", src + "old.log", mtime_ms=t, size=300, unzip_size=900),
        E(
            ReportList.MOV,
            "F",
            src + "archive\\notes.txt",
            from_path=src + "notes.txt",
            mtime_ms=t,
            size=700,
            unzip_size=2_000,
        ),
        E(
            ReportList.CPY,
            "F",
            src + "2024\\plan-copy.docx",
            from_path=src + "2024\\plan.docx",
            mtime_ms=t,
            size=0,
            unzip_size=51_200,
        ),
        E(log, "warn", "Skipped " + src + "mail.pst: the file is in use", mtime_ms=start + 7000),
        E(log, "end", "Backup Completed with warnings", mtime_ms=start + 9000),
    ]


def _url(host: str, port: int) -> str:
    """``http://host:port`` to reach a server bound to ``host`` (every address: 127.0.0.1)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def curl_command(result: DemoResult, host: str, port: int) -> str:
    """A ready-to-paste ``curl`` asking for the example job's report (GetBackupJobReport)."""
    body = {
        "SysUser": result.sysuser,
        "SysPwd": result.sysuser_password or f"<password of {result.sysuser}>",
        "LoginName": result.login_name,
        "BackupSetID": result.backup_set_id,
        "DestinationID": result.destination_id,
        "BackupJobID": result.example_job_id,
    }
    return (
        f"curl -s -X POST {_url(host, port)}/obs/api/json/GetBackupJobReport.do "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )


def _print_human(result: DemoResult, curl: str) -> None:
    echo(f"data directory: {result.data_dir}")
    echo(f"database:       {result.database_url}")
    if result.sysuser_password is not None:
        echo(
            f"system user {result.sysuser!r} created; its password (shown only now): "
            f"{result.sysuser_password}"
        )
    else:
        echo(
            f"system user {result.sysuser!r} exists already; its password is unchanged "
            f"(set a new one: opencbs sysuser passwd {result.sysuser})"
        )
    echo(
        f"backup user {result.login_name!r}, backup set {result.backup_set_id} "
        f"({SET_NAME}), destination {result.destination_id}"
    )
    echo(
        f"jobs: {result.example_job_id} (the vendor's example), {result.second_job_id} "
        f"(delivered through the store)"
    )
    echo("created: " + (", ".join(result.created) if result.created else "nothing (all there)"))
    echo("")
    echo("The example job's report:")
    echo(curl)


@click.command()
@click.option("--no-serve", is_flag=True, help="Set up and print, but do not serve.")
@JSON
@with_settings(HOST, PORT, TIMEZONE, IDLE)
def demo(settings: Settings, *, no_serve: bool, as_json: bool) -> int:
    """Set up a demo (users, a set, the vendor's example job and one more) and serve it until
    Ctrl-C (exit code 130) or SIGTERM (exit code 0)."""
    from opencbs.api.serve import listen_socket, sock_port

    data_dir = settings.ensure_data_dir()
    database = open_database(settings)
    sock = None
    try:
        result = set_up_demo(database, settings.tz(), data_dir, settings.password_rule())
        port = settings.port
        if not no_serve:
            sock = listen_socket(settings.host, settings.port)  # --port 0: a free port
            port = sock_port(sock)
        curl = curl_command(result, settings.host, port)
        if as_json:
            print_json({**asdict(result), "curl": curl})
        else:
            _print_human(result, curl)
        if sock is None:
            return ExitCode.SUCCESS
        echo("")
        echo(f"serving on {_url(settings.host, port)} (Ctrl-C stops)")
        served, sock = sock, None
        return serve_database(settings, database, sock=served)
    finally:
        if sock is not None:
            sock.close()
        database.dispose()
