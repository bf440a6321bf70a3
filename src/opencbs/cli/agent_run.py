"""``opencbs agent run``: the unattended agent (``agent.daemon``; README "Running the agent
unattended").

It runs until SIGTERM or SIGINT (exit code 0 once its jobs have stopped or, with ``on_stop =
"finish"``, finished), fetching the backup user's sets and schedules from the server (long
poll, cached in the report spool so they keep running while the server is away), running
each slot's job, and the jobs the server asks for (RunBackup.do), each as a child process::

    python -m opencbs [--config FILE] backup --set ID --mode S|R [--stop-at MS]
        [--retention-after|--no-retention-after] --server URL --login NAME [--ca-file PEM]
        [--encryption-password-file F] --password-stdin --json

with the agent's ``data_dir`` (``OPENCBS_DATA_DIR``) and the backup user's password on its
stdin. SIGHUP reads the configuration again (the config file, the environment as it was, the
flags; a configuration that cannot be read leaves the one in force, said in the log) and polls
the server again. Its log goes to stderr and to ``agent_log_file`` (default
``<data_dir>/agent.log``), rotated at ``agent_log_max_bytes`` keeping ``agent_log_backups``.

Errors before it runs (exit code 2, ``opencbs.cli.main``): no backup user, password or
encryption password (it never prompts: it runs unattended), an invalid setting, or a
data_dir or log file that cannot be created.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

import click

from opencbs.agent.child_jobs import JobRequest
from opencbs.agent.client import AgentClient
from opencbs.agent.daemon import Daemon, DaemonConfig
from opencbs.agent.daemon_state import config_in_force
from opencbs.agent.scheduler import Timing
from opencbs.cli.agent_options import (
    CA_FILE,
    ENCRYPTION_FILE,
    LOGIN,
    PASSWORD_STDIN,
    SERVER,
    backup_password,
    report_spool_dir,
    require_login,
    with_agent_settings,
)
from opencbs.cli.common import RECORD_FORMAT, CliState, SafeFormatter, log_full_records
from opencbs.errors import ConfigError, InvalidInput
from opencbs.settings import SETTING_NAMES, Settings, config_path, retry_delays

__all__ = ["agent_log_path", "job_argv", "run"]

log = logging.getLogger(__name__)

#: The agent's log file in its data_dir when ``agent_log_file`` is empty.
AGENT_LOG = "agent.log"


@click.command("run")
@with_agent_settings(SERVER, LOGIN, PASSWORD_STDIN, CA_FILE, ENCRYPTION_FILE)
def run(settings: Settings, *, password_stdin: bool, encryption_password_file: Path | None) -> int:
    """Run the backup user's schedules unattended, and the backups the server asks for.

    Fetches the sets and schedules from the server and keeps them on disk; runs each slot's
    job (a child `opencbs backup`), never two of one set at once; catches up a slot missed
    while off or asleep (once); retries a failed job. SIGHUP reloads the configuration,
    SIGTERM stops (exit code 0). Logs to <data_dir>/agent.log (setting agent_log_file)."""
    password = backup_password(settings, from_stdin=password_stdin)
    ctx = click.get_current_context()
    state = ctx.find_object(CliState) or CliState()
    flags = {n: v for n, v in ctx.params.items() if n in SETTING_NAMES and v is not None}
    build = functools.partial(
        _config,
        config_file=state.config,
        password=password,
        encryption_file=encryption_password_file,
    )
    config = build(settings)

    def reload() -> DaemonConfig:
        again = state.settings(flags)
        log_full_records()
        return build(again)

    log.info(
        "the agent starts: backup user %s on %s", settings.login_name, settings.effective_server_url
    )
    return Daemon(config, reload=reload).run()


def _config(
    settings: Settings,
    *,
    config_file: str | None,
    password: str,
    encryption_file: Path | None,
) -> DaemonConfig:
    """The daemon's configuration of ``settings`` (its log file set up too). Raises
    ``InvalidInput`` (no backup user or encryption password), ``ConfigError``."""
    login = require_login(settings)
    if encryption_file is None and not settings.encryption_password:
        raise InvalidInput(
            "no encryption password for the repositories",
            "set OPENCBS_ENCRYPTION_PASSWORD or encryption_password in the config file, or "
            "use --encryption-password-file (the agent never prompts)",
        )
    settings.ensure_data_dir()
    _log_to_file(settings)
    url = settings.effective_server_url
    timing = Timing(
        catch_up=settings.catch_up,
        catch_up_window_ms=int(settings.catch_up_window * 1000),
        jitter_ms=int(settings.schedule_jitter * 1000),
        retry_delays_ms=tuple(int(d * 1000) for d in retry_delays(settings.job_retry_delays)),
    )
    state_dir = report_spool_dir(settings, login)
    try:  # the jobs run with the file as it is in force now, not as it is edited later
        in_force = config_in_force(state_dir, config_path(config_file)[0])
    except OSError as exc:
        raise ConfigError(f"cannot keep a copy of the config file in {state_dir}: {exc}") from exc
    base = [sys.executable, "-m", "opencbs", "--config", str(in_force)]
    login_options = ["--server", url, "--login", login, "--password-stdin"]
    if settings.ca_file:
        login_options += ["--ca-file", settings.ca_file]
    tail = [*login_options, "--json"]
    if encryption_file is not None:
        tail += ["--encryption-password-file", str(encryption_file)]
    env = {**os.environ, "OPENCBS_DATA_DIR": str(settings.data_dir)}
    return DaemonConfig(
        state_dir=state_dir,
        timing=timing,
        poll_wait=settings.agent_poll_wait,
        finish_on_stop=settings.on_stop == "finish",
        make_client=functools.partial(
            AgentClient, url, login, password, ca_file=settings.ca_file or None
        ),
        job_argv=functools.partial(job_argv, base, tail),
        job_stdin=(password + "\n").encode(),
        job_env=env,
        flush_argv=(*base, "agent", "flush", *login_options),
    )


def job_argv(base: list[str], tail: list[str], job: JobRequest) -> list[str]:
    """The command line of ``job``'s process: ``base`` (the interpreter, ``-m opencbs``, the
    global options), ``backup`` with the job's options, then ``tail`` (server, login, …)."""
    argv = [*base, "backup", "--set", job.set_id, "--mode", job.mode.value]
    if job.stop_ms is not None:
        argv += ["--stop-at", str(job.stop_ms)]
    if job.retention_after is not None:
        argv.append("--retention-after" if job.retention_after else "--no-retention-after")
    return [*argv, *tail]


def agent_log_path(settings: Settings) -> Path | None:
    """The agent's log file: ``agent_log_file``, ``<data_dir>/agent.log`` when empty,
    ``None`` for ``-``."""
    name = settings.agent_log_file
    if name == "-":
        return None
    return Path(name).expanduser() if name else settings.data_dir / AGENT_LOG


class _AgentLog(RotatingFileHandler):
    """The agent's log file handler (one on the root logger; replaced on reload)."""


def _log_to_file(settings: Settings) -> None:
    """Log (as stderr does, records with their time) to the agent's log file too, rotated.
    Raises ``ConfigError`` when it cannot be opened."""
    log_full_records()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AgentLog)]:
        root.removeHandler(old)
        old.close()
    path = agent_log_path(settings)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = _AgentLog(
            path,
            maxBytes=settings.agent_log_max_bytes,
            backupCount=settings.agent_log_backups,
            encoding="utf-8",
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot open the agent's log file {path}: {exc.strerror or exc}",
            "set agent_log_file to a writable file (or - for none)",
        ) from exc
    handler.setFormatter(SafeFormatter(RECORD_FORMAT))
    root.addHandler(handler)
