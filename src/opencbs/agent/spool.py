"""The report spool: every job's report on the agent's disk first, delivered to the server when
it can be (issue 4, "Lost server": complete and exactly once).

Spool roots: one per server and backup user, ``<data_dir>/agent-spool/<key>/`` where ``<key>``
(:func:`spool_key`) is the login name made safe for a file name, a dash, and 16 hex characters of
the SHA-256 of ``"<server URL, normalised>\n<login name>"`` (:func:`normalise_server_url`), so a
delivery or a backup as one user never sees (and so can never drop) another user's reports or
remembered sets. Job folders directly under ``<data_dir>/agent-spool`` are of the earlier layout
(one spool for every user): :func:`adopt_legacy` moves one into a user's root only when that
user's server lists its backup set and destination for that user (set and destination IDs are
creation times in ms: cbs-api.md §4); the others are left where they are, untouched
(:func:`legacy_spools`), for the user they belong to.

Layout, one folder per job under a spool root::

    <set_id>-<destination_id>-<start_ms>/
        job.json              the job start: set, destination, start time (epoch ms), mode,
                              cdp, run version, dedupe flag, and the server's job ID once known
        batch-00000000.json   batch 0 of the report: {"entries": [...]} (agent API form)
        batch-00000001.json   … numbered from 0, contiguous
        finish.json           the finish: status, dedupe figures (bytes), end time (epoch ms)
        lock                  flock(2)-held by the process writing or delivering the job
    sets.json                 the backup sets as last read from the server (for a run while it
                              is unreachable); sets.json.lock serialises its updates
    set-<set ID>.lock         held by the job of that set running now (``agent.set_lock``)

Every file is written whole or not at all (temporary file, fsync, rename, fsync of the folder):
a killed agent leaves the batches it had spooled, never half of one. A batch is spooled before
it is sent, so the spool always holds at least what the server has.

Delivery to the server is ``agent.delivery``'s (complete and exactly once); this module is the
spool's format on disk and the set cache.

Concurrency: the writing job holds the folder's lock until it is delivered or the process ends;
a delivery takes it without waiting and skips a busy folder (``agent.delivery``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opencbs.agent.client import Entry, RemoteSet, entry_from_json, set_as_json
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.fileio import write_atomic
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import JobMode, JobStatus

__all__ = [
    "FinishRecord",
    "JobSpool",
    "JobStart",
    "SpoolError",
    "adopt_legacy",
    "legacy_spools",
    "load_sets",
    "normalise_server_url",
    "pending_spools",
    "report_spool_dir",
    "save_sets",
    "spool_base",
    "spool_key",
    "user_spool_root",
]

log = logging.getLogger(__name__)

_JOB = "job.json"
_FINISH = "finish.json"
_LOCK = "lock"
_SETS = "sets.json"
_SETS_LOCK = "sets.json.lock"
_FORMAT = 1


class SpoolError(OpenCBSError):
    """A spool folder cannot be written or read (disk full, permissions, damaged record).

    Exit code 7 (``opencbs.cli.main``: unusable), as an unusable destination: the agent's data
    folder cannot hold the report. The default hint names the setting."""

    code = "agent_spool"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(
            message,
            hint
            or "the report spool is in the agent's data folder "
            "(data_dir, env OPENCBS_DATA_DIR): free space there "
            "or make it writable, or set another data_dir",
        )


@dataclass(frozen=True, slots=True)
class JobStart:
    """The start of a spooled job (``job.json``): what ``start_job`` needs, and the server's
    ``job_id`` once the job is started there (``None`` until then). ``start_ms`` epoch ms.
    (The job as the server holds it is ``opencbs.model.jobs.JobRecord``.)"""

    set_id: str
    destination_id: str
    start_ms: int
    mode: str = JobMode.MANUAL.value
    cdp: bool = False
    run_version: str = ""
    dedupe_enabled: bool = True
    job_id: str | None = None

    def ref(self) -> JobRef:
        """The job's reference (needs ``job_id``)."""
        assert self.job_id is not None
        return JobRef(self.set_id, self.destination_id, self.job_id, self.cdp)


@dataclass(frozen=True, slots=True)
class FinishRecord:
    """The finish of a spooled job: final status, dedupe figures (bytes) and ``end_ms``, when
    the job ended (epoch ms; ``None`` in a spool of an older agent, or a job closed after its
    agent died: the server then takes the time of delivery); ``uploaded_bytes``, what the job
    wrote to the destination (``UploadSize``; ``None`` in a spool of an older agent or of a
    job whose agent died: the server then keeps its own figure)."""

    status: JobStatus
    dedupe_original_size: int = 0
    dedupe_saving: int = 0
    end_ms: int | None = None
    _: KW_ONLY
    uploaded_bytes: int | None = None


def _damage(exc: Exception) -> str:
    """What is wrong with a spooled record, for a person (never a Python repr): ``missing
    field 'x'`` for a ``KeyError``, else the exception's text."""
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!s}" if exc.args else "missing field"
    return str(exc) or type(exc).__name__


