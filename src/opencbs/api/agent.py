"""The agent API (``/api/agent/v1``): backup users manage their sets and deliver job reports.

Ours, not the vendor's: versioned under ``/api/agent/v1`` and documented in the OpenAPI schema.

Authentication: HTTP Basic with the backup user's ``LoginName`` and password (UTF-8). Every
failure (no header, malformed header, unknown user, wrong password, suspended account) is the
same 401 ``{"error": "user_credentials", …}``, given from the headers before any byte of the
body is read (``opencbs.api.limits.GuardBodies``). A backup user sees only its own sets: another
user's set is "not found" (404), never "forbidden".

Answers: JSON objects; IDs are strings (cbs-api.md §1), times epoch ms, sizes bytes. A set's
settings are ``opencbs.model.sets.BackupSetSettings``, a job is answered as its record,
``opencbs.model.jobs.JobRecord`` (built by ``opencbs.store.jobs.job_record``). Errors:
``{"error": code, "message", "hint"}`` with 400 (unusable input, e.g. a source or destination
path that is not valid UTF-8 text: sets are stored and served as JSON text; a destination's
settings holding a credential; an ``S3`` destination whose settings are not a location), 401,
404, 409
(duplicate job, finished job, duplicate name), 503 (database); 413 for a body over the route's
byte limit and 422 for a body that does not match the schema (``{"error": "invalid_input",
"detail": [...]}``).

A job's life (cbs-api.md §4, §5):

1. ``POST …/jobs`` starts it. The job ID is the start time in the server's zone (``start_time``,
   default now); a second job with the same ID for that set, destination and ``cdp`` is a 409.
   ``FromIp`` is the address the request came from. The answer carries the ``quota`` the job
   starts with (``model.storage.StorageQuota``, cbs-api.md §11); the agent stops a job that
   would exceed it and finishes it ``BS_STOP_BY_QUOTA_EXCEEDED``.
2. ``PUT …/jobs/{job_id}/batches/{batch_no}`` delivers entries, batch numbers from 0. A batch
   number stored already is not stored again (``{"stored": false}``), so a retried batch is
   harmless; a retry must carry the same entries (a different entry count is a 409). Every
   count and size of §5 is derived from the entries in the transaction that stores them.
3. ``POST …/progress`` records what GetBackupJobProgress shows, and ``uploaded_bytes``: what
   the job wrote to the destination so far (ListBackupJobStatus ``UploadSize``, cbs-api.md §7).
4. ``POST …/finish`` sets the final status, the dedupe figures and ``uploaded_bytes`` (what
   the job wrote in all; absent: the last progress's figure stays); the status and ``EndTime``
   change in one transaction, so the finished report appears whole. Finishing again with the
   same status and figures answers the job (a retry after a lost answer must not fail);
   anything else on a finished job is a 409.
5. ``POST …/destinations/{destination_id}/storage`` records what the destination holds after
   the job (or a retention run): ``api/agent_storage.py``.

Until finished the job reads ``BS_STILL_RUNNING``. Every agent call on a job (batch, retried
batch, progress, ``GET``, the heartbeat of ``api/agent_heartbeat.py`` that the agent sends every
``heartbeat_interval`` seconds of the start's answer) is a sign of life; a job without one for
``ServerState.job_timeout`` seconds is closed as ``BS_BACKUP_NOT_FINISHED`` by the server's
sweeper, after which its calls answer 409. Jobs are addressed by set, destination and job ID;
``?cdp=true`` picks the continuous-backup job of that ID.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    Strict,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from sqlalchemy import Connection

from opencbs.api.limits import AGENT_BODY, BATCH_BODY, USER_KEY, basic_credentials
from opencbs.api.state import state_of
from opencbs.errors import AuthUserRejected, Conflict, InvalidInput
from opencbs.model.jobs import JobRecord, JobRef
from opencbs.model.sets import MAX_PATH, BackupSetSettings
from opencbs.model.storage import StorageQuota
from opencbs.model.text import is_text
from opencbs.notify import alerts as notify_alerts
from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS
from opencbs.reports.vocabulary import (
    EntryType,
    JobMode,
    JobStatus,
    LogType,
    ReportList,
)
from opencbs.store import job_queries, jobs, sets, storage
from opencbs.store.users import BackupUser
from opencbs.store.util import now_ms

#: Most entries in one batch; split longer lists into several batches.
MAX_BATCH_ENTRIES = 10_000
#: Longest log message (characters).
MAX_MESSAGE = 16_384
#: Byte limit of a batch request's body, and of every other request's body (the rule and the
#: measurement behind it: ``opencbs.api.limits``).
MAX_BATCH_BODY = BATCH_BODY
MAX_BODY = AGENT_BODY
#: Largest size or count (bytes, files): 2^53 - 1, the largest integer every JSON reader holds
#: exactly (a larger one is read as a float by many; the schema could not be trusted).
MAX_SIZE = 2**53 - 1


class ErrorOut(BaseModel):
    """An agent API error (every status but 422): ``error`` its stable code (``errors.py``),
    ``message`` one line, ``hint`` what to do."""

    error: str
    message: str
    hint: str = ""


class InvalidOut(BaseModel):
    """A body, path or query that does not match the schema (422): ``detail`` lists where
    (``loc``) and why (``msg``), at most 20 items."""

    error: str
    message: str
    detail: list[dict[str, Any]]


def error_answer(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` item: ``ErrorOut`` JSON with ``description``."""
    return {"model": ErrorOut, "description": description}


