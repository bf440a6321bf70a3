"""``opencbs backup``: a backup job of a backup set per destination, reported to the server.

It runs a job of a backup set (``agent.job.run_backup``, through ``cli.backup_run``) against
the server at ``server_url`` as backup user ``login_name``; the set and destination come from
``agent.targets`` (created on first use with ``--set NAME --source … --destination …``). A
destination is a folder or an S3 location (``s3://bucket/prefix`` with ``--s3-endpoint``;
``agent.storage``). Without ``--destination``, a set with several destinations gets one job
per destination, one after another, each with its own outcome and status (CBS reports jobs per
destination); one that fails does not stop the others, and the exit code is the first non-zero
one. A destination that cannot be reached or used when its job starts (an S3 server down,
credentials refused, a bucket missing) is that job's failure, reported to the server
(``BS_STOP_BY_SYSTEM_ERROR``, exit code 9; 7 when the credentials or the bucket are wrong).

Exit codes of ``backup`` (and ``quickstart``): 0 when the job ends ``BS_STOP_SUCCESS``,
``BS_STOP_SUCCESS_WITH_WARNING`` or ``BS_STOP_SUCCESS_WITH_ERROR``; 130 when it was stopped by
Ctrl-C or SIGTERM (``BS_STOP_BY_USER``); 9 for any other final status (``BS_STOP_BY_SYSTEM_ERROR``:
the destination failed, or none of the set's sources could be read; stderr then ends with an
error line and a hint, as for any failure). Each warning and error of the job is said once on
stderr (``opencbs: warning: …``) and listed in ``--json`` (``messages``). A new set's sources
must exist (``agent.targets.require_sources``: exit code 2, nothing created).
A new set's folder (or one added with ``--add-destination``) is checked before the server
records it. A destination folder must be empty (or missing) or hold a repository: any other is
refused before anything is written (exit code 7). The sources and destination folders the
agent accepted for a set are kept in ``<spool root>/accepted-targets.json`` (``agent.trust``): a
set never used here is accepted on first use; later, other sources or another folder named by
the server are refused (exit code 7) unless the owner consents (``--source``/``--destination``
on the command line, or ``--accept-server-changes``). A folder that held the set's backups (a
job committed a snapshot there, ``agent.trust.held_backups``) and is now missing or empty (a disk
not mounted) is refused (exit code 7, nothing created) unless ``--new-repository`` consents to a
new repository there (``agent.targets.RepositoryMissing``). Errors before the job starts use
the exit codes of ``opencbs.cli.main`` (3 the server rejected the backup user or the
encryption password is wrong, 5 a job of the set is running already on this agent — one job of
a set at a time, ``agent.set_lock``: "a job of backup set 'NAME' (ID) is running (pid N)", nothing
sent to the server —, 7 server or destination unreachable, or the report spool in
``data_dir`` cannot be created or written, 8 the server refused a request or the repository
is damaged). A destination that cannot be created or written when the job of an existing set
starts (a folder under a file, a read-only or full file system) is that job's failure,
reported to the server (``BS_STOP_BY_SYSTEM_ERROR``, exit code 9); a new set's folder is
checked before the set is recorded, and refused (exit 7, nothing recorded).
A server that cannot be reached during the job does not change the exit code: the backup
completes, its report is spooled in ``<data_dir>/agent-spool/<login>-<hash>`` (one spool per
server and backup user: ``opencbs.agent.spool``) and stderr says "report spooled, not
delivered"; the next ``backup`` or ``opencbs agent flush`` delivers it. When the spool cannot be
written either (``data_dir`` full or read-only), the report is lost: stderr says so in an
``opencbs: error:`` line and the exit code is 7 (unless the job's own is not 0). With the server
unreachable at the start, ``backup`` uses this user's backup sets as last seen (remembered at
each run); exit code 7 only when there are none.

Options for the unattended agent (``opencbs agent run`` runs each scheduled job as a child
``opencbs backup``; hidden from the help): ``--mode M|S|R`` the job's mode (``BackupJobMode``:
manual, the default; scheduled; started from the server by RunBackup.do); ``--stop-at
EPOCH_MS`` stops the job at that instant, ``BS_STOP_BY_SCHEDULER`` (a schedule's ``Duration``:
``model.schedules.stop_time``; exit code 130, as a job stopped by the user);
``--retention-after/--no-retention-after`` runs the set's retention policy after the backup
(or not) whatever the set's own flag says (a schedule's ``retention_after``,
``SpaceFreeUpEnabled``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import click

from opencbs.agent.client import AgentClient, RemoteSet
from opencbs.agent.job import JobOutcome
from opencbs.agent.storage import S3Access, UnusableStorage, open_storage
from opencbs.agent.targets import (
    REFUSALS,
    Consent,
    Target,
    accept_target,
    resolve_target,
    sets_or_remembered,
    usable_destination,
)
from opencbs.agent.targets import (
    destination_address as address_of,
)
from opencbs.cli.agent_options import (
    CA_FILE,
    ENCRYPTION_FILE,
    LOGIN,
    PASSWORD_STDIN,
    S3_ENDPOINT,
    S3_REGION,
    SERVER,
    DestinationText,
    backup_password,
    chosen_set,
    destination_address,
    encryption_password,
    report_spool_dir,
    require_login,
    s3_access,
    with_agent_settings,
)
from opencbs.cli.backup_run import (
    exit_code_of,
    outcome_json,
    print_delivery_notes,
    print_job_failure,
    print_outcome,
    run_job,
)
from opencbs.cli.common import NonEmptyPath, echo, note, print_json, require_text_paths, show_name
from opencbs.destinations.base import DestinationError, Storage
from opencbs.errors import ExitCode, InvalidInput, OpenCBSError
from opencbs.model.destinations import DestinationAddress
from opencbs.reports.vocabulary import JobMode
from opencbs.settings import Settings

__all__ = ["backup"]


@click.command()
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="The backup set (name or ID) [setting backup_set]; optional when the user has "
    "exactly one.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="PATH",
    type=NonEmptyPath(path_type=Path),
    help="First use: a folder or file of the new set (repeatable).",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="First use: a glob pattern of what to leave out: a name in any folder (*.tmp), or a "
    "full path when it holds a / (repeatable).",
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATTERN",
    help="First use: a glob pattern (as --exclude) of what to back up only (repeatable).",
)
@click.option(
    "--destination",
    type=DestinationText(),
    default=None,
    metavar="PATH|s3://BUCKET/PREFIX",
    help="The destination: a folder, or an S3 bucket and prefix (with --s3-endpoint); on "
    "first use the set's; else which of the set's destinations (default: every one, a job "
    "each).",
)
@click.option(
    "--add-destination",
    type=DestinationText(),
    default=None,
    metavar="PATH|s3://BUCKET/PREFIX",
    help="Add this folder or S3 location to an existing set as a new destination and back "
    "up to it (a full backup).",
)
@click.option(
    "--accept-server-changes",
    is_flag=True,
    help="Accept (and remember) the sources and destination folder the server names now, "
    "when they differ from those this agent accepted before (or a new set takes the name "
    "or folder of an accepted one).",
)
@click.option(
    "--new-repository",
    is_flag=True,
    help="Create a new repository (a full backup) in a destination folder that held this "
    "set's backups and is now missing or empty; without it such a backup is refused (is the "
    "disk mounted?).",
)
@click.option("--scheduled", is_flag=True, help="Run as a scheduled job (mode S, not M).")
@click.option(
    "--mode",
    type=click.Choice([m.value for m in JobMode]),
    default=None,
    hidden=True,
    help="The job's mode: M manual (default), S scheduled, R started from the server.",
)
@click.option(
    "--stop-at",
    "stop_at_ms",
    type=click.IntRange(min=0),
    default=None,
    hidden=True,
    metavar="EPOCH_MS",
    help="Stop the job at this instant (epoch ms): it ends BS_STOP_BY_SCHEDULER.",
)
@click.option(
    "--retention-after/--no-retention-after",
    "retention_after",
    default=None,
    hidden=True,
    help="Run (or not) the set's retention policy after the backup, whatever the set says.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print each change with its reason.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the job's outcome as one JSON object (progress and notes stay on stderr).",
)
@with_agent_settings(
    SERVER, LOGIN, PASSWORD_STDIN, ENCRYPTION_FILE, CA_FILE, S3_ENDPOINT, S3_REGION
)
def backup(
    settings: Settings,
    *,
    set_ref: str | None,
    sources: tuple[Path, ...],
    excludes: tuple[str, ...],
    includes: tuple[str, ...],
    destination: str | None,
    add_destination: str | None,
    accept_server_changes: bool,
    new_repository: bool,
    scheduled: bool,
    mode: str | None,
    stop_at_ms: int | None,
    retention_after: bool | None,
    verbose: bool,
    as_json: bool,
    password_stdin: bool,
    encryption_password_file: Path | None,
) -> int:
    """Run a backup job of a backup set to each of its destinations, reported to the server.

    On first use, --set NAME --source PATH… --destination PATH|s3://BUCKET/PREFIX creates the
    set (one destination: a folder, or an S3 bucket and prefix with --s3-endpoint URL);
    --add-destination adds one to an existing set. Without --destination each destination of
    the set gets a job, in turn. Sources and destinations are remembered: when the server
    later names others, the backup is refused unless given on the command line or
    --accept-server-changes. Exit code 0 when every job succeeds (with warnings or errors
    too), 130 when stopped (Ctrl-C, SIGTERM), 9 when a job fails."""
    named = _named_destination(settings, sources, destination, add_destination)
    login = require_login(settings)
    password = backup_password(settings, from_stdin=password_stdin)
    repo_password = encryption_password(settings, encryption_password_file)
    url = settings.effective_server_url
    spool_dir = report_spool_dir(settings, login)
    access = s3_access(settings)
    told: list[str] = []  # the server could not be reached: said once, here
    unreachable = functools.partial(_said_unreachable, told)

    with AgentClient(url, login, password, ca_file=settings.ca_file) as client:
        found = sets_or_remembered(client, url, login, spool_dir, on_note=unreachable)
        target = resolve_target(
            client,
            found,
            chosen_set(settings, set_ref),
            sources=sources,
            destination=named,
            excludes=excludes,
            includes=includes,
            add_destination=add_destination is not None,
            check_destination=functools.partial(
                usable_destination, password=repo_password, access=access
            ),
            on_note=note,
        )
        run = _Run(
            client=client,
            settings=settings,
            spool_dir=spool_dir,
            access=access,
            repo_password=repo_password,
            # what the server names must be what the owner accepted (agent.trust)
            consent=Consent(
                sources=bool(sources),
                destination=named is not None,
                server_changes=accept_server_changes,
                new_repository=new_repository,
            ),
            mode=_job_mode(mode, scheduled=scheduled),
            as_json=as_json,
            verbose=verbose,
            stop_at_ms=stop_at_ms,
            retention_after=retention_after,
        )
        if named is not None or len(target.bset.destinations) < 2:
            return _run_one(run, target, unreachable_told=bool(told))
        return _run_each(run, target.bset, unreachable_told=bool(told))


def _said_unreachable(told: list[str], text: str) -> None:
    """Say that the server cannot be reached (once, by ``sets_or_remembered``); kept in
    ``told`` so the outcome does not repeat why."""
    told.append(text)
    note(f"opencbs: {text}")


@dataclass(frozen=True)
class _Run:
    """What every job of one ``backup`` command shares."""

    client: AgentClient
    settings: Settings
    spool_dir: Path
    access: S3Access
    repo_password: str
    consent: Consent
    mode: JobMode
    as_json: bool
    verbose: bool
    stop_at_ms: int | None = None
    retention_after: bool | None = None

    def one(self, target: Target) -> tuple[JobOutcome, bool]:
        """One job of ``target``: its destination accepted (``agent.trust``), then run. A
        destination that cannot be reached or used is the job's failure, reported to the
        server (``agent.storage.UnusableStorage``); the agent's own refusals
        (``agent.targets.REFUSALS``, ``TargetChanged``) raise before any job. Returns the
        outcome and whether the destination's settings made it fail (credentials refused, a
        bucket missing: ``UnusableStorage.misconfigured``)."""
        storage: Storage = open_storage(target.address, self.access)
        try:
            accept_target(
                self.spool_dir,
                target,
                storage,
                consent=self.consent,
                on_note=lambda text: note(f"opencbs: {text}"),
            )
        except DestinationError as exc:
            if isinstance(exc, REFUSALS):
                raise
            storage = UnusableStorage(target.where, exc)
        outcome = run_job(
            self.client,
            target,
            self.repo_password,
            storage=storage,
            mode=self.mode,
            as_json=self.as_json,
            verbose=self.verbose,
            spool_dir=self.spool_dir,
            zone=self.settings.tz(),
            state_dir=self.settings.data_dir,
            progress_interval=self.settings.progress_interval,
            prune_grace=self.settings.prune_grace,
            lock_wait=self.settings.lock_wait,
            stop_at_ms=self.stop_at_ms,
            retention_after=self.retention_after,
        )
        return outcome, isinstance(storage, UnusableStorage) and storage.misconfigured


def _run_one(run: _Run, target: Target, *, unreachable_told: bool) -> int:
    """The one job of ``target``: printed, and its exit code (module docstring)."""
    outcome, misconfigured = run.one(target)
    return _finish(
        outcome,
        target,
        as_json=run.as_json,
        unreachable_told=unreachable_told,
        misconfigured=misconfigured,
    )


def _run_each(run: _Run, bset: RemoteSet, *, unreachable_told: bool) -> int:
    """One job per destination of ``bset``, one after another, each with its own outcome: a
    destination that fails (or is refused before its job) does not stop the others. Prints
    each outcome (``--json``: ``{"jobs": [outcome, …]}``, a destination refused before its job
    as ``{"destination_id", "error", "exit_code"}``); the exit code is the first non-zero one
    (module docstring), 0 when every job succeeded."""
    codes: list[int] = []
    documents: list[dict[str, object]] = []
    for d in bset.destinations:
        try:
            target = Target(bset, d, address_of(d))
            if not run.as_json:
                echo(f"destination {show_name(d.name)} ({d.id}): {show_name(target.where)}")
            outcome, misconfigured = run.one(target)
        except OpenCBSError as exc:
            said = (
                exc.message
                if exc.message.startswith(f"destination {d.id} ")
                else (f"destination {show_name(d.name)} ({d.id}): {exc.message}")
            )
            note(f"opencbs: error: {said}")
            if exc.hint:
                note(f"hint: {exc.hint}")
            codes.append(int(exc.exit_code))
            documents.append(
                {"destination_id": d.id, "error": exc.message, "exit_code": int(exc.exit_code)}
            )
            continue
        if run.as_json:
            code = _code(outcome, target, misconfigured=misconfigured)
            documents.append({**outcome_json(outcome), "exit_code": code})
            print_delivery_notes(outcome, unreachable_told=unreachable_told)
            codes.append(code)
        else:
            codes.append(
                _finish(
                    outcome,
                    target,
                    as_json=False,
                    unreachable_told=unreachable_told,
                    misconfigured=misconfigured,
                )
            )
    if run.as_json:
        print_json({"jobs": documents})
    return next((c for c in codes if c), 0)


def _finish(
    outcome: JobOutcome,
    target: Target,
    *,
    as_json: bool,
    unreachable_told: bool,
    misconfigured: bool = False,
) -> int:
    """Print the job's outcome (``--json``: the document on stdout, the rest on stderr) and
    give the command's exit code (module docstring)."""
    if as_json:
        print_json(outcome_json(outcome))
        print_delivery_notes(outcome, unreachable_told=unreachable_told)
    else:
        print_outcome(outcome, target, unreachable_told=unreachable_told)
    return _code(outcome, target, misconfigured=misconfigured)


