"""What the HTTP handlers share: the database, the server's time zone, the auth cache and the
job settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from starlette.requests import Request

from opencbs.api.auth import VerifiedCache
from opencbs.api.poll_hub import PollHub
from opencbs.reports.timefmt import LogTimeFormatter
from opencbs.settings import Settings
from opencbs.store.db import Database
from opencbs.store.util import now_ms


@dataclass
class ServerState:
    """Shared state of one server process.

    ``job_idle_timeout``: seconds without a sign of life after which a running job is closed
    as ``BS_BACKUP_NOT_FINISHED``; ``job_heartbeat_timeout``: the same after missed heartbeats
    (``0``: off; the smaller of the two applies: :attr:`job_timeout`); ``sweep_interval``:
    seconds between such checks; ``write_timeout``: seconds a streamed report waits for its
    client to take each chunk before the client is dropped (``api.streaming``);
    ``started_ms``: when this process started (epoch ms): the sweep counts no job's silence
    from before it (a server restarted after a pause must not close the jobs whose agents
    could not reach it meanwhile: their next heartbeat is due); ``agent_poll_interval``:
    seconds between an agent's polls, as the poll tells it (cbs-api.md §14); ``polls``: the
    waiting long-polls of this process (``api.poll_hub``); ``missed_backup_grace``: seconds
    after a schedule's slot within which a job of its set must start, else the slot is
    recorded missed (``store.missed``); the sweep runs at least every quarter of it.
    ``settings``: the server's settings when it runs with them (``from_settings``): then a
    background loop sends its alerts every ``alert_interval`` seconds (``notify.run_once``;
    SMTP settings, zone).
    """

    db: Database
    tz: tzinfo
    job_idle_timeout: float = 3600.0
    sweep_interval: float = 60.0
    auth_cache: VerifiedCache = field(default_factory=VerifiedCache)
    write_timeout: float = 30.0
    job_heartbeat_timeout: float = 0.0
    started_ms: int = field(default_factory=now_ms)
    settings: Settings | None = None
    alert_interval: float = 5.0
    missed_backup_grace: float = 3600.0
    agent_poll_interval: float = 60.0
    polls: PollHub = field(default_factory=PollHub)

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> ServerState:
        """The state of a server of ``db`` run with ``settings`` (time zone, job idle and
        heartbeat timeouts, report write timeout, lockout and hashing settings, the agents' poll
        interval and long-poll limit): what every
        command that serves (``serve``, ``demo``, ``quickstart``) builds."""
        return cls(
            db=db,
            tz=settings.tz(),
            job_idle_timeout=settings.job_idle_timeout,
            job_heartbeat_timeout=settings.job_heartbeat_timeout,
            auth_cache=VerifiedCache.from_settings(settings),
            write_timeout=settings.write_timeout,
            settings=settings,
            missed_backup_grace=settings.missed_backup_grace,
            agent_poll_interval=settings.agent_poll_interval,
            polls=PollHub(limit=settings.max_long_polls),
        )

    def __post_init__(self) -> None:
        self.log_time = LogTimeFormatter(self.tz)
        # a job silent for job_timeout is closed within about a quarter of that time more, and
        # a missed slot recorded within about a quarter of the grace more
        shortest = min(self.job_timeout, self.missed_backup_grace)
        self.sweep_interval = min(self.sweep_interval, max(shortest / 4, 0.5))

    @property
    def job_timeout(self) -> float:
        """Seconds without a sign of life (a heartbeat, a batch, progress) after which a
        running job is closed: the smaller of ``job_idle_timeout`` and, when on,
        ``job_heartbeat_timeout``."""
        if self.job_heartbeat_timeout > 0:
            return min(self.job_idle_timeout, self.job_heartbeat_timeout)
        return self.job_idle_timeout

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between an agent's heartbeats, as the job start tells it: a quarter of
        :attr:`job_timeout` (so a job is closed after about four missed ones), at least
        0.2 s and at most 60 s."""
        return min(max(self.job_timeout / 4, 0.2), 60.0)


def state_of(request: Request) -> ServerState:
    """The server state of the app that received ``request``."""
    st: ServerState = request.app.state.opencbs
    return st
