"""Running the server: uvicorn with the app of ``opencbs.api.app.create_app``.

The app is wrapped so that an absolute-form request target (``POST http://host:port/obs/api/
json/X.do HTTP/1.1``, cbs-api.md §1) is routed by its path whichever HTTP parser uvicorn uses.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from opencbs.api.app import create_app
from opencbs.api.state import ServerState

log = logging.getLogger(__name__)


class AbsoluteFormPaths:
    """ASGI middleware: a request whose path is an absolute URL (``http://host:port/p``) is
    served as a request for ``/p`` (cbs-api.md §1, "Request line")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if path.startswith(("http://", "https://")):
                scope = dict(scope)
                scope["path"] = urlsplit(path).path or "/"
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = (urlsplit(raw.decode("latin-1")).path or "/").encode(
                        "latin-1")
        await self.app(scope, receive, send)


def build_app(state: ServerState) -> ASGIApp:
    """The ASGI application served for ``state``: ``create_app(state)`` behind
    ``AbsoluteFormPaths``."""
    return AbsoluteFormPaths(create_app(state))


def run_server(state: ServerState, *, host: str, port: int, log_level: str = "INFO") -> None:
    """Serve ``state`` on ``host:port`` until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    config = uvicorn.Config(
        build_app(state),
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=_log_config(log_level),
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    log.info("opencbs serving on http://%s:%d (API docs at /docs)", host, port)
    uvicorn.Server(config).run()


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's loggers to stderr in our one-line format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["stderr"], "level": level.upper(),
                               "propagate": False},
        },
    }
