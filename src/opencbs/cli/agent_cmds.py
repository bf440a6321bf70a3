"""The agent's commands: ``backup``, ``restore``, ``verify`` and ``snapshots``.

``backup`` runs one job of a backup set (``opencbs.agent.backup.run_backup``) against the
server at ``server_url`` as backup user ``login_name``; the others work on a destination's
repository directly (``restore`` and ``snapshots`` need no server unless ``--set`` names a set
to look up).

Exit codes of ``backup`` (and ``quickstart``): 0 when the job ends ``BS_STOP_SUCCESS``,
``BS_STOP_SUCCESS_WITH_WARNING`` or ``BS_STOP_SUCCESS_WITH_ERROR``; 130 when it was stopped by
Ctrl-C or SIGTERM (``BS_STOP_BY_USER``); 9 for any other final status (``BS_STOP_BY_SYSTEM_ERROR``:
the destination failed; stderr then ends with an error line and a hint, as for any failure).
A new set's folder (or one added with ``--add-destination``) is checked before the server
records it. Errors before the job starts use the exit codes of ``opencbs.cli.main``
(3 the server rejected the backup user or the encryption password is wrong, 7 server or
destination unreachable, or the report spool in ``data_dir`` cannot be created or written, 8 the
server refused a request or the repository is damaged).
A server that cannot be reached during the job does not change the exit code: the backup
completes, its report is spooled in ``<data_dir>/agent-spool/<login>-<hash>`` (one spool per
server and backup user: ``opencbs.agent.spool``) and stderr says "report spooled, not
delivered"; the next ``backup`` or ``opencbs agent flush`` delivers it. When the spool cannot be
written either (``data_dir`` full or read-only), the report is lost: stderr says so in an
``opencbs: error:`` line and the exit code is 7 (unless the job's own is not 0). With the server
unreachable at the start, ``backup`` uses this user's backup sets as last seen (remembered at
each run); exit code 7 only when there are none.
``verify`` exits 8 when it finds damage.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

import click

from opencbs.agent import spool
from opencbs.agent.client import AgentClient
from opencbs.agent.delivery import DeliveryState
from opencbs.agent.job import ChangeEvent, JobOptions, JobOutcome, OnChange, run_backup
from opencbs.agent.restore import RestoreIncomplete, RestoreResult, find_snapshot
from opencbs.agent.restore import restore as restore_snapshot
from opencbs.agent.snapshot_lookup import (
    expand_snapshot_prefix,
    resolve_paths,
)
from opencbs.agent.targets import (
    Target,
    locate_destination,
    open_repository,
    resolve_target,
    sets_or_remembered,
    usable_destination,
)
from opencbs.cli.common import (
    JSON,
    CliState,
    echo,
    note,
    print_json,
    print_table,
    require_text_paths,
    show_name,
)
from opencbs.cli.progress import BackupProgress, Ending, RestoreProgressView, activity
from opencbs.destinations.local import LocalStorage
from opencbs.engine.entries import display_path
from opencbs.engine.repo_errors import RepositoryNotFound, SnapshotNotFound
from opencbs.engine.repository import Repository
from opencbs.errors import ExitCode, InvalidInput, OpenCBSError
from opencbs.reports.timefmt import local_zone
from opencbs.reports.vocabulary import FILE_LISTS, JobMode, JobStatus
from opencbs.settings import SETTING_NAMES, Settings

log = logging.getLogger("opencbs.cli")


# --- options and settings ----------------------------------------------------------------

SERVER = click.option(
    "--server",
    "server_url",
    default=None,
    metavar="URL",
    help="Server URL [env OPENCBS_SERVER_URL; default http://127.0.0.1:<port>].",
)
LOGIN = click.option(
    "--login",
    "login_name",
    default=None,
    metavar="NAME",
    help="Backup user (LoginName) [env OPENCBS_LOGIN_NAME].",
)
PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the backup user's password from the first line of stdin [else env "
    "OPENCBS_PASSWORD, the config file, or a prompt].",
)


class _FilePath(click.Path):
    """``click.Path`` that refuses an empty value (``Path("")`` would be the current
    directory: "'.' is a directory" said of a file the user never named)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("must not be empty; give the path of a file", param, ctx)
        return super().convert(value, param, ctx)


