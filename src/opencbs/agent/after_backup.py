"""What a backup job does after its snapshot is committed and before its report is finished:
the set's retention policy when the set says so (``Retention.after_backup``; CBS's "run
retention policy after backup", ``agent.retention``) or the job's schedule does
(``JobOptions.retention_after``, which overrides the set's flag), each step said in the job's
report log, and what the destination stores then, told to the server (GetUserStorageStat,
the quota).

Neither step can fail the backup: the snapshot is stored. A retention run that fails (another
process holds the repository, a snapshot cannot be read) is a ``warn`` entry, so the job ends
with warnings; storage figures the server cannot take are logged and sent after the next job.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime

from opencbs.agent.backup import JobResult
from opencbs.agent.channel import JobChannel
from opencbs.agent.client import AgentApiError, RemoteSet, ServerUnreachable
from opencbs.agent.job_values import JobOptions
from opencbs.agent.retention import retention_summary, run_retention
from opencbs.destinations.base import DestinationError
from opencbs.engine.prune import PruneOptions
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.repository import Repository
from opencbs.engine.usage import NewestUse, StorageUsage, storage_usage
from opencbs.errors import InvalidInput
from opencbs.model.retention import KeepRules
from opencbs.reports.vocabulary import JobStatus, LogType

__all__ = ["after_backup"]

log = logging.getLogger(__name__)


def after_backup(
    options: JobOptions,
    bset: RemoteSet,
    repo: Repository,
    *,
    channel: JobChannel,
    result: JobResult,
    newest_use: NewestUse | None = None,
) -> JobResult:
    """Apply the retention policy (when the set says so), then tell the server what the
    destination stores; returns ``result`` with a success status raised to
    ``BS_STOP_SUCCESS_WITH_WARNING`` when a step logged a warning; ``newest_use``: the job's
    snapshot as counted while it was committed (``engine.usage.NewestUse``: its tree is not
    read again). Never raises for the repository or the server (module docstring)."""
    retention = bset.settings.retention
    usage: StorageUsage | None = None
    wanted = options.retention_after
    if retention.after_backup if wanted is None else wanted:
        usage = _retention(options, repo, channel=channel, rules=retention.keep_rules())
    if usage is None:
        try:
            repo.reload_index()  # what other jobs stored meanwhile
            usage = storage_usage(repo, newest_use)
        except (RepositoryError, DestinationError) as exc:
            log.debug("could not measure what the destination stores: %s", exc)
    if usage is not None and not channel.offline:  # offline: the next job's figures tell
        _report_storage(options, usage)
    if result.status is JobStatus.STOP_SUCCESS and channel.report.warnings:
        result = dataclasses.replace(result, status=JobStatus.STOP_SUCCESS_WITH_WARNING)
    return result


def _retention(
    options: JobOptions, repo: Repository, *, channel: JobChannel, rules: KeepRules
) -> StorageUsage | None:
    """Apply ``rules`` to the job's set in ``repo``, said in the job's log; what the
    destination stores after it when it pruned. A failure is a ``warn`` entry."""
    zone = options.zone or datetime.now().astimezone().tzinfo
    assert zone is not None
    try:
        outcome = run_retention(
            repo,
            rules,
            tz=zone,
            set_ids=[channel.ref.set_id],
            prune_options=PruneOptions(
                grace=options.prune_grace, timing=options.lock_timing, usage=True
            ),
            timing=options.lock_timing,
            only_when_needed=True,
        )
        kind = LogType.WARN if outcome.prune_error else LogType.INFO
        channel.log(kind, retention_summary(outcome, rules))
    except (RepositoryError, DestinationError, InvalidInput) as exc:
        channel.log(LogType.WARN, f"Retention policy not applied: {exc}")
        return None
    return outcome.prune.usage if outcome.prune is not None else None


def _report_storage(options: JobOptions, usage: StorageUsage) -> None:
    """Send ``usage`` to the server; a server that cannot take it is logged only."""
    body = {"measured_at": int(time.time() * 1000), **dataclasses.asdict(usage)}
    try:
        options.client.report_storage(options.set_id, options.destination_id, body)
    except (ServerUnreachable, AgentApiError) as exc:
        # the next job's figures tell it; the report's fate says when the server is away
        log.debug("could not tell the server what the destination stores: %s", exc)
