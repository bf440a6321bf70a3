"""Counters of a backup job report, derived from its entries (cbs-api.md §5, "What counts where").

The server never takes a count or a size from an agent: it derives every one of them from the
entries delivered, so the counters always equal the lists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from opencbs.reports.vocabulary import EntryType, LogType, ReportList


@dataclass
class Counters:
    """Every count (entries) and size (bytes) of §5 that is derived from the lists.

    ``*_size`` are stored ("zipped") bytes, ``*_unzip`` original bytes.
    """

    new_files: int = 0
    new_dirs: int = 0
    new_link_dirs: int = 0
    new_link_files: int = 0
    new_size: int = 0
    new_unzip: int = 0
    upd_files: int = 0
    upd_size: int = 0
    upd_unzip: int = 0
    pmt_files: int = 0
    pmt_size: int = 0
    pmt_unzip: int = 0
    del_files: int = 0
    del_dirs: int = 0
    del_links: int = 0
    del_size: int = 0
    del_unzip: int = 0
    mov_files: int = 0
    mov_size: int = 0
    mov_unzip: int = 0
    cpy_files: int = 0
    cpy_size: int = 0
    cpy_unzip: int = 0
    warn_entries: int = 0
    error_entries: int = 0

    def add_file(
        self, lst: ReportList, etype: str, size: int, unzip: int, *, link_dir: bool = False
    ) -> None:
        """Count one file entry of list ``lst``: ``etype`` is ``F``, ``D`` or ``L``, ``size``
        stored bytes, ``unzip`` original bytes, ``link_dir`` whether a link (``L``) points at a
        directory (a new one counts in ``new_link_dirs``). Raises ``ValueError`` for the log
        list."""
        if lst is ReportList.NEW:
            if etype == EntryType.FILE.value:
                self.new_files += 1
            elif etype == EntryType.DIRECTORY.value:
                self.new_dirs += 1
            elif link_dir:
                self.new_link_dirs += 1
            else:
                self.new_link_files += 1
            self.new_size += size
            self.new_unzip += unzip
        elif lst is ReportList.UPD:
            self.upd_files += 1
            self.upd_size += size
            self.upd_unzip += unzip
        elif lst is ReportList.PMT:
            self.pmt_files += 1
            self.pmt_size += size
            self.pmt_unzip += unzip
        elif lst is ReportList.DEL:
            if etype == EntryType.FILE.value:
                self.del_files += 1
            elif etype == EntryType.DIRECTORY.value:
                self.del_dirs += 1
            else:
                self.del_links += 1
            self.del_size += size
            self.del_unzip += unzip
        elif lst is ReportList.MOV:
            self.mov_files += 1
            self.mov_size += size
            self.mov_unzip += unzip
        elif lst is ReportList.CPY:
            self.cpy_files += 1
            self.cpy_size += size
            self.cpy_unzip += unzip
        else:  # pragma: no cover - guarded by callers
            raise ValueError(f"not a file list: {lst!r}")

    def add_log(self, log_type: str) -> None:
        """Count one log entry (only ``warn`` and ``error`` are counted)."""
        if log_type == LogType.WARN.value:
            self.warn_entries += 1
        elif log_type == LogType.ERROR.value:
            self.error_entries += 1

    def merge(self, other: Counters) -> None:
        """Add ``other`` into this one, field by field."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_columns(self) -> dict[str, int]:
        """The counters by name (the store's column names are the same)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


COUNTER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Counters))
