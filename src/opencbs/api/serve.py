"""Running the server: uvicorn with the app of ``opencbs.api.app.create_app``.

The app is wrapped so that an absolute-form request target (``POST http://host:port/obs/api/
json/X.do HTTP/1.1``, cbs-api.md §1) is routed by its path whichever HTTP parser uvicorn uses.
The connection is bounded by the settings ``header_timeout``, ``body_timeout`` (``api.timeouts``),
``keepalive_timeout`` and ``max_connections``; with ``tls_certificate`` and ``tls_key`` the server
speaks HTTPS itself; ``trusted_proxies`` names the reverse proxies whose ``X-Forwarded-For`` is
believed (README, "Running the server on the internet").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from opencbs.api.app import create_app
from opencbs.api.state import ServerState
from opencbs.api.timeouts import timed_protocol
from opencbs.errors import ConfigError
from opencbs.security import map_large_allocations
from opencbs.settings import Settings

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


#: Connections the kernel queues before the server accepts them (``listen`` backlog; the
#: kernel caps it at ``net.core.somaxconn``).
BACKLOG = 2048


def tls_context(certificate: str, key: str) -> ssl.SSLContext | None:
    """The server's TLS context from the PEM files ``certificate`` (the chain, leaf first) and
    ``key`` (unencrypted private key), TLS 1.2 or newer; ``None`` when both are empty (plain
    HTTP). Raises ``ConfigError`` (exit code 2) naming the setting when only one is set, a file
    cannot be read, or they are not a PEM certificate and its matching key."""
    if not certificate and not key:
        return None
    if not certificate or not key:
        given, missing = ("tls_key", "tls_certificate") if key else ("tls_certificate", "tls_key")
        raise ConfigError(
            f"{given} is set but {missing} is not",
            "set both --tls-certificate and --tls-key (OPENCBS_TLS_CERTIFICATE, "
            "OPENCBS_TLS_KEY), or neither to serve plain HTTP",
        )
    for name, path in (("tls_certificate", certificate), ("tls_key", key)):
        _check_readable(name, path)
    _check_certificate(certificate)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key, password=_no_key_password)
    except (ssl.SSLError, OSError, _EncryptedKey) as exc:
        raise ConfigError(
            f"cannot use the TLS key {key} with the certificate {certificate}: {_key_reason(exc)}",
            "give the certificate's own unencrypted PEM private key in --tls-key / OPENCBS_TLS_KEY",
        ) from exc
    return context


class _EncryptedKey(Exception):
    def __str__(self) -> str:
        return "the private key is encrypted (give it unencrypted, readable by this user only)"


def _no_key_password() -> bytes:
    raise _EncryptedKey


def _check_readable(name: str, path: str) -> None:
    try:
        with Path(path).open("rb") as f:
            f.read(1)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise ConfigError(
            f"cannot read the {name} file {path}: {why}",
            f"check --{name.replace('_', '-')} / OPENCBS_{name.upper()} and the file's "
            "permissions (readable by the user running the server)",
        ) from exc


def _check_certificate(path: str) -> None:
    """Raise ``ConfigError`` unless ``path`` holds a PEM certificate."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"cannot use the TLS certificate {path}: it holds no PEM certificate",
            "give the server's certificate chain (PEM, leaf first) in --tls-certificate / "
            "OPENCBS_TLS_CERTIFICATE",
        ) from exc


def _key_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    if isinstance(exc, ssl.SSLError):
        return "it holds no PEM private key (or not the certificate's first)"
    return str(exc) or type(exc).__name__


def trusted_proxies(value: str) -> list[str]:
    """The entries of the setting ``trusted_proxies`` (comma-separated addresses or networks)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def uvicorn_config(
    app: ASGIApp,
    settings: Settings,
    *,
    tls: ssl.SSLContext | None,
    log_level: str,
    on_shutdown: tuple[Callable[[], None], ...] = (),
) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` under ``settings``: the timeouts (seconds) and the
    connection limit, TLS when ``tls`` is given, forwarded addresses believed only from
    ``trusted_proxies``, ``on_shutdown`` run when a graceful stop begins (``api.timeouts``)."""
    proxies = trusted_proxies(settings.trusted_proxies)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=timed_protocol(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            write_timeout=settings.write_timeout,
            max_per_address=settings.max_connections_per_address,
            unlimited=tuple(proxies),
            on_shutdown=on_shutdown,
        ),
        log_level=log_level.lower(),
        log_config=_log_config(log_level),
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        server_header=False,
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]
        limit_concurrency=settings.max_connections,
        backlog=BACKLOG,
        timeout_graceful_shutdown=10,
        ssl_context_factory=None if tls is None else (lambda _config, _default: tls),
    )


def run_server(
    state: ServerState,
    settings: Settings,
    *,
    tls: ssl.SSLContext | None = None,
    sock: socket.socket | None = None,
) -> signal.Signals | None:
    """Serve ``state`` on ``sock`` (bound already, e.g. by ``listen_socket``; closed at the end)
    or else on ``settings.host:port`` (HTTPS with ``tls``, from ``tls_context``) until SIGINT
    or SIGTERM stops it cleanly; returns that signal (``None``: the server stopped on its own).
    The log names the port bound (the real one for port 0). The socket is bound first, so an
    address that cannot be used is one ``CannotListen`` error (exit code 2) before uvicorn
    starts. In the main thread the signal is taken here, not re-raised after the shutdown
    (uvicorn re-raises it): the command decides its exit code (``cli.serve``)."""
    host = settings.host
    if sock is None:
        sock = listen_socket(host, settings.port)
    map_large_allocations()  # password hashing's work areas go back to the system when freed
    config = uvicorn_config(
        build_app(state),
        settings,
        tls=tls,
        log_level=settings.log_level,
        on_shutdown=(state.polls.close,),  # waiting long-polls answer as the stop begins
    )
    scheme = "https" if tls is not None else "http"
    log.info(
        "opencbs serving on %s://%s (API docs at /docs)", scheme, _host_port(host, sock_port(sock))
    )
    stopped: list[int] = []
    try:
        with _signals_taken(stopped):
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return signal.Signals(stopped[0]) if stopped else None


@contextlib.contextmanager
def _signals_taken(stopped: list[int]) -> Iterator[None]:
    """While serving: SIGINT and SIGTERM, once uvicorn has shut down on them and re-raises
    them, are appended to ``stopped`` instead of ending the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, _frame: stopped.append(signum)) for s in kinds}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def sock_port(sock: socket.socket) -> int:
    """The TCP port ``sock`` is bound to."""
    return int(sock.getsockname()[1])


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
