"""Running one backup job from the command line, and printing what became of it: shared by
``opencbs backup`` and ``opencbs quickstart``.

:func:`run_job` opens (or creates) the destination's repository, then runs the job
(``agent.job.run_backup``) with its progress on stderr (``cli.progress``), Ctrl-C and SIGTERM
stopping it cleanly (``BS_STOP_BY_USER``) and, with ``--verbose``, each change printed with its
reason (the job's ``on_change``). :func:`print_outcome`, :func:`outcome_json`,
:func:`print_delivery_notes` and :func:`print_job_failure` print the outcome;
:func:`exit_code_of` gives the job's exit code (``errors.ExitCode``): 0 for the success
statuses, 130 stopped by user (or at its schedule's stop time: ``--stop-at``,
``BS_STOP_BY_SCHEDULER``), 9 otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

import click

from opencbs.agent.backup import NOTHING_BACKED_UP
from opencbs.agent.client import AgentClient
from opencbs.agent.delivery import DeliveryState
from opencbs.agent.job import (
    ChangeEvent,
    JobMessage,
    JobOptions,
    JobOutcome,
    OnChange,
    run_backup,
)
from opencbs.agent.job_values import StopEvent
from opencbs.agent.set_lock import set_lock
from opencbs.agent.storage import UnusableStorage
from opencbs.agent.targets import REFUSALS, Target, open_repository
from opencbs.cli.common import echo, note, show_name
from opencbs.cli.progress import BackupProgress, Ending
from opencbs.destinations.base import DestinationError, Storage
from opencbs.engine.entries import display_path
from opencbs.engine.locks import LockTiming
from opencbs.engine.repo_errors import CONFIG_DAMAGED, DamagedConfig, damaged_config_hint
from opencbs.engine.repository import Repository
from opencbs.errors import ExitCode
from opencbs.model.destinations import DEFAULT_S3_REGION, DestinationAddress
from opencbs.reports.vocabulary import FILE_LISTS, JobMode, JobStatus, LogType
from opencbs.settings import DEFAULT_PROGRESS_INTERVAL

#: Seconds between two progress reports of the job to its view (bar or lines).
VIEW_REFRESH = 0.1

__all__ = [
    "cancel_on_signals",
    "change_printer",
    "exit_code_of",
    "outcome_json",
    "print_delivery_notes",
    "print_job_failure",
    "print_job_message",
    "print_outcome",
    "destination_arguments",
    "run_job",
    "snapshots_command",
    "stop_at",
    "verify_command",
]


#: Said when a second Ctrl-C aborts the job at once (:func:`cancel_on_signals`).
ABORTED = (
    "opencbs: aborted; the repository is left consistent, the next backup reuses what was "
    "stored (this job's report is closed as not finished at the next delivery)"
)


@contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """While inside: SIGINT (Ctrl-C) and SIGTERM set ``cancel`` (the job stops cleanly and
    reports ``BS_STOP_BY_USER``), each said in one line on stderr. A second SIGINT aborts at
    once: one line (:data:`ABORTED`), exit code 130 (``os._exit``: no traceback, no cleanup).
    That is safe: the repository's write order makes every crash safe
    (``engine.repository``; the SIGKILL series of tests/e2e/test_interruption.py), and the
    report spool holds whole files only (``agent.spool``), its unfinished job closed as
    ``BS_BACKUP_NOT_FINISHED`` at the next delivery (``agent.delivery``). A second SIGTERM
    changes nothing (the job is stopping already). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            if signum == signal.SIGINT:
                show_cursor = b"\x1b[?25h" if os.isatty(2) else b""  # the progress hid it
                os.write(2, show_cursor + f"\n{ABORTED}\n".encode())
                os._exit(ExitCode.INTERRUPTED)
            return
        cancel.set()
        how = "Ctrl-C again to abort" if signum == signal.SIGINT else "SIGTERM"
        try:  # through the stderr in use: above a progress bar, not into it
            print(f"opencbs: stopping the job cleanly ({how})", file=sys.stderr, flush=True)
        except (OSError, RuntimeError):  # a stream busy in this very thread: write it raw
            os.write(2, f"\nopencbs: stopping the job cleanly ({how})\n".encode())

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def stop_at(cancel: StopEvent, at_ms: int) -> Iterator[None]:
    """While inside: at ``at_ms`` (epoch ms, by the wall clock, read at least every
    :data:`STOP_CHECK` seconds so a machine's sleep does not delay it; at once when past)
    ``cancel`` stops the job ``BS_STOP_BY_SCHEDULER`` (``opencbs backup --stop-at``)."""
    done = threading.Event()

    def watch() -> None:
        while True:
            left = at_ms / 1000 - time.time()
            if left <= 0:
                cancel.stop(JobStatus.STOP_BY_SCHEDULER)
                return
            if done.wait(min(left, STOP_CHECK)):
                return

    watcher = threading.Thread(target=watch, name="stop-at", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


#: Seconds between two readings of the wall clock while a job waits for its stop time.
STOP_CHECK = 5.0


def change_printer(*, err: bool) -> OnChange:
    """A job's ``on_change`` for ``--verbose``: prints each change with its reason,
    ``<list> <path>: <reason> (<what differs>)``, names escaped (``show_name``); on stderr
    with ``err`` (``--json``: stdout holds the document), else on stdout."""

    def printed(change: ChangeEvent) -> None:
        line = f"{change.kind.key} {display_path(change.path)}: {change.why}"
        click.echo(show_name(line), file=sys.stderr if err else sys.stdout)  # above a bar

    return printed


def run_job(
    client: AgentClient,
    target: Target,
    password: str,
    *,
    mode: JobMode,
    as_json: bool,
    verbose: bool,
    storage: Storage,
    spool_dir: Path | None = None,
    zone: tzinfo | None = None,
    state_dir: Path | None = None,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    prune_grace: float = 86400.0,
    lock_wait: float = 600.0,
    stop_at_ms: int | None = None,
    retention_after: bool | None = None,
) -> JobOutcome:
    """One backup job of ``target`` with progress on stderr, each warning and error of the job
    said on stderr as it happens (:func:`print_job_message`, above the progress bar),
    Ctrl-C/SIGTERM stopping it cleanly, and (``verbose``) each change printed with its reason.
    The repository in ``storage`` (the target's destination: ``agent.storage.open_storage``)
    is opened (or on first use created, said in one line on stderr) first, so a wrong
    encryption password stops before any job starts; a destination that cannot be reached or
    used then (an S3 server down, credentials refused, its repository's config damaged) is
    the job's failure instead (``BS_STOP_BY_SYSTEM_ERROR``, reported to the server:
    ``agent.storage.UnusableStorage``).
    ``state_dir``: the agent's data_dir (``JobOptions.state_dir``); ``progress_interval``:
    seconds between progress lines off a terminal; ``prune_grace`` and ``lock_wait``: the
    settings of those names (``JobOptions``). With ``spool_dir`` the set's lock is taken
    first (``agent.set_lock``; before any progress). ``stop_at_ms`` (epoch ms): the job
    stops then, ``BS_STOP_BY_SCHEDULER`` (a schedule's stop time); ``retention_after``:
    ``JobOptions.retention_after``. Raises ``WrongPassword``,
    ``DestinationError``, ``ServerUnreachable``, ``AgentApiError``, ``JobRunning``."""
    repo, storage = _opened(target, storage, password)
    cancel = StopEvent()
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
        state_dir=state_dir,
        # the view's figures move at its refresh rate (the server gets one a PROGRESS_INTERVAL)
        progress_interval=min(VIEW_REFRESH, progress_interval),
        count_totals=not as_json,  # a total and an ETA for the person watching
        prune_grace=prune_grace,
        lock_timing=LockTiming(wait=lock_wait),
        retention_after=retention_after,
    )
    with contextlib.ExitStack() as stack:
        if spool_dir is not None:  # refused before the progress says "started"
            stack.enter_context(set_lock(spool_dir, target.bset.id, set_name=target.bset.name))
        stack.enter_context(cancel_on_signals(cancel))
        if stop_at_ms is not None:
            stack.enter_context(stop_at(cancel, stop_at_ms))
        shown = stack.enter_context(
            BackupProgress(title, quiet=as_json, interval=progress_interval)
        )
        outcome = run_backup(
            options,
            on_change=change_printer(err=as_json) if verbose else None,
            on_progress=shown.update,
            on_message=print_job_message,
            cancel=cancel,
        )
        shown.ended(_ending(outcome.status))
        return outcome


