"""Storing a finished report given whole: a CBS ``Data`` object (cbs-api.md §5) such as a
vendor export or the example the demo and the tests load.

The report is stored as it is: its counters are taken from the object (not derived from its
arrays, which a vendor export may have cut short), its lists from its arrays, in their order.
Times in the object are in ``tz`` (the server's zone).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy import Connection

from opencbs.errors import InvalidInput
from opencbs.reports.counters import Counters
from opencbs.reports.fields import counters_from_report
from opencbs.reports.timefmt import parse_log_time, parse_report_time
from opencbs.reports.vocabulary import FILE_LISTS, JobMode, JobStatus, ReportList
from opencbs.store.jobs import Job, get_job_by_pk, refuse_duplicate, zero_seq
from opencbs.store.schema import backup_jobs, job_entries
from opencbs.store.sets import BackupSet


@dataclass(frozen=True)
class _Head:
    """What names and closes the imported job: ID, start and end (epoch ms), counters, status."""

    job_id: str
    start: int
    end: int | None
    counters: Counters
    status: JobStatus


def import_report(
    conn: Connection,
    bset: BackupSet,
    destination_id: int,
    data: Mapping[str, Any],
    *,
    tz: tzinfo,
    cdp: bool = False,
    mode: JobMode = JobMode.MANUAL,
) -> Job:
    """Store a finished report given as a CBS ``Data`` object (module docstring) as a job of
    ``bset`` to ``destination_id``; returns the stored job.

    Raises ``InvalidInput`` for a malformed object, ``Conflict`` for a job ID that exists.
    """
    head = _head(data, tz)
    refuse_duplicate(
        conn, set_id=bset.id, destination_id=destination_id, job_id=head.job_id, cdp=cdp
    )
    values = _job_values(data, head, cdp=cdp, mode=mode)
    pk = conn.execute(
        backup_jobs.insert().values(set_id=bset.id, destination_id=destination_id, **values)
    ).inserted_primary_key
    assert pk is not None
    rows = [*_log_rows(pk[0], data, tz), *_file_rows(pk[0], data, tz)]
    if rows:
        conn.execute(job_entries.insert(), rows)
    return get_job_by_pk(conn, pk[0])


def _head(data: Mapping[str, Any], tz: tzinfo) -> _Head:
    """The job's ID, times, counters and status; ``InvalidInput`` when one is missing or
    malformed."""
    try:
        return _Head(
            job_id=str(data["ID"]),
            start=parse_report_time(str(data["StartTime"]), tz),
            end=parse_report_time(str(data["EndTime"]), tz) if data.get("EndTime") else None,
            counters=counters_from_report(data),
            status=JobStatus(str(data.get("BackupJobStatus", JobStatus.STOP_SUCCESS.value))),
        )
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"not a backup job report: {exc}") from exc


def _job_values(
    data: Mapping[str, Any], head: _Head, *, cdp: bool, mode: JobMode
) -> dict[str, Any]:
    """The ``backup_jobs`` columns of the report but its set and destination."""
    return dict(
        job_id=head.job_id,
        cdp=cdp,
        mode=mode.value,
        status=head.status.value,
        start_time=head.start,
        end_time=head.end,
        from_ip=str(data.get("FromIp", "")),
        run_version=str(data.get("RunVersion", "")),
        dedupe_enabled=bool(data.get("DedupeEnabled", True)),
        dedupe_original_size=int(data.get("DedupeOriginalSize", 0)),
        dedupe_saving=int(data.get("DedupeSaving", 0)),
        success_database=str(data.get("SuccessDatabase", "")),
        missed_database=str(data.get("MissedDatabase", "")),
        success_public_folder=str(data.get("SuccessPublicFolder", "")),
        missed_public_folder=str(data.get("MissedPublicFolder", "")),
        next_seq=zero_seq(),
        last_activity=head.end or head.start,
        **head.counters.as_columns(),
    )


def _log_rows(pk: int, data: Mapping[str, Any], tz: tzinfo) -> Iterator[dict[str, Any]]:
    """The ``job_entries`` rows of the report's log (``Logs``, or ``info`` as some exports
    name it): type, message, timestamp."""
    logs = data.get("Logs") or data.get("info") or []
    for seq, log_entry in enumerate(logs):
        yield dict(
            job_pk=pk,
            list=int(ReportList.LOG),
            seq=seq,
            etype=str(log_entry["Type"]),
            link_dir=False,
            path=str(log_entry["Message"]),
            from_path=None,
            mtime_ms=parse_log_time(str(log_entry["Timestamp"]), tz),
            size=0,
            unzip_size=0,
        )


def _file_rows(pk: int, data: Mapping[str, Any], tz: tzinfo) -> Iterator[dict[str, Any]]:
    """The ``job_entries`` rows of the report's file lists (``new`` … ``cpy``), each in its
    order: the new path (``ToFile``, else ``Name``), the old one of a move or copy
    (``FromFile``), sizes in bytes."""
    for lst in FILE_LISTS:
        for seq, fe in enumerate(data.get(lst.key) or []):
            yield dict(
                job_pk=pk,
                list=int(lst),
                seq=seq,
                etype=str(fe["Type"]),
                link_dir=False,
                path=str(fe.get("ToFile") or fe.get("Name")),
                from_path=fe.get("FromFile"),
                mtime_ms=parse_log_time(str(fe["LastModified"]), tz),
                size=int(fe.get("FileSize", 0)),
                unzip_size=int(fe.get("UnzipFilesSize", 0)),
            )
