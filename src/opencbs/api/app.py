"""The server application: the CBS JSON API, the agent API, the job sweeper and the
missed-backup sweep."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

import opencbs
from opencbs import notify
from opencbs.api import cbs_alerts as _cbs_alerts  # noqa: F401 - registers calls
from opencbs.api import cbs_jobs as _cbs_jobs  # noqa: F401 - registers calls
from opencbs.api import cbs_reports as _cbs_reports  # noqa: F401 - registers calls
from opencbs.api import cbs_restore as _cbs_restore  # noqa: F401 - registers calls
from opencbs.api import cbs_runs as _cbs_runs  # noqa: F401 - registers calls
from opencbs.api import cbs_schedules as _cbs_schedules  # noqa: F401 - registers calls
from opencbs.api import cbs_sets as _cbs_sets  # noqa: F401 - registers calls
from opencbs.api import cbs_storage as _cbs_storage  # noqa: F401 - registers calls
from opencbs.api import cbs_users as _cbs_users  # noqa: F401 - registers calls
from opencbs.api import envelope, pages, redact
from opencbs.api.admin import router as admin_router
from opencbs.api.agent import router as agent_router
from opencbs.api.agent_heartbeat import router as agent_heartbeat_router
from opencbs.api.agent_poll import router as agent_poll_router
from opencbs.api.agent_restore import router as agent_restore_router
from opencbs.api.agent_storage import router as agent_storage_router
from opencbs.api.auth import ClientAddress
from opencbs.api.limits import BodyTooLarge, GuardBodies
from opencbs.api.routes import PREFIX, mount_cbs
from opencbs.api.state import ServerState
from opencbs.errors import OpenCBSError
from opencbs.notify.alerts import job_ended
from opencbs.settings import Settings
from opencbs.store import jobs, missed, polls, restore_jobs
from opencbs.store.util import now_ms

log = logging.getLogger(__name__)


def sweep_once(state: ServerState) -> list[str]:
    """Close the running backup jobs without a sign of life (a heartbeat, a batch, progress)
    for longer than ``state.job_timeout`` seconds as ``BS_BACKUP_NOT_FINISHED``, and the
    running restore jobs silent for ``state.job_idle_timeout`` seconds as
    ``RESTORE_NOT_FINISHED`` (a restore sends progress, no heartbeat); their job IDs. Silence
    before this process started does not count for backup jobs (``ServerState.started_ms``):
    none is closed until the timeout has passed since then, so the agents that could not reach
    a stopped server have sent their next heartbeat first."""
    timeout_ms = int(state.job_timeout * 1000)
    with state.db.write() as conn:
        closed: list[str] = []
        at = now_ms()
        if at - state.started_ms > timeout_ms:
            closed = jobs.close_stale_jobs(
                conn, timeout_ms, at_ms=at, on_closed=partial(job_ended, at_ms=at)
            )
        restores = restore_jobs.close_stale_restore_jobs(conn, int(state.job_idle_timeout * 1000))
    for job_id in closed:
        log.warning(
            "backup job %s: no heartbeat or report from its agent for %.0f s (killed, or "
            "it lost the server): closed as BS_BACKUP_NOT_FINISHED",
            job_id,
            state.job_timeout,
        )
    for job_id in restores:
        log.warning(
            "restore job %s sent nothing for %.0f s: closed as RESTORE_NOT_FINISHED",
            job_id,
            state.job_idle_timeout,
        )
    return closed + restores


#: Missed slots logged one by one per sweep; the rest in one line.
_MISSED_LOGGED = 20
#: Sweeps run back to back while slots stay due (each bounded), before the loop sleeps.
_MISSED_REPEATS = 50


def sweep_missed_once(state: ServerState, *, at_ms: int | None = None) -> missed.SweepOutcome:
    """Record the schedule slots that no backup job answered within
    ``state.missed_backup_grace`` seconds as ``BS_STOP_MISSED_BACKUP`` jobs
    (``store.missed.sweep_missed``, at most ``MAX_SLOTS_PER_SWEEP`` slots), at ``at_ms``
    (epoch ms, default now), and log them. Nothing is judged until the grace has passed since
    this process started (``ServerState.started_ms``): the jobs agents ran while no server
    answered arrive from their spools once they reach it again."""
    at = now_ms() if at_ms is None else at_ms
    grace_ms = int(state.missed_backup_grace * 1000)
    if at - state.started_ms < grace_ms:
        return missed.SweepOutcome()
    outcome = missed.sweep_missed(
        state.db, now_ms=at, grace_ms=grace_ms, tz=state.tz, on_job_ended=job_ended
    )
    for slot in outcome.recorded[:_MISSED_LOGGED]:
        log.warning(
            "backup set %s: schedule %r had no backup job within %.0f s of its slot %s: "
            "recorded as BS_STOP_MISSED_BACKUP (job %s, %d destination(s))",
            slot.set_id,
            slot.schedule_name,
            state.missed_backup_grace,
            state.log_time(slot.slot_ms),
            slot.job_id,
            len(slot.job_pks),
        )
    if len(outcome.recorded) > _MISSED_LOGGED:
        log.warning(
            "and %d more missed slots recorded as BS_STOP_MISSED_BACKUP",
            len(outcome.recorded) - _MISSED_LOGGED,
        )
    return outcome


async def _sweeper(state: ServerState) -> None:
    while True:
        try:
            await run_in_threadpool(sweep_once, state)
        except Exception:  # noqa: BLE001 - keep sweeping; the error is logged
            log.exception("job sweep failed")
        try:
            for _ in range(_MISSED_REPEATS):  # slots left by a sweep's bound: go on at once
                if not (await run_in_threadpool(sweep_missed_once, state)).more:
                    break
        except Exception:  # noqa: BLE001 - keep sweeping; the error is logged
            log.exception("missed-backup sweep failed")
        await asyncio.sleep(state.sweep_interval)


async def _notifier(state: ServerState, settings: Settings) -> None:
    """Every ``state.alert_interval`` seconds: the alerts' round (``notify.run_once``: the
    NO_SUCCESS check, the digests, the due alerts sent), apart from the job sweep so a slow
    SMTP server or webhook never delays it."""
    while True:
        try:
            await run_in_threadpool(
                partial(notify.run_once, state.db, settings, now_ms=now_ms(), clock=now_ms)
            )
        except Exception:  # noqa: BLE001 - keep going; the error is logged
            log.exception("alert round failed")
        await asyncio.sleep(state.alert_interval)


@asynccontextmanager
async def _background(state: ServerState) -> AsyncIterator[None]:
    """While the app serves: the job sweeper, the agents' poll watcher (``api.poll_hub``) and
    the alerts' round (``_notifier``, when the state has settings).
    At the end the waiting long-polls answer, the watcher stops and the agents' last
    sightings are written."""
    tasks = [
        asyncio.create_task(_sweeper(state)),
        asyncio.create_task(state.polls.run(state.db, polls.zone_name(state.tz))),
    ]
    if state.settings is not None:
        tasks.append(asyncio.create_task(_notifier(state, state.settings)))
    try:
        yield
    finally:
        state.polls.close()  # long-polls answer now (api.serve closes it sooner)
        for running in tasks:
            running.cancel()
            with suppress(asyncio.CancelledError):
                await running
        try:
            await state.polls.flush_seen(state.db)
        except Exception:  # noqa: BLE001 - stopping anyway; the error is logged
            log.exception("could not record when agents were last seen")


def create_app(state: ServerState) -> FastAPI:
    """The ASGI app serving ``state``'s database."""

    redact.install()

    app = FastAPI(
        title="opencbs",
        version=opencbs.__version__,
        description="Backup job reports over the AhsayCBS JSON API (under /obs/api/json/), and "
        "the agent API through which backup agents deliver them (/api/agent/v1/).",
        lifespan=lambda _app: _background(state),
        docs_url=None,  # served by api.pages from the package (no CDN)
        redoc_url=None,
    )
    app.state.opencbs = state

    @app.exception_handler(OpenCBSError)
    async def _opencbs_error(request: Request, exc: OpenCBSError) -> Response:
        if request.url.path.startswith(PREFIX):
            return envelope.error(exc)
        return agent_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(
            {
                "error": "invalid_input",
                "message": "the request is invalid",
                "detail": _safe_errors(exc),
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(app, request)
        return JSONResponse(
            {"error": "http", "message": str(exc.detail), "hint": ""},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        answer = envelope.internal_error(exc)  # logged with its reference
        if request.url.path.startswith(PREFIX):
            return answer
        message = json.loads(bytes(answer.body))["Message"].removeprefix("[Error] ")
        return JSONResponse(
            {"error": "internal", "message": message, "hint": "report it with that reference"},
            status_code=500,
        )

    mount_cbs(app)
    app.include_router(agent_router)
    app.include_router(agent_heartbeat_router)
    app.include_router(agent_storage_router)
    app.include_router(agent_restore_router)
    app.include_router(agent_poll_router)
    app.include_router(admin_router)
    pages.install(app)  # /, /healthz, /readyz, /docs
    app.add_middleware(GuardBodies, state=state, agent_error=agent_error)
    app.add_middleware(ClientAddress)  # outermost: the address is known to everything inside
    return app


def agent_error(exc: OpenCBSError) -> Response:
    """An agent (or admin) API error: ``{"error", "message", "hint"}`` with its HTTP status
    (and ``Retry-After`` for a 429)."""
    status = _agent_status(exc)
    headers = dict(envelope.retry_headers(exc) or {})
    if status == 401:  # the challenge clients wait for before they send credentials
        headers["WWW-Authenticate"] = 'Basic realm="opencbs", charset="UTF-8"'
    return JSONResponse(
        {"error": exc.code, "message": exc.message, "hint": exc.hint},
        status_code=status,
        headers=headers,
    )


def _allowed(app: FastAPI, request: Request) -> str:
    """The ``Allow`` header of a 405: the methods of every documented route of that path
    (Starlette names only the first route's, and each method is a route of its own)."""
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            if route.matches(request.scope)[0] is not Match.NONE:
                methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _agent_status(exc: OpenCBSError) -> int:
    from opencbs import errors as e

    if isinstance(exc, (e.AuthUserRejected, e.CredentialsRejected)):
        return 401
    if isinstance(exc, e.NotFound):
        return 404
    if isinstance(exc, e.Conflict):
        return 409
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, e.StoreError):
        return 503
    if isinstance(exc, e.ServerBusy):
        return 429
    return 400


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors()[:20]:
        out.append({"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))})
    return out
