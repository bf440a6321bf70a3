"""``opencbs agent flush``: deliver the job reports spooled on this agent's disk.

A backup whose server could not be reached (at the start or during the job) spools its report in
``<data_dir>/agent-spool`` (``opencbs.agent.spool``); the next ``opencbs backup`` delivers it
first, or this command does now: oldest job first, each complete and exactly once (batches the
server has already are not sent again).

Output: one line per spooled job (``delivered``, ``pending``, ``dropped`` or ``busy``), or
``nothing to deliver``; ``--json`` gives a list of ``{"folder", "backup_set_id",
"destination_id", "job_id", "state", "batches_sent", "message"}``.

Exit codes: 0 every spooled report is delivered (or there was none, or one is busy: a backup is
writing it); 7 some stay pending (the server cannot be reached: run it again later); 8 some were
dropped because the server refuses them (it closed the job as ``BS_BACKUP_NOT_FINISHED`` after its
idle timeout, or no longer has the set), each named on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from opencbs.agent.client import AgentClient
from opencbs.agent.spool import DeliveryState, deliver_pending, pending_spools
from opencbs.cli.agent_cmds import (
    LOGIN,
    PASSWORD_STDIN,
    SERVER,
    backup_password,
    list_sets,
    report_spool_dir,
    require_login,
    with_agent_settings,
)
from opencbs.cli.common import JSON, echo, note, print_json
from opencbs.settings import Settings

EXIT_PENDING = 7
EXIT_DROPPED = 8


@click.group()
def agent() -> None:
    """The agent's own housekeeping (spooled job reports)."""


@agent.command()
@JSON
@with_agent_settings(SERVER, LOGIN, PASSWORD_STDIN)
def flush(settings: Settings, as_json: bool, password_stdin: bool) -> int:
    """Deliver the job reports spooled while the server could not be reached.

    Exit code 0 when all are delivered, 7 when the server still cannot be reached (they stay
    spooled), 8 when the server refused some (named on stderr)."""
    root = report_spool_dir(settings)
    if not pending_spools(root):
        if as_json:
            print_json([])
        else:
            echo("nothing to deliver")
        return 0
    login = require_login(settings)
    password = backup_password(settings, password_stdin)
    url = settings.effective_server_url
    with AgentClient(url, login, password) as client:
        list_sets(client, url, login)  # a clear error for an unreachable server or a bad login
        results = deliver_pending(client, root)
    rows: list[dict[str, Any]] = [
        {"folder": d.folder, "backup_set_id": d.set_id, "destination_id": d.destination_id,
         "job_id": d.job_id, "state": d.state.value, "batches_sent": d.batches_sent,
         "message": d.message} for d in results]
    left = len(pending_spools(root))
    if as_json:
        print_json(rows)
    else:
        for d in results:
            echo(f"{d.state.value}: job {d.job_id or '(not started)'} of backup set "
                 f"{d.set_id}, destination {d.destination_id} ({d.batches_sent} batches sent)"
                 f"{'' if d.state is DeliveryState.DELIVERED else ': ' + d.message}")
    dropped = [d for d in results if d.state is DeliveryState.DROPPED]
    for d in dropped:
        note(f"opencbs: warning: the report of job {d.job_id} was dropped: {d.message}")
    if any(d.state is DeliveryState.PENDING for d in results):
        note(f"opencbs: {left} reports stay spooled in {root}; run `opencbs agent flush` again "
             "when the server is reachable")
        return EXIT_PENDING
    return EXIT_DROPPED if dropped else 0
