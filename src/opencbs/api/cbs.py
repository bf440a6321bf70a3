"""The registry of CBS calls and the HTTP plumbing they share (cbs-api.md §1–3).

A call is a plain function ``handler(params, caller, state) -> Response`` registered with
``@cbs_call``; ``routes.mount_cbs`` serves each at ``/obs/api/json/<Name>.do`` (and ``/2/`` when
it has a version 2), for POST and GET, documents its parameters in the OpenAPI schema, and
turns every error into the envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.errors import PermissionDenied
from opencbs.store.sets import BackupSet, get_set
from opencbs.store.users import BackupUser, get_backup_user

Handler = Callable[[Params, Caller, ServerState], Response]


@dataclass(frozen=True)
class ParamDoc:
    """A documented parameter: name, JSON type (``string``/``boolean``), required, text."""

    name: str
    type: str = "string"
    required: bool = False
    description: str = ""


AUTH_PARAMS = (
    ParamDoc(
        "SysUser",
        required=True,
        description="Name of a system user (ADMIN, API_ONLY, READ_ONLY_API or RESELLER).",
    ),
    ParamDoc("SysPwd", required=True, description="Password of SysUser."),
)


@dataclass(frozen=True)
class CbsCall:
    """A registered CBS call."""

    name: str
    handler: Handler
    params: tuple[ParamDoc, ...]
    summary: str
    answer: dict[str, Any]
    v2: bool = False
    payload_key: str = "Data"
    tags: tuple[str, ...] = field(default=("CBS",))


CALLS: dict[str, CbsCall] = {}


def cbs_call(
    name: str,
    *,
    params: tuple[ParamDoc, ...],
    summary: str,
    answer: dict[str, Any] | None = None,
    v2: bool = False,
    payload_key: str = "Data",
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the CBS call ``name`` (e.g. ``"GetBackupJobReport"``).

    ``answer`` is the JSON schema of the payload (under ``payload_key``) for the OpenAPI schema.
    """

    def register(handler: Handler) -> Handler:
        CALLS[name] = CbsCall(
            name=name,
            handler=handler,
            params=AUTH_PARAMS + params,
            summary=summary,
            answer=answer or {},
            v2=v2,
            payload_key=payload_key,
        )
        return handler

    return register


# --- lookups most calls share --------------------------------------------------------------

LOGIN = ParamDoc("LoginName", required=True, description="Login name of the backup user.")
OWNER = ParamDoc(
    "Owner",
    description="Owner (reseller) of the backup user; when non-empty it must be the user's owner.",
)
SET_ID = ParamDoc("BackupSetID", required=True, description="ID of the backup set.")
DEST_ID = ParamDoc(
    "DestinationID",
    description='ID of the destination; missing, "" or "0": '
    "the set's first destination that has the job. `DestionationID` is read as "
    "an alias.",
)
JOB_ID = ParamDoc(
    "BackupJobID", required=True, description="ID of the backup job (yyyy-MM-dd-HH-mm-ss)."
)
CDP = ParamDoc(
    "Cdp",
    type="boolean",
    description="Look among continuous-backup jobs only when true (default false).",
)


def backup_user(conn: Any, params: Params, caller: Caller) -> BackupUser:
    """The backup user named by ``LoginName`` (and ``Owner``) within the caller's scope (§2)."""
    login = params.required_str("LoginName")
    owner = params.str_or_empty("Owner")
    return get_backup_user(conn, login, owner=owner, scope=caller.scope)


def backup_set(conn: Any, params: Params, user: BackupUser) -> BackupSet:
    """The backup set ``BackupSetID`` of ``user``."""
    return get_set(conn, user.id, params.required_str("BackupSetID"))


def require_write(caller: Caller, call: str) -> None:
    """Refuse a caller whose role may not call ``call`` (e.g. ``"UpdateBackupSet"``), a call
    that changes state: only ``ADMIN``, ``API_ONLY`` and ``RESELLER`` may (cbs-api.md §2;
    ``READ_ONLY_ADMIN`` never gets this far). Raises ``PermissionDenied``."""
    if not caller.role.may_write:
        raise PermissionDenied(caller.name, caller.role.value, call)
