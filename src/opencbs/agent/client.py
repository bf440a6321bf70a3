"""A typed client of the server's agent API (``/api/agent/v1``, see ``opencbs.api.agent``).

Every httpx error is translated here, in ``AgentClient._call`` (style.md §7): the server could not
be reached or did not answer → ``ServerUnreachable``; it answered with an error →
``AgentApiError`` (``status``, the server's ``error`` code, message, hint). Retries are the
caller's business: ``send_batch`` is safe to repeat with the same batch number and entries (the
server stores a batch once), ``finish_job`` is safe to repeat with the same arguments, and
``get_job`` shows where a job stands (``batches_received``, ``last_batch_no``). ``start_job`` is
not idempotent: after a ``ServerUnreachable`` the job may have started; a retry with the same
explicit ``start_time`` answers 409 if it did.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from opencbs.agent.poll import PollAnswer, TakenRequest
from opencbs.errors import ConfigError, ExitCode, InvalidInput, OpenCBSError
from opencbs.model.jobs import JobRecord, JobRef
from opencbs.model.sets import BackupSetSettings
from opencbs.model.storage import StorageQuota
from opencbs.reports.vocabulary import JobMode, JobStatus, ReportList

log = logging.getLogger(__name__)

API_PREFIX = "/api/agent/v1"
#: The longest long poll the server holds (seconds; cbs-api.md, "Agent API for unattended
#: agents").
POLL_WAIT_MAX = 55


class ServerUnreachable(OpenCBSError):
    """The server could not be reached, or the connection failed before a whole answer came
    (connect error, timeout, broken connection). The request may or may not have been applied."""

    code = "server_unreachable"
    exit_code = ExitCode.UNAVAILABLE


class ServerCertificateRejected(ServerUnreachable):
    """The ``https://`` server's certificate could not be verified (unknown authority, name or
    address not in it, expired): the agent does not talk to it (exit code 7)."""

    code = "server_certificate"

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(
            f"cannot verify the TLS certificate of the server at {base_url}: {reason}",
            "if the server's certificate comes from a private CA, give that CA's certificate "
            "(PEM) with --ca-file, OPENCBS_CA_FILE or ca_file in the config file; else check "
            "the server address (it must be a name or address the certificate holds)",
        )


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """What the agent verifies an ``https://`` server's certificate against: the system's
    authorities (``True``), or only those of the PEM file ``ca_file`` (setting ``ca_file``).
    Raises ``ConfigError`` (exit code 2) when ``ca_file`` cannot be read or holds no
    certificate."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"cannot use the CA file {ca_file}: {str(why).lower()}",
            "give a readable PEM file of the CA certificate(s) in --ca-file / "
            "OPENCBS_CA_FILE / ca_file in the config file",
        ) from exc


