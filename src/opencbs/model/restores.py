"""A restore job as the server holds it (issue 15, point 10; cbs-api.md §12): its statuses
(``RestoreStatus``, the vendor's ``RESTORE_STOP_…`` names and two of ours), the record the
agent API answers (``RestoreRecord``; built by ``opencbs.store.restore_jobs.restore_record``,
parsed by the agent's ``agent.restore_report``), and its limits.

Times are epoch ms (``end_time`` ``None`` while it runs), sizes bytes, IDs strings
(cbs-api.md §1). A restore job's ID is its start second in the server's zone
(``yyyy-MM-dd-HH-mm-ss``, as a backup job's, §4), unique within its backup set.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

__all__ = [
    "MAX_RESTORE_LOGS",
    "RestoreProgressRecord",
    "RestoreRecord",
    "RestoreStatus",
]

#: Most log entries one restore job keeps (a restore that refuses more paths says how many more
#: in one last entry: ``agent.restore_report``).
MAX_RESTORE_LOGS = 1000


class RestoreStatus(StrEnum):
    """A restore job's ``Status`` (cbs-api.md §12). The first five are the vendor's;
    ``RESTORE_STILL_RUNNING`` (while it runs) and ``RESTORE_NOT_FINISHED`` (closed by the
    server after its agent went silent for ``job_idle_timeout`` seconds) are opencbs's, named
    after ``BS_STILL_RUNNING`` and ``BS_BACKUP_NOT_FINISHED``."""

    STOP_SUCCESS = "RESTORE_STOP_SUCCESS"
    STOP_SUCCESS_WITH_WARNING = "RESTORE_STOP_SUCCESS_WITH_WARNING"
    STOP_SUCCESS_WITH_ERROR = "RESTORE_STOP_SUCCESS_WITH_ERROR"
    STOP_BY_USER = "RESTORE_STOP_BY_USER"
    STOP_BY_ERROR = "RESTORE_STOP_BY_ERROR"
    STILL_RUNNING = "RESTORE_STILL_RUNNING"
    NOT_FINISHED = "RESTORE_NOT_FINISHED"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class RestoreProgressRecord(_Frozen):
    """A restore job's last progress: the entry being restored, files and bytes restored so
    far and the selection's totals (0 when unknown), ``progress_time`` epoch ms or ``None``."""

    current_file_name: str = ""
    progress_time: int | None = None
    restored_file_count: int = 0
    total_file_count: int = 0
    restored_size: int = 0
    total_file_size: int = 0


class RestoreRecord(_Frozen):
    """A restore job as the server holds it: ``job_id`` (the restore job's ID), its set and
    the destination it read, ``mode`` (``M`` manual, ``S`` scheduled, ``R`` from the server,
    as backup jobs'), ``status`` (``RestoreStatus``), times (epoch ms), what it restored from
    (``backup_job_id``, ``snapshot_id``) and into (``target``, ``overwrite``), and the counts:
    ``file_count`` and ``file_size`` (regular files restored, their bytes), ``dir_count``,
    ``link_count``, ``kept_count`` (existing paths left as they were), ``failed_count`` (paths
    the target refused), ``damaged_count`` (damaged in the repository), ``warn_count`` and
    ``error_count`` (its ``warn`` and ``error`` log entries)."""

    job_id: str
    backup_set_id: str
    destination_id: str
    mode: str
    status: str
    start_time: int
    end_time: int | None
    from_ip: str
    run_version: str
    backup_job_id: str
    snapshot_id: str
    target: str
    overwrite: str
    file_count: int
    file_size: int
    dir_count: int
    link_count: int
    kept_count: int
    failed_count: int
    damaged_count: int
    warn_count: int
    error_count: int
    progress: RestoreProgressRecord

    @property
    def running(self) -> bool:
        """Whether the restore job still runs (``RESTORE_STILL_RUNNING``)."""
        return self.status == RestoreStatus.STILL_RUNNING.value
