"""``opencbs restore``: one job (``agent.restore``; ``latest``: the newest of a set,
``agent.snapshot_lookup``) restored into a target folder, created only once the repository is
open and the snapshot and paths are found; reported to the server as a restore job
(``agent.restore_report``) when it can be.

What the target holds already (``--overwrite``, ``agent.restore_overwrite``): without the
option a non-directory at a path the restore would write stops it before anything is written
(exit code 5, the path named, the option in the hint). Each path the target refuses is one
warning line on stderr and the restore goes on (exit code 10 at the end, ``PathsNotRestored``;
damaged contents win with exit code 8). A restore that could not be reported says so in one
line (``opencbs: restore report not delivered: …``); its own outcome is unchanged.

``--json`` prints its document on stdout whatever the outcome once the snapshot is found: also
when the restore is refused (the target holds files, exit code 5), cannot write its target
(exit code 7) or is stopped (SIGTERM or Ctrl-C, exit code 130): then with ``"error"`` (the
error's one line), ``"complete": false`` and the counts so far (:func:`stopped_json`); the
error itself follows on stderr and the exit code is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from opencbs.agent.restore import (
    RestoreIncomplete,
    RestoreProgress,
    RestoreResult,
    find_snapshot,
    refuse_conflicts,
)
from opencbs.agent.restore import restore as restore_snapshot
from opencbs.agent.restore_overwrite import CHOICES, Overwrite
from opencbs.agent.restore_report import RestoreAbout, RestoreClient, RestoreReport
from opencbs.agent.snapshot_lookup import (
    LATEST,
    accepted_set_names,
    expand_snapshot_prefix,
    resolve_paths,
    set_names,
)
from opencbs.agent.targets import locate_destination
from opencbs.cli.agent_options import (
    CA_FILE,
    DESTINATION,
    ENCRYPTION_FILE,
    LOGIN,
    PASSWORD_STDIN,
    S3_ENDPOINT,
    S3_REGION,
    SERVER,
    backup_password,
    destination_address,
    encryption_password,
    open_existing_repository,
    reading_lock,
    report_spool_dir,
    require_login,
    with_agent_settings,
)
from opencbs.cli.backup_run import snapshots_command, verify_command
from opencbs.cli.common import JSON, echo, note, print_json, show_name
from opencbs.cli.progress import RestoreProgressView
from opencbs.destinations.base import Storage
from opencbs.engine.repo_errors import SnapshotNotFound
from opencbs.engine.repository import Repository, SnapshotInfo
from opencbs.errors import ExitCode, InvalidInput, OpenCBSError
from opencbs.model.destinations import DestinationAddress
from opencbs.reports.wording import plural
from opencbs.settings import Settings

__all__ = [
    "PathsNotRestored",
    "TargetUnwritable",
    "restore",
    "restore_json",
    "stopped_json",
]


@click.command()
@click.argument("job_or_snapshot", metavar="JOBID|SNAPSHOT|latest")
@click.option(
    "--set",
    "set_ref",
    default=None,
    metavar="NAME|ID",
    help="Only snapshots of this backup set, e.g. its latest (a name is looked up on the server).",
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
@click.option(
    "--overwrite",
    type=click.Choice(CHOICES),
    default=None,
    help="What to do with files DIR already holds: always replace them, replace them "
    "if-changed (size and modification time, or content, differ), or never (keep them, "
    "restore what is missing). Without it a restore that would replace a file stops before "
    "writing anything.",
)
@click.option(
    "--same-owner",
    is_flag=True,
    help="Restore owner, group (numeric IDs) and setuid/setgid/sticky bits; without it files "
    "belong to whoever runs the restore and keep their permission bits only.",
)
@click.option(
    "--accept-server-changes",
    is_flag=True,
    help="With --set and no --destination: read from the folder the server names even if "
    "this agent never accepted it for that set (and remember it).",
)
@JSON
@with_agent_settings(
    SERVER, LOGIN, PASSWORD_STDIN, ENCRYPTION_FILE, CA_FILE, S3_ENDPOINT, S3_REGION
)
def restore(
    settings: Settings,
    *,
    job_or_snapshot: str,
    set_ref: str | None,
    destination: str | None,
    target: str,
    paths: tuple[str, ...],
    overwrite: str | None,
    same_owner: bool,
    accept_server_changes: bool,
    as_json: bool,
    password_stdin: bool,
    encryption_password_file: Path | None,
) -> None:
    """Restore one backup job (by job ID, snapshot ID or a unique prefix of at least 8
    characters of it, or `latest`: the newest snapshot of --set, or of the one set the
    destination holds) into --target DIR.

    Source path /a/b is written to DIR/a/b; DIR's own mode, owner and times are left alone.
    Contents are checked against their hashes; nothing is written outside DIR. A file DIR
    already holds where the snapshot has one stops the restore before anything is written
    (exit code 5), unless --overwrite says what to do; existing folders are merged into. A
    --path that names nothing in the snapshot is an error (exit code 4). The repository is
    opened and the snapshot found before DIR is created: a restore that cannot start creates
    nothing. A path DIR refuses (e.g. a folder where the snapshot has a file) is named in a
    warning and the rest is restored (exit code 10). The restore is reported to the server as
    a restore job when a backup user and its password are set (else one line says it was not).
    With --set and no --destination the folder is the server's, used only if this agent
    accepted it for that set (a backup of the set here did) or with --accept-server-changes."""
    # everything that can fail is checked before anything is created: the repository opened,
    # the snapshot and paths found; then the target is created and "started" shown
    _check_target_arg(target)
    mode = Overwrite(overwrite) if overwrite is not None else Overwrite.REFUSE
    with contextlib.ExitStack() as stack:
        client, set_id, address, why_not = _restore_source(
            settings,
            set_ref=set_ref,
            destination=destination_address(settings, destination),
            password_stdin=password_stdin,
            accept=accept_server_changes,
        )
        if client is not None:
            stack.enter_context(client)
        repo_password = encryption_password(settings, encryption_password_file)
        storage, repo = open_existing_repository(settings, address, repo_password)
        info, wanted = _restore_selection(
            repo, job_or_snapshot, paths, set_id, data_dir=settings.data_dir, address=address
        )
        report = RestoreReport(client, unavailable=why_not)
        report.start(_about(info, target, mode))
        job = _Job(
            storage=storage,
            repo=repo,
            repo_password=repo_password,
            info=info,
            wanted=wanted,
            target=target,
            address=address,
            mode=mode,
            same_owner=same_owner,
            as_json=as_json,
            title=f"restore {show_name(job_or_snapshot)} into {show_name(target)}",
        )
        try:
            result = _run(settings, job, report)
        finally:
            if not report.delivered:
                note(f"opencbs: restore report not delivered: {report.problem or 'unknown'}")
    _finish_output(result, target, report, as_json=as_json)


@dataclass(frozen=True)
class _Job:
    """One restore as the command runs it (private)."""

    storage: Storage
    repo: Repository
    repo_password: str
    info: SnapshotInfo
    wanted: list[bytes] | None
    target: str
    address: DestinationAddress
    mode: Overwrite
    same_owner: bool
    as_json: bool
    title: str


def _about(info: SnapshotInfo, target: str, mode: Overwrite) -> RestoreAbout:
    """What the restore job is about, for the server."""
    return RestoreAbout(
        set_id=info.meta.set_id,
        destination_id=info.meta.destination_id,
        backup_job_id=info.meta.job_id,
        snapshot_id=info.id,
        target=show_name(os.path.abspath(target)),
        overwrite=mode.value,
    )


def _run(settings: Settings, job: _Job, report: RestoreReport) -> RestoreResult:
    """Create the target and restore into it under a shared lock, with the progress view and
    the report; the report is finished whatever happens. Raises what the restore raises,
    translated: ``TargetUnwritable``, ``RestoreIncomplete`` (its hint), ``RestoreConflict``.
    With ``--json`` the document is printed whatever it raises (:func:`stopped_json`)."""
    so_far = [RestoreResult(job.info.id, 0, 0, 0, 0, ())]
    try:
        if job.mode is Overwrite.REFUSE:  # said before anything is shown or created
            refuse_conflicts(job.repo, job.info.id, job.target, paths=job.wanted)
        folder_ = _restore_target(job.target)
        with (
            _sigterm_as_interrupt(),
            reading_lock(settings, job.repo, "restore"),
            RestoreProgressView(
                job.title, quiet=job.as_json, interval=settings.progress_interval
            ) as shown,
        ):

            def progress(p: RestoreProgress) -> None:
                shown.update(p)
                report.progress(p)

            result = _restore_into(job, folder_, progress, so_far.append)
    except RestoreIncomplete as exc:
        report.result_logs(exc.result)
        report.finish(None, exc)
        if job.as_json:  # the document first; the error (exit code 8) follows on stderr
            print_json(restore_json(exc.result, report))
        _warn_failed(exc.result)
        raise
    except BaseException as exc:
        report.finish(None, exc)
        if job.as_json:  # the document first; the error follows on stderr
            print_json(stopped_json(so_far[-1], report, exc))
        raise
    report.result_logs(result)
    report.finish(result)
    return result


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM stops the restore as Ctrl-C does (``KeyboardInterrupt``: the file
    being written is removed, the job reported ``RESTORE_STOP_BY_USER``, exit code 130)."""
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _restore_into(
    job: _Job,
    folder_: Path,
    progress: Callable[[RestoreProgress], None],
    stopped: Callable[[RestoreResult], None],
) -> RestoreResult:
    """``agent.restore.restore`` of the job into ``folder_``, its errors given their words;
    ``stopped`` gets the result so far when it stops by an exception."""
    try:
        return restore_snapshot(
            job.storage,
            job.repo_password,
            job.info.id,
            folder_,
            paths=job.wanted,
            same_owner=job.same_owner,
            progress=progress,
            repository=job.repo,
            overwrite=job.mode,
            stopped=stopped,
        )
    except OSError as exc:
        raise TargetUnwritable(
            f"cannot write into target {show_name(job.target)}: {exc.strerror or exc}"
        ) from exc
    except RestoreIncomplete as exc:
        exc.hint = (
            f"check the repository with `{verify_command(job.address)} --read-data`; restore "
            "the damaged files from another copy"
        )
        raise