#: Answers every operation can give (issue 11: the documented codes are the real ones).
COMMON_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: error_answer(
        "Input that cannot be used as given (e.g. a path that is not UTF-8 text, a "
        "destination's settings holding a credential)."
    ),
    401: error_answer(
        "No, malformed or wrong credentials, or a disabled account (answered before the "
        "body is read)."
    ),
    413: error_answer(
        f"The body is over its limit ({MAX_BATCH_BODY} bytes for a batch, {MAX_BODY} "
        "for the others)."
    ),
    422: {"model": InvalidOut, "description": "The request does not match the schema."},
    429: error_answer(
        "Too many credential failures, or too many password checks at once: try later."
    ),
    500: error_answer("An internal error; its reference is in the server's log."),
    503: error_answer(
        "The database is unavailable or refused the operation (reference in the log)."
    ),
}
#: Answers of operations on one set (and what is under it).
_IN_SET: dict[int | str, dict[str, Any]] = {
    404: error_answer(
        "No such set of the caller (another user's set is not found), destination or job."
    )
}

router = APIRouter(prefix="/api/agent/v1", tags=["Agent API"], responses=COMMON_ANSWERS)


# --- authentication ---------------------------------------------------------------------------


class _Basic(HTTPBasic):
    """HTTP Basic credentials decoded as UTF-8 (``limits.basic_credentials``); ``None`` for a
    missing or malformed header. Documents the scheme: ``limits.GuardBodies`` has checked the
    credentials before the route runs."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        creds = basic_credentials(request.headers.get("Authorization", ""))
        if creds is None:
            return None
        return HTTPBasicCredentials(username=creds[0], password=creds[1])


_basic = _Basic(
    auto_error=False,
    scheme_name="BackupUserBasic",
    description="The backup user's LoginName and password.",
)


def _backup_user(
    request: Request, _creds: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> BackupUser:
    """The backup user authenticated from the request's headers before its body was read
    (``limits.GuardBodies``); raises ``AuthUserRejected`` (401) when there is none."""
    user = request.scope.get("state", {}).get(USER_KEY)
    if not isinstance(user, BackupUser):
        raise AuthUserRejected()
    return user


User = Annotated[BackupUser, Depends(_backup_user)]


# --- models -----------------------------------------------------------------------------------


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (``18.0``, an integer in JSON Schema) as an ``int``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _clean(value: str) -> str:
    """Refuse what is not text (``opencbs.model.text``: NUL characters, lone surrogates; no
    database can store them) as a 422."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not is_text(value):
        raise ValueError("must be valid Unicode (no lone surrogates)")
    return value


