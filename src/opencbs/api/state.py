"""What the HTTP handlers share: the database, the server's time zone, the auth cache and the
job settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from starlette.requests import Request

from opencbs.api.auth import VerifiedCache
from opencbs.reports.timefmt import LogTimeFormatter
from opencbs.settings import Settings
from opencbs.store.db import Database


@dataclass
class ServerState:
    """Shared state of one server process.

    ``job_idle_timeout``: seconds without a sign of life after which a running job is closed
    as ``BS_BACKUP_NOT_FINISHED``; ``sweep_interval``: seconds between such checks;
    ``write_timeout``: seconds a streamed report waits for its client to take each chunk
    before the client is dropped (``api.streaming``).
    """

    db: Database
    tz: tzinfo
    job_idle_timeout: float = 3600.0
    sweep_interval: float = 60.0
    auth_cache: VerifiedCache = field(default_factory=VerifiedCache)
    write_timeout: float = 30.0

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> ServerState:
        """The state of a server of ``db`` run with ``settings`` (time zone, job idle timeout,
        report write timeout, lockout and hashing settings): what every command that serves
        (``serve``, ``demo``, ``quickstart``) builds."""
        return cls(
            db=db,
            tz=settings.tz(),
            job_idle_timeout=settings.job_idle_timeout,
            auth_cache=VerifiedCache.from_settings(settings),
            write_timeout=settings.write_timeout,
        )

    def __post_init__(self) -> None:
        self.log_time = LogTimeFormatter(self.tz)
        # a job idle for job_idle_timeout is closed within about a quarter of that time more
        self.sweep_interval = min(self.sweep_interval, max(self.job_idle_timeout / 4, 0.5))


def state_of(request: Request) -> ServerState:
    """The server state of the app that received ``request``."""
    st: ServerState = request.app.state.opencbs
    return st
