"""CBS calls about restore jobs (cbs-api.md §12; issue 15, point 10): ListRestoreJobs,
ListRestoreJobStatus, GetRestoreJobReport. The restores are those agents reported through the
agent API (``api/agent_restore.py``, ``store.restore_jobs``).

Same envelope, authentication and scope as the backup-job calls (§1–§3): every role that may
call the API may call these (they only read); a reseller sees its own users' restores only,
another's user is "not found". Choices where the vendor's pages leave room (said to clients in
cbs-api.md §12):

- GetRestoreJobReport's ``StartTime`` / ``EndTime`` and its log entries' ``Timestamp`` are
  numbers, epoch ms (the vendor's page says so of this call, unlike backup reports);
  ``EndTime`` is ``0`` while the restore runs. ``TotalFileCount`` / ``TotalFileSize`` are the
  regular files restored and their bytes (so far, while it runs). ``Logs`` holds the log
  entries (``start``, ``info``, ``warn``, ``error``, ``end``), not one entry per file.
- ListRestoreJobStatus lists like ListBackupJobStatus (times ``yyyy-MM-dd HH:mm:ss``, IDs and
  sizes strings); ``RestoreDate`` is read as ``BackupDate`` is there; no restore that day →
  ``[Error] No Restore Job on that day``.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import LOGIN, OWNER, SET_ID, ParamDoc, backup_set, backup_user, cbs_call
from opencbs.api.envelope import ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.errors import NotFound, ParameterInvalid
from opencbs.reports.timefmt import parse_backup_date, report_time
from opencbs.store import restore_jobs, sets
from opencbs.store.restore_jobs import RestoreJob

__all__ = ["NoRestoreJobOnDay", "report_data"]


class NoRestoreJobOnDay(NotFound):
    """No restore job started on the requested day (ListRestoreJobStatus, cbs-api.md §12)."""

    code = "no_restore_job_on_day"

    def __init__(self) -> None:
        super().__init__("[Error] No Restore Job on that day")


_LOGIN_FILTER = ParamDoc(
    "LoginName",
    description="Login name of one backup user; absent or empty: every backup user the "
    "caller sees.",
)
_RESTORE_DATE = ParamDoc(
    "RestoreDate",
    description="Day, yyyy-MM-dd, or a restore job ID whose date is used; absent or empty: "
    "today in the server's time zone.",
)
_SET_FILTER = ParamDoc(
    "BackupSetID", description="ID of one backup set; absent or empty: every set of the user."
)
_JOB_ID = ParamDoc(
    "JobID", required=True, description="ID of the restore job (yyyy-MM-dd-HH-mm-ss)."
)

_STR = {"type": "string"}
_INT = {"type": "integer"}
_ID = {"type": "string", "description": "Decimal ID as a string."}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props)}


_LOG = _obj(
    {
        "Type": _STR,
        "LogType": _STR,
        "Timestamp": {"type": "integer", "description": "Epoch ms."},
        "Message": _STR,
    }
)
_REPORT_ANSWER = _obj(
    {
        "ID": _STR,
        "BackupSetID": _ID,
        "BackupSetName": _STR,
        "DestinationID": _ID,
        "StartTime": {"type": "integer", "description": "Epoch ms."},
        "EndTime": {"type": "integer", "description": "Epoch ms; 0 while the restore runs."},
        "FromIp": _STR,
        "Status": _STR,
        "TotalFileCount": {"type": "integer", "description": "Regular files restored."},
        "TotalFileSize": {"type": "integer", "description": "Bytes of the files restored."},
        "RestoreJobMode": _STR,
        "RunVersion": _STR,
        "BackupJobID": _STR,
        "SnapshotID": _STR,
        "RestoreTo": _STR,
        "Overwrite": _STR,
        "NumOfRestoredDirs": _INT,
        "NumOfRestoredLinks": _INT,
        "NumOfKeptFiles": _INT,
        "NumOfFailedFiles": _INT,
        "NumOfDamagedFiles": _INT,
        "NumOfWarnEntries": _INT,
        "NumOfErrorEntries": _INT,
        "CurrentFileName": _STR,
        "SelectedFileCount": _INT,
        "SelectedFileSize": _INT,
        "Logs": {"type": "array", "items": _LOG},
    }
)
_STATUS_ANSWER = {
    "type": "array",
    "items": _obj(
        {
            "ID": _STR,
            "LoginName": _STR,
            "Owner": _STR,
            "UserId": _ID,
            "StartTime": _STR,
            "EndTime": _STR,
            "RestoreJobStatus": _STR,
            "BackupSetID": _ID,
            "BackupSetName": _STR,
            "DestinationID": _ID,
            "BackupJobID": _STR,
            "RestoreFileCount": _STR,
            "RestoreSize": {"type": "string", "description": "Bytes restored, decimal."},
            "RestoreJobMode": _STR,
            "RunVersion": _STR,
        }
    ),
}
_JOBS_ANSWER = {
    "type": "array",
    "items": _obj(
        {
            "BackupSetID": _ID,
            "Removed": {"type": "boolean"},
            "RestoreJob": {"type": "array", "items": _STR, "description": "IDs, ascending."},
        }
    ),
}


def _files(job: RestoreJob) -> tuple[int, int]:
    """Regular files restored and their bytes: the final counts, or the progress while it
    runs."""
    if job.end_time is None:
        return job.progress.restored_file_count, job.progress.restored_size
    return job.counts.file_count, job.counts.file_size


def report_data(job: RestoreJob, set_name: str) -> dict[str, Any]:
    """GetRestoreJobReport's ``Data`` of ``job`` (module docstring; cbs-api.md §12)."""
    files, size = _files(job)
    return {
        "ID": job.job_id,
        "BackupSetID": str(job.set_id),
        "BackupSetName": set_name,
        "DestinationID": str(job.destination_id),
        "StartTime": job.start_time,
        "EndTime": job.end_time or 0,
        "FromIp": job.from_ip,
        "Status": job.status,
        "TotalFileCount": files,
        "TotalFileSize": size,
        "RestoreJobMode": job.mode,
        "RunVersion": job.run_version,
        "BackupJobID": job.backup_job_id,
        "SnapshotID": job.snapshot_id,
        "RestoreTo": job.target,
        "Overwrite": job.overwrite,
        "NumOfRestoredDirs": job.counts.dir_count,
        "NumOfRestoredLinks": job.counts.link_count,
        "NumOfKeptFiles": job.counts.kept_count,
        "NumOfFailedFiles": job.counts.failed_count,
        "NumOfDamagedFiles": job.counts.damaged_count,
        "NumOfWarnEntries": job.warn_count,
        "NumOfErrorEntries": job.error_count,
        "CurrentFileName": job.progress.current_file_name,
        "SelectedFileCount": job.progress.total_file_count,
        "SelectedFileSize": job.progress.total_file_size,
        "Logs": [
            {"Type": e.type, "LogType": e.type, "Timestamp": e.time, "Message": e.message}
            for e in job.logs
        ],
    }