ENCRYPTION_FILE = click.option(
    "--encryption-password-file",
    type=_FilePath(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="File whose first line is the repository's encryption password [else "
    "env OPENCBS_ENCRYPTION_PASSWORD, the config file, or a prompt].",
)
DESTINATION = click.option(
    "--destination",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Folder of the local destination (the repository).",
)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def with_agent_settings(*options: Decorator) -> Decorator:
    """Give a command ``options``; it receives the resolved ``Settings`` as first argument
    instead of the options named like settings (``server_url``, ``login_name``)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            state = click.get_current_context().find_object(CliState) or CliState()
            flags = {n: kwargs.pop(n) for n in list(kwargs) if n in SETTING_NAMES}
            settings = state.settings(flags)
            quiet_http_log(state.debug)
            return f(settings, **kwargs)

        out: Callable[..., Any] = wrapper
        for opt in reversed(options):
            out = opt(out)
        return out

    return decorate


def quiet_http_log(debug: bool) -> None:
    """httpx logs every request at INFO; keep that for ``--debug``."""
    if not debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def backup_password(settings: Settings, from_stdin: bool) -> str:
    """The backup user's password: stdin (``--password-stdin``), else the setting
    ``password``, else typed at a terminal. Raises ``InvalidInput``."""
    if from_stdin:
        line = _first_line(sys.stdin.readline())
        if not line:
            raise InvalidInput(
                "no password on standard input",
                "pipe it in: printf '%s\\n' \"$PW\" | opencbs … --password-stdin",
            )
        return line
    if settings.password:
        return settings.password
    if sys.stdin.isatty():
        typed: str = click.prompt(f"Password of {settings.login_name}", hide_input=True)
        return typed
    raise InvalidInput(
        "no password for the backup user",
        "set OPENCBS_PASSWORD or password in the config file, or use --password-stdin",
    )


def encryption_password(settings: Settings, path: Path | None) -> str:
    """The repository's encryption password: the first line of ``path``
    (``--encryption-password-file``), else the setting ``encryption_password``, else typed at a
    terminal. Raises ``InvalidInput``."""
    if path is not None:
        try:
            line = _first_line(path.read_text(encoding="utf-8"))
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            raise InvalidInput(
                f"cannot read the encryption password file {show_name(str(path))}: {why}",
                "give a readable UTF-8 file with the password on its first line",
            ) from exc
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"the encryption password file {show_name(str(path))} is not UTF-8 text",
                "give a readable UTF-8 file with the password on its first line",
            ) from exc
        if not line:
            raise InvalidInput(
                f"the encryption password file {show_name(str(path))} is empty",
                "write the repository's encryption password on its first line "
                "(no blank line before it)",
            )
        return line
    if settings.encryption_password:
        return settings.encryption_password
    if sys.stdin.isatty():
        typed: str = click.prompt("Encryption password", hide_input=True)
        return typed
    raise InvalidInput(
        "no encryption password for the repository",
        "set OPENCBS_ENCRYPTION_PASSWORD or encryption_password in the config "
        "file, or use --encryption-password-file",
    )


def require_login(settings: Settings) -> str:
    """The backup user's login name; raises ``InvalidInput`` when none is set."""
    if not settings.login_name:
        raise InvalidInput(
            "no backup user given",
            "use --login NAME, OPENCBS_LOGIN_NAME or login_name in the config file",
        )
    return settings.login_name


def report_spool_dir(settings: Settings, login: str) -> Path:
    """The report spool of backup user ``login`` on the server of ``settings``
    (``agent.spool.report_spool_dir``)."""
    return spool.report_spool_dir(settings.data_dir, settings.effective_server_url, login)


def open_existing_repository(folder: Path, password: str) -> Repository:
    """The repository in the local destination ``folder`` (never created here). Raises
    ``RepositoryNotFound`` naming the folder as typed (escaped), ``WrongPassword``,
    ``DestinationError``."""
    try:
        return Repository.open(LocalStorage(folder), password)
    except RepositoryNotFound:
        raise RepositoryNotFound(show_name(str(folder))) from None


# --- running a job -----------------------------------------------------------------------


@contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM set ``cancel`` (the job stops cleanly and reports
    ``BS_STOP_BY_USER``); a second SIGINT raises ``KeyboardInterrupt``. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        os.write(2, b"opencbs: stopping the job cleanly (Ctrl-C again to abort)\n")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def print_changes(*, enabled: bool, err: bool) -> Iterator[OnChange | None]:
    """While inside: with ``enabled`` (``--verbose``), a job's ``on_change`` that prints each
    change with its reason, ``<list> <path>: <reason>`` (on stderr with ``err``, for
    ``--json``; else stdout); else ``None``."""
    if not enabled:
        yield None
        return

    def printed(change: ChangeEvent) -> None:
        line = f"{change.kind.key} {display_path(change.path)}: {change.why}"
        click.echo(show_name(line), err=err)

    yield printed


def run_job(
    client: AgentClient,
    target: Target,
    password: str,
    *,
    mode: JobMode,
    as_json: bool,
    verbose: bool,
    spool_dir: Path | None = None,
    zone: tzinfo | None = None,
) -> JobOutcome:
    """One backup job of ``target`` with progress on stderr, Ctrl-C/SIGTERM stopping it
    cleanly, and (``verbose``) each change printed with its reason. The repository is opened
    (or on first use created) first, so a wrong encryption password stops before any job
    starts. Raises ``WrongPassword``, ``DestinationError``, ``ServerUnreachable``,
    ``AgentApiError``."""
    level = target.bset.settings.compression.level
    storage = LocalStorage(target.path)
    repo = open_repository(storage, password, compression_level=level)
    cancel = threading.Event()
    title = f"backup {target.bset.name}"
    # signals first: once progress shows "started", Ctrl-C and SIGTERM stop the job cleanly
    options = JobOptions(
        client=client,
        set_id=target.bset.id,
        destination_id=target.destination.id,
        storage=storage,
        password=password,
        mode=mode,
        spool_dir=spool_dir,
        zone=zone,
        repository=repo,
    )
    with (
        cancel_on_signals(cancel),
        BackupProgress(title, quiet=as_json) as shown,
        print_changes(enabled=verbose, err=as_json) as on_change,
    ):
        outcome = run_backup(options, on_change=on_change, on_progress=shown.update, cancel=cancel)
        shown.ended(_ending(outcome.status))
        return outcome


def _ending(status: JobStatus) -> Ending:
    """How the progress's final line names a job's end."""
    code = exit_code_of(status)
    return "done" if code == 0 else "stopped" if code == ExitCode.INTERRUPTED else "failed"


def outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    """A job's outcome for machines: IDs as strings, counts by CBS list key."""
    return {
        "job_id": outcome.ref.job_id,
        "backup_set_id": outcome.ref.set_id,
        "destination_id": outcome.ref.destination_id,
        "status": outcome.status.value,
        "snapshot_id": outcome.snapshot_id,
        "counts": {lst.key: outcome.counts.get(lst, 0) for lst in FILE_LISTS},
        "warnings": outcome.warnings,
        "errors": outcome.errors,
        "dedupe_original_size": outcome.dedupe_original_size,
        "dedupe_saving": outcome.dedupe_saving,
        "message": outcome.message,
        "report_delivered": outcome.report_delivered,
        "report_spool": outcome.report_spool or None,
        "report_lost": outcome.report_lost,
        "flushed": [
            {
                "job_id": d.job_id,
                "backup_set_id": d.set_id,
                "state": d.state.value,
                "message": d.message,
            }
            for d in outcome.flushed
        ],
    }


def print_outcome(outcome: JobOutcome) -> None:
    """A job's outcome for a person, on stdout."""
    echo(
        f"job {outcome.ref.job_id}: {outcome.status.value} (backup set {outcome.ref.set_id}, "
        f"destination {outcome.ref.destination_id})"
    )
    counts = "  ".join(f"{lst.key} {outcome.counts.get(lst, 0)}" for lst in FILE_LISTS)
    echo(f"{counts}  warnings {outcome.warnings}  errors {outcome.errors}")
    if outcome.snapshot_id:
        echo(f"snapshot {outcome.snapshot_id}")
    if outcome.message:
        echo(f"note: {show_name(outcome.message)}")
    print_delivery_notes(outcome)


def print_delivery_notes(outcome: JobOutcome) -> None:
    """On stderr: the earlier spooled reports delivered first, and, when this job's report
    could not be delivered, "report spooled, not delivered" with why and where, or, when it
    could not be spooled either, an error saying what is lost, with a hint."""
    for d in outcome.flushed:
        note(
            f"earlier report of {d.job_name}: {d.state.value}"
            f"{'' if d.state is DeliveryState.DELIVERED else ': ' + d.message}"
        )
    if outcome.report_lost:
        note(f"opencbs: error: {outcome.report_error}")
        note(
            "hint: free space in the agent's data_dir (OPENCBS_DATA_DIR) or make it writable, "
            "then run the backup again"
        )
    elif outcome.report_spool:
        note(f"opencbs: report spooled, not delivered: {outcome.report_error}")


def exit_code_of(status: JobStatus) -> int:
    """0 for the success statuses, 130 stopped by user, 9 otherwise (module docstring)."""
    if status in (
        JobStatus.STOP_SUCCESS,
        JobStatus.STOP_SUCCESS_WITH_WARNING,
        JobStatus.STOP_SUCCESS_WITH_ERROR,
    ):
        return 0
    if status is JobStatus.STOP_BY_USER:
        return ExitCode.INTERRUPTED
    return ExitCode.JOB_FAILED


# --- the commands ------------------------------------------------------------------------


@click.command()
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="The backup set (name or ID); optional when the user has exactly one.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="PATH",
    type=click.Path(path_type=Path),
    help="First use: a folder or file of the new set (repeatable).",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="First use: a glob pattern of full paths to leave out (repeatable).",
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATTERN",
    help="First use: a glob pattern of full paths to back up only (repeatable).",
)
@click.option(
    "--destination",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Folder of the local destination: on first use the set's; "
    "else which of the set's destinations (default: its first).",
)
@click.option(
    "--add-destination",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Add this folder to an existing set as a new local destination and back up "
    "to it (a full backup).",
)
@click.option("--scheduled", is_flag=True, help="Run as a scheduled job (mode S, not M).")
@click.option("-v", "--verbose", is_flag=True, help="Print each change with its reason.")
@JSON
@with_agent_settings(SERVER, LOGIN, PASSWORD_STDIN, ENCRYPTION_FILE)
def backup(
    settings: Settings,
    set_ref: str | None,
    sources: tuple[Path, ...],
    excludes: tuple[str, ...],
    includes: tuple[str, ...],
    destination: Path | None,
    add_destination: Path | None,
    scheduled: bool,
    verbose: bool,
    as_json: bool,
    password_stdin: bool,
    encryption_password_file: Path | None,
) -> int:
    """Run one backup job of a backup set and report it to the server.

    On first use, --set NAME --source PATH… --destination PATH creates the set (a file backup
    set with one local destination); --add-destination PATH adds a destination to an existing
    set. Exit code 0 when the job succeeds (with warnings or errors too), 130 when stopped
    (Ctrl-C, SIGTERM), 9 when it fails."""
    if destination is not None and add_destination is not None:
        raise InvalidInput(
            "give --destination or --add-destination, not both",
            "--add-destination PATH adds PATH to an existing set",
        )
    require_text_paths(
        sources,
        destination or add_destination,
        destination_option="--destination" if add_destination is None else "--add-destination",
    )
    login = require_login(settings)
    password = backup_password(settings, password_stdin)
    repo_password = encryption_password(settings, encryption_password_file)
    url = settings.effective_server_url
    spool_dir = report_spool_dir(settings, login)
    with AgentClient(url, login, password) as client:
        found = sets_or_remembered(
            client, url, login, spool_dir, on_note=lambda text: note(f"opencbs: {text}")
        )
        target = resolve_target(
            client,
            found,
            set_ref,
            sources=sources,
            destination=destination or add_destination,
            excludes=excludes,
            includes=includes,
            add_destination=add_destination is not None,
            check_destination=functools.partial(usable_destination, password=repo_password),
            on_note=note,
        )
        outcome = run_job(
            client,
            target,
            repo_password,
            mode=JobMode.SCHEDULED if scheduled else JobMode.MANUAL,
            as_json=as_json,
            verbose=verbose,
            spool_dir=spool_dir,
            zone=settings.tz(),
        )
    if as_json:
        print_json(outcome_json(outcome))
        print_delivery_notes(outcome)
    else:
        print_outcome(outcome)
    code = exit_code_of(outcome.status)
    if code == ExitCode.JOB_FAILED:
        print_job_failure(outcome, target.path)
    if code == 0 and outcome.report_lost:
        return ExitCode.UNAVAILABLE
    return code