class _NoNul:
    """In the OpenAPI document, text carries no NUL character (``_clean`` refuses it)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(core), "pattern": "^[^\\u0000]*$"}


Text = Annotated[str, AfterValidator(_clean), _NoNul]
PathText = Annotated[Text, Field(max_length=MAX_PATH)]
Name = Annotated[Text, Field(min_length=1, max_length=255)]
#: A JSON integer (``18.0`` counts, as in JSON Schema; ``"18"`` or ``true`` do not).
Size = Annotated[int, Field(ge=0, le=MAX_SIZE), Strict(), BeforeValidator(_integral)]
Count = Size
TimeMs = Annotated[int, Field(ge=MIN_TIME_MS, le=MAX_TIME_MS), Strict(), BeforeValidator(_integral)]

SetIdPath = Annotated[str, Path(max_length=32, description="ID of the backup set.")]
DestIdPath = Annotated[str, Path(max_length=32, description="ID of the destination.")]
JobIdPath = Annotated[str, Path(max_length=32, description="Backup job ID (yyyy-MM-dd-HH-mm-ss).")]
CdpQuery = Annotated[bool, Query(description="The continuous-backup job of that ID.")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _given_settings(value: Any) -> Any:
    """A request's settings without the keys given as ``null``: such a key counts as not
    given (it keeps its current value, or its default when creating)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


class _NullKeys:
    """In the OpenAPI document, each key of a request's settings may also be ``null`` (read as
    not given, ``_given_settings``); the answers' ``BackupSetSettings`` is left as it is."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core))
        nullable = {k: {"anyOf": [v, {"type": "null"}]} for k, v in schema["properties"].items()}
        return {**schema, "properties": nullable}


#: A request's backup set settings (``BackupSetSettings``; ``null`` keys as not given).
SettingsIn = Annotated[BackupSetSettings, BeforeValidator(_given_settings), _NullKeys]


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse destination settings the store cannot keep (``sets.settings_problem``: nested
    deeper than ``sets.MAX_SETTINGS_DEPTH``, a number not finite, an integer beyond 2**53-1)
    as a 422."""
    problem = sets.settings_problem(value)
    if problem is not None:
        raise ValueError(f"must not {problem}")
    return value


#: A destination's settings (its location): a JSON object at most 8 levels deep, of finite
#: numbers and safe integers.
DestSettings = Annotated[dict[str, Any], AfterValidator(_shallow)]


class DestinationIn(_Model):
    """A new destination: ``type`` e.g. ``LOCAL`` or ``S3``; ``settings`` its location, e.g.
    ``{"path": "/srv/backup"}``, or ``{"bucket", "prefix", "endpoint", "region"}`` for ``S3``
    (stored in normal form; ``opencbs.model.destinations``). Settings never hold credentials:
    a key like ``secret_access_key``, ``password`` or ``token`` is a 400
    (``sets.destination_settings``)."""

    name: Name
    type: str = Field(min_length=1, max_length=32, pattern=r"^[A-Z][A-Z0-9_]*$")
    settings: DestSettings = Field(default_factory=dict)


class DestinationPatch(_Model):
    """Changes to a destination: a new name, and/or settings keys to replace (checked as
    ``DestinationIn``'s; an ``S3`` destination's merged settings must still be a location)."""

    name: Name | None = None
    settings: DestSettings | None = None


class DestinationOut(BaseModel):
    """A destination of a backup set, in order (``position`` from 0); ``settings`` its location,
    never a credential (refused where settings are written)."""

    id: str
    name: str
    type: str
    position: int
    settings: dict[str, Any]


class BackupSetIn(_Model):
    """A new backup set (``FILE`` sets only), optionally with its destinations."""

    name: Name
    type: Literal["FILE"] = "FILE"
    settings: SettingsIn = Field(
        default_factory=BackupSetSettings,
        description="Keys not given take their defaults.",
    )
    destinations: list[DestinationIn] = Field(default_factory=list, max_length=32)


