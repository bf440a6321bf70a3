"""Running the server: uvicorn with the app of ``opencbs.api.app.create_app``.

The app is wrapped so that an absolute-form request target (``POST http://host:port/obs/api/
json/X.do HTTP/1.1``, cbs-api.md §1) is routed by its path whichever HTTP parser uvicorn uses.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from opencbs.api.app import create_app
from opencbs.api.state import ServerState
from opencbs.errors import ConfigError

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
                        "latin-1"
                    )
        await self.app(scope, receive, send)


def build_app(state: ServerState) -> ASGIApp:
    """The ASGI application served for ``state``: ``create_app(state)`` behind
    ``AbsoluteFormPaths``."""
    return AbsoluteFormPaths(create_app(state))


class CannotListen(ConfigError):
    """``host:port`` cannot be bound (in use, not this machine's address, privileged port,
    unknown host). ``errno`` is the OS error number (0 when the host name is unknown)."""

    code = "cannot_listen"

    def __init__(self, host: str, port: int, reason: str, number: int) -> None:
        super().__init__(
            f"cannot listen on {_host_port(host, port)}: {reason}",
            _HINTS.get(number, "choose another --host / OPENCBS_HOST or --port / OPENCBS_PORT"),
        )
        self.errno = number


_HINTS = {
    errno.EADDRINUSE: "another program uses that port (an `opencbs serve` or `opencbs "
    "quickstart` still running?); stop it or choose another --port / "
    "OPENCBS_PORT",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's; choose another --host / "
    "OPENCBS_HOST (127.0.0.1, or 0.0.0.0 for every address)",
    errno.EACCES: "ports below 1024 need privileges; choose a --port / OPENCBS_PORT of 1024 "
    "or above",
}


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port`` 0: a free one), ``SO_REUSEADDR`` set and
    inheritable, ready for ``uvicorn.Server.run(sockets=[...])`` (which listens on it). Raises
    ``CannotListen`` (exit code 2) with the reason in words ("address already in use")."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CannotListen(host, port, f"unknown host ({exc.strerror})", 0) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise CannotListen(host, port, reason, exc.errno or 0) from exc
    sock.set_inheritable(True)
    return sock


def run_server(state: ServerState, *, host: str, port: int, log_level: str = "INFO") -> None:
    """Serve ``state`` on ``host:port`` until interrupted (SIGINT/SIGTERM stop it cleanly).
    The socket is bound first, so an address that cannot be used is one ``CannotListen``
    error (exit code 2) before uvicorn starts."""
    sock = listen_socket(host, port)
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
    log.info("opencbs serving on http://%s (API docs at /docs)", _host_port(host, port))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's loggers to stderr in our one-line format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