def print_job_failure(outcome: JobOutcome, path: Path) -> None:
    """On stderr, for a job that ended ``BS_STOP_BY_SYSTEM_ERROR`` (the destination failed,
    or the scan's helper process did: ``agent.backup``): the error line and a hint, as for any
    other failure of a command."""
    why = show_name(outcome.message) or outcome.status.value
    note(f"opencbs: error: backup job {outcome.ref.job_id} failed ({outcome.status.value}): {why}")
    shown = show_name(str(path))
    verify = f"opencbs verify --destination {shlex.quote(shown)}"
    if outcome.message.startswith("Scan error"):
        note(
            "hint: the walk of the sources stopped (its helper process ended); run the backup "
            "again, with --debug for details; the repository stays consistent (check it: "
            f"{verify})"
        )
        return
    note(
        f"hint: free space on the destination {shown} or check that it is mounted and "
        "writable, then run the backup again; the repository stays consistent (check it: "
        f"{verify})"
    )


@click.command()
@click.argument("job_or_snapshot", metavar="JOBID|SNAPSHOT")
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="Only snapshots of this backup set (a name is looked up on the server).",
)
@DESTINATION
@click.option(
    "--target",
    required=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Folder to restore into (created if missing).",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="P",
    help="Restore only this source path and what is under it, as the report shows "
    "it or raw (repeatable).",
)
@JSON
@with_agent_settings(SERVER, LOGIN, PASSWORD_STDIN, ENCRYPTION_FILE)
def restore(
    settings: Settings,
    job_or_snapshot: str,
    set_ref: str | None,
    destination: Path | None,
    target: str,
    paths: tuple[str, ...],
    as_json: bool,
    password_stdin: bool,
    encryption_password_file: Path | None,
) -> None:
    """Restore one backup job (by job ID, snapshot ID or a unique prefix of at least 8
    characters of it) into --target DIR.

    Source path /a/b is written to DIR/a/b. Contents are checked against their hashes;
    nothing is written outside DIR. A --path that names nothing in the snapshot is an error
    (exit code 4). The repository is opened and the snapshot found before DIR is created: a
    restore that cannot start creates nothing."""
    # everything that can fail is checked before anything is created: the repository opened,
    # the snapshot and paths found; then the target is created and "started" shown
    _check_target_arg(target)
    set_id, folder = _restore_source(settings, set_ref, destination, password_stdin)
    repo_password = encryption_password(settings, encryption_password_file)
    storage = LocalStorage(folder)
    repo = open_existing_repository(folder, repo_password)
    try:
        ref, wanted = _restore_selection(repo, job_or_snapshot, paths, set_id)
    except SnapshotNotFound as exc:
        exc.hint = exc.hint or (
            f"list them: opencbs snapshots --destination "
            f"{show_name(str(folder))} (a job ID, a snapshot ID or 8+ of "
            "its first characters)"
        )
        raise
    folder_ = _restore_target(target)
    title = f"restore {show_name(job_or_snapshot)} into {show_name(target)}"
    with RestoreProgressView(title, quiet=as_json) as shown:
        try:
            result = restore_snapshot(
                storage,
                repo_password,
                ref,
                folder_,
                wanted,
                set_id=set_id,
                progress=shown.update,
                repository=repo,
            )
        except OSError as exc:
            raise TargetUnwritable(
                f"cannot write into target {show_name(target)}: {exc.strerror or exc}"
            ) from exc
        except RestoreIncomplete as exc:
            if as_json:  # the document first; the error (exit code 8) follows on stderr
                print_json(restore_json(exc.result))
            raise
    if as_json:
        print_json(restore_json(result))
        return
    echo(
        f"restored snapshot {result.snapshot_id} into {show_name(target)}: {result.files} "
        f"files, {result.dirs} directories, {result.links} links, {result.bytes} bytes"
    )
    for skipped in result.skipped:
        note(f"skipped unsafe path {show_name(skipped)}")


