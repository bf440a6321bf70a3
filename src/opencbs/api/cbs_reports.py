"""GetBackupJobReport and GetBackupJobReportSummary (cbs-api.md §5, §6).

The report is streamed from one read transaction: the header and every list come from the
same snapshot, and the entries are rendered while they are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from starlette.responses import Response, StreamingResponse

from opencbs.api.auth import Caller
from opencbs.api.cbs import (
    CDP,
    DEST_ID,
    JOB_ID,
    LOGIN,
    OWNER,
    SET_ID,
    backup_set,
    backup_user,
    cbs_call,
)
from opencbs.api.envelope import JSON_CONTENT_TYPE, ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.reports.fields import summary_fields
from opencbs.reports.render import render_report
from opencbs.store import job_queries, jobs

_PARAMS = (LOGIN, OWNER, SET_ID, DEST_ID, JOB_ID, CDP)

_LOG = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("Type", "LogType", "Timestamp", "Message")},
}
_FILE = {
    "type": "object",
    "properties": {
        "Type": {"type": "string", "enum": ["F", "D", "L"]},
        "LastModified": {"type": "string"},
        "Name": {"type": "string"},
        "FromFile": {"type": "string"},
        "FileSize": {"type": "integer"},
        "UnzipFilesSize": {"type": "integer"},
        "Ratio": {"type": "string"},
    },
}
_MOVE = {
    "type": "object",
    "properties": {
        "Type": {"type": "string"},
        "LastModified": {"type": "string"},
        "FromFile": {"type": "string"},
        "ToFile": {"type": "string"},
        "FileSize": {"type": "integer"},
        "UnzipFilesSize": {"type": "integer"},
        "Ratio": {"type": "string"},
    },
}

_SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every key of cbs-api.md §5 but the arrays; counts and sizes are integers "
    '(bytes), ratios strings "N%", times "yyyy-MM-dd HH:mm:ss".',
    "additionalProperties": True,
}
_REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The backup job report (cbs-api.md §5).",
    "properties": {
        "Logs": {"type": "array", "items": _LOG},
        "info": {"type": "array", "items": _LOG},
        **{k: {"type": "array", "items": _FILE} for k in ("new", "upd", "pmt", "del", "cpy")},
        "mov": {"type": "array", "items": _MOVE},
    },
    "additionalProperties": True,
}


@cbs_call(
    "GetBackupJobReport",
    params=_PARAMS,
    summary="The detailed report of one backup job, streamed (cbs-api.md §5).",
    answer=_REPORT_SCHEMA,
)
def get_backup_job_report(params: Params, caller: Caller, state: ServerState) -> Response:
    stack = ExitStack()
    try:
        conn = stack.enter_context(state.db.read())
        job = _find(conn, params, caller)
        header = job.header(state.tz)
    except BaseException:
        stack.close()
        raise

    def body() -> Iterator[bytes]:
        with stack:
            yield from render_report(
                header, lambda lst: job_queries.iter_entries(conn, job.pk, lst), state.log_time
            )

    return StreamingResponse(body(), media_type=JSON_CONTENT_TYPE)


@cbs_call(
    "GetBackupJobReportSummary",
    params=_PARAMS,
    summary="The report of one backup job without its per-entry arrays (cbs-api.md §6).",
    answer=_SUMMARY_SCHEMA,
)
def get_backup_job_report_summary(params: Params, caller: Caller, state: ServerState) -> Response:
    with state.db.read() as conn:
        job = _find(conn, params, caller)
    return ok(summary_fields(job.header(state.tz)))


def _find(conn: Any, params: Params, caller: Caller) -> jobs.Job:
    # every parameter is checked before anything is looked up
    login = params.required_str("LoginName")
    set_id = params.required_str("BackupSetID")
    job_id = params.required_str("BackupJobID")
    dest = params.optional_str("DestinationID")
    cdp = params.boolean("Cdp")
    owner = params.str_or_empty("Owner")
    job = job_queries.find_report_job_fast(
        conn,
        login_name=login,
        owner=owner,
        scope=caller.scope,
        set_id=set_id,
        destination_id=dest,
        job_id=job_id,
        cdp=cdp,
    )
    if job is not None:
        return job
    # something is missing: the step-by-step look-ups name it (cbs-api.md §3)
    user = backup_user(conn, params, caller)
    bset = backup_set(conn, params, user)
    return job_queries.find_job(conn, bset, dest, job_id, cdp=cdp)
