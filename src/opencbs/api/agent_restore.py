"""The agent API's restore jobs (``/api/agent/v1``; issue 15, point 10; cbs-api.md §12): an
agent reports each restore it runs, as it reports backup jobs (``api/agent.py``).

1. ``POST /backup-sets/{set_id}/restore-jobs`` starts one (``RestoreStartIn``: the destination
   read, what is restored and where to); its ID is the start time in the server's zone
   (``start_time``, default now); a second one of that ID in the set is a 409 (start again a
   second later). ``FromIp`` is the request's address. 201 with the ``RestoreRecord``.
2. ``POST …/restore-jobs/{job_id}/progress`` records its progress (a sign of life).
3. ``POST …/restore-jobs/{job_id}/finish`` sets its final status, counts and log entries in
   one transaction. Finishing again with the same status and counts answers the job (a retry
   after a lost answer); anything else on a finished job is a 409.
4. ``GET …/restore-jobs/{job_id}`` answers the record (a sign of life while it runs).

A running restore job silent for ``job_idle_timeout`` seconds is closed as
``RESTORE_NOT_FINISHED`` by the server's sweeper. Authentication, errors and limits are the
agent API's (``api/agent.py``): 401, 404 (a set of another user, an unknown set, destination
or restore job), 400, 409, 413, 422.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from opencbs.api.agent import (
    COMMON_ANSWERS,
    Count,
    PathText,
    SetIdPath,
    Size,
    Text,
    TimeMs,
    User,
    error_answer,
)
from opencbs.api.state import state_of
from opencbs.errors import Conflict, InvalidInput
from opencbs.model.restores import (
    MAX_RESTORE_LOGS,
    RestoreProgressRecord,
    RestoreRecord,
    RestoreStatus,
)
from opencbs.reports.vocabulary import JobMode, LogType
from opencbs.store import restore_jobs, sets

router = APIRouter(prefix="/api/agent/v1", tags=["Agent API"], responses=COMMON_ANSWERS)

_JOBS = "/backup-sets/{set_id}/restore-jobs"
_IN_SET: dict[int | str, dict[str, Any]] = {
    404: error_answer(
        "No such set of the caller (another user's set is not found), destination or restore job."
    )
}
RestoreIdPath = Annotated[
    str, Path(max_length=32, description="Restore job ID (yyyy-MM-dd-HH-mm-ss).")
]
_FINAL = tuple(
    s.value
    for s in RestoreStatus
    if s not in (RestoreStatus.STILL_RUNNING, RestoreStatus.NOT_FINISHED)
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RestoreStartIn(_Model):
    """Start of a restore job: the ``destination_id`` read, the ``backup_job_id`` and
    ``snapshot_id`` restored, the ``target`` folder on the agent, ``overwrite`` (``refuse``,
    ``always``, ``if-changed``, ``never``), ``mode`` (``M`` manual, ``S`` scheduled, ``R``
    from the server), the agent's ``run_version`` and ``start_time`` (epoch ms, default now)."""

    destination_id: str = Field(min_length=1, max_length=32)
    backup_job_id: Text = Field(default="", max_length=64)
    snapshot_id: Text = Field(default="", max_length=64)
    target: PathText = ""
    overwrite: str = Field(default="", pattern=r"^(|refuse|always|if-changed|never)$")
    mode: JobMode = JobMode.MANUAL
    run_version: Text = Field(default="", max_length=64)
    start_time: TimeMs | None = None


class RestoreProgressIn(_Model):
    """A running restore's progress: the entry being restored, regular files and bytes
    restored so far, and the selection's totals (0 when unknown)."""

    current_file_name: PathText = ""
    restored_file_count: Count = 0
    total_file_count: Count = 0
    restored_size: Size = 0
    total_file_size: Size = 0


class RestoreLogIn(_Model):
    """A log entry of a restore job: ``type`` ``start``/``info``/``warn``/``error``/``end``,
    ``message``, ``time`` epoch ms."""

    type: LogType
    message: Text = Field(max_length=16_384)
    time: TimeMs


