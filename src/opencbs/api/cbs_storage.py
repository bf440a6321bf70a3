"""GetUserStorageStat (cbs-api.md §11): a backup user's storage over one month, from the
measurements agents send (``store.storage``) and the month's jobs.

Choices where the contract leaves room (cbs-api.md §11 says them to clients):

- ``YearMonth`` ``yyyy-MM``; absent or empty: the current month in the server's zone.
  ``BackupSetID`` ``all`` (any case; absent or empty too) or one set's ID (removed sets
  included: what they held that month).
- ``Data`` is one record for that month, every value a string: ``YearMonth``, then for each
  figure its human form (``Avg…Size``, ``human_size``) and its bytes (``Avg…RawSize``), and the
  counts (``Avg…No``). The averages follow ``store.storage``'s rules: per day that has
  measurements, the sum over the destinations of each one's last measurement that day,
  averaged over those days; uploads (``UploadSize``, the bytes each job wrote to its
  destination, cbs-api.md §7, and new and updated files of the month's jobs) averaged over the
  days that have jobs. A month without any answers zeros.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import LOGIN, OWNER, ParamDoc, backup_user, cbs_call
from opencbs.api.envelope import ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.errors import ParameterInvalid
from opencbs.store import sets, storage

#: Units of ``human_size``, each 1024 times the one before.
_UNITS = ("k", "M", "G", "T", "P", "E")
_YEAR_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def human_size(size: int) -> str:
    """Bytes in the vendor's ``k``/``M``/``G`` form: below 1024 the whole number (``"512"``);
    else the largest unit of 1024 (k), 1024² (M), 1024³ (G), 1024⁴ (T), 1024⁵ (P), 1024⁶ (E) the
    size reaches, with one decimal rounded half up (``1536`` → ``"1.5k"``, ``1288490189`` →
    ``"1.2G"``, ``1073741824`` → ``"1.0G"``); a size that rounds up to 1024.0 of a unit is
    said in the next one (``1048575`` → ``"1.0M"``)."""
    if size < 1024:
        return str(max(size, 0))
    unit = 0
    tenths = (size * 10 * 2 // 1024 + 1) // 2
    while tenths >= 10240 and unit < len(_UNITS) - 1:
        unit += 1
        tenths = (size * 10 * 2 // 1024 ** (unit + 1) + 1) // 2
    return f"{tenths // 10}.{tenths % 10}{_UNITS[unit]}"


_YEAR_MONTH_PARAM = ParamDoc(
    "YearMonth",
    description="The month, yyyy-MM; absent or empty: the current month in the server's time zone.",
)
_SET_PARAM = ParamDoc(
    "BackupSetID",
    description='"all" (absent or empty too): every backup set of the user; or one set\'s ID.',
)

_SIZE = {"type": "string", "description": "Bytes in k/M/G form (1024-based, one decimal)."}
_RAW = {"type": "string", "description": "Bytes, decimal."}
_NO = {"type": "string", "description": "A count, decimal."}
_FIELDS = {
    "YearMonth": {"type": "string", "description": "yyyy-MM."},
    "AvgDataSize": _SIZE,
    "AvgDataRawSize": _RAW,
    "AvgDataNo": _NO,
    "AvgRetainSize": _SIZE,
    "AvgRetainRawSize": _RAW,
    "AvgRetainNo": _NO,
    "AvgUploadSize": _SIZE,
    "AvgUploadRawSize": _RAW,
    "AvgUploadNo": _NO,
    "AvgTotalStorageSize": _SIZE,
    "AvgTotalStorageRawSize": _RAW,
}
_ANSWER = {
    "type": "array",
    "items": {"type": "object", "properties": _FIELDS, "required": list(_FIELDS)},
}


def _month(params: Params, state: ServerState) -> tuple[str, int, int]:
    """``YearMonth`` and the month's bounds in the server zone (epoch ms); the current month
    when absent or empty. Raises ``ParameterInvalid`` for anything but ``yyyy-MM`` of a month
    the calendar holds (years 1 to 9999)."""
    raw = params.optional_str("YearMonth")
    if raw is None or not raw.strip():
        now = datetime.now(state.tz)
        year_month = f"{now.year:04d}-{now.month:02d}"
    else:
        year_month = raw.strip()
    found = _YEAR_MONTH.match(year_month)
    try:
        if found is None:
            raise ValueError(year_month)
        start, end = storage.month_bounds(int(found.group(1)), int(found.group(2)), state.tz)
    except (ValueError, OverflowError):
        raise ParameterInvalid("YearMonth", raw or "", "yyyy-MM") from None
    return year_month, start, end


def stat_record(year_month: str, avg: storage.MonthAverage) -> dict[str, str]:
    """The ``Data`` record of a month (module docstring; cbs-api.md §11)."""
    return {
        "YearMonth": year_month,
        "AvgDataSize": human_size(avg.data_size),
        "AvgDataRawSize": str(avg.data_size),
        "AvgDataNo": str(avg.data_count),
        "AvgRetainSize": human_size(avg.retain_size),
        "AvgRetainRawSize": str(avg.retain_size),
        "AvgRetainNo": str(avg.retain_count),
        "AvgUploadSize": human_size(avg.upload_size),
        "AvgUploadRawSize": str(avg.upload_size),
        "AvgUploadNo": str(avg.upload_count),
        "AvgTotalStorageSize": human_size(avg.stored_size),
        "AvgTotalStorageRawSize": str(avg.stored_size),
    }


@cbs_call(
    "GetUserStorageStat",
    params=(LOGIN, OWNER, _YEAR_MONTH_PARAM, _SET_PARAM),
    summary="A backup user's storage over one month, one record, every value a string "
    "(cbs-api.md §11): the newest snapshots' data, the retention area, uploads and the whole "
    "storage, each averaged per day; zeros for a month without data.",
    answer=_ANSWER,
)
def get_user_storage_stat(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    year_month, start, end = _month(params, state)
    chosen = params.str_or_empty("BackupSetID").strip()
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        if chosen.lower() in ("", "all"):
            set_ids = [s.id for s in sets.list_sets(conn, user.id, include_removed=True)]
        else:
            set_ids = [sets.get_set(conn, user.id, chosen).id]
        measured = storage.month_measurements(conn, set_ids, start, end)
        uploads = storage.month_uploads(conn, set_ids, year_month)
    average = storage.month_average(measured, uploads, state.tz)
    data: list[dict[str, Any]] = [stat_record(year_month, average)]
    return ok(data)
