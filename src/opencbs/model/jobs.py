"""The job record: a backup job as the server holds it, one frozen type that the store builds
(``opencbs.store.jobs.job_record``, from its row ``Job``), the agent API serves as its job
answer and the agent's client parses (``JobRecord.model_validate``) (style.md §16, §17).

Times are epoch ms (``end_time`` ``None`` while the job runs), sizes bytes; IDs are strings
(cbs-api.md §1). ``counters``: every count and size of cbs-api.md §5 by its CBS name
(``NumOfNewFiles``, ``TotalNewFilesSize``, …, ``NumOfWarnEntries``, ``NumOfErrorEntries``),
derived from the entries stored; ``batches_received`` and ``last_batch_no`` tell a resuming
agent where to continue; ``uploaded_bytes`` what the agent said the job wrote to the
destination (its ``UploadSize``; ``None`` while it has said nothing). The bounds of a time are
``opencbs.reports.timefmt.MIN_TIME_MS`` and ``MAX_TIME_MS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from opencbs.reports.vocabulary import JobStatus

__all__ = ["JobProgress", "JobRecord", "JobRef"]


@dataclass(frozen=True, slots=True)
class JobRef:
    """What names a job: set, destination, job ID (``yyyy-MM-dd-HH-mm-ss``, its start second
    in the server's zone, cbs-api.md §4) and whether it is a continuous-backup job."""

    set_id: str
    destination_id: str
    job_id: str
    cdp: bool = False


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class JobProgress(_Frozen):
    """The job's last progress (GetBackupJobProgress, cbs-api.md §7): counts of files, sizes
    in bytes, ``file_upload_time`` epoch ms or ``None``."""

    current_file_name: str = ""
    file_upload_time: int | None = None
    current_file_count: int = 0
    total_file_count: int = 0
    uploaded_file_size: int = 0
    total_file_size: int = 0


class JobRecord(_Frozen):
    """A backup job as the server holds it (module docstring)."""

    job_id: str
    backup_set_id: str
    destination_id: str
    cdp: bool
    mode: str
    status: str
    start_time: int
    end_time: int | None
    from_ip: str
    run_version: str
    dedupe_enabled: bool
    dedupe_original_size: int
    dedupe_saving: int
    uploaded_bytes: int | None = None
    counters: dict[str, int]
    batches_received: int
    last_batch_no: int | None
    progress: JobProgress

    @property
    def ref(self) -> JobRef:
        """The job's reference."""
        return JobRef(self.backup_set_id, self.destination_id, self.job_id, self.cdp)

    @property
    def running(self) -> bool:
        """Whether the job still runs (``BS_STILL_RUNNING``)."""
        return self.status == JobStatus.STILL_RUNNING.value