class RestoreFinishIn(_Model):
    """The end of a restore job: its final ``status`` (one of the vendor's five,
    cbs-api.md §12), the counts (regular files restored and their bytes, directories, links,
    existing paths kept, paths refused by the target, entries damaged), its ``logs`` (at most
    ``MAX_RESTORE_LOGS``) and ``end_time`` (epoch ms; default now)."""

    status: Annotated[str, Field(json_schema_extra={"enum": list(_FINAL)})]
    file_count: Count = 0
    file_size: Size = 0
    dir_count: Count = 0
    link_count: Count = 0
    kept_count: Count = 0
    failed_count: Count = 0
    damaged_count: Count = 0
    logs: list[RestoreLogIn] = Field(default_factory=list, max_length=MAX_RESTORE_LOGS)
    end_time: TimeMs | None = None

    def counts(self) -> restore_jobs.RestoreCounts:
        """The counts as the store takes them."""
        return restore_jobs.RestoreCounts(**{n: getattr(self, n) for n in restore_jobs.COUNT_NAMES})


@router.post(
    _JOBS,
    status_code=201,
    summary="Start a restore job (RESTORE_STILL_RUNNING).",
    responses={**_IN_SET, 409: error_answer("A restore job with that ID exists in the set.")},
)
def start_restore_job(
    request: Request, user: User, *, set_id: SetIdPath, body: RestoreStartIn
) -> RestoreRecord:
    state = state_of(request)
    start = restore_jobs.RestoreStart(
        backup_job_id=body.backup_job_id,
        snapshot_id=body.snapshot_id,
        target=body.target,
        overwrite=body.overwrite,
        mode=body.mode,
        run_version=body.run_version,
        from_ip=request.client.host if request.client else "",
        start_ms=body.start_time,
    )
    with state.db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        dest = sets.get_destination(conn, bset, body.destination_id)
        job = restore_jobs.start_restore_job(conn, bset, dest.id, start, tz=state.tz)
        return restore_jobs.restore_record(job)


@router.get(
    _JOBS + "/{job_id}",
    summary="A restore job's status, counts and progress (a sign of life while it runs).",
    responses=_IN_SET,
)
def get_restore_job(
    request: Request, user: User, *, set_id: SetIdPath, job_id: RestoreIdPath
) -> RestoreRecord:
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        job = restore_jobs.get_restore_job(conn, bset, job_id, lock=True)
        restore_jobs.touch_restore_job(conn, job)
        return restore_jobs.restore_record(job)


@router.post(
    _JOBS + "/{job_id}/progress",
    summary="Record a restore job's progress.",
    responses={**_IN_SET, 409: error_answer("The restore job is finished.")},
)
def post_restore_progress(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    job_id: RestoreIdPath,
    body: RestoreProgressIn,
) -> RestoreRecord:
    progress = RestoreProgressRecord(**body.model_dump())
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        job = restore_jobs.get_restore_job(conn, bset, job_id, lock=True)
        return restore_jobs.restore_record(
            restore_jobs.update_restore_progress(conn, job, progress)
        )


@router.post(
    _JOBS + "/{job_id}/finish",
    summary="Finish a restore job: final status, counts, log entries, end time.",
    responses={
        **_IN_SET,
        409: error_answer(
            "Finished already with another status or counts (or closed as RESTORE_NOT_FINISHED)."
        ),
    },
)
def finish_restore_job(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    job_id: RestoreIdPath,
    body: RestoreFinishIn,
) -> RestoreRecord:
    if body.status not in _FINAL:
        raise InvalidInput(
            f"a restore job cannot be finished as {body.status}",
            f"send its final status: one of {', '.join(_FINAL)}",
        )
    logs = [restore_jobs.RestoreLog(e.type.value, e.message, e.time) for e in body.logs]
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        job = restore_jobs.get_restore_job(conn, bset, job_id, lock=True)
        if job.status != RestoreStatus.STILL_RUNNING.value:
            if job.status == body.status and job.counts == body.counts():
                return restore_jobs.restore_record(job)
            raise Conflict(f"restore job {job.job_id} is finished already ({job.status})")
        done = restore_jobs.finish_restore_job(
            conn,
            job,
            RestoreStatus(body.status),
            counts=body.counts(),
            logs=logs,
            end_ms=body.end_time,
        )
        return restore_jobs.restore_record(done)