def _code(outcome: JobOutcome, target: Target, *, misconfigured: bool = False) -> int:
    """The exit code of one job (module docstring), its failure said on stderr; a job failed
    by its destination's settings (``misconfigured``) exits 7, "cannot be used"."""
    code = exit_code_of(outcome.status)
    if code == ExitCode.JOB_FAILED:
        print_job_failure(outcome, target.address)
        if misconfigured:
            return ExitCode.UNAVAILABLE
    if code == ExitCode.SUCCESS and outcome.report_lost:
        return ExitCode.UNAVAILABLE
    return code


def _job_mode(mode: str | None, *, scheduled: bool) -> JobMode:
    """The job's mode: ``--mode``, else S with ``--scheduled``, else M. Raises
    ``InvalidInput`` when both are given and disagree."""
    if mode is None:
        return JobMode.SCHEDULED if scheduled else JobMode.MANUAL
    if scheduled and mode != JobMode.SCHEDULED:
        raise InvalidInput(f"--scheduled and --mode {mode} disagree", "give one of them")
    return JobMode(mode)


def _named_destination(
    settings: Settings,
    sources: tuple[Path, ...],
    destination: str | None,
    add_destination: str | None,
) -> DestinationAddress | None:
    """The destination the command line names (``--destination`` or ``--add-destination``),
    the paths given checked first (``_check_paths``). Raises ``InvalidInput``."""
    _check_paths(sources, destination, add_destination)
    return destination_address(
        settings,
        destination or add_destination,
        option="--destination" if add_destination is None else "--add-destination",
    )


def _check_paths(
    sources: tuple[Path, ...], destination: str | None, add_destination: str | None
) -> None:
    """The paths given, before anything is asked: not both destination options, and every
    source path text (``require_text_paths``; a destination's is checked as it is parsed).
    Raises ``InvalidInput``."""
    if destination is not None and add_destination is not None:
        raise InvalidInput(
            "give --destination or --add-destination, not both",
            "--add-destination PATH adds PATH to an existing set",
        )
    require_text_paths(sources, None)
