"""``opencbs serve``: upgrade the schema, then serve the CBS JSON API and the agent API."""

from __future__ import annotations

import click

from opencbs.cli.common import TIMEZONE, open_database, with_settings
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


def serve_database(settings: Settings, database: Database) -> None:
    """Serve ``database`` (schema upgraded already) with ``settings`` until interrupted."""
    # imported here: the web stack is not needed by the other commands, which start faster
    from opencbs.api.auth import VerifiedCache
    from opencbs.api.serve import run_server
    from opencbs.api.state import ServerState

    state = ServerState(
        db=database,
        tz=settings.tz(),
        job_idle_timeout=settings.job_idle_timeout,
        auth_cache=VerifiedCache.from_settings(settings),
    )
    run_server(state, host=settings.host, port=settings.port, log_level=settings.log_level)


@click.command()
@with_settings(HOST, PORT, TIMEZONE, IDLE)
def serve(settings: Settings) -> None:
    """Serve the CBS JSON API (/obs/api/json/), the agent API and the docs (/docs)."""
    database = open_database(settings)  # upgrades the schema first
    try:
        serve_database(settings, database)
    finally:
        database.dispose()
