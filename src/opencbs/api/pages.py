"""The server's own pages: ``GET /`` (what this server is), ``/healthz`` (liveness),
``/readyz`` (readiness) and the API docs at ``/docs``, served from the package.

- ``/healthz``: 200 ``{"status": "ok"}`` while the process serves; never touches the database
  (for a supervisor or a load balancer deciding whether to restart the process).
- ``/readyz``: 200 ``{"status": "ready"}`` when the database answers within
  ``READY_TIMEOUT`` seconds and its schema is at this version's migration head
  (``store.migrate.readiness_problem``); else 503 ``{"status": "unavailable", "problem": ...}``
  (for a load balancer deciding whether to send requests here).
- ``/docs``: Swagger UI over ``/openapi.json`` with its script, style and icon from the
  ``swagger-ui-bundle`` package under ``/docs/static/`` (no CDN: the docs render offline).
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

import opencbs
from opencbs.api.state import state_of
from opencbs.store.migrate import readiness_problem

#: Where the API docs' static files are served.
DOCS_STATIC = "/docs/static"
#: Seconds ``/readyz`` waits for the database before answering 503.
READY_TIMEOUT = 5.0
CBS_PATH = "/obs/api/json/"
AGENT_PATH = "/api/agent/v1/"

router = APIRouter(tags=["Server"])

_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The process serves.", "content": {"application/json": {}}},
}
_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The database answers and its schema is current."},
    503: {
        "description": "Not ready: `problem` says why (database unreachable or busy, schema "
        "not at this version's revision).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["unavailable"]},
                        "problem": {"type": "string"},
                    },
                    "required": ["status", "problem"],
                }
            }
        },
    },
}


@router.head("/healthz", include_in_schema=False)  # probes that ask with HEAD
@router.get("/healthz", responses=_HEALTH_RESPONSES, summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 `{"status": "ok"}` while the server process serves; the database is not asked."""
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", responses=_READY_RESPONSES, summary="Readiness")
async def readyz(request: Request) -> Response:
    """200 `{"status": "ready"}` when the database answers and its schema is current; else
    503 `{"status": "unavailable", "problem": …}`."""
    db = state_of(request).db
    try:
        problem = await asyncio.wait_for(run_in_threadpool(readiness_problem, db), READY_TIMEOUT)
    except TimeoutError:
        problem = f"the database did not answer within {READY_TIMEOUT:.0f} s"
    if problem is None:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable", "problem": problem}, status_code=503)


@router.head("/", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def home() -> HTMLResponse:
    """A small page naming the server, its version, its APIs and its docs."""
    return HTMLResponse(home_page())


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI over ``/openapi.json``, every file from this server."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title=f"opencbs {opencbs.__version__} — API docs",
        swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon-32x32.png",
    )


def home_page() -> str:
    """The HTML of ``GET /``."""
    version = html.escape(opencbs.__version__)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>opencbs {version}</title></head>
<body>
<h1>opencbs {version}</h1>
<p>An open-source backup server speaking the AhsayCBS JSON API.</p>
<ul>
<li>CBS JSON API: <code>{CBS_PATH}&lt;Name&gt;.do</code></li>
<li>Agent API: <code>{AGENT_PATH}</code></li>
<li>API docs: <a href="docs">/docs</a></li>
<li>OpenAPI schema: <a href="openapi.json">/openapi.json</a></li>
<li>Health: <a href="healthz">/healthz</a>, readiness: <a href="readyz">/readyz</a></li>
</ul>
</body></html>
"""


def install(app: FastAPI) -> None:
    """Add the pages to ``app`` (created with ``docs_url=None``) and serve the docs' static
    files from the ``swagger-ui-bundle`` package."""
    app.mount(DOCS_STATIC, StaticFiles(directory=swagger_ui_path), name="docs-static")
    app.include_router(router)
