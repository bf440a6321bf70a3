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
        finish.json           the finish: status and dedupe figures (bytes)
        lock                  flock(2)-held by the process writing or delivering the job
    sets.json                 the backup sets as last read from the server (for a run while it
                              is unreachable)

Every file is written whole or not at all (temporary file, fsync, rename, fsync of the folder):
a killed agent leaves the batches it had spooled, never half of one. A batch is spooled before
it is sent, so the spool always holds at least what the server has.

Delivery (:func:`deliver_job`, :func:`deliver_pending`) relies on the agent API's idempotence
(``opencbs.api.agent``): a batch number the server has is answered ``stored: false``; a repeated
finish with the same status and figures answers the job. It asks the server where the job stands
(``GET …/jobs/{id}``: ``last_batch_no``) and sends only the batches after it, then the finish.
A server restart mid-delivery is a ``ServerUnreachable``: the spool stays, and the next delivery
resumes where the server's record says — nothing is lost, nothing is stored twice.

Starting a job is not idempotent: its ID is its start time to the second (cbs-api.md §4). The
spool records the start time, and delivery starts a never-started job with it (so mode, start
time and job ID are those of the real run). When the answer to a start is lost, the repeated
start answers 409 "backup job <ID> exists"; the job of that ID is ours when its ``start_time``
equals the recorded one to the millisecond. Else the server has another job of that second (a
job run while the server was away avoids the job IDs it knows of, those of the set's spooled
jobs and snapshots (``agent.backup``), but not one it cannot know: a job run elsewhere, or one
that committed no snapshot): the start moves one second later, at most ``_MAX_SHIFT_S`` times,
each new start time recorded in the spool before it is sent (so a lost answer is still
recognised), with a warning naming both IDs. The report is then dated up to that many seconds
late, and the snapshot keeps the job ID the agent gave it offline.

When the server closed the job (its sweeper closes a job without a sign of life for
``job_idle_timeout`` as ``BS_BACKUP_NOT_FINISHED``, after which it refuses entries: 409), the
spool is dropped with a warning naming the job and how many batches the server never got: the
server refuses more entries, and keeping the spool would only repeat the warning on every run.
The same for a set or destination the server no longer has (404). A spool without a finish
record whose lock is free belongs to a job whose agent died (SIGKILL, power loss) or could not
spool the rest of the report (disk full): delivery adds an ``end`` log entry and finishes it as
``BS_BACKUP_NOT_FINISHED`` (cbs-api.md §4).

Concurrency: the writing job holds the folder's lock until it is delivered or the process ends;
a delivery takes it without waiting and skips a busy folder ("busy"), so two agents (a backup
run and ``opencbs agent flush``) never deliver the same job at once.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opencbs.agent.client import (
    AgentApiError,
    AgentClient,
    Entry,
    JobRef,
    RemoteJob,
    RemoteSet,
    ServerUnreachable,
    entry_from_json,
    existing_job_id,
    set_as_json,
)
from opencbs.errors import ExitCode, OpenCBSError
from opencbs.fileio import write_atomic
from opencbs.reports.vocabulary import JobMode, JobStatus, LogType

__all__ = [
    "Delivery",
    "DeliveryState",
    "FinishRecord",
    "JobRecord",
    "JobSpool",
    "SpoolError",
    "adopt_legacy",
    "deliver_job",
    "deliver_pending",
    "legacy_spools",
    "load_sets",
    "normalise_server_url",
    "pending_spools",
    "save_sets",
    "spool_key",
    "user_spool_root",
]

log = logging.getLogger(__name__)