@cbs_call(
    "GetRestoreJobReport",
    params=(LOGIN, OWNER, SET_ID, _JOB_ID),
    summary="The report of one restore job of a backup set (cbs-api.md §12): status, files "
    "and bytes restored, what was kept, refused or damaged, log entries; StartTime and "
    "EndTime epoch ms (EndTime 0 while it runs).",
    answer=_REPORT_ANSWER,
)
def get_restore_job_report(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    job_id = params.required_str("JobID")
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        job = restore_jobs.get_restore_job(conn, bset, job_id.strip())
    return ok(report_data(job, bset.name))


def _restore_day(params: Params, tz: tzinfo) -> str:
    """``RestoreDate`` as ``yyyy-MM-dd``: a date or a job-ID-shaped value; today in ``tz``
    when absent or empty. Raises ``ParameterInvalid``."""
    raw = params.optional_str("RestoreDate")
    if raw is None or not raw.strip():
        return datetime.now(tz).date().isoformat()
    try:
        return parse_backup_date(raw.strip()).isoformat()
    except ValueError:
        raise ParameterInvalid("RestoreDate", raw) from None


def _status_record(item: restore_jobs.RestoreListing, tz: tzinfo) -> dict[str, Any]:
    job = item.job
    files, size = _files(job)
    return {
        "ID": job.job_id,
        "LoginName": item.login_name,
        "Owner": item.owner,
        "UserId": str(item.user_id),
        "StartTime": report_time(job.start_time, tz),
        "EndTime": report_time(job.end_time, tz),
        "RestoreJobStatus": job.status,
        "BackupSetID": str(job.set_id),
        "BackupSetName": item.set_name,
        "DestinationID": str(job.destination_id),
        "BackupJobID": job.backup_job_id,
        "RestoreFileCount": str(files),
        "RestoreSize": str(size),
        "RestoreJobMode": job.mode,
        "RunVersion": job.run_version,
    }


@cbs_call(
    "ListRestoreJobStatus",
    params=(_LOGIN_FILTER, OWNER, _RESTORE_DATE),
    summary="The restore jobs that started on one day, of one backup user or of every user "
    "the caller sees (cbs-api.md §12), like ListBackupJobStatus. No restore that day: "
    '"[Error] No Restore Job on that day".',
    answer=_STATUS_ANSWER,
)
def list_restore_job_status(params: Params, caller: Caller, state: ServerState) -> Response:
    day = _restore_day(params, state.tz)
    login = params.str_or_empty("LoginName")
    owner = params.str_or_empty("Owner")
    with state.db.read() as conn:
        if login:
            user = backup_user(conn, params, caller)
            found = restore_jobs.restore_jobs_of_day(conn, day, user_id=user.id)
        else:
            if caller.scope is not None and owner and owner != caller.scope:
                raise NoRestoreJobOnDay()  # a reseller sees no other owner's users (§2)
            scope = caller.scope if caller.scope is not None else (owner or None)
            found = restore_jobs.restore_jobs_of_day(conn, day, owner=scope)
    if not found:
        raise NoRestoreJobOnDay()
    return ok([_status_record(item, state.tz) for item in found])


@cbs_call(
    "ListRestoreJobs",
    params=(LOGIN, OWNER, _SET_FILTER),
    summary="The restore job IDs of each backup set of a user, ascending (cbs-api.md §12), "
    "like ListBackupJobs: one record per set that has restore jobs, or the one set named.",
    answer=_JOBS_ANSWER,
)
def list_restore_jobs(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    chosen = params.str_or_empty("BackupSetID").strip()
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        if chosen:
            user_sets = [sets.get_set(conn, user.id, chosen)]
        else:
            user_sets = sets.list_sets(conn, user.id, include_removed=True)
        ids = restore_jobs.restore_job_ids_by_set(conn, [s.id for s in user_sets])
    return ok(
        [
            {"BackupSetID": str(s.id), "Removed": bool(s.removed), "RestoreJob": ids[s.id]}
            for s in user_sets
            if ids[s.id] or chosen
        ]
    )