def _finish_output(
    result: RestoreResult, target: str, report: RestoreReport, *, as_json: bool
) -> None:
    """The outcome on stdout (or the ``--json`` document), the warnings, the exit."""
    if as_json:
        print_json(restore_json(result, report))
    else:
        _print_restored(result, target)
    _warn_failed(result)
    if result.failed_count:
        raise PathsNotRestored(result)


def _print_restored(result: RestoreResult, target: str) -> None:
    not_restored = (
        f", {plural(result.failed_count, 'path not restored', 'paths not restored')}"
        if result.failed_count
        else ""
    )
    kept = (
        f", {plural(result.kept, 'existing path', 'existing paths')} kept as they were"
        if result.kept
        else ""
    )
    blocked = (
        f", {plural(result.blocked, 'path')} not restored (in the way: see the warnings)"
        if result.blocked
        else ""
    )
    # the counts and size: the summary on stderr said them (cli.progress)
    echo(
        f"restored snapshot {result.snapshot_id} into {show_name(target)}{kept}{blocked}"
        f"{not_restored}"
    )
    for skipped in result.skipped:
        note(f"skipped unsafe path {show_name(skipped)}")


def _warn_failed(result: RestoreResult) -> None:
    """One warning line on stderr per path not restored (those listed in the result) and per
    other warning of the result."""
    for warning in result.warnings:
        note(f"opencbs: warning: {warning}")
    for failed in result.failed:
        note(f"opencbs: warning: cannot restore {show_name(failed.path)}: {failed.reason}")
    unlisted = result.failed_count - len(result.failed)
    if unlisted > 0:
        more = plural(unlisted, "more path not restored", "more paths not restored")
        note(f"opencbs: warning: {more} (not listed)")


