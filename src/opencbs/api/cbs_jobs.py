"""CBS calls about backup jobs (cbs-api.md §7): ListBackupJobs, ListBackupJobStatus,
ListBackupJobMode, GetBackupJobProgress. The calls about sets are ``api/cbs_sets.py``.

Choices where the contract leaves room (written down here and in each call's summary):

- IDs (user, set, destination) are JSON strings (§1); times ``yyyy-MM-dd HH:mm:ss`` in the
  server zone, ``EndTime`` ``""`` while a job runs (§4).
- ``BackupDate`` (ListBackupJobStatus, ListBackupJobMode) is ``yyyy-MM-dd`` or a job-ID-shaped
  value (its date is used); absent or empty means today in the server zone. A job is listed
  under the day its job ID starts with (§4).
- ``UploadSize`` (ListBackupJobStatus) is the bytes the job wrote to its destination, as the
  agent counted them while writing: the packs and index objects of its new content and of its
  snapshot's tree (compressed, encrypted, after deduplication: content stored already is not
  written again, so an unchanged or duplicated file adds nothing) and its snapshot object; not
  the snapshot list or locks. A stopped job counts what it had stored. A job stored before
  this figure was sent (or by an agent that does not send it) keeps the earlier figure: the
  stored size of its new and updated content, ``TotalNewFilesSize + TotalUpdatedFilesSize``
  (``store.jobs.Job.upload_size``).
- ``SkipEmpty`` (ListBackupJobs) defaults to true: a client asking for jobs expects the sets
  that have some; ``false`` lists every set, removed ones included, with ``Removed`` telling.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import (
    DEST_ID,
    JOB_ID,
    LOGIN,
    OWNER,
    ParamDoc,
    backup_set,
    backup_user,
    cbs_call,
)
from opencbs.api.envelope import ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.errors import NoJobOnDay, ParameterInvalid
from opencbs.reports.timefmt import parse_backup_date, report_time
from opencbs.store import job_queries, jobs, sets
from opencbs.store.sets import BackupSet
from opencbs.store.users import BackupUser

# --- parameters -----------------------------------------------------------------------------

_SET_ID = ParamDoc("BackupSetID", required=True, description="ID of the backup set.")
_SET_FILTER = ParamDoc(
    "BackupSetID", description="ID of one backup set; absent or empty: every set of the user."
)
_LOGIN_FILTER = ParamDoc(
    "LoginName",
    description="Login name of one backup user; absent or "
    "empty: every backup user the caller sees.",
)
_BACKUP_DATE = ParamDoc(
    "BackupDate",
    description="Day, yyyy-MM-dd, or a backup job ID whose "
    "date is used; absent or empty: today in the server's time zone.",
)
_SKIP_EMPTY = ParamDoc(
    "SkipEmpty", type="boolean", description="Leave out sets without jobs (default true)."
)

# --- answer schemas -------------------------------------------------------------------------

_STR = {"type": "string"}
_ID = {"type": "string", "description": "Decimal ID as a string."}
_TIME = {"type": "string", "description": "yyyy-MM-dd HH:mm:ss in the server's time zone."}
_END = {"type": "string", "description": 'yyyy-MM-dd HH:mm:ss; "" while the job runs.'}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props)}


_JOBS_ANSWER = {
    "type": "array",
    "items": _obj(
        {
            "BackupSetID": _ID,
            "Removed": {"type": "boolean"},
            "BackupJob": {"type": "array", "items": _STR, "description": "Job IDs, ascending."},
        }
    ),
}

_STATUS_ANSWER = {
    "type": "array",
    "items": _obj(
        {
            "ID": _STR,
            "LoginName": _STR,
            "Owner": _STR,
            "UserId": _ID,
            "StartTime": _TIME,
            "EndTime": _END,
            "BackupJobStatus": _STR,
            "BackupSetID": _ID,
            "BackupSetName": _STR,
            "DestinationID": _ID,
            "UploadSize": {
                "type": "string",
                "description": "Bytes the job wrote to its destination (its "
                "packs, index objects and snapshot: compressed, after deduplication), as a "
                "decimal string.",
            },
            "RunVersion": _STR,
            "SuccessDatabase": _STR,
            "MissedDatabase": _STR,
            "SuccessVirtualMachine": _STR,
            "MissedVirtualMachine": _STR,
            "SuccessPublicFolder": _STR,
            "MissedPublicFolder": _STR,
        }
    ),
}

_MODE_ANSWER = {
    "type": "array",
    "items": _obj(
        {
            "ID": _STR,
            "LoginName": _STR,
            "Owner": _STR,
            "UserId": _ID,
            "StartTime": _TIME,
            "EndTime": _END,
            "BackupSetID": _ID,
            "BackupSetName": _STR,
            "BackupJobMode": {
                "type": "string",
                "enum": ["M", "S", "R"],
                "description": "M manual, S scheduled, R started from the server.",
            },
        }
    ),
}

_PROGRESS_ANSWER = _obj(
    {
        "ID": _STR,
        "LoginName": _STR,
        "Owner": _STR,
        "UserID": _ID,
        "StartTime": _TIME,
        "EndTime": _END,
        "BackupSetID": _ID,
        "BackupSetName": _STR,
        "CurrentFileName": _STR,
        "FileUploadTime": {
            "type": "string",
            "description": 'yyyy-MM-dd HH:mm:ss of the last progress report; "" before the first.',
        },
        "CurrentFileCount": _STR,
        "TotalFileCount": _STR,
        "UploadedFileSize": {"type": "string", "description": "Bytes, decimal string."},
        "TotalFileSize": {"type": "string", "description": "Bytes, decimal string."},
    }
)

# --- shared helpers -------------------------------------------------------------------------


def backup_day(params: Params, state: ServerState) -> str:
    """The ``BackupDate`` parameter as ``yyyy-MM-dd`` (§4): a date, or a job-ID-shaped value
    whose date is used; today in the server zone when absent or empty.

    Raises ``ParameterInvalid`` for anything else (cbs-api.md §3)."""
    raw = params.optional_str("BackupDate")
    if raw is None or not raw.strip():
        return datetime.now(state.tz).date().isoformat()
    try:
        return parse_backup_date(raw.strip()).isoformat()
    except ValueError:
        raise ParameterInvalid("BackupDate", raw) from None


def _optional_set_id(params: Params) -> str | None:
    value = params.optional_str("BackupSetID")
    return value if value and value.strip() else None


def upload_size(job: jobs.Job) -> int:
    """Bytes a job wrote to its destination (``UploadSize``; module docstring)."""
    return job.upload_size


# --- ListBackupJobs -------------------------------------------------------------------------


@cbs_call(
    "ListBackupJobs",
    params=(LOGIN, OWNER, _SKIP_EMPTY),
    summary="The job IDs of each backup set of a user, ascending (cbs-api.md §7). One record "
    "per set that has jobs; every set, removed ones included, when SkipEmpty is false.",
    answer=_JOBS_ANSWER,
)
def list_backup_jobs(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    skip_empty = params.boolean("SkipEmpty", default=True)
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        user_sets = sets.list_sets(conn, user.id, include_removed=True)
        ids = job_queries.job_ids_by_set(conn, [s.id for s in user_sets])
    return ok(
        [
            {"BackupSetID": str(s.id), "Removed": bool(s.removed), "BackupJob": ids[s.id]}
            for s in user_sets
            if ids[s.id] or not skip_empty
        ]
    )


# --- ListBackupJobStatus --------------------------------------------------------------------


def _status_record(item: job_queries.JobListing, tz: tzinfo) -> dict[str, Any]:
    job = item.job
    return {
        "ID": job.job_id,
        "LoginName": item.login_name,
        "Owner": item.owner,
        "UserId": str(item.user_id),
        "StartTime": report_time(job.start_time, tz),
        "EndTime": report_time(job.end_time, tz),
        "BackupJobStatus": job.status,
        "BackupSetID": str(job.set_id),
        "BackupSetName": item.set_name,
        "DestinationID": str(job.destination_id),
        "UploadSize": str(upload_size(job)),
        "RunVersion": job.run_version,
        "SuccessDatabase": job.success_database,
        "MissedDatabase": job.missed_database,
        "SuccessVirtualMachine": "",
        "MissedVirtualMachine": "",
        "SuccessPublicFolder": job.success_public_folder,
        "MissedPublicFolder": job.missed_public_folder,
    }


def _owner_filter(params: Params, caller: Caller) -> str | None:
    """Which owner's users a listing over every user covers: the caller's scope, narrowed by
    a non-empty ``Owner``; ``None`` for all. Raises ``NoJobOnDay`` when a reseller names
    another owner: it sees none of those users' jobs (§2)."""
    owner = params.str_or_empty("Owner")
    if caller.scope is None:
        return owner or None
    if owner and owner != caller.scope:
        raise NoJobOnDay()
    return caller.scope