class BackupSetPatch(_Model):
    """Changes to a backup set: a new name, and/or settings keys to replace (a key not given
    keeps its current value)."""

    name: Name | None = None
    settings: SettingsIn | None = None


class BackupSetOut(BaseModel):
    """A backup set with its settings and destinations. ``created_at`` is epoch ms."""

    id: str
    name: str
    type: str
    removed: bool
    created_at: int
    settings: BackupSetSettings
    destinations: list[DestinationOut]


class JobStartIn(_Model):
    """Start of a backup job. ``start_time`` (epoch ms, default now; within the one window of
    job times, ``reports.timefmt.MIN_TIME_MS``..``MAX_TIME_MS``) gives the job ID (§4);
    ``mode``: ``M`` manual, ``S`` scheduled, ``R`` started from the server."""

    mode: JobMode = JobMode.MANUAL
    cdp: bool = False
    run_version: Text = Field(default="", max_length=64)
    start_time: TimeMs | None = None
    dedupe_enabled: bool = True


class JobStarted(JobRecord):
    """A started job's record, with the ``quota`` it starts with (bytes; cbs-api.md §11) and
    the seconds between the heartbeats its agent sends while it runs (``api.agent_heartbeat``)."""

    quota: StorageQuota
    heartbeat_interval: float


ListKey = Literal["info", "new", "upd", "pmt", "del", "mov", "cpy"]
_LOG_TYPES = frozenset(t.value for t in LogType)
_FILE_TYPES = frozenset(t.value for t in EntryType)


def _entry_rules(schema: dict[str, Any]) -> None:
    """``EntryIn._consistent`` in the OpenAPI document: one ``oneOf`` branch per kind of entry
    (log; new/upd/pmt/del; cpy; mov), so that what the schema allows the server takes."""
    empty = {"type": "string", "maxLength": 0}
    files = {"type": {"enum": sorted(_FILE_TYPES)}, "path": {"minLength": 1}, "message": empty}
    schema["oneOf"] = [
        {
            "properties": {
                "list": {"const": "info"},
                "type": {"enum": sorted(_LOG_TYPES)},
                "path": empty,
                "from_path": {"anyOf": [{"type": "null"}, empty]},
            }
        },
        {
            "properties": {
                "list": {"enum": ["new", "upd", "pmt", "del"]},
                **files,
                "from_path": {"type": "null"},
            },
            "required": ["path"],
        },
        {"properties": {"list": {"const": "cpy"}, **files}, "required": ["path"]},
        {
            "properties": {
                "list": {"const": "mov"},
                **files,
                "from_path": {"type": "string", "minLength": 1},
            },
            "required": ["path", "from_path"],
        },
    ]