def restore_json(result: RestoreResult, report: RestoreReport | None = None) -> dict[str, Any]:
    """A restore's result for machines: the snapshot ID, counts, bytes, the existing paths
    ``kept``, the entries not restored below a path ``--overwrite never`` kept in their way
    (``blocked``), the unsafe paths skipped, the other ``warnings`` (lines), the damaged entries
    (``path``, ``message``), the paths not restored (``failed_count``; ``failed``: the first
    ``agent.restore.FAILED_LISTED``, ``path`` and ``reason``), whether it is ``complete``, and
    the restore job on the server (``restore_job_id``: its ID, ``None`` when not reported;
    ``report_delivered``)."""
    return {
        "snapshot_id": result.snapshot_id,
        "files": result.files,
        "dirs": result.dirs,
        "links": result.links,
        "bytes": result.bytes,
        "kept": result.kept,
        "blocked": result.blocked,
        "skipped": list(result.skipped),
        "warnings": list(result.warnings),
        "damaged": [{"path": d.path, "message": d.message} for d in result.damaged],
        "failed_count": result.failed_count,
        "failed": [{"path": f.path, "reason": f.reason} for f in result.failed],
        "complete": result.complete,
        "restore_job_id": report.job_id if report is not None else None,
        "report_delivered": report.delivered if report is not None else False,
    }