def restore_json(result: RestoreResult) -> dict[str, Any]:
    """A restore's result for machines: the snapshot ID, counts, bytes, the unsafe paths
    skipped, the damaged entries (``path``, ``message``) and whether it is ``complete``."""
    return {
        "snapshot_id": result.snapshot_id,
        "files": result.files,
        "dirs": result.dirs,
        "links": result.links,
        "bytes": result.bytes,
        "skipped": list(result.skipped),
        "damaged": [{"path": d.path, "message": d.message} for d in result.damaged],
        "complete": result.complete,
    }


class TargetUnwritable(OpenCBSError):
    """The restore target cannot be created or written (exit code 7)."""

    code = "restore_target"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            "choose a --target folder you can create and write (e.g. an empty folder in your home)",
        )


def _check_target_arg(target: str) -> None:
    """Refuse an empty ``--target`` (``InvalidInput``), before anything else is done."""
    if not target.strip():
        raise InvalidInput(
            "--target must not be empty",
            "give the folder to restore into, e.g. --target ./restored",
        )


def _restore_target(target: str) -> Path:
    """``--target``, created when missing. Raises ``InvalidInput`` (empty) or
    ``TargetUnwritable``."""
    _check_target_arg(target)
    path = Path(target)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetUnwritable(
            f"cannot create target {show_name(target)}: {exc.strerror or exc}"
        ) from exc
    return path