def _opened(target: Target, storage: Storage, password: str) -> tuple[Repository | None, Storage]:
    """The repository of ``target`` in ``storage`` (created on first use, said in a line),
    or none and an ``UnusableStorage`` when the destination cannot be used or its repository
    opened (``DamagedConfig``): the job then fails and says why. Raises ``WrongPassword`` and
    the agent's refusals (``agent.targets.REFUSALS``)."""
    try:
        repo = open_repository(
            storage,
            password,
            compression_level=target.bset.settings.compression.level,
            on_created=lambda: note(
                f"opencbs: created a new repository in {show_name(target.where)}"
            ),
        )
    except (DestinationError, DamagedConfig) as exc:
        if isinstance(exc, REFUSALS):
            raise
        return None, UnusableStorage(target.where, exc)
    return repo, storage


def _ending(status: JobStatus) -> Ending:
    """How the progress's final line names a job's end."""
    code = exit_code_of(status)
    if code is ExitCode.SUCCESS:
        return "done"
    return "stopped" if code is ExitCode.INTERRUPTED else "failed"


def outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    """A job's outcome for machines: IDs as strings, counts by CBS list key, ``warnings`` and
    ``errors`` (how many ``warn``/``error`` log entries), ``messages`` (the first 1,000 of them,
    ``{"type": "warn"|"error", "text"}``), ``message`` (how the job ended: why it failed, or
    how many warnings and errors and the first one's text; ``""`` for a clean success)."""
    return {
        "job_id": outcome.ref.job_id,
        "backup_set_id": outcome.ref.set_id,
        "destination_id": outcome.ref.destination_id,
        "status": outcome.status.value,
        "snapshot_id": outcome.snapshot_id,
        "counts": {lst.key: outcome.counts.get(lst, 0) for lst in FILE_LISTS},
        "warnings": outcome.warnings,
        "errors": outcome.errors,
        "messages": [{"type": m.type.value, "text": m.text} for m in outcome.messages],
        "dedupe_original_size": outcome.dedupe_original_size,
        "dedupe_saving": outcome.dedupe_saving,
        "uploaded_bytes": outcome.uploaded_bytes,
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
                "abandoned": d.abandoned,
                "status": d.status or None,
            }
            for d in outcome.flushed
        ],
    }