def _cert_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind an httpx error, if that is what it is."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class AgentApiError(OpenCBSError):
    """The server answered with an error. ``status`` is the HTTP status, ``error`` the server's
    code (``user_credentials``, ``set_not_found``, ``conflict``, ``invalid_input``, …)."""

    code = "agent_api"
    exit_code = ExitCode.REFUSED

    def __init__(self, status: int, error: str, message: str, hint: str = "") -> None:
        super().__init__(f"{message} (HTTP {status}, {error})", hint)
        self.status = status
        self.error = error

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (server or database unavailable)."""
        return self.status >= 500 or self.status in (408, 429)


@dataclass(frozen=True)
class Entry:
    """One report entry to deliver (cbs-api.md §5; see ``opencbs.api.agent.EntryIn``).

    Log entries: ``lst`` ``ReportList.LOG``, ``type`` start/info/warn/error/end, ``message``,
    ``last_modified`` the timestamp (epoch ms). File entries: ``type`` ``F``/``D``/``L``, ``path``,
    ``from_path`` (moves, copies), ``last_modified`` epoch ms, ``size`` stored bytes,
    ``unzip_size`` original bytes, ``link_to_dir`` for a link to a directory.
    """

    lst: ReportList
    type: str
    path: str = ""
    message: str = ""
    from_path: str | None = None
    last_modified: int | None = None
    size: int = 0
    unzip_size: int = 0
    link_to_dir: bool = False

    @classmethod
    def log(cls, log_type: str, message: str, at_ms: int | None = None) -> Entry:
        """A log entry."""
        return cls(ReportList.LOG, log_type, message=message, last_modified=at_ms)

    def as_json(self) -> dict[str, Any]:
        """The entry as the API takes it (keys at their defaults left out)."""
        out: dict[str, Any] = {"list": self.lst.key, "type": self.type}
        if self.lst is ReportList.LOG:
            out["message"] = self.message
        else:
            out["path"] = self.path
        optional = {"from_path": self.from_path, "last_modified": self.last_modified}
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.size:
            out["size"] = self.size
        if self.unzip_size:
            out["unzip_size"] = self.unzip_size
        if self.link_to_dir:
            out["link_to_dir"] = True
        return out


@dataclass(frozen=True)
class NewDestination:
    """A destination to create: ``type`` e.g. ``LOCAL``, ``settings`` e.g. ``{"path": ...}``."""

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "settings": dict(self.settings)}


@dataclass(frozen=True)
class RemoteDestination:
    """A destination as the server holds it."""

    id: str
    name: str
    type: str
    position: int
    settings: dict[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RemoteDestination:
        return cls(
            id=str(d["id"]),
            name=d["name"],
            type=d["type"],
            position=int(d["position"]),
            settings=dict(d["settings"]),
        )


@dataclass(frozen=True)
class RemoteSet:
    """A backup set as the server holds it (``created_at`` epoch ms); its ``settings`` parsed
    once, here, into the one model (``opencbs.model.sets``)."""

    id: str
    name: str
    type: str
    removed: bool
    created_at: int
    settings: BackupSetSettings
    destinations: tuple[RemoteDestination, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RemoteSet:
        return cls(
            id=str(d["id"]),
            name=d["name"],
            type=d["type"],
            removed=bool(d["removed"]),
            created_at=int(d["created_at"]),
            settings=BackupSetSettings.model_validate(d["settings"]),
            destinations=tuple(RemoteDestination.from_json(x) for x in d["destinations"]),
        )


def job_path(ref: JobRef, *more: str) -> str:
    """The agent API path of a job (``/backup-sets/{set}/destinations/{dest}/jobs/{id}``),
    then ``more`` (e.g. ``"batches", "0"``); each part URL-quoted."""
    parts = [
        "backup-sets",
        ref.set_id,
        "destinations",
        ref.destination_id,
        "jobs",
        ref.job_id,
        *more,
    ]
    return "/" + "/".join(quote(p, safe="") for p in parts)


def _set_path(set_id: str, *more: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in ("backup-sets", set_id, *more))


class StartedJob(JobRecord):
    """The job start's answer: the job, the ``quota`` it starts with (cbs-api.md §11) and the
    seconds between the heartbeats the agent sends while it runs (``heartbeat_interval``;
    both ``None`` from a server older than them)."""

    quota: StorageQuota | None = None
    heartbeat_interval: float | None = None


class AgentClient:
    """The agent API of the server at ``base_url`` (e.g. ``http://backup:8080``), as backup user
    ``login_name``. ``timeout`` in seconds, per request. An ``https://`` server's certificate
    is verified against the system's authorities, or those of ``ca_file`` (``tls_verify``;
    ``ConfigError`` when it cannot be used). ``transport`` replaces the network (tests). Use as
    a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        login_name: str,
        password: str,
        timeout: float = 30.0,
        *,
        ca_file: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        verify = tls_verify(ca_file)
        self._base_url = base_url.rstrip("/")
        self._sends_uploaded = True  # False once a server refused ``uploaded_bytes`` (422)
        try:
            self._http = httpx.Client(
                base_url=base_url.rstrip("/") + API_PREFIX,
                auth=httpx.BasicAuth(login_name, password),
                timeout=timeout,
                transport=transport,
                verify=verify,
                headers={"Accept": "application/json"},
            )
        except httpx.InvalidURL as exc:
            raise InvalidInput(
                f"the server address {base_url!r} is not a valid URL: {exc}",
                "give it as http://HOST:PORT (--server or OPENCBS_SERVER_URL)",
            ) from exc

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- plumbing: the one place httpx errors are translated ----------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON answer; ``timeout`` (seconds) replaces the client's for this
        request. Raises ``ServerUnreachable`` or ``AgentApiError``."""
        try:
            r = self._http.request(
                method,
                path,
                json=body,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TransportError as exc:
            problem = _cert_problem(exc)
            if problem is not None:
                reason = str(problem.verify_message or problem.reason or problem)
                raise ServerCertificateRejected(self._base_url, reason) from exc
            raise ServerUnreachable(
                f"cannot reach the server: {type(exc).__name__}: {exc}",
                "check the server address and that it runs",
            ) from exc
        except httpx.HTTPError as exc:
            raise AgentApiError(0, "client", f"request failed: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise InvalidInput(
                f"invalid request address: {exc}", "check the server address (http://HOST:PORT)"
            ) from exc
        except UnicodeEncodeError as exc:  # a str of the body or path that is not text
            raise InvalidInput(
                "a value to send to the server is not valid UTF-8 text (a name "
                "or path from a command line that is not UTF-8?)",
                "the API carries text only: rename it, or choose another",
            ) from exc
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if r.is_success and answer is not None:
            return answer
        if isinstance(answer, dict):
            raise AgentApiError(
                r.status_code,
                str(answer.get("error", "http")),
                str(answer.get("message", r.reason_phrase)),
                str(answer.get("hint", "") or ""),
            )
        raise AgentApiError(r.status_code, "http", f"unexpected answer: {r.reason_phrase}")

    @staticmethod
    def _job_params(ref: JobRef) -> dict[str, str] | None:
        """The query of a call on job ``ref``: ``cdp=true`` for a continuous-backup job."""
        return {"cdp": "true"} if ref.cdp else None

    # -- unattended agents: the poll and run requests (cbs-api.md, "Agent API for unattended
    # agents") ---------------------------------------------------------------------------------

    def poll(self, wait: float = 0, generation: str | None = None) -> PollAnswer:
        """The user's sets and schedules (``None`` when ``generation`` is still the server's)
        and pending run requests (``agent.poll.PollAnswer``). ``wait`` (seconds, 0..55): how
        long the server may hold the request while nothing changed (long poll); this request's
        timeout is that plus the client's. Raises ``ServerUnreachable``, ``AgentApiError``
        (404 or 405 from a server without the poll; a malformed answer as status 0,
        ``bad_answer``)."""
        params = {"wait": str(int(max(0, min(wait, POLL_WAIT_MAX))))}
        if generation is not None:
            params["generation"] = generation
        timeout = self._http.timeout.read or 30.0
        answer = self._call("GET", "/poll", params=params, timeout=wait + timeout)
        try:
            return PollAnswer.from_json(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentApiError(0, "bad_answer", f"the poll's answer is malformed: {exc}") from exc

    def take_run_request(self, request_id: int) -> TakenRequest:
        """Take pending run request ``request_id`` (RunBackup.do): the agent then runs the
        set's job with mode ``R``. One no longer pending (cancelled, taken) →
        ``AgentApiError`` 409; unknown or another user's → 404."""
        answer = self._call("POST", f"/run-requests/{int(request_id)}/take")
        try:
            return TakenRequest.from_json(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentApiError(0, "bad_answer", f"the take's answer is malformed: {exc}") from exc

    # -- backup sets ------------------------------------------------------------------------

    def list_sets(self) -> list[RemoteSet]:
        """The user's backup sets (not removed), with their destinations."""
        return [RemoteSet.from_json(x) for x in self._call("GET", "/backup-sets")]

    def create_set(
        self,
        name: str,
        *,
        settings: Mapping[str, Any] | None = None,
        destinations: Sequence[NewDestination] = (),
    ) -> RemoteSet:
        """Create a ``FILE`` backup set. ``settings``: ``sources``, ``filters``,
        ``compression``, ``deduplication`` (missing keys take their defaults)."""
        body = {
            "name": name,
            "type": "FILE",
            "settings": dict(settings or {}),
            "destinations": [d.as_json() for d in destinations],
        }
        return RemoteSet.from_json(self._call("POST", "/backup-sets", body))

    def get_set(self, set_id: str) -> RemoteSet:
        """One backup set of the user."""
        return RemoteSet.from_json(self._call("GET", _set_path(set_id)))

    def update_set(
        self, set_id: str, *, name: str | None = None, settings: Mapping[str, Any] | None = None
    ) -> RemoteSet:
        """Rename a set and/or replace keys of its settings."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if settings is not None:
            body["settings"] = dict(settings)
        return RemoteSet.from_json(self._call("PATCH", _set_path(set_id), body))

    def add_destination(self, set_id: str, dest: NewDestination) -> RemoteDestination:
        """Add a destination after the set's others."""
        answer = self._call("POST", _set_path(set_id, "destinations"), dest.as_json())
        return RemoteDestination.from_json(answer)

    def update_destination(
        self,
        set_id: str,
        destination_id: str,
        *,
        name: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> RemoteDestination:
        """Rename a destination and/or replace keys of its settings."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if settings is not None:
            body["settings"] = dict(settings)
        path = _set_path(set_id, "destinations", destination_id)
        return RemoteDestination.from_json(self._call("PATCH", path, body))

    def report_storage(self, set_id: str, destination_id: str, usage: Mapping[str, int]) -> None:
        """Tell the server what a destination stores now (after a backup job and its
        retention run): ``usage`` holds ``measured_at`` (epoch ms) and, in bytes and counts,
        ``stored_size``, ``data_size``, ``data_count``, ``retain_size``, ``retain_count``,
        ``snapshot_count`` (``engine.prune.StorageUsage``; GetUserStorageStat, the quota).
        Raises ``ServerUnreachable`` or ``AgentApiError``."""
        path = _set_path(set_id, "destinations", destination_id, "storage")
        self._call("POST", path, dict(usage))

    # -- jobs -------------------------------------------------------------------------------

    def start_job(
        self,
        set_id: str,
        destination_id: str,
        *,
        mode: JobMode = JobMode.MANUAL,
        cdp: bool = False,
        run_version: str = "",
        start_time: int | None = None,
        dedupe_enabled: bool = True,
    ) -> StartedJob:
        """Start a job; its ID is ``start_time`` (epoch ms; default the server's now) in the
        server's zone; the answer carries the user's ``quota`` (``None`` from a server older
        than it). A job with that ID exists already → ``AgentApiError`` 409."""
        body: dict[str, Any] = {
            "mode": mode.value,
            "cdp": cdp,
            "run_version": run_version,
            "dedupe_enabled": dedupe_enabled,
        }
        if start_time is not None:
            body["start_time"] = start_time
        path = _set_path(set_id, "destinations", destination_id, "jobs")
        return StartedJob.model_validate(self._call("POST", path, body))

    def get_job(self, ref: JobRef) -> JobRecord:
        """Where a job stands (also a sign of life while it runs)."""
        return JobRecord.model_validate(
            self._call("GET", job_path(ref), params=self._job_params(ref))
        )

    def heartbeat(self, ref: JobRef) -> float:
        """A running job's sign of life (cbs-api.md §9, "The agent's heartbeat"); the seconds
        until the next one is due. A job the server no longer runs (it closed it) is an
        ``AgentApiError`` 409; a server older than heartbeats answers 404 or 405."""
        answer = self._call("POST", job_path(ref, "heartbeat"), None, self._job_params(ref))
        return float(answer["heartbeat_interval"])

    def send_batch(self, ref: JobRef, batch_no: int, entries: Sequence[Entry]) -> bool:
        """Deliver batch ``batch_no`` (from 0; at most 10,000 entries). ``False`` when the server
        had stored that batch already; a retry must carry the same entries."""
        body = {"entries": [e.as_json() for e in entries]}
        answer = self._call(
            "PUT", job_path(ref, "batches", str(batch_no)), body, self._job_params(ref)
        )
        return bool(answer["stored"])

    def send_progress(
        self,
        ref: JobRef,
        *,
        current_file_name: str = "",
        current_file_count: int = 0,
        total_file_count: int = 0,
        uploaded_file_size: int = 0,
        total_file_size: int = 0,
        uploaded_bytes: int | None = None,
    ) -> JobRecord:
        """Record progress (GetBackupJobProgress, cbs-api.md §7); sizes in bytes:
        ``uploaded_file_size`` the bytes read, ``uploaded_bytes`` (when given) the bytes
        written to the destination so far (``UploadSize``). A server older than
        ``uploaded_bytes`` refuses it (422): the progress is sent again without it, and this
        client does not send it again."""
        body: dict[str, Any] = {
            "current_file_name": current_file_name,
            "current_file_count": current_file_count,
            "total_file_count": total_file_count,
            "uploaded_file_size": uploaded_file_size,
            "total_file_size": total_file_size,
        }
        path, params = job_path(ref, "progress"), self._job_params(ref)
        if uploaded_bytes is not None and self._sends_uploaded:
            try:
                sent = {**body, "uploaded_bytes": uploaded_bytes}
                answer = self._call("POST", path, sent, params)
                return JobRecord.model_validate(answer)
            except AgentApiError as exc:
                if exc.status != 422:
                    raise
                log.debug("the server refused uploaded_bytes (%s): sent without", exc)
                self._sends_uploaded = False
        answer = self._call("POST", path, body, params)
        return JobRecord.model_validate(answer)

    def finish_job(
        self,
        ref: JobRef,
        status: JobStatus,
        *,
        dedupe_original_size: int = 0,
        dedupe_saving: int = 0,
        end_time: int | None = None,
        uploaded_bytes: int | None = None,
    ) -> JobRecord:
        """Finish a job with its final status, dedupe figures (bytes), ``end_time``, when
        it ended (epoch ms; ``None``: the server's now) and ``uploaded_bytes``, what the job
        wrote to the destination (bytes, ``UploadSize``; ``None``: not sent, the server keeps
        the figure of the last progress, or its own). Repeating the same finish answers the
        job; another status on a finished job → ``AgentApiError`` 409.

        Optional fields a server refuses are left out and the finish sent again: on a 422 (a
        server older than the field) ``uploaded_bytes`` first, then ``end_time``; on a 400
        (an end time before the job's start or past the server's clock,
        ``store.jobs.require_reported_end``: clocks far apart) ``end_time``, so the job is
        finished at the server's now, as before."""
        body: dict[str, Any] = {
            "status": status.value,
            "dedupe_original_size": dedupe_original_size,
            "dedupe_saving": dedupe_saving,
        }
        optional = {"end_time": end_time, "uploaded_bytes": uploaded_bytes}
        optional = {k: v for k, v in optional.items() if v is not None}
        params = self._job_params(ref)
        while True:
            try:
                answer = self._call("POST", job_path(ref, "finish"), {**body, **optional}, params)
                return JobRecord.model_validate(answer)
            except AgentApiError as exc:
                if exc.status == 422 and optional:
                    dropped = "uploaded_bytes" if "uploaded_bytes" in optional else "end_time"
                elif exc.status == 400 and "end_time" in optional:
                    dropped = "end_time"
                else:
                    raise
                log.debug("the server refused %s (%s): sent without", dropped, exc)
                del optional[dropped]


def entry_from_json(d: Mapping[str, Any]) -> Entry:
    """The :class:`Entry` of its API form (``Entry.as_json``); raises ``KeyError``/``ValueError``
    for a malformed one."""
    lst = ReportList.from_key(str(d["list"]))
    return Entry(
        lst=lst,
        type=str(d["type"]),
        path=str(d.get("path", "")),
        message=str(d.get("message", "")),
        from_path=d.get("from_path"),
        last_modified=d.get("last_modified"),
        size=int(d.get("size", 0)),
        unzip_size=int(d.get("unzip_size", 0)),
        link_to_dir=bool(d.get("link_to_dir", False)),
    )


def set_as_json(s: RemoteSet) -> dict[str, Any]:
    """A :class:`RemoteSet` in the API's form (``RemoteSet.from_json`` reads it back)."""
    return {
        "id": s.id,
        "name": s.name,
        "type": s.type,
        "removed": s.removed,
        "created_at": s.created_at,
        "settings": s.settings.as_json(),
        "destinations": [
            {
                "id": d.id,
                "name": d.name,
                "type": d.type,
                "position": d.position,
                "settings": dict(d.settings),
            }
            for d in s.destinations
        ],
    }


_EXISTS = re.compile(r"backup job (\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d) exists")


def existing_job_id(exc: AgentApiError) -> str | None:
    """The job ID named by a 409 answer to ``start_job`` (“backup job <ID> exists already”),
    or ``None`` when ``exc`` is not that answer. The API names the clashing job only in its
    message (``opencbs.store.jobs``), so this reads it from there."""
    if exc.status != 409:
        return None
    m = _EXISTS.search(exc.message)
    return m.group(1) if m else None