def _restore_selection(
    repo: Repository, ref: str, paths: Sequence[str], set_id: str | None
) -> tuple[str, list[bytes] | None]:
    """The ID of the snapshot to restore (``ref``: a job ID, a snapshot ID or a unique prefix
    of one) and the raw snapshot paths of ``paths`` (``None``: everything). Raises
    ``AmbiguousSnapshot``, ``PathNotInSnapshot``, ``SnapshotNotFound``."""
    info = find_snapshot(repo, expand_snapshot_prefix(repo, ref), set_id=set_id)
    return info.id, (resolve_paths(repo, info.id, paths) if paths else None)


def _restore_source(
    settings: Settings, set_ref: str | None, destination: Path | None, password_stdin: bool
) -> tuple[str | None, Path]:
    """The set ID to filter by and the destination folder; the server is asked only when a set
    name must be looked up or no ``--destination`` is given."""
    if destination is not None and (set_ref is None or set_ref.isdigit()):
        return set_ref, destination
    if set_ref is None:
        raise InvalidInput(
            "no destination given",
            "use --destination PATH (or --set NAME|ID to look it up on the server)",
        )
    login = require_login(settings)
    password = backup_password(settings, password_stdin)
    url = settings.effective_server_url
    with AgentClient(url, login, password) as client:
        return locate_destination(client, url, login, set_ref, destination)


