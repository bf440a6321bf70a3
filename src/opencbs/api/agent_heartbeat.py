"""The agent API's heartbeat of a running job (``/api/agent/v1``; cbs-api.md §9, "The agent's
heartbeat").

``POST /backup-sets/{set_id}/destinations/{destination_id}/jobs/{job_id}/heartbeat`` (no body;
``?cdp=true`` for the continuous-backup job of that ID) is a sign of life of a running job: its
silence starts again (``store.jobs.touch_job``). The agent sends one every
``heartbeat_interval`` seconds (the job start's answer says how often: a quarter of the server's
``job_heartbeat_timeout``) from a thread of its own for as long as the job runs, whatever the
job is doing (a long read of one file, an upload, a retention run), so a job is closed as
``BS_BACKUP_NOT_FINISHED`` only when its agent is gone (``api.app.sweep_once``).

Answer: ``{"job_id", "status": "BS_STILL_RUNNING", "heartbeat_interval"}`` (seconds). A job
that is not running any more is a 409 naming its status (the sweeper closed it: the agent
then knows its report will be refused); a set of another user, an unknown set, destination
or job a 404; authentication and the other errors as the rest of the agent API
(``api/agent.py``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from opencbs.api.agent import (
    COMMON_ANSWERS,
    CdpQuery,
    DestIdPath,
    JobIdPath,
    SetIdPath,
    User,
    error_answer,
)
from opencbs.api.state import state_of
from opencbs.errors import Conflict
from opencbs.reports.vocabulary import JobStatus
from opencbs.store import job_queries, jobs, sets

router = APIRouter(prefix="/api/agent/v1", tags=["Agent API"], responses=COMMON_ANSWERS)


class HeartbeatOut(BaseModel):
    """A heartbeat taken: the job's ID and status (``BS_STILL_RUNNING``) and the seconds
    until the next heartbeat is due (``heartbeat_interval``)."""

    job_id: str
    status: str
    heartbeat_interval: float


@router.post(
    "/backup-sets/{set_id}/destinations/{destination_id}/jobs/{job_id}/heartbeat",
    summary="A running job's sign of life, sent every heartbeat_interval seconds while it runs.",
    responses={
        404: error_answer(
            "No such set of the caller (another user's set is not found), destination or job."
        ),
        409: error_answer("The job is not running (finished, or closed by the server)."),
    },
)
def post_heartbeat(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    job_id: JobIdPath,
    cdp: CdpQuery = False,
) -> HeartbeatOut:
    state = state_of(request)
    with state.db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        dest = sets.get_destination(conn, bset, destination_id)
        job = job_queries.find_job(conn, bset, str(dest.id), job_id, cdp=cdp)
        jobs.reopen_if_silent(conn, job.pk)  # its agent speaks: a job closed for silence runs
        if not jobs.touch_job(conn, job.pk):
            raise Conflict(
                f"backup job {job.job_id} is not running ({job.status})",
                "the server closed it; its report is refused from now on",
            )
    return HeartbeatOut(
        job_id=job.job_id,
        status=JobStatus.STILL_RUNNING.value,
        heartbeat_interval=state.heartbeat_interval,
    )
