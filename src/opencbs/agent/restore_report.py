"""A restore reported to the server as a restore job (issue 15, point 10; the agent API of
``api/agent_restore.py``, cbs-api.md §12).

:class:`RestoreReport` starts the job when the restore starts, sends its progress at most
every ``REPORT_INTERVAL`` seconds, and finishes it with the final status, the counts and the
log entries (each path not restored a ``warn`` entry, each damaged file and a failure an
``error`` entry). The restore never depends on it: a server that cannot be reached, refuses,
or that there are no credentials for leaves the restore as it is, and the report says why it
was not delivered (``problem``, one line; the command prints it). Undelivered restore reports
are not spooled (a backup job's are, ``agent.spool``).

Statuses (``model.restores.RestoreStatus``, :func:`restore_status`): everything restored →
``RESTORE_STOP_SUCCESS``; some paths refused by the target or unsafe paths skipped →
``…_WITH_WARNING``; damaged entries (the rest restored) → ``…_WITH_ERROR``; Ctrl-C →
``RESTORE_STOP_BY_USER``; anything that stopped it (a conflict with what the target holds, a
full or unwritable target, the repository unreadable) → ``RESTORE_STOP_BY_ERROR``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from opencbs import __version__
from opencbs.agent.client import AgentApiError, AgentClient
from opencbs.agent.restore import RestoreIncomplete, RestoreProgress, RestoreResult
from opencbs.errors import OpenCBSError
from opencbs.model.restores import MAX_RESTORE_LOGS, RestoreRecord, RestoreStatus
from opencbs.reports.vocabulary import JobMode, LogType
from opencbs.reports.wording import plural

__all__ = ["REPORT_INTERVAL", "RestoreAbout", "RestoreClient", "RestoreReport", "restore_status"]

log = logging.getLogger(__name__)

#: Seconds between two progress reports of a restore job, at least.
REPORT_INTERVAL = 5.0
#: Bytes of log messages one finish carries at most (the agent API's bodies are 1 MiB); the
#: entries beyond are counted in one last ``info`` entry.
_LOG_BYTES = 512 * 1024
#: Tries of a restore job's start whose ID is taken (another restore of the set that second).
_START_TRIES = 3


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


class RestoreClient(AgentClient):
    """The agent API's restore-job calls (``api/agent_restore.py``), on top of the agent's
    client. Each raises ``ServerUnreachable`` or ``AgentApiError``."""

    def start_restore_job(self, set_id: str, body: Mapping[str, Any]) -> RestoreRecord:
        """Start a restore job of set ``set_id`` (``body``: ``RestoreStartIn``'s keys)."""
        answer = self._call("POST", _path("backup-sets", set_id, "restore-jobs"), dict(body))
        return RestoreRecord.model_validate(answer)

    def send_restore_progress(
        self, set_id: str, job_id: str, body: Mapping[str, Any]
    ) -> RestoreRecord:
        """Record a restore job's progress (``RestoreProgressIn``'s keys; sizes in bytes)."""
        path = _path("backup-sets", set_id, "restore-jobs", job_id, "progress")
        return RestoreRecord.model_validate(self._call("POST", path, dict(body)))

    def finish_restore_job(
        self, set_id: str, job_id: str, body: Mapping[str, Any]
    ) -> RestoreRecord:
        """Finish a restore job (``RestoreFinishIn``'s keys); the same finish again answers
        the job."""
        path = _path("backup-sets", set_id, "restore-jobs", job_id, "finish")
        return RestoreRecord.model_validate(self._call("POST", path, dict(body)))


@dataclass(frozen=True)
class RestoreAbout:
    """What a restore job is about: the set and destination of the snapshot (its recorded
    IDs), the backup job and snapshot restored, the ``target`` folder (absolute, as text),
    ``overwrite`` (``refuse``, ``always``, ``if-changed``, ``never``) and ``mode``."""

    set_id: str
    destination_id: str
    backup_job_id: str
    snapshot_id: str
    target: str
    overwrite: str
    mode: JobMode = JobMode.MANUAL


def restore_status(
    result: RestoreResult | None, error: BaseException | None = None
) -> RestoreStatus:
    """The final status of a restore that gave ``result`` or stopped with ``error`` (module
    docstring)."""
    if isinstance(error, KeyboardInterrupt):
        return RestoreStatus.STOP_BY_USER
    if isinstance(error, RestoreIncomplete):
        return RestoreStatus.STOP_SUCCESS_WITH_ERROR
    if error is not None or result is None:
        return RestoreStatus.STOP_BY_ERROR
    if result.damaged:
        return RestoreStatus.STOP_SUCCESS_WITH_ERROR
    if result.failed_count or result.skipped or result.warnings:
        return RestoreStatus.STOP_SUCCESS_WITH_WARNING
    return RestoreStatus.STOP_SUCCESS


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RestoreReport:
    """One restore's job on the server (module docstring). ``client``: the agent API, or
    ``None`` with ``unavailable`` saying why there is none (no credentials). Never raises for
    the server's sake: what went wrong is ``problem``."""

    def __init__(
        self,
        client: RestoreClient | None,
        *,
        unavailable: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.problem = unavailable if client is None else ""
        self.about: RestoreAbout | None = None
        self.job_id: str | None = None
        self._start_ms = 0  # the start time the server took (epoch ms)
        self.delivered = False
        self._clock = clock
        self._last = 0.0
        self._logs: list[dict[str, Any]] = []
        self._log_bytes = 0
        self._unlisted = 0
        self._seen: RestoreProgress | None = None  # the last progress: a stopped job's counts

    def _failed(self, what: str, exc: Exception) -> None:
        log.debug("restore report: %s failed: %s", what, exc)
        if not self.problem:
            text = exc.message if isinstance(exc, OpenCBSError) else str(exc).splitlines()[0]
            self.problem = text if isinstance(exc, OpenCBSError) else f"unexpected answer: {text}"

    def add_log(self, log_type: LogType, message: str) -> None:
        """A log entry of the job (at most ``MAX_RESTORE_LOGS`` and ``_LOG_BYTES`` of
        messages; those beyond are counted in one last entry)."""
        size = len(message.encode("utf-8", "replace"))
        if len(self._logs) >= MAX_RESTORE_LOGS - 3 or self._log_bytes + size > _LOG_BYTES:
            self._unlisted += 1
            return
        self._log_bytes += size
        self._logs.append({"type": log_type.value, "message": message, "time": _now_ms()})

    def start(self, about: RestoreAbout) -> None:
        """Start the restore job (a taken ID is tried again a second later)."""
        self.about = about
        self.add_log(
            LogType.START,
            f"Restore of backup job {about.backup_job_id} (snapshot {about.snapshot_id[:8]}) "
            f"into {about.target} by opencbs agent {__version__} on {socket.gethostname()}",
        )
        if self.client is None:
            return
        body: dict[str, Any] = {
            "destination_id": about.destination_id,
            "backup_job_id": about.backup_job_id,
            "snapshot_id": about.snapshot_id,
            "target": about.target,
            "overwrite": about.overwrite,
            "mode": about.mode.value,
            "run_version": __version__,
        }
        at = _now_ms()
        for attempt in range(_START_TRIES):
            try:
                started = self.client.start_restore_job(
                    about.set_id, {**body, "start_time": at + 1000 * attempt}
                )
            except AgentApiError as exc:
                if exc.status == 409 and attempt + 1 < _START_TRIES:
                    continue
                self._failed("start", exc)
                return
            except (OpenCBSError, ValueError) as exc:  # ValueError: an answer not a record
                self._failed("start", exc)
                return
            self.job_id = started.job_id
            self._start_ms = at + 1000 * attempt
            return

    def progress(self, p: RestoreProgress) -> None:
        """Send ``p`` when ``REPORT_INTERVAL`` seconds have passed since the last one (the
        final one is the finish's)."""
        self._seen = p
        if self.client is None or self.job_id is None or self.about is None or p.finished:
            return
        now = self._clock()
        if now - self._last < REPORT_INTERVAL:
            return
        self._last = now
        body = {
            "current_file_name": p.current,
            "restored_file_count": p.files,
            "total_file_count": p.files_total or 0,
            "restored_size": p.bytes,
            "total_file_size": p.bytes_total or 0,
        }
        try:
            self.client.send_restore_progress(self.about.set_id, self.job_id, body)
        except (OpenCBSError, ValueError) as exc:  # the finish tries again; the restore goes on
            log.debug("restore report: progress not sent: %s", exc)

    def result_logs(self, result: RestoreResult) -> None:
        """The log entries of ``result``: each path refused (``warn``), unsafe path skipped
        (``warn``), other warning (``warn``: a hard link written as a copy) and damaged entry
        (``error``), and the summary (``info``)."""
        for failed in result.failed:
            self.add_log(LogType.WARN, f"cannot restore {failed.path}: {failed.reason}")
        unlisted = result.failed_count - len(result.failed)
        if unlisted > 0:
            self.add_log(
                LogType.WARN, plural(unlisted, "more path not restored", "more paths not restored")
            )
        for skipped in result.skipped:
            self.add_log(LogType.WARN, f"skipped unsafe path {skipped}")
        for warning in result.warnings:
            self.add_log(LogType.WARN, warning)
        for damaged in result.damaged:
            self.add_log(LogType.ERROR, f"{damaged.path} is damaged: {damaged.message}")
        kept = f", {plural(result.kept, 'existing path')} kept" if result.kept else ""
        self.add_log(
            LogType.INFO,
            f"Restored {plural(result.files, 'file')} ({plural(result.bytes, 'byte')}), "
            f"{plural(result.dirs, 'directory', 'directories')}, {plural(result.links, 'link')}"
            f"{kept}",
        )

    def _counts(self, result: RestoreResult | None, error: BaseException | None) -> dict[str, int]:
        """The finish's counts: of the result (also the one a ``RestoreIncomplete`` carries),
        else of the last progress (what a stopped restore had restored)."""
        r = result if result is not None else getattr(error, "result", None)
        if isinstance(r, RestoreResult):
            return {
                "file_count": r.files,
                "file_size": r.bytes,
                "dir_count": r.dirs,
                "link_count": r.links,
                "kept_count": r.kept,
                "failed_count": r.failed_count,
                "damaged_count": len(r.damaged),
            }
        p = self._seen
        if p is None:
            return {}
        return {
            "file_count": p.files,
            "file_size": p.bytes,
            "dir_count": p.dirs,
            "link_count": p.links,
        }

    def finish(self, result: RestoreResult | None, error: BaseException | None = None) -> None:
        """Finish the job with the status of ``result`` / ``error`` (:func:`restore_status`),
        the counts and the log entries (an ``error`` entry for what stopped it; a
        ``RestoreIncomplete``'s damage is in ``result_logs``' entries already); ``delivered``
        says whether the server has it."""
        status = restore_status(result, error)
        if error is not None and not isinstance(error, (KeyboardInterrupt, RestoreIncomplete)):
            message = error.message if isinstance(error, OpenCBSError) else str(error)
            self.add_log(LogType.ERROR, message or type(error).__name__)
        if self._unlisted:
            self._logs.append(
                {
                    "type": LogType.INFO.value,
                    "message": f"{plural(self._unlisted, 'more log entry', 'more log entries')} "
                    "not listed",
                    "time": _now_ms(),
                }
            )
        self._logs.append(
            {
                "type": LogType.END.value,
                "message": f"Restore ended: {status.value}",
                "time": _now_ms(),
            }
        )
        if self.client is None or self.job_id is None or self.about is None:
            return
        body = {"status": status.value, **self._counts(result, error), "logs": self._logs}
        # a start moved a second on (its ID was taken) may lie ahead of the clock
        body["end_time"] = max(_now_ms(), self._start_ms)
        for attempt in range(2):
            try:
                self.client.finish_restore_job(self.about.set_id, self.job_id, body)
            except (OpenCBSError, ValueError) as exc:
                if (
                    attempt == 0
                    and isinstance(exc, OpenCBSError)
                    and not isinstance(exc, AgentApiError)
                ):
                    continue  # unreachable for a moment: once more (the same finish is safe)
                self._failed("finish", exc)
                return
            self.delivered = True
            return