@click.command()
@click.option(
    "--destination",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="PATH",
    help="Folder of the local destination (the repository).",
)
@click.option(
    "--read-data", is_flag=True, help="Also read, decrypt and hash every stored chunk (slow)."
)
@JSON
@with_agent_settings(ENCRYPTION_FILE)
def verify(
    settings: Settings,
    destination: Path,
    read_data: bool,
    as_json: bool,
    encryption_password_file: Path | None,
) -> int:
    """Check a destination's repository: every pack and every chunk every snapshot
    references; with --read-data every stored byte. Exit code 8 when damage is found."""
    _must_exist(destination)
    repo_password = encryption_password(settings, encryption_password_file)
    repo = open_existing_repository(destination, repo_password)
    with activity(f"verifying {destination}", quiet=as_json):
        result = repo.verify(read_data=read_data)
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "snapshots": result.snapshots,
                "packs": result.packs,
                "chunks_read": result.chunks_read,
                "errors": [{"subject": p.subject, "message": p.message} for p in result.errors],
            }
        )
    else:
        for p in result.errors:
            echo(f"damaged: {p.subject}: {p.message}")
        echo(
            f"{'ok' if result.ok else f'{len(result.errors)} problems'}: "
            f"{result.snapshots} snapshots, {result.packs} packs, "
            f"{result.chunks_read} chunks read"
        )
    if result.ok:
        return 0
    note(
        f"opencbs: error: the repository at {destination} is damaged "
        f"({len(result.errors)} problems; first: {result.errors[0].subject}: "
        f"{result.errors[0].message})"
    )
    note("hint: restore what you can from other jobs; back up again to store missing data")
    return ExitCode.REFUSED


