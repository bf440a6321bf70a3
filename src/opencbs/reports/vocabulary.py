"""Names of the report's outcomes, documented once (cbs-api.md §4, §5).

Legend of the per-entry lists of a backup job report:

====  ==================================================================================
new   a path that did not exist before, whose content was not already in the backup
upd   an existing path whose content changed
pmt   an existing path whose content is unchanged but whose permissions, owner, times or
      other attributes changed
del   a path that no longer exists (only under directories whose scan completed)
mov   a path that vanished while the same file appeared at another path
cpy   a new path whose content equals a file already in the backup, and which is not a move
====  ==================================================================================
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ReportList(IntEnum):
    """The lists of a report, in the order the CBS answer carries them; stored as small ints."""

    LOG = 0
    NEW = 1
    UPD = 2
    PMT = 3
    DEL = 4
    MOV = 5
    CPY = 6

    @property
    def key(self) -> str:
        """The CBS key of the list (``info`` for the log; ``Logs`` repeats it)."""
        return _LIST_KEYS[self]

    @classmethod
    def from_key(cls, key: str) -> ReportList:
        """The list for a CBS key (``new``, ``upd``, …, ``info``); raises ``KeyError``."""
        return _KEY_LISTS[key]


_LIST_KEYS = {
    ReportList.LOG: "info",
    ReportList.NEW: "new",
    ReportList.UPD: "upd",
    ReportList.PMT: "pmt",
    ReportList.DEL: "del",
    ReportList.MOV: "mov",
    ReportList.CPY: "cpy",
}
_KEY_LISTS = {v: k for k, v in _LIST_KEYS.items()}

#: The file lists (every list but the log), in answer order.
FILE_LISTS: tuple[ReportList, ...] = (
    ReportList.NEW,
    ReportList.UPD,
    ReportList.PMT,
    ReportList.DEL,
    ReportList.MOV,
    ReportList.CPY,
)


class EntryType(StrEnum):
    """What a file entry is (§5): regular file, directory or symbolic link."""

    FILE = "F"
    DIRECTORY = "D"
    LINK = "L"


class LogType(StrEnum):
    """Type of a log entry (§5); ``LogType`` repeats it."""

    START = "start"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    END = "end"


class JobStatus(StrEnum):
    """``BackupJobStatus`` values (§4). ``BS_MISSED_DATABASAE`` is spelled as clients match it."""

    STOP_SUCCESS = "BS_STOP_SUCCESS"
    STOP_SUCCESS_WITH_WARNING = "BS_STOP_SUCCESS_WITH_WARNING"
    STOP_SUCCESS_WITH_ERROR = "BS_STOP_SUCCESS_WITH_ERROR"
    STOP_BY_USER = "BS_STOP_BY_USER"
    STOP_BY_SYSTEM_ERROR = "BS_STOP_BY_SYSTEM_ERROR"
    STOP_BY_SCHEDULER = "BS_STOP_BY_SCHEDULER"
    STOP_BY_QUOTA_EXCEEDED = "BS_STOP_BY_QUOTA_EXCEEDED"
    STOP_MISSED_BACKUP = "BS_STOP_MISSED_BACKUP"
    BACKUP_NOT_FINISHED = "BS_BACKUP_NOT_FINISHED"
    STILL_RUNNING = "BS_STILL_RUNNING"
    STOP_INCOMPLETE = "BS_STOP_INCOMPLETE"
    MISSED_DATABASAE = "BS_MISSED_DATABASAE"
    MISSED_PUBLIC_FOLDER = "BS_MISSED_PUBLIC_FOLDER"
    MISSED_VIRTUAL_MACHINE = "BS_MISSED_VIRTUAL_MACHINE"

    @property
    def completed(self) -> bool:
        """True for the statuses after which a snapshot was committed (success, with or
        without warnings or errors)."""
        return self in (
            JobStatus.STOP_SUCCESS,
            JobStatus.STOP_SUCCESS_WITH_WARNING,
            JobStatus.STOP_SUCCESS_WITH_ERROR,
        )


#: Statuses an agent may finish a job with (the server sets the others itself).
FINAL_STATUSES: frozenset[JobStatus] = frozenset(JobStatus) - {JobStatus.STILL_RUNNING}


class JobMode(StrEnum):
    """``BackupJobMode`` (§7): manual, scheduled, or started from the server."""

    MANUAL = "M"
    SCHEDULED = "S"
    SERVER = "R"


class SystemRole(StrEnum):
    """``Role`` of a system user (§2)."""

    ADMIN = "ADMIN"
    API_ONLY = "API_ONLY"
    READ_ONLY_API = "READ_ONLY_API"
    RESELLER = "RESELLER"
    READ_ONLY_ADMIN = "READ_ONLY_ADMIN"

    @property
    def may_call_api(self) -> bool:
        """Whether the role may call the JSON API at all (§2)."""
        return self is not SystemRole.READ_ONLY_ADMIN

    @property
    def may_write(self) -> bool:
        """Whether the role may call calls that change state (§2)."""
        return self in (SystemRole.ADMIN, SystemRole.API_ONLY, SystemRole.RESELLER)

    @property
    def sees_all_users(self) -> bool:
        """Whether the role sees every backup user (a reseller sees only its own) (§2)."""
        return self is not SystemRole.RESELLER


class AccountStatus(StrEnum):
    """Status of a system user or backup user."""

    ENABLE = "ENABLE"
    SUSPENDED = "SUSPENDED"
    LOCKED = "LOCKED"
