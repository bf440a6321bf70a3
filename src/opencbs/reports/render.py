"""Streaming JSON rendering of a backup job report (cbs-api.md §5): the answer is produced in
chunks of bytes while entries are read from the database, so a report of millions of entries is
never held in memory whole."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from opencbs.reports.fields import ReportHeader, head_fields, tail_fields
from opencbs.reports.ratio import zip_ratio
from opencbs.reports.timefmt import LogTimeFormatter
from opencbs.reports.vocabulary import FILE_LISTS, ReportList

#: One stored entry: (etype, path, from_path, mtime_ms, size, unzip_size).
EntryRow = tuple[str, str, str | None, int | None, int, int]
EntrySource = Callable[[ReportList], Iterable[Any]]

_BATCH = 2000


def log_entry(row: Any, fmt: LogTimeFormatter) -> dict[str, Any]:
    """A log entry object (``Type``, ``LogType``, ``Timestamp``, ``Message``)."""
    return {"Type": row[0], "LogType": row[0], "Timestamp": fmt(row[3]), "Message": row[1]}


def file_entry(row: Any, fmt: LogTimeFormatter, lst: ReportList) -> dict[str, Any]:
    """A file entry (``new`` … ``cpy``) or a move entry (``mov``) object (§5)."""
    etype, path, from_path, mtime, size, unzip = row[0], row[1], row[2], row[3], row[4], row[5]
    if lst is ReportList.MOV:
        return {
            "Type": etype,
            "LastModified": fmt(mtime),
            "FromFile": from_path or "",
            "ToFile": path,
            "FileSize": size,
            "UnzipFilesSize": unzip,
            "Ratio": zip_ratio(size, unzip),
        }
    out = {
        "Type": etype,
        "LastModified": fmt(mtime),
        "Name": path,
        "FileSize": size,
        "UnzipFilesSize": unzip,
        "Ratio": zip_ratio(size, unzip),
    }
    if lst is ReportList.CPY and from_path:
        out["FromFile"] = from_path
    return out


def _file_entry(row: Any, *, fmt: LogTimeFormatter, lst: ReportList) -> dict[str, Any]:
    return file_entry(row, fmt, lst)


def _array(rows: Iterable[Any], make: Callable[[Any], dict[str, Any]]) -> Iterator[bytes]:
    yield b"["
    batch: list[dict[str, Any]] = []
    first = True
    for row in rows:
        batch.append(make(row))
        if len(batch) >= _BATCH:
            body = orjson.dumps(batch)[1:-1]
            yield body if first else b"," + body
            first = False
            batch = []
    if batch:
        body = orjson.dumps(batch)[1:-1]
        yield body if first else b"," + body
    yield b"]"


def _fields(d: dict[str, Any]) -> bytes:
    return orjson.dumps(d)[1:-1]


def render_report(
    header: ReportHeader, entries: EntrySource, fmt: LogTimeFormatter, *, chunk_size: int = 1 << 16
) -> Iterator[bytes]:
    """Yield the whole GetBackupJobReport answer, ``{"Status":"OK","Data":{…}}``, in chunks of
    about ``chunk_size`` bytes. ``entries(lst)`` yields the stored rows of one list in order
    (see ``EntryRow``); it is called twice for the log (``Logs`` and ``info``)."""
    buf = bytearray()

    def parts() -> Iterator[bytes]:
        yield b'{"Status":"OK","Data":{' + _fields(head_fields(header)) + b',"Logs":'
        yield from _array(entries(ReportList.LOG), lambda r: log_entry(r, fmt))
        yield b"," + _fields(tail_fields(header)) + b',"info":'
        yield from _array(entries(ReportList.LOG), lambda r: log_entry(r, fmt))
        for lst in FILE_LISTS:
            yield b',"' + lst.key.encode() + b'":'
            yield from _array(entries(lst), functools.partial(_file_entry, fmt=fmt, lst=lst))
        yield b"}}"

    for part in parts():
        buf += part
        if len(buf) >= chunk_size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)
