"""The CBS keys of a backup job report, in the order of the vendor's example (cbs-api.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opencbs.reports.counters import Counters
from opencbs.reports.ratio import zip_ratio


@dataclass(frozen=True)
class ReportHeader:
    """What a report says besides its lists.

    Times are rendered strings already (``yyyy-MM-dd HH:mm:ss``; ``end_time`` ``""`` while
    running); sizes are bytes.
    """

    job_id: str
    from_ip: str
    start_time: str
    end_time: str
    status: str
    counters: Counters
    dedupe_enabled: bool
    dedupe_original_size: int
    dedupe_saving: int
    success_database: str = ""
    missed_database: str = ""
    success_public_folder: str = ""
    missed_public_folder: str = ""


# The counter keys between ``Logs`` and ``StartTime``, in the example's order (§5): a key maps to
# a counter attribute (a count or a size) or, for a ratio, to its (stored, unzipped) attributes.
_COUNTER_KEYS: tuple[tuple[str, str | tuple[str, str]], ...] = (
    ("NumOfNewFiles", "new_files"),
    ("NumOfNewDirCount", "new_dirs"),
    ("NumOfNewLinkDirCount", "new_link_dirs"),
    ("NumOfNewLinkFileCount", "new_link_files"),
    ("NumOfDeletedDirCount", "del_dirs"),
    ("NumOfDeletedLinkFileCount", "del_links"),
    ("TotalNewFilesSize", "new_size"),
    ("TotalUnzipNewFilesSize", "new_unzip"),
    ("NewFilesZipRatio", ("new_size", "new_unzip")),
    ("NumOfUpdatedFiles", "upd_files"),
    ("TotalUpdatedFilesSize", "upd_size"),
    ("TotalUnzipUpdatedFilesSize", "upd_unzip"),
    ("UpdatedFilesZipRatio", ("upd_size", "upd_unzip")),
    # The vendor's table spells it so; emitted too, same value (§5).
    ("UpdatedFilesZipRation", ("upd_size", "upd_unzip")),
    ("NumOfUpdatedPermissionFiles", "pmt_files"),
    ("TotalUpdatedPermissionFilesSize", "pmt_size"),
    ("TotalUnzipUpdatedPermissionFilesSize", "pmt_unzip"),
    ("UpdatedPermissionFilesZipRatio", ("pmt_size", "pmt_unzip")),
    ("NumOfDeletedFiles", "del_files"),
    ("TotalDeletedFilesSize", "del_size"),
    ("TotalUnzipDeletedFilesSize", "del_unzip"),
    ("DeletedFilesZipRatio", ("del_size", "del_unzip")),
    ("NumOfMovedFiles", "mov_files"),
    ("TotalMovedFilesSize", "mov_size"),
    ("TotalUnzipMovedFilesSize", "mov_unzip"),
    ("MovedFilesZipRatio", ("mov_size", "mov_unzip")),
    ("NumOfCopiedFiles", "cpy_files"),
    ("TotalCopiedSize", "cpy_size"),
    ("TotalUnzipCopiedFilesSize", "cpy_unzip"),
    ("CopiedFilesZipRatio", ("cpy_size", "cpy_unzip")),
)


def counter_fields(c: Counters) -> dict[str, Any]:
    """The counting keys of §5 (counts and sizes as ints, ratios as ``"N%"``)."""
    out: dict[str, Any] = {}
    for key, attr in _COUNTER_KEYS:
        if isinstance(attr, tuple):
            out[key] = zip_ratio(getattr(c, attr[0]), getattr(c, attr[1]))
        else:
            out[key] = getattr(c, attr)
    return out


#: Keys of the per-entry arrays, in answer order; ``Logs`` and ``info`` carry the log.
ARRAY_KEYS: tuple[str, ...] = ("Logs", "info", "new", "upd", "pmt", "del", "mov", "cpy")


def head_fields(h: ReportHeader) -> dict[str, Any]:
    """Keys before ``Logs``: ``ID`` … ``MissedPublicFolder``."""
    return {
        "ID": h.job_id,
        "FromIp": h.from_ip,
        "SuccessDatabase": h.success_database,
        "MissedDatabase": h.missed_database,
        "SuccessPublicFolder": h.success_public_folder,
        "MissedPublicFolder": h.missed_public_folder,
    }


def tail_fields(h: ReportHeader) -> dict[str, Any]:
    """Keys after ``Logs``: the counters, times, status and dedupe figures (§5)."""
    out = counter_fields(h.counters)
    out.update(
        {
            "StartTime": h.start_time,
            "EndTime": h.end_time,
            "BackupJobStatus": h.status,
            "NumOfWarnEntries": h.counters.warn_entries,
            "NumOfErrorEntries": h.counters.error_entries,
            "DedupeEnabled": h.dedupe_enabled,
            "DedupeOriginalSize": h.dedupe_original_size,
            "DedupeSaving": h.dedupe_saving,
        }
    )
    return out


def summary_fields(h: ReportHeader) -> dict[str, Any]:
    """GetBackupJobReportSummary's ``Data``: every key of §5 but the arrays (§6)."""
    out = head_fields(h)
    out.update(tail_fields(h))
    return out


def counters_from_report(data: Mapping[str, Any]) -> Counters:
    """Counters read back from a CBS report object (fixtures, imports); ratios are derived, so
    they are not read. Raises ``ValueError`` for a non-integer count."""
    c = Counters()
    for key, attr in _COUNTER_KEYS:
        if isinstance(attr, str):
            setattr(c, attr, int(data.get(key, 0)))
    c.warn_entries = int(data.get("NumOfWarnEntries", 0))
    c.error_entries = int(data.get("NumOfErrorEntries", 0))
    return c