def _write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole, or keeps its old content. Raises ``SpoolError``."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise SpoolError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SpoolError(f"cannot read {path}: {exc}") from exc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class JobSpool:
    """One job's spool folder (layout and rules in the module docstring). Create with
    :meth:`create` (the running job) or :meth:`open` (delivery); release with :meth:`close`
    or :meth:`remove`. Methods raise ``SpoolError``."""

    def __init__(self, path: Path, record: JobStart) -> None:
        self.path = path
        self.record = record
        self._lock_fd: int | None = None

    # -- life ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, record: JobStart) -> JobSpool:
        """A new spool folder for ``record`` under ``root``, locked. A folder of the same job
        (set, destination, start ms) that exists already is a ``SpoolError``."""
        path = root / f"{record.set_id}-{record.destination_id}-{record.start_ms}"
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.mkdir(mode=0o700)
        except FileExistsError as exc:  # not the disk: another job of that very millisecond
            raise SpoolError(
                f"another job of backup set {record.set_id} started at the same moment "
                f"(its report spool {path} exists)",
                "run one job of a set at a time",
            ) from exc
        except OSError as exc:
            raise SpoolError(
                f"cannot create the report spool {path}: {exc.strerror or exc}"
            ) from exc
        spool = cls(path, record)
        if not spool.try_lock():
            raise SpoolError(f"the report spool {path} is in use")
        spool._write_record()
        return spool

    @classmethod
    def open(cls, path: Path) -> JobSpool:
        """An existing spool folder (not locked: see :meth:`try_lock`)."""
        doc = _read_json(path / _JOB)
        try:
            record = JobStart(
                set_id=str(doc["set_id"]),
                destination_id=str(doc["destination_id"]),
                start_ms=int(doc["start_ms"]),
                mode=str(doc["mode"]),
                cdp=bool(doc["cdp"]),
                run_version=str(doc["run_version"]),
                dedupe_enabled=bool(doc["dedupe_enabled"]),
                job_id=doc.get("job_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpoolError(f"damaged job record in {path}: {_damage(exc)}") from exc
        return cls(path, record)

    def try_lock(self) -> bool:
        """Take the folder's lock without waiting; ``False`` when another process holds it."""
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def close(self) -> None:
        """Release the lock (the folder stays, for a later delivery)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """Delete the folder (its report is delivered, or dropped) and release the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    # -- records ------------------------------------------------------------------------------

    def _write_record(self) -> None:
        r = self.record
        _write_atomic(
            self.path / _JOB,
            _dumps(
                {
                    "format": _FORMAT,
                    "set_id": r.set_id,
                    "destination_id": r.destination_id,
                    "start_ms": r.start_ms,
                    "mode": r.mode,
                    "cdp": r.cdp,
                    "run_version": r.run_version,
                    "dedupe_enabled": r.dedupe_enabled,
                    "job_id": r.job_id,
                }
            ),
        )

    def set_start_ms(self, start_ms: int) -> None:
        """Record a new start time (epoch ms) for a job not yet started on the server."""
        assert self.record.job_id is None
        self.record = replace(self.record, start_ms=start_ms)
        self._write_record()

    def set_job_id(self, job_id: str) -> None:
        """Record the server's ID of the job (it is started there)."""
        self.record = replace(self.record, job_id=job_id)
        self._write_record()

    def write_batch(self, batch_no: int, entries: Sequence[Entry]) -> None:
        """Spool batch ``batch_no`` (must be :meth:`batch_count`: batches are contiguous)."""
        _write_atomic(
            self._batch_path(batch_no), _dumps({"entries": [e.as_json() for e in entries]})
        )

    def read_batch(self, batch_no: int) -> list[Entry]:
        """The entries of spooled batch ``batch_no``."""
        doc = _read_json(self._batch_path(batch_no))
        try:
            return [entry_from_json(e) for e in doc["entries"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SpoolError(f"damaged batch {batch_no} in {self.path}: {_damage(exc)}") from exc

    def batch_count(self) -> int:
        """Number of spooled batches (0 … n-1 exist)."""
        n = 0
        while self._batch_path(n).exists():
            n += 1
        return n

    def write_finish(self, finish: FinishRecord) -> None:
        """Spool the job's finish."""
        _write_atomic(
            self.path / _FINISH,
            _dumps(
                {
                    "status": finish.status.value,
                    "dedupe_original_size": finish.dedupe_original_size,
                    "dedupe_saving": finish.dedupe_saving,
                    "end_time": finish.end_ms,
                    "uploaded_bytes": finish.uploaded_bytes,
                }
            ),
        )

    def finish(self) -> FinishRecord | None:
        """The spooled finish, or ``None`` while the job has not finished (or its agent died)."""
        path = self.path / _FINISH
        if not path.exists():
            return None
        doc = _read_json(path)
        try:
            end = doc.get("end_time")
            uploaded = doc.get("uploaded_bytes")
            return FinishRecord(
                JobStatus(doc["status"]),
                int(doc["dedupe_original_size"]),
                int(doc["dedupe_saving"]),
                None if end is None else int(end),
                uploaded_bytes=None if uploaded is None else int(uploaded),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpoolError(f"damaged finish record in {self.path}: {_damage(exc)}") from exc

    def _batch_path(self, batch_no: int) -> Path:
        return self.path / f"batch-{batch_no:08d}.json"


def pending_spools(root: Path) -> list[Path]:
    """The job folders under ``root``, oldest job (start time) first."""
    if not root.is_dir():
        return []

    def start_ms(p: Path) -> int:
        try:
            return int(p.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return 0

    found = [p for p in root.iterdir() if p.is_dir() and (p / _JOB).exists()]
    return sorted(found, key=lambda p: (start_ms(p), p.name))


# -- spool roots: one per server and backup user --------------------------------------------


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_server_url(url: str) -> str:
    """``url`` as one spelling per server: scheme and host in lower case, the default port
    (80, 443), user info, query, fragment and trailing slashes left out. A URL that does not
    parse is only stripped of spaces and trailing slashes."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.rstrip("/")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def spool_key(server_url: str, login_name: str) -> str:
    """The name of the spool root of ``login_name`` on the server at ``server_url``: the login
    made safe for a file name (at most 32 characters), a dash and 16 hex characters of the
    SHA-256 of ``"<normalised URL>\n<login>"`` (module docstring)."""
    slug = _UNSAFE.sub("_", login_name)[:32].strip("._") or "user"
    digest = hashlib.sha256(
        f"{normalise_server_url(server_url)}\n{login_name}".encode()
    ).hexdigest()
    return f"{slug}-{digest[:16]}"


def spool_base(data_dir: Path) -> Path:
    """The folder of the agent's report spools: ``<data_dir>/agent-spool``."""
    return data_dir / "agent-spool"


def report_spool_dir(data_dir: Path, server_url: str, login_name: str) -> Path:
    """The report spool of backup user ``login_name`` on the server at ``server_url``:
    ``<data_dir>/agent-spool/<login>-<hash of URL and login>`` (:func:`spool_key`)."""
    return user_spool_root(spool_base(data_dir), server_url, login_name)


def user_spool_root(base: Path, server_url: str, login_name: str) -> Path:
    """The spool root of one backup user of one server under ``base``
    (``<data_dir>/agent-spool``): ``base / spool_key(...)``. Not created here."""
    return base / spool_key(server_url, login_name)


def legacy_spools(base: Path) -> list[Path]:
    """The job folders of the earlier layout, directly under ``base``, oldest first."""
    try:
        return pending_spools(base)
    except OSError as exc:
        log.warning("cannot list the report spool %s: %s", base, exc.strerror or exc)
        return []


def adopt_legacy(base: Path, root: Path, sets: Sequence[RemoteSet]) -> list[Path]:
    """Move the earlier layout's job folders under ``base`` whose backup set and destination
    are among ``sets`` (as this user's server listed them) into this user's ``root``; returns
    their new paths. A folder in use (locked), damaged, or of another user's set is left where
    it is; a failure to move one is logged and leaves it there (nothing is ever deleted)."""
    mine = {(s.id, d.id) for s in sets for d in s.destinations}
    moved: list[Path] = []
    for path in legacy_spools(base):
        try:
            spool = JobSpool.open(path)
        except SpoolError:
            continue
        r = spool.record
        if (r.set_id, r.destination_id) not in mine:
            continue
        try:
            if not spool.try_lock():
                continue
            try:
                root.mkdir(parents=True, exist_ok=True, mode=0o700)
                target = root / path.name
                if target.exists():
                    log.warning("not moving the report spool %s: %s exists", path, target)
                    continue
                os.rename(path, target)
            finally:
                spool.close()
        except (OSError, SpoolError) as exc:
            log.warning("cannot move the report spool %s into %s: %s", path, root, exc)
            continue
        log.info("report spool %s moved into %s (the spool is per backup user now)", path, root)
        moved.append(target)
    return moved


# -- the set cache --------------------------------------------------------------------------


def save_sets(root: Path, found: Sequence[RemoteSet]) -> None:
    """Remember the user's sets as the server listed them (for a run while it is away);
    merges into what is remembered, under ``sets.json.lock`` (``flock(2)``: two backups at
    once never lose each other's sets; the file is replaced whole, from a temporary file of
    a name of its own). A failure to write is only logged."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(root / _SETS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            known = {s.id: s for s in load_sets(root)}
            known.update({s.id: s for s in found})
            _write_atomic(root / _SETS, _dumps([set_as_json(s) for s in known.values()]))
        finally:
            os.close(fd)
    except (SpoolError, OSError) as exc:
        log.warning("cannot remember the backup sets: %s", exc)


def load_sets(root: Path) -> list[RemoteSet]:
    """The sets remembered by :func:`save_sets` (none when there is no readable record)."""
    path = root / _SETS
    if not path.exists():
        return []
    try:
        return [RemoteSet.from_json(d) for d in _read_json(path)]
    except (SpoolError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring the remembered backup sets: %s", exc)
        return []