def print_outcome(
    outcome: JobOutcome, target: Target | None = None, *, unreachable_told: bool = False
) -> None:
    """A job's outcome for a person, on stdout, each line within 80 columns when the names
    are short: ``job JOBID: STATUS``; the set and destination by name and ID (``target``; by
    ID alone without it), on two lines when one would be wider than 80 columns; its counts;
    its snapshot; then the delivery notes
    (:func:`print_delivery_notes`, ``unreachable_told`` as there). Its warnings and errors
    were said while it ran (:func:`print_job_message`)."""
    echo(f"job {outcome.ref.job_id}: {outcome.status.value}")
    if target is not None:
        of_set = f"set {show_name(target.bset.name)} ({outcome.ref.set_id})"
        of_destination = (
            f"destination {show_name(target.destination.name)} ({outcome.ref.destination_id})"
        )
    else:
        of_set = f"set {outcome.ref.set_id}"
        of_destination = f"destination {outcome.ref.destination_id}"
    if len(of_set) + len(of_destination) + 2 <= _COLUMNS:
        echo(f"{of_set}, {of_destination}")
    else:
        echo(of_set)
        echo(of_destination)
    counts = "  ".join(f"{lst.key} {outcome.counts.get(lst, 0)}" for lst in FILE_LISTS)
    echo(f"{counts}  warnings {outcome.warnings}  errors {outcome.errors}")
    if outcome.snapshot_id:
        echo(f"snapshot {outcome.snapshot_id}")
    print_delivery_notes(outcome, unreachable_told=unreachable_told)


#: The width the outcome's lines keep to (a terminal's default).
_COLUMNS = 80


def print_job_message(message: JobMessage) -> None:
    """On stderr, as the job logs it, one ``warn`` entry as ``opencbs: warning: TEXT`` or one
    ``error`` entry as ``opencbs: error: TEXT`` (names escaped): the job's ``on_message``. Every
    one is said (the server's report has them all; ``--json`` lists the first 1,000)."""
    kind = "warning" if message.type is LogType.WARN else "error"
    note(f"opencbs: {kind}: {show_name(message.text)}")


def print_delivery_notes(outcome: JobOutcome, *, unreachable_told: bool = False) -> None:
    """On stderr: the earlier spooled reports delivered first (a dropped one as a warning; a
    running job of the same set is said to be running, once; those of other sets are not this
    job's news; a pending one without its why when ``unreachable_told``; a job of the same set
    whose agent stopped before its end as "the previous job <ID> of this backup set did not
    finish: …", with how the server has it), and, when this
    job's report could not be delivered, "report spooled, not delivered" with where and why —
    without the why when the job ran offline and ``unreachable_told`` (the caller said already
    that the server cannot be reached) — or, when it could not be spooled either, an error
    saying what is lost, with a hint."""
    running = [
        d
        for d in outcome.flushed
        if d.state is DeliveryState.RUNNING and d.set_id == outcome.ref.set_id
    ]
    if running:
        names = ", ".join(d.job_name for d in running)
        note(
            f"opencbs: note: another job of this backup set was running at the same time "
            f"({names}); each job's report is its own"
        )
    for d in outcome.flushed:
        if d.state in (DeliveryState.RUNNING, DeliveryState.BUSY):
            continue  # another job's, running or delivering its own report now: not earlier
        if d.abandoned and d.set_id == outcome.ref.set_id:
            note(f"opencbs: warning: {show_name(d.abandoned_line)}")
            continue
        if d.state is DeliveryState.DROPPED:
            note(f"opencbs: warning: the earlier report of {d.job_name} was dropped: {d.message}")
            continue
        quiet = d.state is DeliveryState.DELIVERED or (
            d.state is DeliveryState.PENDING and unreachable_told  # why: said already
        )
        note(
            f"opencbs: earlier report of {d.job_name}: {d.state.value}"
            f"{'' if quiet else ': ' + d.message}"
        )
    if outcome.report_lost:
        note(f"opencbs: error: {outcome.report_error}")
        note(
            "hint: free space in the agent's data_dir (OPENCBS_DATA_DIR) or make it writable, "
            "then run the backup again"
        )
    elif outcome.report_spool and outcome.ran_offline and unreachable_told:
        note(
            f"opencbs: report spooled, not delivered: it waits in "
            f"{show_name(outcome.report_spool)} for the next backup or `opencbs agent flush`"
        )
    elif outcome.report_spool:
        note(f"opencbs: report spooled, not delivered: {outcome.report_error}")


