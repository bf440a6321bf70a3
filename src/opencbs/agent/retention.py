"""Applying a retention policy to a destination's repository: which snapshots each backup set
keeps (``model.retention``), forgetting the others and pruning (``engine.prune``).

A repository may hold snapshots of several backup sets; a policy applies to each set's
snapshots apart (the newest of one set never makes another's look old). The policy comes from
the set on the server (its ``retention`` setting, ``model.sets.Retention``) or from the command
line (restic's ``--keep-*`` flags). ``run_retention`` is what a backup job runs after it when
its set says so (``after_backup``), and what ``opencbs forget --prune`` runs on demand.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import tzinfo

from rich.filesize import decimal

from opencbs.destinations.base import DestinationError
from opencbs.engine.locks import LockTiming
from opencbs.engine.prune import (
    ForgetResult,
    PruneOptions,
    PruneResult,
    forget_snapshots,
    prune,
    read_pending,
)
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.model.retention import Decision, KeepRules, SnapshotTime, apply_policy
from opencbs.reports.wording import plural

__all__ = [
    "RetentionOutcome",
    "decide",
    "retention_summary",
    "run_retention",
]


def decide(
    infos: Iterable[SnapshotInfo],
    rules: KeepRules,
    *,
    tz: tzinfo,
    set_ids: Iterable[str] | None = None,
) -> dict[str, list[Decision]]:
    """Per backup set ID (of ``set_ids`` only, when given), the decisions of ``rules`` for its
    snapshots, newest first (``model.retention.apply_policy``). Raises ``InvalidInput`` for
    rules that keep nothing."""
    wanted = set(set_ids) if set_ids is not None else None
    groups: dict[str, list[SnapshotTime]] = {}
    for info in infos:
        set_id = info.meta.set_id
        if wanted is None or set_id in wanted:
            groups.setdefault(set_id, []).append(SnapshotTime(info.id, info.meta.time_ns))
    return {set_id: apply_policy(times, rules, tz=tz) for set_id, times in sorted(groups.items())}


@dataclass(frozen=True, slots=True)
class RetentionOutcome:
    """What applying a policy did: the ``decisions`` (per set ID), the ``forget`` result, the
    ``prune`` result (``None`` without a prune), why the prune did not finish
    (``prune_error``: another process held the repository, a snapshot could not be read) and
    the ``duration`` (seconds)."""

    decisions: dict[str, list[Decision]]
    forget: ForgetResult
    prune: PruneResult | None
    duration: float
    prune_error: str = ""


def run_retention(
    repo: Repository,
    rules: KeepRules,
    *,
    tz: tzinfo,
    set_ids: Sequence[str] | None = None,
    prune_options: PruneOptions | None = None,
    timing: LockTiming | None = None,
    only_when_needed: bool = False,
) -> RetentionOutcome:
    """Forget the snapshots ``rules`` do not keep (of ``set_ids``, or of every set), then, with
    ``prune_options``, prune; with ``only_when_needed`` only when snapshots were removed now or
    a pending deletion is due (otherwise every stored byte is still used, as after a backup).
    A prune that cannot finish is the outcome's ``prune_error``, not raised. Raises
    ``InvalidInput`` (rules that keep nothing), ``RepositoryLocked`` (the forget could not
    lock the repository), ``DestinationError``."""
    started = time.monotonic()
    decisions = decide(repo.list_snapshots(), rules, tz=tz, set_ids=set_ids)
    drop = [d.id for ds in decisions.values() for d in ds if not d.keep]
    forgotten = forget_snapshots(repo, drop, timing=timing)
    pruned, error = None, ""
    if prune_options is not None and (
        not only_when_needed or forgotten.removed or _deletions_due(repo, prune_options.grace)
    ):
        try:
            pruned = prune(repo, prune_options)
        except (RepositoryError, DestinationError) as exc:
            error = str(exc)  # the snapshots are removed; the next prune frees their data
    return RetentionOutcome(decisions, forgotten, pruned, time.monotonic() - started, error)


def _deletions_due(repo: Repository, grace: float) -> bool:
    """Whether a pending deletion of the repository is older than ``grace`` seconds."""
    now = time.time_ns()
    return any(now - p.created_ns >= grace * 1e9 for p in read_pending(repo.storage, repo.keys))


def retention_summary(outcome: RetentionOutcome, rules: KeepRules) -> str:
    """One line for a job's log or a person: ``Retention policy (keep 7 days): removed 3 of 10
    snapshots; freed 12.5 MB (4 packs); 2.1 MB waits 24 h before it is deleted; 1.2 s``."""
    total = sum(len(ds) for ds in outcome.decisions.values())
    said = [
        f"Retention policy ({rules.describe()}): removed "
        f"{len(outcome.forget.removed)} of {plural(total, 'snapshot')}"
    ]
    p = outcome.prune
    if outcome.prune_error:
        said.append(f"the prune did not finish ({outcome.prune_error}); a later one frees it")
    if p is not None:
        said.append(f"freed {decimal(p.bytes_freed)} ({plural(p.deleted, 'pack')})")
        if p.bytes_pending:
            said.append(f"{decimal(p.bytes_pending)} is freed after the grace period")
    said.append(f"{outcome.duration:.1f} s")
    return "; ".join(said)