_JOB = "job.json"
_FINISH = "finish.json"
_LOCK = "lock"
_SETS = "sets.json"
_FORMAT = 1
_MAX_SHIFT_S = 60  #: how many seconds delivery may move a start whose job ID is taken


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
class JobRecord:
    """The start of a spooled job: what ``start_job`` needs, and the server's ``job_id`` once
    the job is started there (``None`` until then). ``start_ms`` epoch ms."""

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
    """The finish of a spooled job: final status and dedupe figures (bytes)."""

    status: JobStatus
    dedupe_original_size: int = 0
    dedupe_saving: int = 0


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

    def __init__(self, path: Path, record: JobRecord) -> None:
        self.path = path
        self.record = record
        self._lock_fd: int | None = None

    # -- life ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, record: JobRecord) -> JobSpool:
        """A new spool folder for ``record`` under ``root``, locked. A folder of the same job
        (set, destination, start ms) that exists already is a ``SpoolError``."""
        path = root / f"{record.set_id}-{record.destination_id}-{record.start_ms}"
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.mkdir(mode=0o700)
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
            record = JobRecord(
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
            raise SpoolError(f"damaged job record in {path}: {exc!r}") from exc
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
            raise SpoolError(f"damaged batch {batch_no} in {self.path}: {exc!r}") from exc

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
            return FinishRecord(
                JobStatus(doc["status"]),
                int(doc["dedupe_original_size"]),
                int(doc["dedupe_saving"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpoolError(f"damaged finish record in {self.path}: {exc!r}") from exc

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
    merges into what is remembered. A failure to write is only logged."""
    try:
        known = {s.id: s for s in load_sets(root)}
        known.update({s.id: s for s in found})
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(root / _SETS, _dumps([set_as_json(s) for s in known.values()]))
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


# -- delivery -------------------------------------------------------------------------------


class DeliveryState(Enum):
    """What became of a spooled report."""

    DELIVERED = "delivered"  #: the server has it all; the folder is removed
    PENDING = "pending"  #: the server is unreachable (or failing): the folder stays
    DROPPED = "dropped"  #: the server refuses it (job closed, set gone): folder removed
    BUSY = "busy"  #: another process holds the folder (a running job): not touched


@dataclass(frozen=True, slots=True)
class Delivery:
    """The result of delivering one spooled job: ``state``, the job (``job_id`` ``None`` when it
    never reached the server), batches sent now, and a sentence for a person (``message``)."""

    folder: str
    set_id: str
    destination_id: str
    job_id: str | None
    state: DeliveryState
    batches_sent: int = 0
    message: str = ""
    start_ms: int = 0  #: the job's recorded start time, epoch ms

    @property
    def job_name(self) -> str:
        """``job <ID>``, or, for a job never started on the server, ``the offline job of
        <local start time>`` (for messages)."""
        if self.job_id is not None:
            return f"job {self.job_id}"
        when = datetime.fromtimestamp(self.start_ms / 1000).astimezone()
        return f"the offline job of {when.isoformat(sep=' ', timespec='seconds')}"


Retry = Callable[[Callable[[], Any], str], Any]


class _Dropped(Exception):
    """The server will never take this report (private)."""


def _retrying(delays: Sequence[float], wait: Callable[[float], object]) -> Retry:
    from opencbs.agent.report import call_with_retries  # report imports this module

    def call(fn: Callable[[], Any], what: str) -> Any:
        return call_with_retries(fn, what, delays, wait)

    return call


def deliver_job(
    client: AgentClient,
    spool: JobSpool,
    *,
    retry_delays: Sequence[float] = (0.5, 2.0, 5.0),
    wait: Callable[[float], object] = time.sleep,
) -> Delivery:
    """Deliver what the server does not have of one spooled job (rules in the module
    docstring); removes the folder when delivered or dropped. Never raises for the server:
    ``ServerUnreachable`` and retryable errors (after ``retry_delays``) give ``PENDING``.
    Raises ``SpoolError`` for a damaged folder."""
    if not spool.try_lock():
        return _result(spool, DeliveryState.BUSY, 0, "in use by another process")
    retry = _retrying(retry_delays, wait)
    sent = 0
    try:
        job = _ensure_started(client, spool, retry)
        finish = spool.finish()
        if not job.running:
            return _finished_already(spool, job, finish)
        if finish is None:  # its agent died before the finish: close it (module docstring)
            finish = _close_abandoned(spool)
        total = spool.batch_count()
        for n in range(_first_missing(job), total):
            entries = spool.read_batch(n)
            try:
                retry(functools.partial(client.send_batch, job.ref, n, entries), f"batch {n}")
            except AgentApiError as exc:
                if exc.status in (404, 409):
                    raise _Dropped(
                        f"the server refused batch {n} of {total} ({exc.message})"
                    ) from exc
                raise
            sent += 1
        try:
            retry(
                lambda: client.finish_job(
                    job.ref,
                    finish.status,
                    dedupe_original_size=finish.dedupe_original_size,
                    dedupe_saving=finish.dedupe_saving,
                ),
                "finish",
            )
        except AgentApiError as exc:
            if exc.status in (404, 409):
                raise _Dropped(f"the server refused its finish ({exc.message})") from exc
            raise
    except _Dropped as exc:
        return _drop(spool, sent, str(exc))
    except (ServerUnreachable, AgentApiError) as exc:
        spool.close()
        return _result(spool, DeliveryState.PENDING, sent, f"not delivered yet: {exc.message}")
    spool.remove()
    return _result(spool, DeliveryState.DELIVERED, sent, "delivered")


def deliver_pending(
    client: AgentClient,
    root: Path,
    *,
    retry_delays: Sequence[float] = (0.5, 2.0, 5.0),
    wait: Callable[[float], object] = time.sleep,
) -> list[Delivery]:
    """Deliver every spooled job under ``root``, oldest first (:func:`deliver_job`). Stops at
    the first ``PENDING`` one (the server is away: the rest would wait for it too, and they
    must arrive in order). A damaged folder is logged and skipped."""
    out: list[Delivery] = []
    for path in pending_spools(root):
        spool: JobSpool | None = None
        try:
            spool = JobSpool.open(path)
            result = deliver_job(client, spool, retry_delays=retry_delays, wait=wait)
        except SpoolError as exc:  # damaged, or the agent's disk cannot take a record
            log.error("skipping a report spool: %s", exc)
            if spool is not None:
                spool.close()
            continue
        out.append(result)
        if result.state is DeliveryState.DELIVERED:
            log.info("delivered the spooled report of %s", result.job_name)
        elif result.state is DeliveryState.DROPPED:
            log.warning("dropped the spooled report of %s: %s", result.job_name, result.message)
        elif result.state is DeliveryState.PENDING:
            break
    return out


def _ensure_started(client: AgentClient, spool: JobSpool, retry: Retry) -> RemoteJob:
    """The server's job of the spool, started now (with the recorded start time) if the
    spool has no job ID yet. Raises ``_Dropped``, ``ServerUnreachable``, ``AgentApiError``."""
    r = spool.record
    if r.job_id is not None:
        try:
            job: RemoteJob = retry(lambda: client.get_job(r.ref()), "job status")
        except AgentApiError as exc:
            if exc.status == 404:
                raise _Dropped(f"the server has no job {r.job_id} ({exc.message})") from exc
            raise
        return job

    first_ms = r.start_ms

    def start() -> RemoteJob:
        while True:
            start_ms = spool.record.start_ms
            try:
                return client.start_job(
                    r.set_id,
                    r.destination_id,
                    mode=JobMode(r.mode),
                    cdp=r.cdp,
                    run_version=r.run_version,
                    start_time=start_ms,
                    dedupe_enabled=r.dedupe_enabled,
                )
            except AgentApiError as exc:
                job_id = existing_job_id(exc)
                if job_id is None:
                    raise
                found = client.get_job(JobRef(r.set_id, r.destination_id, job_id, r.cdp))
                if found.start_time == start_ms:
                    return found  # ours: a start whose answer was lost
                if start_ms - first_ms >= _MAX_SHIFT_S * 1000:
                    raise _Dropped(
                        f"the server has other jobs in every second from "
                        f"{first_ms} ms to {start_ms} ms"
                    ) from exc
                log.warning(
                    "job ID %s is another job's (started at %d ms, this one at %d ms): "
                    "delivering this job one second later",
                    job_id,
                    found.start_time,
                    start_ms,
                )
                spool.set_start_ms(start_ms + 1000)

    try:
        job = retry(start, "job start")
    except AgentApiError as exc:
        if exc.status == 404:
            raise _Dropped(
                f"the server no longer has this backup set or destination ({exc.message})"
            ) from exc
        raise
    spool.set_job_id(job.ref.job_id)
    return job


def _close_abandoned(spool: JobSpool) -> FinishRecord:
    """Spool an ``end`` entry and a ``BS_BACKUP_NOT_FINISHED`` finish for a job whose agent
    stopped before finishing it (or could not spool its finish: disk full)."""
    from opencbs.agent.report import log_entry

    message = (
        "Backup not finished: the agent stopped before the job ended, or could not "
        "spool the rest of its report"
    )
    spool.write_batch(spool.batch_count(), [log_entry(LogType.END, message)])
    finish = FinishRecord(JobStatus.BACKUP_NOT_FINISHED)
    spool.write_finish(finish)
    return finish


def _first_missing(job: RemoteJob) -> int:
    """The first batch number the server lacks: after its last, when it holds every batch up
    to it (batches are sent in order); else 0 (resending is harmless: idempotent)."""
    if job.last_batch_no is None:
        return 0
    if job.batches_received == job.last_batch_no + 1:
        return job.last_batch_no + 1
    return 0


def _finished_already(spool: JobSpool, job: RemoteJob, finish: FinishRecord | None) -> Delivery:
    if (
        finish is not None
        and job.status == finish.status.value
        and job.batches_received >= spool.batch_count()
    ):
        # our finish, whose answer was lost (it is sent only after every batch)
        spool.remove()
        return _result(spool, DeliveryState.DELIVERED, 0, "delivered")
    missing = spool.batch_count() - job.batches_received
    return _drop(
        spool,
        0,
        f"the server closed job {job.ref.job_id} as {job.status} and takes no "
        f"more entries ({max(missing, 0)} batches of its report not delivered)",
    )


def _drop(spool: JobSpool, sent: int, why: str) -> Delivery:
    log.warning("dropping the spooled report %s: %s", spool.path, why)
    spool.remove()
    return _result(spool, DeliveryState.DROPPED, sent, why)


def _result(spool: JobSpool, state: DeliveryState, sent: int, message: str) -> Delivery:
    r = spool.record
    return Delivery(
        spool.path.name, r.set_id, r.destination_id, r.job_id, state, sent, message, r.start_ms
    )


def iter_records(root: Path) -> Iterator[JobRecord]:
    """The job records of the spooled jobs under ``root``, oldest first (damaged ones
    skipped)."""
    for path in pending_spools(root):
        try:
            yield JobSpool.open(path).record
        except SpoolError:
            continue