@cbs_call(
    "ListBackupJobStatus",
    params=(_LOGIN_FILTER, OWNER, _BACKUP_DATE),
    summary="The backup jobs that started on one day, of one backup user or of every user the "
    "caller sees (cbs-api.md §7). UploadSize: bytes the job wrote to its destination "
    "(compressed, after deduplication). "
    'No job that day: "[Error] No Backup Job on that day".',
    answer=_STATUS_ANSWER,
)
def list_backup_job_status(params: Params, caller: Caller, state: ServerState) -> Response:
    day = backup_day(params, state)
    login = params.str_or_empty("LoginName")
    with state.db.read() as conn:
        if login:
            user = backup_user(conn, params, caller)
            found = job_queries.jobs_of_day(conn, day, user_id=user.id)
        else:
            found = job_queries.jobs_of_day(conn, day, owner=_owner_filter(params, caller))
    if not found:
        raise NoJobOnDay()
    return ok([_status_record(item, state.tz) for item in found])


# --- ListBackupJobMode ----------------------------------------------------------------------


@cbs_call(
    "ListBackupJobMode",
    params=(LOGIN, OWNER, _SET_FILTER, _BACKUP_DATE),
    summary="How each backup job of a user that started on one day was started: M manual, "
    "S scheduled, R from the server (cbs-api.md §7). An empty list when there is none.",
    answer=_MODE_ANSWER,
)
def list_backup_job_mode(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    day = backup_day(params, state)
    set_id = _optional_set_id(params)
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        bset = sets.get_set(conn, user.id, set_id) if set_id is not None else None
        found = job_queries.jobs_of_day(
            conn, day, user_id=user.id, set_id=bset.id if bset is not None else None
        )
    return ok(
        [
            {
                "ID": item.job.job_id,
                "LoginName": item.login_name,
                "Owner": item.owner,
                "UserId": str(item.user_id),
                "StartTime": report_time(item.job.start_time, state.tz),
                "EndTime": report_time(item.job.end_time, state.tz),
                "BackupSetID": str(item.job.set_id),
                "BackupSetName": item.set_name,
                "BackupJobMode": item.job.mode,
            }
            for item in found
        ]
    )


# --- GetBackupJobProgress -------------------------------------------------------------------


def _progress(job: jobs.Job, user: BackupUser, bset: BackupSet, tz: tzinfo) -> dict[str, str]:
    return {
        "ID": job.job_id,
        "LoginName": user.login_name,
        "Owner": user.owner,
        "UserID": str(user.id),
        "StartTime": report_time(job.start_time, tz),
        "EndTime": report_time(job.end_time, tz),
        "BackupSetID": str(bset.id),
        "BackupSetName": bset.name,
        "CurrentFileName": job.current_file_name,
        "FileUploadTime": report_time(job.file_upload_time, tz),
        "CurrentFileCount": str(job.current_file_count),
        "TotalFileCount": str(job.total_file_count),
        "UploadedFileSize": str(job.uploaded_file_size),
        "TotalFileSize": str(job.total_file_size),
    }


@cbs_call(
    "GetBackupJobProgress",
    params=(LOGIN, OWNER, _SET_ID, DEST_ID, JOB_ID),
    summary="The live progress of a backup job, every value a string, sizes in bytes "
    "(cbs-api.md §7). DestinationID is resolved as for GetBackupJobReport (§5).",
    answer=_PROGRESS_ANSWER,
)
def get_backup_job_progress(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    job_id = params.required_str("BackupJobID")
    dest = params.optional_str("DestinationID")
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        job = job_queries.find_job(conn, bset, dest, job_id, cdp=False)
    return ok(_progress(job, user, bset, state.tz))
