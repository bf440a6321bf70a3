"""``opencbs agent flush``: deliver the job reports spooled on this agent's disk.

A backup whose server could not be reached (at the start or during the job) spools its report in
the spool of its server and backup user, ``<data_dir>/agent-spool/<login>-<hash>``
(``opencbs.agent.spool``); the next ``opencbs backup`` delivers it first, or this command does
now, for the backup user and server of the settings: oldest job first, each complete and exactly
once (batches the server has already are not sent again). Another user's spooled reports are
never touched. Reports spooled by an earlier opencbs directly in ``<data_dir>/agent-spool`` (one
spool for every user) are delivered when their backup set and destination are this user's on
this server; the others stay where they are, counted in a note on stderr.

Output: one line per spooled job (``delivered``, ``pending``, ``dropped``, ``running``: its
job is running now, or ``busy``: another process is delivering it), or
``nothing to deliver``; ``--json`` gives a list of ``{"folder", "backup_set_id",
"destination_id", "job_id", "state", "batches_sent", "message"}``.

Exit codes: 0 every spooled report is delivered (or there was none, or one is running or
busy); 7 some stay pending (the server cannot be reached: run it again later); 8 some were
dropped because the server refuses them (it closed the job as ``BS_BACKUP_NOT_FINISHED`` after its
idle timeout, or no longer has the set), each named on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from opencbs.agent.client import AgentClient
from opencbs.agent.delivery import DeliveryState, flush_reports, has_pending
from opencbs.agent.spool import spool_base
from opencbs.cli.agent_options import (
    CA_FILE,
    LOGIN,
    PASSWORD_STDIN,
    SERVER,
    backup_password,
    report_spool_dir,
    require_login,
    with_agent_settings,
)
from opencbs.cli.common import JSON, echo, note, print_json
from opencbs.errors import ExitCode
from opencbs.reports.wording import plural
from opencbs.settings import Settings


@click.group()
def agent() -> None:
    """The agent's own commands: run unattended, deliver spooled job reports."""


@agent.command()
@JSON
@with_agent_settings(SERVER, LOGIN, PASSWORD_STDIN, CA_FILE)
def flush(settings: Settings, *, as_json: bool, password_stdin: bool) -> int:
    """Deliver the job reports spooled while the server could not be reached.

    Exit code 0 when all are delivered, 7 when the server still cannot be reached (they stay
    spooled), 8 when the server refused some (named on stderr)."""
    base = spool_base(settings.data_dir)
    named = report_spool_dir(settings, settings.login_name) if settings.login_name else None
    if not has_pending(base, named):
        _nothing(as_json=as_json)
        return ExitCode.SUCCESS
    login = require_login(settings)
    root = report_spool_dir(settings, login)
    password = backup_password(settings, from_stdin=password_stdin)
    url = settings.effective_server_url
    with AgentClient(url, login, password, ca_file=settings.ca_file) as client:
        flushed = flush_reports(client, url, login, base=base, root=root)
    results, others, left = flushed.deliveries, flushed.others, flushed.left
    if others:
        note(
            f"opencbs: note: {_reports(others)} spooled by an earlier opencbs in {base} "
            f"{'is' if others == 1 else 'are'} of backup sets that {login!r} does not have "
            f"on {url}; kept: run `opencbs agent flush` as the backup user of "
            f"{'its' if others == 1 else 'their'} set"
        )
    if not results:
        _nothing(as_json=as_json)
        return ExitCode.SUCCESS
    rows: list[dict[str, Any]] = [
        {
            "folder": d.folder,
            "backup_set_id": d.set_id,
            "destination_id": d.destination_id,
            "job_id": d.job_id,
            "state": d.state.value,
            "batches_sent": d.batches_sent,
            "message": d.message,
        }
        for d in results
    ]
    if as_json:
        print_json(rows)
    else:
        for d in results:  # why one was dropped: its warning below says it
            quiet = d.state in (DeliveryState.DELIVERED, DeliveryState.DROPPED)
            echo(
                f"{d.state.value}: {d.job_name} of backup set {d.set_id}, destination "
                f"{d.destination_id}{'' if quiet else ': ' + d.message}"
            )
    dropped = [d for d in results if d.state is DeliveryState.DROPPED]
    for d in dropped:
        note(f"opencbs: warning: the report of {d.job_name} was dropped: {d.message}")
    if any(d.state is DeliveryState.PENDING for d in results):
        note(
            f"opencbs: {_reports(left)} {'stays' if left == 1 else 'stay'} spooled in {root}; "
            "run `opencbs agent flush` again when the server is reachable"
        )
        return ExitCode.UNAVAILABLE
    return ExitCode.REFUSED if dropped else ExitCode.SUCCESS


def _reports(n: int) -> str:
    return plural(n, "report")


def _nothing(*, as_json: bool) -> None:
    if as_json:
        print_json([])
    else:
        echo("nothing to deliver")


def _add_run() -> None:
    """``agent run`` (``cli.agent_run``) beside ``agent flush``."""
    from opencbs.cli.agent_run import run  # noqa: PLC0415 - its module imports this group's

    agent.add_command(run)


_add_run()
