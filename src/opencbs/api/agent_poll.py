"""The agent API of unattended agents (``/api/agent/v1``; cbs-api.md §14): the poll for sets,
schedules and run requests, and taking a run request.

``GET /poll?wait=S&generation=G`` (``S`` 0..55 seconds, default 0; ``G`` the generation the
agent holds, optional) answers ``{"generation", "poll_interval", "server_time", "sets",
"run_requests", "waited"}``:

- ``generation``: an opaque string that changes whenever a set or schedule the agent must know
  of changes (``store.polls``); ``sets`` is ``null`` when ``G`` is the current generation,
  otherwise every set of the user that is not removed, with its resolved ``time_zone`` (the
  set's own, else the server's) and its ``schedules`` (``model.schedules.Schedule`` JSON, each
  with its ``id``);
- ``run_requests``: the pending ``RunBackup.do`` requests of the user's sets, oldest first;
- ``poll_interval``: seconds until the agent's next poll (the setting ``agent_poll_interval``;
  the agent adds some jitter); ``server_time``: epoch ms;
- ``waited``: whether the poll waited. It answers at once when ``G`` differs or a request is
  pending; otherwise it waits up to ``S`` seconds for either (``api.poll_hub``), unless the
  process already holds ``max_long_polls`` waiting polls or is stopping (answered at once,
  ``waited`` false).

Every poll records the user's ``last_seen_ms`` (ListUsers ``Online``; written at most once per
15 s per user). A waiting poll holds no thread and no database connection; it ends early when
the client goes away or the server shuts down. The server's own timeouts do not cut it: the
header and body timeouts end with the (empty) request, and the write timeout only runs while
an answer cannot be sent.

``POST /run-requests/{id}/take`` moves a pending request to ``TAKEN`` (exactly one of two
concurrent takes wins): 200 ``{"id", "set_id", "status": "TAKEN"}``; 409 when it is no longer
pending (taken already or cancelled: start no job); 404 for an unknown ID or another user's.
The agent then starts the job as usual, with mode ``R``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from opencbs.api.agent import COMMON_ANSWERS, User, error_answer
from opencbs.api.poll_hub import Waiter
from opencbs.api.state import ServerState, state_of
from opencbs.model.schedules import Schedule
from opencbs.store import polls, run_requests, schedules, sets
from opencbs.store.util import now_ms

router = APIRouter(prefix="/api/agent/v1", tags=["Agent API"], responses=COMMON_ANSWERS)

#: Longest ``wait`` of a poll (seconds): below the usual 60 s idle timeout of proxies.
MAX_WAIT = 55.0


class ScheduleOut(Schedule):
    """A schedule of a set (``model.schedules.Schedule``, cbs-api.md §13) with its ``id``."""

    id: str


class PolledSet(BaseModel):
    """A backup set as the poll shows it: ``id``, ``name``, ``time_zone`` (IANA name: the
    set's own, else the server's) and its ``schedules`` in order."""

    id: str
    name: str
    time_zone: str
    schedules: list[ScheduleOut]


class PolledRequest(BaseModel):
    """A pending run request (RunBackup.do): ``id``, the ``set_id``, ``requested_at`` (epoch
    ms) and ``requested_by`` (the system user)."""

    id: int
    set_id: str
    requested_at: int
    requested_by: str


class PollOut(BaseModel):
    """The poll's answer (module docstring)."""

    generation: str
    poll_interval: float
    server_time: int
    sets: list[PolledSet] | None = Field(
        description="null: unchanged since the generation the agent gave."
    )
    run_requests: list[PolledRequest]
    waited: bool


class TakenOut(BaseModel):
    """A run request taken: its ``id``, ``set_id`` and ``status`` (``TAKEN``)."""

    id: int
    set_id: str
    status: str


def _answer(state: ServerState, user_id: int, known: str | None) -> PollOut:
    """The poll's answer for ``user_id`` holding generation ``known``, read in one snapshot
    (``waited`` false)."""
    zone = polls.zone_name(state.tz)
    with state.db.read() as conn:
        current = polls.generations(conn, [user_id], zone)[user_id]
        pending = run_requests.pending_for_user(conn, user_id)
        listed: list[PolledSet] | None = None
        if known != current:
            user_sets = sets.list_sets(conn, user_id)
            by_set = schedules.schedules_of_sets(conn, [s.id for s in user_sets])
            listed = [
                PolledSet(
                    id=str(s.id),
                    name=s.name,
                    time_zone=polls.zone_name(schedules.set_zone(s, state.tz)),
                    schedules=[
                        ScheduleOut(id=str(row.id), **row.schedule.model_dump())
                        for row in by_set.get(s.id, [])
                    ],
                )
                for s in user_sets
            ]
    return PollOut(
        generation=current,
        poll_interval=state.agent_poll_interval,
        server_time=now_ms(),
        sets=listed,
        run_requests=[
            PolledRequest(
                id=r.id,
                set_id=str(r.set_id),
                requested_at=r.requested_at,
                requested_by=r.requested_by,
            )
            for r in pending
        ],
        waited=False,
    )


async def _until_gone(receive: Receive) -> None:
    """Return when the client disconnects (the request's body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _wait(waiter: Waiter, receive: Receive, seconds: float) -> None:
    """Wait up to ``seconds`` for ``waiter``'s event, or until the client goes away."""
    woken = asyncio.ensure_future(waiter.event.wait())
    gone = asyncio.ensure_future(_until_gone(receive))
    try:
        await asyncio.wait({woken, gone}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (woken, gone):
            task.cancel()
        await asyncio.gather(woken, gone, return_exceptions=True)


@router.get(
    "/poll",
    summary="An unattended agent's poll: its sets and schedules when changed, its pending "
    "run requests; waits up to `wait` seconds for either (cbs-api.md §14).",
)
async def get_poll(
    request: Request,
    user: User,
    *,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for news (long-poll).")
    ] = 0,
    generation: Annotated[
        str | None,
        Query(max_length=64, description="The generation the agent holds (from its last poll)."),
    ] = None,
) -> PollOut:
    state = state_of(request)
    hub = state.polls
    hub.record_seen(user.id, now_ms())
    answer = await run_in_threadpool(_answer, state, user.id, generation)
    if wait <= 0 or answer.sets is not None or answer.run_requests:
        return answer
    waiter = hub.enter(user.id, answer.generation)
    if waiter is None:  # at max_long_polls, or stopping: the agent polls again later
        return answer
    try:
        await _wait(waiter, request.receive, wait)
    finally:
        hub.leave(waiter)
    answer = await run_in_threadpool(_answer, state, user.id, generation)
    return answer.model_copy(update={"waited": True})


@router.post(
    "/run-requests/{request_id}/take",
    summary="Take a pending run request (RunBackup.do) before starting its job (mode R).",
    responses={
        404: error_answer("No such run request of the caller."),
        409: error_answer("The request is not pending (taken already, or cancelled)."),
    },
)
def post_take(
    request: Request,
    user: User,
    *,
    request_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The run request's ID.")],
) -> TakenOut:
    state = state_of(request)
    with state.db.write() as conn:
        taken = run_requests.take(conn, user.id, request_id, at_ms=now_ms())
    return TakenOut(id=taken.id, set_id=str(taken.set_id), status=taken.status.value)