def exit_code_of(status: JobStatus) -> ExitCode:
    """0 for the success statuses, 130 stopped by user or at the schedule's stop time, 9
    otherwise (module docstring)."""
    if status in (
        JobStatus.STOP_SUCCESS,
        JobStatus.STOP_SUCCESS_WITH_WARNING,
        JobStatus.STOP_SUCCESS_WITH_ERROR,
    ):
        return ExitCode.SUCCESS
    if status in (JobStatus.STOP_BY_USER, JobStatus.STOP_BY_SCHEDULER):
        return ExitCode.INTERRUPTED
    return ExitCode.JOB_FAILED


def print_job_failure(outcome: JobOutcome, address: DestinationAddress) -> None:
    """On stderr, for a job that ended ``BS_STOP_BY_SYSTEM_ERROR`` (the destination failed,
    or the scan's helper process did: ``agent.backup``) or ``BS_STOP_BY_QUOTA_EXCEEDED``: the
    error line and a hint, as for any other failure of a command; ``address``: the job's
    destination."""
    said = any(m.type is LogType.ERROR and m.text == outcome.message for m in outcome.messages)
    why = "" if said or not outcome.message else f": {show_name(outcome.message)}"
    note(f"opencbs: error: backup job {outcome.ref.job_id} failed ({outcome.status.value}){why}")
    shown = show_name(str(address))
    verify = verify_command(address)
    if outcome.status is JobStatus.STOP_BY_QUOTA_EXCEEDED:
        note(
            f"hint: free space in the backup user's destinations (`opencbs forget --destination "
            f"{shown} --keep-… --prune`; the server counts it after the set's next backup), or "
            "ask the administrator for a larger quota"
        )
        return
    if outcome.message.startswith(NOTHING_BACKED_UP):
        note(
            "hint: the warnings above say why each source could not be read; check that the "
            "set's sources exist on this machine and that the user running the backup can "
            "read them, then run the backup again"
        )
        return
    if outcome.message.startswith("Scan error"):
        note(
            "hint: the walk of the sources stopped (its helper process ended); run the backup "
            "again, with --debug for details; the repository stays consistent (check it: "
            f"{verify})"
        )
        return
    if CONFIG_DAMAGED in outcome.message:
        note(f"hint: {damaged_config_hint(show_name(str(address)))}")
        return
    if address.s3 is not None:
        note(
            f"hint: check that the S3 server of {shown} is reachable and that the agent's "
            "credentials may write the bucket (s3_access_key_id / AWS_ACCESS_KEY_ID), then run "
            f"the backup again; the repository stays consistent (check it: {verify})"
        )
        return
    note(
        f"hint: free space on the destination {shown} or check that it is mounted and "
        "writable, then run the backup again; the repository stays consistent (check it: "
        f"{verify})"
    )


def verify_command(address: DestinationAddress) -> str:
    """The command line that verifies the repository at ``address`` (shell-quoted)."""
    return f"opencbs verify {destination_arguments(address)}"


def snapshots_command(address: DestinationAddress) -> str:
    """The command line that lists the snapshots at ``address`` (shell-quoted)."""
    return f"opencbs snapshots {destination_arguments(address)}"


def destination_arguments(address: DestinationAddress) -> str:
    """``--destination PATH``, or ``--destination s3://… --s3-endpoint URL`` (and
    ``--s3-region`` when not the default), shell-quoted and escaped for the terminal."""
    if address.s3 is None:
        return f"--destination {shlex.quote(show_name(str(address)))}"
    s3 = address.s3
    line = f"--destination {shlex.quote(s3.url)}"
    if s3.endpoint:
        line += f" --s3-endpoint {shlex.quote(s3.endpoint)}"
    if s3.region != DEFAULT_S3_REGION:
        line += f" --s3-region {shlex.quote(s3.region)}"
    return line
