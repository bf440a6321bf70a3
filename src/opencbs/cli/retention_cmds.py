"""``opencbs forget`` and ``opencbs prune``: a retention policy applied to a destination's
repository on demand (``agent.retention``, ``engine.prune``).

``forget`` removes snapshots: those named, or those a policy does not keep (restic's
``--keep-*`` flags, or with ``--set`` and no flag the set's own policy from the server), each
backup set's snapshots apart; ``--dry-run`` lists every snapshot with the rule that keeps it or
"remove". ``prune`` frees the data no snapshot uses; what it condemns is deleted after the
grace period (``prune_grace``; ``--grace 0``: at once, when no backup runs).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import click
from rich.filesize import decimal

from opencbs.agent.retention import decide
from opencbs.cli.agent_options import (
    CA_FILE,
    ENCRYPTION_FILE,
    LOGIN,
    PASSWORD_STDIN,
    REPOSITORY,
    S3_ENDPOINT,
    S3_REGION,
    SERVER,
    backup_password,
    encryption_password,
    given_destination,
    lock_timing,
    open_existing_repository,
    require_login,
    with_agent_settings,
)
from opencbs.cli.common import JSON, activity, echo, note, print_json, print_table, show_name
from opencbs.cli.keep_options import keep_options, rules_of_flags
from opencbs.engine.prune import PruneOptions, PruneResult, forget_snapshots, prune
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.errors import InvalidInput, NotFound
from opencbs.model.retention import KEEP_RULES_HINT, Decision, KeepRules
from opencbs.reports.timefmt import local_zone
from opencbs.reports.wording import plural
from opencbs.settings import Settings

#: Characters of a snapshot ID shown (``agent.snapshot_lookup.MIN_PREFIX``, as ``snapshots``).
_SHORT_ID = 8

__all__ = ["forget", "prune_command", "parse_grace", "parse_max_unused"]


def _set_policy(settings: Settings, set_ref: str, *, password_stdin: bool) -> KeepRules:
    """The retention policy of backup set ``set_ref`` as the server holds it. Raises
    ``NotFound`` and what ``AgentClient`` raises."""
    from opencbs.agent.client import AgentClient  # noqa: PLC0415 - only this asks the server
    from opencbs.agent.targets import find_set, list_sets  # noqa: PLC0415

    login = require_login(settings)
    password = backup_password(settings, from_stdin=password_stdin)
    url = settings.effective_server_url
    with AgentClient(url, login, password, ca_file=settings.ca_file) as client:
        bset = find_set(list_sets(client, url, login), set_ref)
    if bset is None:
        raise NotFound(
            f"no backup set {set_ref!r} of backup user {login!r}", "see `opencbs set list LOGIN`"
        )
    return bset.settings.retention.keep_rules()


@click.command()
@click.argument("snapshot_refs", nargs=-1, metavar="[SNAPSHOT]...")
@REPOSITORY
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="Only this backup set's snapshots; without --keep-* flags its own retention policy "
    "(asked of the server) applies.",
)
@keep_options
@click.option("--dry-run", is_flag=True, help="Only list what would be removed, and why.")
@click.option(
    "--prune",
    "then_prune",
    is_flag=True,
    help="Prune afterwards (as `opencbs prune`: what is condemned waits --grace).",
)
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    help="With --prune: the prune's grace period (default prune_grace, 24h; 0: at once, "
    "only when no backup runs on this repository).",
)
@JSON
@with_agent_settings(
    SERVER, LOGIN, PASSWORD_STDIN, ENCRYPTION_FILE, CA_FILE, S3_ENDPOINT, S3_REGION
)
def forget(
    settings: Settings,
    *,
    snapshot_refs: tuple[str, ...],
    destination: str,
    set_ref: str | None,
    keep_within: str | None,
    dry_run: bool,
    then_prune: bool,
    grace: str | None,
    as_json: bool,
    password_stdin: bool,
    encryption_password_file: Path | None,
    **keeps: int,
) -> None:
    """Remove snapshots from a destination: the SNAPSHOTs named (IDs or unique prefixes of
    at least 8 characters, or job IDs), or those a retention policy does not keep (restic's
    --keep-* flags; with --set and no flag, that set's own policy). Each backup set's
    snapshots are judged apart. The data stays until `opencbs prune` (or --prune). With
    --dry-run nothing changes: every snapshot is listed with the rule that keeps it."""
    from opencbs.agent.snapshot_lookup import (  # noqa: PLC0415 - not loaded by prune
        accepted_set_names,
        set_ids_named,
        set_names,
    )

    rules = rules_of_flags(keeps, keep_within)
    if snapshot_refs and rules is not None:
        raise InvalidInput("give SNAPSHOT IDs or --keep-* flags, not both")
    address = given_destination(settings, destination)
    if not snapshot_refs and rules is None:
        if set_ref is None:
            raise InvalidInput("no retention policy given", f"{KEEP_RULES_HINT}, or --set NAME")
        rules = _set_policy(settings, set_ref, password_stdin=password_stdin)
    repo_password = encryption_password(settings, encryption_password_file)
    _storage, repo = open_existing_repository(settings, address, repo_password, load_index=False)
    tz = local_zone(settings.timezone)
    infos = repo.list_snapshots()
    accepted = accepted_set_names(settings.data_dir)
    set_ids = set_ids_named(infos, set_ref, accepted) if set_ref is not None else None
    if set_ref is not None and not set_ids:
        raise NotFound(f"no snapshot of set {set_ref!r} in {show_name(str(address))}")
    if snapshot_refs:
        chosen = _resolve_refs(repo, infos, snapshot_refs, set_ids)
        decisions: dict[str, list[Decision]] = {}
    else:
        assert rules is not None
        decisions = decide(infos, rules, tz=tz, set_ids=set_ids)
        chosen = [d.id for ds in decisions.values() for d in ds if not d.keep]
    names = set_names(infos, accepted)
    removed: list[str] = []
    if not dry_run:
        removed = list(forget_snapshots(repo, chosen, timing=lock_timing(settings)).removed)
    seconds = parse_grace(grace) if grace is not None else settings.prune_grace
    if grace is not None and not then_prune:
        raise InvalidInput("--grace goes with --prune", "add --prune, or leave --grace out")
    pruned = None
    if then_prune and not dry_run:
        pruned = _prune(settings, repo, seconds, quiet=as_json)
    if as_json:
        print_json(_forget_json(decisions, chosen, removed, pruned, tz=tz, dry_run=dry_run))
        return
    for set_id, ds in decisions.items():
        label = names.get(set_id) or set_id
        _print_decisions(ds, label, tz, rules_text=rules.describe() if rules else "")
    verb = "would remove" if dry_run else "removed"
    echo(f"{verb} {plural(len(chosen), 'snapshot')} from {show_name(str(address))}")
    if pruned is not None:
        _print_prune(pruned)
    elif chosen and not dry_run:
        note(
            "opencbs: their data stays until `opencbs prune --destination "
            f"{show_name(str(address))}` frees it"
        )


def _resolve_refs(
    repo: Repository,
    infos: Sequence[SnapshotInfo],
    refs: Sequence[str],
    set_ids: Collection[str] | None,
) -> list[str]:
    """The snapshot IDs of ``refs`` (IDs, unique prefixes, job IDs; of ``set_ids`` only when
    given). Raises ``NotFound`` and ``AmbiguousSnapshot``."""
    from opencbs.agent.snapshot_lookup import expand_snapshot_prefix  # noqa: PLC0415

    known = {i.id: i for i in infos if set_ids is None or i.meta.set_id in set_ids}
    chosen: list[str] = []
    for ref in refs:
        sid = expand_snapshot_prefix(repo, ref)
        if sid not in known:
            by_job = [i.id for i in known.values() if i.meta.job_id == ref]
            if len(by_job) != 1:
                why = "no snapshot" if not by_job else f"{len(by_job)} snapshots"
                raise NotFound(
                    f"{why} of ID or job {show_name(ref)!r}",
                    "see `opencbs snapshots --destination ...`; with several, give the ID",
                )
            sid = by_job[0]
        chosen.append(sid)
    return list(dict.fromkeys(chosen))


def _print_decisions(
    decisions: Sequence[Decision], set_label: str, tz: tzinfo, *, rules_text: str
) -> None:
    """The table of one set's snapshots, oldest first, with the rules that keep each."""
    rows = []
    for d in sorted(decisions, key=lambda d: (d.time_ns, d.id)):
        when = datetime.fromtimestamp(d.time_ns / 1e9, tz).strftime("%Y-%m-%d %H:%M")
        rows.append([d.id[:_SHORT_ID], when, ", ".join(d.reasons) if d.keep else "remove"])
    title = show_name(f"set {set_label}: {rules_text}")
    print_table(title, ["ID", "Time", "Kept by"], rows, no_wrap=["ID", "Time"])


def _forget_json(
    decisions: Mapping[str, list[Decision]],
    chosen: Sequence[str],
    removed: Sequence[str],
    pruned: PruneResult | None,
    *,
    tz: tzinfo,
    dry_run: bool,
) -> dict[str, Any]:
    """``forget --json``: per set the decisions (``id``, ``time``, ``keep``, ``reasons``), the
    snapshots chosen and removed, and the prune's figures."""
    return {
        "dry_run": dry_run,
        "sets": [
            {
                "backup_set_id": set_id,
                "snapshots": [
                    {
                        "id": d.id,
                        "time": datetime.fromtimestamp(d.time_ns / 1e9, tz).isoformat(
                            timespec="seconds"
                        ),
                        "keep": d.keep,
                        "reasons": list(d.reasons),
                    }
                    for d in ds
                ],
            }
            for set_id, ds in decisions.items()
        ],
        "chosen": list(chosen),
        "removed": list(removed),
        "prune": prune_json(pruned) if pruned is not None else None,
    }


_GRACE = re.compile(r"^([0-9]{1,9})([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_grace(text: str) -> float:
    """Seconds of a ``--grace`` value: ``0``, ``3600``, ``90s``, ``30m``, ``24h``, ``2d``.
    Raises ``InvalidInput``."""
    found = _GRACE.match(text.strip())
    if found is None:
        raise InvalidInput(
            f"invalid --grace {text!r}", "give seconds or a number with s, m, h or d: 0, 24h, 2d"
        )
    return float(int(found.group(1)) * _SECONDS[found.group(2)])


def parse_max_unused(text: str) -> float:
    """The share (0..1) of a ``--max-unused`` value: ``5%``, ``0%``, ``unlimited``. Raises
    ``InvalidInput``."""
    value = text.strip().lower()
    if value == "unlimited":
        return 1.0
    found = re.match(r"^([0-9]{1,3}(?:\.[0-9]+)?)%$", value)
    if found is None or float(found.group(1)) > 100:
        raise InvalidInput(
            f"invalid --max-unused {text!r}", "give a percentage (0%..100%) or unlimited"
        )
    return float(found.group(1)) / 100


def _prune(settings: Settings, repo: Repository, grace: float, *, quiet: bool) -> PruneResult:
    options = PruneOptions(grace=grace, timing=lock_timing(settings))
    with activity("pruning", quiet=quiet):
        return prune(repo, options)


def prune_json(result: PruneResult) -> dict[str, Any]:
    """``prune --json`` (and ``forget --prune --json``'s ``prune``): the ``PruneResult``'s
    figures, sizes in bytes, ``duration`` in seconds."""
    return {
        "dry_run": result.dry_run,
        "snapshots": result.snapshots,
        "condemned": result.condemned,
        "repacked": result.repacked,
        "packs_written": result.packs_written,
        "bytes_written": result.bytes_written,
        "deleted": result.deleted,
        "bytes_freed": result.bytes_freed,
        "pending": result.pending,
        "bytes_pending": result.bytes_pending,
        "kept": result.kept,
        "bytes_before": result.bytes_before,
        "bytes_after": result.bytes_after,
        "duration": round(result.duration, 3),
    }


def _print_prune(r: PruneResult) -> None:
    if r.dry_run:
        echo(
            f"would condemn {plural(r.condemned, 'pack')} ({decimal(r.bytes_pending)}), "
            f"{r.repacked} of them repacked; {plural(r.snapshots, 'snapshot')} read"
        )
        if r.deleted:
            echo(
                f"would delete {plural(r.deleted, 'condemned pack')} whose grace period has "
                f"passed ({decimal(r.bytes_freed)}), unless a snapshot uses them again"
            )
        return
    echo(
        f"read {plural(r.snapshots, 'snapshot')}; condemned {plural(r.condemned, 'pack')}"
        + (f" ({r.repacked} repacked into {r.packs_written} new)" if r.repacked else "")
    )
    echo(f"deleted {plural(r.deleted, 'pack')}, freed {decimal(r.bytes_freed)}")
    if r.pending:
        echo(
            f"{plural(r.pending, 'condemned pack')} ({decimal(r.bytes_pending)}) "
            "wait for the grace period; a later prune deletes them"
        )
    if r.kept:
        echo(f"kept {plural(r.kept, 'condemned pack')}: a snapshot uses them again")
    echo(
        f"repository: {decimal(r.bytes_before)} before, {decimal(r.bytes_after)} after; "
        f"{r.duration:.1f} s"
    )


@click.command("prune")
@REPOSITORY
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    help="How long a condemned pack waits before it is deleted (default prune_grace, 24h; "
    "0: at once, only when no backup runs on this repository).",
)
@click.option(
    "--max-unused",
    default="5%",
    show_default=True,
    metavar="PERCENT",
    help="Unused data that may stay (a share of the used data, or 'unlimited'); packs with "
    "unused data are repacked, most unused first, until what stays unused is below it.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be condemned.")
@JSON
@with_agent_settings(ENCRYPTION_FILE, S3_ENDPOINT, S3_REGION)
def prune_command(
    settings: Settings,
    *,
    destination: str,
    grace: str | None,
    max_unused: str,
    dry_run: bool,
    as_json: bool,
    encryption_password_file: Path | None,
) -> None:
    """Free the data of a destination that no snapshot uses: packs wholly unused are
    condemned, packs mostly unused are repacked (their used chunks copied) and condemned;
    condemned packs are deleted after the grace period, by this prune when due or a later one,
    unless a snapshot uses them again meanwhile. Safe while backups run (they hold a shared
    lock; the deleting step waits for them)."""
    seconds = parse_grace(grace) if grace is not None else settings.prune_grace
    share = parse_max_unused(max_unused)
    address = given_destination(settings, destination)
    repo_password = encryption_password(settings, encryption_password_file)
    _storage, repo = open_existing_repository(settings, address, repo_password, load_index=False)
    options = PruneOptions(
        grace=seconds, max_unused=share, dry_run=dry_run, timing=lock_timing(settings)
    )
    with activity(f"pruning {address}", quiet=as_json):
        result = prune(repo, options)
    if as_json:
        print_json(prune_json(result))
    else:
        _print_prune(result)
