"""Time formats of cbs-api.md §4. Instants are stored as UTC epoch milliseconds and rendered in
the server's configured time zone."""

from __future__ import annotations

import os
import re
from datetime import date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

JOB_ID_FORMAT = "%Y-%m-%d-%H-%M-%S"
REPORT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_TIME_FORMAT = "%Y/%m/%d %H:%M:%S"

#: The times a job or an entry may carry (epoch ms): 1601-01-02 00:00 and 9999-12-31 00:00
#: UTC, so that every one shows in any time zone within the four-digit years of the formats
#: (cbs-api.md §4). The one rule: the agent clamps to it, the agent API and the store refuse
#: what lies outside.
MIN_TIME_MS = -11_644_387_200_000
MAX_TIME_MS = 253_402_214_400_000


def clamp_time_ms(ms: int) -> int:
    """``ms`` (epoch ms) moved into [``MIN_TIME_MS``, ``MAX_TIME_MS``]."""
    return min(max(ms, MIN_TIME_MS), MAX_TIME_MS)


_JOB_ID_RE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def local_zone(name: str | None = None) -> tzinfo:
    """The zone named ``name`` (IANA, e.g. ``Europe/Berlin``), or the machine's when empty
    (``TZ``, then ``/etc/localtime``, then the current UTC offset).

    Raises ``ValueError`` for an unknown zone name.
    """
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
    for candidate in (os.environ.get("TZ", "").lstrip(":"), _etc_localtime_name()):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _etc_localtime_name() -> str:
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return ""
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


def _dt(ms: int, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def job_id_at(ms: int, tz: tzinfo) -> str:
    """Backup job ID for a start instant: ``yyyy-MM-dd-HH-mm-ss`` in the server zone (§4)."""
    return _dt(ms, tz).strftime(JOB_ID_FORMAT)


def report_time(ms: int | None, tz: tzinfo) -> str:
    """``yyyy-MM-dd HH:mm:ss`` for report and listing times; ``""`` for ``None`` (§4)."""
    if ms is None:
        return ""
    return _dt(ms, tz).strftime(REPORT_TIME_FORMAT)


def make_log_time(tz: tzinfo) -> LogTimeFormatter:
    """A fast formatter of ``yyyy/MM/dd HH:mm:ss`` (log ``Timestamp``, file ``LastModified``)."""
    return LogTimeFormatter(tz)


_MMSS = tuple(f"{m:02d}:{s:02d}" for m in range(60) for s in range(60))
_BLOCK_S = 900  # every UTC offset in use today is a multiple of 15 minutes


class LogTimeFormatter:
    """Formats epoch milliseconds as ``yyyy/MM/dd HH:mm:ss`` in one zone.

    The zone is asked once per 15-minute UTC block; inside a block with one offset that starts on
    a local quarter hour, minutes and seconds come from a table. Other blocks (an offset change
    inside, an odd historical offset) are formatted by ``datetime`` per call.
    """

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self._blocks: dict[int, tuple[str, int] | None] = {}

    def _block(self, block: int) -> tuple[str, int] | None:
        start = datetime.fromtimestamp(block * _BLOCK_S, self._tz)
        last = datetime.fromtimestamp(block * _BLOCK_S + _BLOCK_S - 1, self._tz)
        if start.utcoffset() != last.utcoffset() or (start.minute * 60 + start.second) % _BLOCK_S:
            return None
        if len(self._blocks) >= 1 << 17:
            self._blocks.clear()
        return start.strftime("%Y/%m/%d %H:"), start.minute * 60

    def __call__(self, ms: int | None) -> str:
        if ms is None:
            return ""
        seconds = ms // 1000
        block, offset = divmod(seconds, _BLOCK_S)
        try:
            hit = self._blocks[block]
        except KeyError:
            hit = self._blocks[block] = self._block(block)
        if hit is None:
            return datetime.fromtimestamp(seconds, self._tz).strftime(LOG_TIME_FORMAT)
        prefix, first = hit
        return prefix + _MMSS[first + offset]


def parse_backup_date(value: str) -> date:
    """Parse a ``BackupDate`` (``yyyy-MM-dd`` or a job-ID-shaped value, §4).

    Raises ``ValueError`` when it is neither or names no real day.
    """
    if _JOB_ID_RE.match(value):
        value = value[:10]
    if not _DATE_RE.match(value):
        raise ValueError(value)
    return date.fromisoformat(value)


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of a backup job ID (§4) and names a real instant."""
    if not _JOB_ID_RE.match(value):
        return False
    try:
        datetime.strptime(value, JOB_ID_FORMAT)
    except ValueError:
        return False
    return True


def day_bounds_ms(day: date, tz: tzinfo) -> tuple[int, int]:
    """UTC epoch ms of the start of ``day`` and of the next day, in zone ``tz``."""
    from datetime import timedelta

    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = start + timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def parse_report_time(value: str, tz: tzinfo) -> int:
    """Epoch ms of a ``yyyy-MM-dd HH:mm:ss`` string read in zone ``tz`` (fixtures, CLI)."""
    dt = datetime.strptime(value, REPORT_TIME_FORMAT).replace(tzinfo=tz)
    return int(dt.timestamp() * 1000)


def parse_log_time(value: str, tz: tzinfo) -> int:
    """Epoch ms of a ``yyyy/MM/dd HH:mm:ss`` string read in zone ``tz``."""
    dt = datetime.strptime(value, LOG_TIME_FORMAT).replace(tzinfo=tz)
    return int(dt.timestamp() * 1000)