def stopped_json(
    result: RestoreResult, report: RestoreReport | None, error: BaseException
) -> dict[str, Any]:
    """:func:`restore_json` of a restore that was refused, failed or stopped by ``error``, with
    ``result`` its counts so far: ``"complete": false`` and ``"error"``, the error's one line
    (``"interrupted"`` for Ctrl-C or SIGTERM, as on stderr)."""
    if isinstance(error, OpenCBSError):
        message = error.message
    elif isinstance(error, KeyboardInterrupt):
        message = "interrupted"
    else:
        message = str(error) or type(error).__name__
    return {**restore_json(result, report), "complete": False, "error": message}


class PathsNotRestored(OpenCBSError):
    """A restore that wrote everything else, but some paths were refused by the target
    (exit code 10, ``INCOMPLETE``); each was named in a warning already."""

    code = "restore_paths_not_restored"
    exit_code = ExitCode.INCOMPLETE

    def __init__(self, result: RestoreResult) -> None:
        first = result.failed[0]
        super().__init__(
            f"restore incomplete: "
            f"{plural(result.failed_count, 'path not restored', 'paths not restored')} (first: "
            f"{show_name(first.path)}: {first.reason})",
            "see the warnings above; clear what is in the way (or restore into an empty "
            "--target) and restore those paths again with --path",
        )
        self.result = result


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
    repo: Repository,
    ref: str,
    paths: Sequence[str],
    set_id: str | None,
    *,
    data_dir: Path,
    address: DestinationAddress,
) -> tuple[SnapshotInfo, list[bytes] | None]:
    """The snapshot to restore (``ref``: a job ID, a snapshot ID or a unique prefix of one,
    or ``latest``: the newest of the set, its errors naming the sets by the names recorded or
    accepted in ``data_dir``) and the raw snapshot paths of ``paths`` (``None``: everything).
    Raises ``AmbiguousSnapshot``, ``PathNotInSnapshot``, ``SeveralSets`` and
    ``SnapshotNotFound`` (its hint: list the snapshots of ``address``)."""
    names = None
    if ref == LATEST:
        names = set_names(repo.list_snapshots(), accepted_set_names(data_dir))
    try:
        info = find_snapshot(
            repo, expand_snapshot_prefix(repo, ref), set_id=set_id, set_names=names
        )
    except SnapshotNotFound as exc:
        exc.hint = exc.hint or (
            f"list them: {snapshots_command(address)} (a job ID, "
            "a snapshot ID or 8+ of its first characters, or latest)"
        )
        raise
    return info, (resolve_paths(repo, info.id, paths) if paths else None)


def _restore_source(
    settings: Settings,
    *,
    set_ref: str | None,
    destination: DestinationAddress | None,
    password_stdin: bool,
    accept: bool,
) -> tuple[RestoreClient | None, str | None, DestinationAddress, str]:
    """The agent API client the restore is reported through (``None`` and why, when there are
    no credentials: a backup user and a password set or piped in; never prompted for only to
    report), the set ID to filter by and the destination folder. The server is asked only when
    a set name must be looked up or no ``--destination`` is given (a folder it names must be
    one the agent accepted for the set, or ``accept``: ``agent.trust``)."""
    if destination is not None and (set_ref is None or set_ref.isdigit()):
        client, why_not = _report_client(settings, password_stdin=password_stdin)
        return client, set_ref, destination, why_not
    if set_ref is None:
        raise InvalidInput(
            "no destination given",
            "use --destination PATH|s3://BUCKET/PREFIX (or --set NAME|ID to look it up on the "
            "server)",
        )
    login = require_login(settings)
    password = backup_password(settings, from_stdin=password_stdin)
    url = settings.effective_server_url
    client = RestoreClient(url, login, password, ca_file=settings.ca_file)
    try:
        set_id, address = locate_destination(
            client,
            url,
            login,
            set_ref=set_ref,
            destination=destination,
            spool_dir=report_spool_dir(settings, login),
            accept_server_changes=accept,
            on_note=lambda text: note(f"opencbs: {text}"),
        )
    except BaseException:
        client.close()
        raise
    return client, set_id, address, ""


def _report_client(settings: Settings, *, password_stdin: bool) -> tuple[RestoreClient | None, str]:
    """A client to report the restore through, when a backup user and its password are given
    (``--password-stdin`` or the setting ``password``); else ``None`` and why."""
    if not settings.login_name:
        return None, "no backup user given (--login, OPENCBS_LOGIN_NAME or login_name)"
    if password_stdin:
        password = backup_password(settings, from_stdin=True)
    elif settings.password:
        password = settings.password
    else:
        return None, (
            f"no password for the backup user {settings.login_name} (OPENCBS_PASSWORD, "
            "password in the config file, or --password-stdin)"
        )
    url = settings.effective_server_url
    return RestoreClient(url, settings.login_name, password, ca_file=settings.ca_file), ""