@click.command()
@click.option(
    "--destination",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="PATH",
    help="Folder of the local destination (the repository).",
)
@JSON
@with_agent_settings(ENCRYPTION_FILE)
def snapshots(
    settings: Settings, destination: Path, as_json: bool, encryption_password_file: Path | None
) -> None:
    """List the snapshots (completed backup jobs) in a destination, oldest first."""
    _must_exist(destination)
    repo_password = encryption_password(settings, encryption_password_file)
    repo = open_existing_repository(destination, repo_password)
    tz = local_zone(settings.timezone)
    rows: list[dict[str, Any]] = []
    for info in repo.list_snapshots():
        m = info.meta
        when = datetime.fromtimestamp(m.time_ns / 1e9, tz).isoformat(timespec="seconds")
        rows.append(
            {
                "id": info.id,
                "time": when,
                "time_ns": m.time_ns,
                "job_id": m.job_id,
                "backup_set_id": m.set_id,
                "destination_id": m.destination_id,
                "hostname": m.hostname,
                "sources": [display_path(s) if isinstance(s, bytes) else str(s) for s in m.sources],
                "entries": info.entry_count,
            }
        )
    if as_json:
        print_json(rows)
        return
    print_table(
        f"Snapshots in {destination}",
        ["ID", "Time", "Job", "Set", "Host", "Sources"],
        [
            [r["id"][:16], r["time"], r["job_id"], r["backup_set_id"], r["hostname"], r["sources"]]
            for r in rows
        ],
        no_wrap=("ID", "Job"),
    )


def _must_exist(destination: Path) -> None:
    if not destination.is_dir():
        raise RepositoryNotFound(show_name(str(destination)))
