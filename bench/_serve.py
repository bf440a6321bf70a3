"""Launch a server for the benchmark (used by ``bench/report_server.py``; not a public entry).

``_serve.py opencbs --database-url URL --port N``: the opencbs app (``create_app``) over ``URL``,
times in UTC, on uvicorn with the installed defaults (uvloop, httptools), one process.
``_serve.py peer --port N``: the peer, a bare Starlette endpoint answering a constant JSON
object on the same uvicorn settings (the framework's ceiling for a small answer).
"""

from __future__ import annotations

import argparse
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_CONSTANT = (
    b'{"Status":"OK","Data":{"ID":"2024-01-01-00-00-00","FromIp":"10.0.0.1",'
    b'"BackupJobStatus":"BS_STOP_SUCCESS","NumOfNewFiles":1}}'
)


def peer_app() -> Starlette:
    """A Starlette app answering the constant object at any ``/obs/api/json/<Name>.do``."""

    async def constant(request: Request) -> Response:
        await request.body()  # read the body like the real server does
        return Response(_CONSTANT, media_type="application/json; charset=utf-8")

    return Starlette(routes=[Route("/obs/api/json/{name}", constant, methods=["GET", "POST"])])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["opencbs", "peer"])
    ap.add_argument("--database-url", default="")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    app: Starlette
    if args.kind == "peer":
        app = peer_app()
    else:
        from opencbs.api.app import create_app
        from opencbs.api.state import ServerState
        from opencbs.store.db import Database

        state = ServerState(
            db=Database(args.database_url),
            tz=ZoneInfo("UTC"),
            job_idle_timeout=10**9,
            sweep_interval=3600,
        )
        app = create_app(state)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
