"""``opencbs serve``: upgrade the schema, then serve the CBS JSON API and the agent API (over
HTTPS when ``tls_certificate`` and ``tls_key`` are set, checked before anything else)."""

from __future__ import annotations

import signal
import socket

import click

from opencbs.cli.common import TIMEZONE, log_full_records, open_database, with_settings
from opencbs.errors import ExitCode
from opencbs.settings import Settings
from opencbs.store.db import Database

HOST = click.option(
    "--host", default=None, help="Address to bind [env OPENCBS_HOST; default 127.0.0.1]."
)
PORT = click.option(
    "--port", type=int, default=None, help="TCP port [env OPENCBS_PORT; default 8530]."
)
IDLE = click.option(
    "--job-idle-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Close a running job silent this long as BS_BACKUP_NOT_FINISHED "
    "[env OPENCBS_JOB_IDLE_TIMEOUT; default 3600].",
)

HEADER_TIMEOUT = click.option(
    "--header-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Disconnect a client that takes longer to send a request's headers "
    "[env OPENCBS_HEADER_TIMEOUT; default 10].",
)
BODY_TIMEOUT = click.option(
    "--body-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Drop a request whose body stalls this long [env OPENCBS_BODY_TIMEOUT; default 30].",
)
WRITE_TIMEOUT = click.option(
    "--write-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Drop a client that takes nothing of its answer this long "
    "[env OPENCBS_WRITE_TIMEOUT; default 30].",
)
KEEPALIVE_TIMEOUT = click.option(
    "--keepalive-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Close an idle keep-alive connection after this long "
    "[env OPENCBS_KEEPALIVE_TIMEOUT; default 5].",
)
MAX_CONNECTIONS = click.option(
    "--max-connections",
    type=int,
    default=None,
    metavar="N",
    help="Answer 503 beyond N open connections or running requests "
    "[env OPENCBS_MAX_CONNECTIONS; default 1000].",
)
MAX_PER_ADDRESS = click.option(
    "--max-connections-per-address",
    type=int,
    default=None,
    metavar="N",
    help="Reset connections of one client address beyond N open ones (trusted proxies "
    "excepted) [env OPENCBS_MAX_CONNECTIONS_PER_ADDRESS; default 100].",
)
TLS_CERTIFICATE = click.option(
    "--tls-certificate",
    default=None,
    metavar="PATH",
    help="PEM certificate chain: serve HTTPS (with --tls-key) [env OPENCBS_TLS_CERTIFICATE].",
)
TLS_KEY = click.option(
    "--tls-key",
    default=None,
    metavar="PATH",
    help="PEM private key of --tls-certificate [env OPENCBS_TLS_KEY].",
)
TRUSTED_PROXIES = click.option(
    "--trusted-proxies",
    default=None,
    metavar="ADDRS",
    help="Comma-separated reverse-proxy addresses whose X-Forwarded-For is believed "
    "[env OPENCBS_TRUSTED_PROXIES; default none].",
)
#: The options of every command that serves (``serve``, ``demo``, ``quickstart`` may add them).
NETWORK_OPTIONS = (
    HEADER_TIMEOUT,
    BODY_TIMEOUT,
    WRITE_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_PER_ADDRESS,
    TLS_CERTIFICATE,
    TLS_KEY,
    TRUSTED_PROXIES,
)


def serve_database(
    settings: Settings, database: Database, *, sock: socket.socket | None = None
) -> int:
    """Serve ``database`` (schema upgraded already) with ``settings`` on ``sock`` (bound
    already) or ``settings.host:port`` until stopped; returns the exit code (:func:`stop_code`).
    Raises ``ConfigError`` for unusable TLS files (before serving)."""
    log_full_records()  # a server's log: with time and logger
    # imported here: the web stack is not needed by the other commands, which start faster
    from opencbs.api.serve import run_server, tls_context
    from opencbs.api.state import ServerState

    tls = tls_context(settings.tls_certificate, settings.tls_key)
    state = ServerState.from_settings(database, settings)
    return stop_code(run_server(state, settings, tls=tls, sock=sock))


def stop_code(stopped_by: int | None) -> int:
    """The exit code of a server (``serve``, ``demo``, ``quickstart`` while serving) stopped by
    signal ``stopped_by``: 130 (interrupted) for Ctrl-C (SIGINT), as the shell expects of a
    command the user interrupted (a script's loop stops too); 0 for SIGTERM, how a service
    manager (systemd, Docker) ends a server normally; 0 when it stopped on its own."""
    return ExitCode.INTERRUPTED if stopped_by == signal.SIGINT else ExitCode.SUCCESS


@click.command()
@with_settings(HOST, PORT, TIMEZONE, IDLE, *NETWORK_OPTIONS)
def serve(settings: Settings) -> int:
    """Serve the CBS JSON API (/obs/api/json/), the agent API and the docs (/docs) until
    Ctrl-C (exit code 130) or SIGTERM (exit code 0)."""
    from opencbs.api.serve import tls_context

    tls_context(settings.tls_certificate, settings.tls_key)  # unusable files: exit 2 first
    database = open_database(settings)  # upgrades the schema first
    try:
        return serve_database(settings, database)
    finally:
        database.dispose()