class EntryIn(_Model):
    """One report entry (cbs-api.md §5).

    ``list`` ``info`` (a log entry): ``type`` ``start``/``info``/``warn``/``error``/``end``,
    ``message``, ``last_modified`` its timestamp. Other lists (file entries): ``type`` ``F``
    file, ``D`` directory, ``L`` symbolic link (``link_to_dir`` when it points at a directory);
    ``path`` the full source path (the new path of a move or copy); ``from_path`` the old path
    of a move (required) or the copied file of a copy; ``last_modified`` epoch ms; ``size`` the
    stored (compressed) bytes, ``unzip_size`` the original bytes.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_entry_rules)

    list: ListKey
    type: str = Field(max_length=8)
    path: PathText = ""
    message: Text = Field(default="", max_length=MAX_MESSAGE)
    from_path: PathText | None = None
    last_modified: TimeMs | None = None
    size: Size = 0
    unzip_size: Size = 0
    link_to_dir: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> EntryIn:
        if self.list == "info":
            if self.type not in _LOG_TYPES:
                raise ValueError(f"a log entry's type is one of {sorted(_LOG_TYPES)}")
            if self.path or self.from_path:
                raise ValueError("a log entry carries a message, not a path")
            return self
        if self.type not in _FILE_TYPES:
            raise ValueError("a file entry's type is F, D or L")
        if not self.path:
            raise ValueError("a file entry needs a path")
        if self.message:
            raise ValueError("a file entry carries no message")
        if self.list == "mov" and not self.from_path:
            raise ValueError("a move entry needs from_path")
        if self.from_path is not None and self.list not in ("mov", "cpy"):
            raise ValueError("from_path belongs to move and copy entries only")
        return self

    def stored(self) -> jobs.EntryIn:
        """The entry as the store takes it."""
        lst = ReportList.from_key(self.list)
        return jobs.EntryIn(
            lst=lst,
            etype=self.type,
            path=self.message if lst is ReportList.LOG else self.path,
            from_path=self.from_path,
            mtime_ms=self.last_modified,
            size=self.size,
            unzip_size=self.unzip_size,
            link_dir=self.link_to_dir and self.type == EntryType.LINK.value,
        )


class BatchIn(_Model):
    """A numbered batch of entries, in report order."""

    entries: list[EntryIn] = Field(max_length=MAX_BATCH_ENTRIES)


class BatchOut(BaseModel):
    """``stored`` is false when that batch number had been stored already (nothing changed)."""

    batch_no: int
    stored: bool
    entry_count: int


class ProgressIn(_Model):
    """What GetBackupJobProgress shows (§7): counts of files, sizes in bytes; and
    ``uploaded_bytes``, what the job wrote to the destination so far (its ``UploadSize``,
    cbs-api.md §7; kept when absent)."""

    current_file_name: PathText = ""
    current_file_count: Count = 0
    total_file_count: Count = 0
    uploaded_file_size: Size = 0
    total_file_size: Size = 0
    uploaded_bytes: Size | None = None


class FinishIn(_Model):
    """The end of a job: its final status (not ``BS_STILL_RUNNING``), the dedupe figures of
    §5 (bytes; ``dedupe_saving`` ≤ ``dedupe_original_size``) and ``end_time``, when the job
    ended on the agent (epoch ms; default: now, the server's clock; a report delivered late
    from the agent's spool gives it: ``store.jobs.require_reported_end``); ``uploaded_bytes``,
    what the job wrote to the destination (bytes: its ``UploadSize``, cbs-api.md §7; absent:
    the last progress's figure, else the stored size of its new and updated content)."""

    status: JobStatus
    dedupe_original_size: Size = 0
    dedupe_saving: Size = 0
    end_time: TimeMs | None = None
    uploaded_bytes: Size | None = None


# --- converters -------------------------------------------------------------------------------


def _dest_out(d: sets.Destination) -> DestinationOut:
    return DestinationOut(
        id=str(d.id), name=d.name, type=d.type, position=d.position, settings=d.settings
    )


def _set_out(b: sets.BackupSet) -> BackupSetOut:
    return BackupSetOut(
        id=str(b.id),
        name=b.name,
        type=b.type,
        removed=b.removed,
        created_at=b.created_at,
        settings=b.settings,
        destinations=[_dest_out(d) for d in b.destinations],
    )


def _locked_job(
    conn: Connection, user: BackupUser, ref: JobRef, *, reopen: bool = True
) -> jobs.Job:
    """The user's job ``ref``, its row locked for this transaction, read after the lock; with
    ``reopen``, a job the server closed for its agent's silence runs again, since its agent
    speaks (``store.jobs.reopen_if_silent``: a batch, progress or finish; a ``GET`` only reads).

    Raises ``BackupSetNotFound``, ``DestinationNotFound``, ``BackupJobNotFound``."""
    bset = sets.get_set(conn, user.id, ref.set_id)
    dest = sets.get_destination(conn, bset, ref.destination_id)
    job = job_queries.find_job(conn, bset, str(dest.id), ref.job_id, cdp=ref.cdp)
    jobs.lock_job(conn, job.pk)
    if reopen:
        jobs.reopen_if_silent(conn, job.pk)
    return jobs.get_job_by_pk(conn, job.pk)


# --- backup sets ------------------------------------------------------------------------------


@router.get("/backup-sets", summary="The caller's backup sets (not removed), by ID.")
def list_backup_sets(request: Request, user: User) -> list[BackupSetOut]:
    with state_of(request).db.read() as conn:
        return [_set_out(sets.get_set(conn, user.id, b.id)) for b in sets.list_sets(conn, user.id)]


@router.post(
    "/backup-sets",
    status_code=201,
    summary="Create a backup set and its destinations.",
    responses={409: error_answer("A set of that name exists.")},
)
def create_backup_set(request: Request, user: User, body: BackupSetIn) -> BackupSetOut:
    with state_of(request).db.write() as conn:
        bset = sets.add_set(conn, user.id, body.name, body.settings.given(), set_type=body.type)
        for d in body.destinations:
            sets.add_destination(
                conn, user.id, bset.id, name=d.name, dest_type=d.type, settings=d.settings
            )
        return _set_out(sets.get_set(conn, user.id, bset.id))


@router.get("/backup-sets/{set_id}", summary="One backup set of the caller.", responses=_IN_SET)
def get_backup_set(request: Request, user: User, set_id: SetIdPath) -> BackupSetOut:
    with state_of(request).db.read() as conn:
        return _set_out(sets.get_set(conn, user.id, set_id))


@router.patch(
    "/backup-sets/{set_id}",
    summary="Rename a backup set or change its settings.",
    responses={**_IN_SET, 409: error_answer("A set of that name exists.")},
)
def update_backup_set(
    request: Request, user: User, set_id: SetIdPath, body: BackupSetPatch
) -> BackupSetOut:
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        settings = body.settings.given() if body.settings is not None else None
        return _set_out(sets.update_set(conn, user.id, bset.id, name=body.name, settings=settings))


@router.post(
    "/backup-sets/{set_id}/destinations",
    status_code=201,
    summary="Add a destination after the set's others.",
    responses={**_IN_SET, 409: error_answer("A destination of that name exists in the set.")},
)
def add_destination(
    request: Request, user: User, set_id: SetIdPath, body: DestinationIn
) -> DestinationOut:
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        return _dest_out(
            sets.add_destination(
                conn, user.id, bset.id, name=body.name, dest_type=body.type, settings=body.settings
            )
        )


@router.patch(
    "/backup-sets/{set_id}/destinations/{destination_id}",
    summary="Rename a destination or replace keys of its settings.",
    responses={**_IN_SET, 409: error_answer("A destination of that name exists in the set.")},
)
def update_destination(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    body: DestinationPatch,
) -> DestinationOut:
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        dest = sets.get_destination(conn, bset, destination_id)
        return _dest_out(
            sets.update_destination(
                conn, user.id, bset.id, dest.id, name=body.name, settings=body.settings
            )
        )


# --- jobs -------------------------------------------------------------------------------------

_JOB = "/backup-sets/{set_id}/destinations/{destination_id}/jobs"


@router.post(
    _JOB,
    status_code=201,
    summary="Start a backup job (BS_STILL_RUNNING); the answer carries the user's quota.",
    responses={
        **_IN_SET,
        409: error_answer("A job with that ID exists (same start second), or the set is removed."),
    },
)
def start_job(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    body: JobStartIn,
) -> JobStarted:
    state = state_of(request)
    with state.db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        dest = sets.get_destination(conn, bset, destination_id)
        if bset.removed:
            raise Conflict(f"backup set {bset.id} is removed", "start jobs of a current set")
        job = jobs.start_job(
            conn,
            bset,
            dest.id,
            tz=state.tz,
            start_ms=body.start_time,
            mode=body.mode,
            cdp=body.cdp,
            from_ip=request.client.host if request.client else "",
            run_version=body.run_version,
            dedupe_enabled=body.dedupe_enabled,
        )
        quota = storage.quota_of(conn, user, dest.id)
        return JobStarted(
            **jobs.job_record(conn, job).model_dump(),
            quota=quota,
            heartbeat_interval=state.heartbeat_interval,
        )


@router.get(
    _JOB + "/{job_id}",
    summary="A job's status, counters and progress (a sign of life while it runs).",
    responses=_IN_SET,
)
def get_job(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    job_id: JobIdPath,
    cdp: CdpQuery = False,
) -> JobRecord:
    with state_of(request).db.write() as conn:
        ref = JobRef(set_id, destination_id, job_id, cdp=cdp)
        job = _locked_job(conn, user, ref, reopen=False)  # how the job is, as it is
        if job.status == JobStatus.STILL_RUNNING.value:
            jobs.touch_job(conn, job.pk)
        return jobs.job_record(conn, job)


@router.put(
    _JOB + "/{job_id}/batches/{batch_no}",
    summary="Deliver batch batch_no of entries (idempotent).",
    responses={**_IN_SET, 409: error_answer("The job is finished, or a retried batch differs.")},
)
def put_batch(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    job_id: JobIdPath,
    batch_no: Annotated[int, Path(ge=0, le=2**31 - 1)],
    body: BatchIn,
    cdp: CdpQuery = False,
) -> BatchOut:
    entries = [e.stored() for e in body.entries]
    with state_of(request).db.write() as conn:
        job = _locked_job(conn, user, JobRef(set_id, destination_id, job_id, cdp=cdp))
        if jobs.append_batch(conn, job.pk, batch_no, entries):
            return BatchOut(batch_no=batch_no, stored=True, entry_count=len(entries))
        held = jobs.batch_entry_count(conn, job.pk, batch_no)
        if held != len(entries):
            raise Conflict(
                f"batch {batch_no} was stored with {held} entries, not {len(entries)}",
                "a retried batch must carry the same entries",
            )
        jobs.touch_job(conn, job.pk)
        return BatchOut(batch_no=batch_no, stored=False, entry_count=len(entries))


@router.post(
    _JOB + "/{job_id}/progress",
    summary="Record the job's progress.",
    responses={**_IN_SET, 409: error_answer("The job is finished.")},
)
def post_progress(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    job_id: JobIdPath,
    body: ProgressIn,
    cdp: CdpQuery = False,
) -> JobRecord:
    with state_of(request).db.write() as conn:
        job = _locked_job(conn, user, JobRef(set_id, destination_id, job_id, cdp=cdp))
        jobs.update_progress(conn, job.pk, **body.model_dump())
        return jobs.job_record(conn, jobs.get_job_by_pk(conn, job.pk))


@router.post(
    _JOB + "/{job_id}/finish",
    summary="Finish the job: final status, dedupe figures, the end time on the agent.",
    responses={
        **_IN_SET,
        409: error_answer(
            "Finished already with another status or figures (closed as BS_BACKUP_NOT_FINISHED)."
        ),
    },
)
def finish(
    request: Request,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    job_id: JobIdPath,
    body: FinishIn,
    cdp: CdpQuery = False,
) -> JobRecord:
    if body.status is JobStatus.STILL_RUNNING:
        raise InvalidInput("a job cannot be finished as BS_STILL_RUNNING", "send its final status")
    with state_of(request).db.write() as conn:
        job = _locked_job(conn, user, JobRef(set_id, destination_id, job_id, cdp=cdp))
        if job.status != JobStatus.STILL_RUNNING.value:
            same = (
                job.status == body.status.value
                and job.dedupe_original_size == body.dedupe_original_size
                and job.dedupe_saving == body.dedupe_saving
                and body.uploaded_bytes in (None, job.uploaded_bytes)
            )
            if not same:
                raise Conflict(f"backup job {job.job_id} is finished already ({job.status})")
            return jobs.job_record(conn, job)
        if body.end_time is not None:
            jobs.require_reported_end(job, body.end_time, now_ms())
        done = jobs.finish_job(
            conn,
            job.pk,
            body.status,
            end_ms=body.end_time,
            dedupe_original_size=body.dedupe_original_size,
            dedupe_saving=body.dedupe_saving,
            uploaded_bytes=body.uploaded_bytes,
        )
        notify_alerts.job_ended(conn, done.pk, at_ms=now_ms())  # queued with the finish
        return jobs.job_record(conn, done)
