"""CBS calls about users (cbs-api.md §7): ListUsers and GetUser (v1 and ``2/``), AuthUser,
AuthSystemUser.

The user object (ListUsers items under the top-level ``User`` key, GetUser's ``Data``):
``LoginName``, ``Owner`` (``""`` for the administrators), ``Alias``, ``Email``, ``ClientType``,
``Status``, ``DataSize`` (number, bytes: what the user's destinations hold, the latest
``stored_size`` of each destination of its sets that are not removed summed, when any of them
was measured (``store.storage``, cbs-api.md §11); otherwise what the user's jobs stored: their
``UploadSize`` summed, the bytes each wrote to its destination),
``Quota`` (number, bytes, 0 = none; the agent stops a job that would exceed it), ``QuotaList``
(``[{"DestinationKey": "OBS", "Enabled": bool, "Quota": number}]``, the one server quota),
``LastBackupDate`` (number, epoch ms of the newest job's start, 0 when the user has no job),
``Online`` (bool: a job of the user is running, or its unattended agent polled within
2 × ``agent_poll_interval`` + 30 s: :func:`online_since`, cbs-api.md §14),
``BackupSetIdList`` (string IDs of the sets not removed, ascending).

AuthUser answers one error, ``Incorrect username/password`` (``AuthUserRejected``), for an
unknown user, a wrong password, a disabled account, an ``Owner`` mismatch and a user outside a
reseller's scope alike, at the same cost (a password hash is verified in every case). Portals
relay AuthUser's answer to people typing a login name, so naming unknown users there
(``[UserCacheManager.NoSuchUserExpt] …``) would let anyone enumerate accounts through the
portal; clients branch on ``Status`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from starlette.responses import Response

from opencbs.api.auth import Caller, authenticate_backup_user
from opencbs.api.cbs import LOGIN, OWNER, ParamDoc, backup_user, cbs_call
from opencbs.api.envelope import ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.store import job_queries, storage, users
from opencbs.store.users import BackupUser
from opencbs.store.util import now_ms

_SEARCH = ParamDoc(
    "searchStr",
    description="Only backup users whose LoginName contains this "
    "text (case-sensitive); absent or empty: every user the caller sees.",
)
_RESELLER = ParamDoc(
    "reseller",
    description="Only backup users owned by this reseller "
    "(system user name); absent or empty: any owner.",
)
_PASSWORD = ParamDoc("Password", required=True, description="Password of the backup user.")

_STR = {"type": "string"}
_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "LoginName": _STR,
        "Owner": {
            "type": "string",
            "description": 'Reseller owning the user; "" for the administrators.',
        },
        "Alias": _STR,
        "Email": _STR,
        "ClientType": _STR,
        "Status": {"type": "string", "description": "ENABLE or SUSPENDED."},
        "DataSize": {
            "type": "integer",
            "description": "Bytes the user's destinations hold (latest measurements), or "
            "without any, what its jobs stored (their UploadSize summed).",
        },
        "Quota": {"type": "integer", "description": "Bytes; 0 = no quota."},
        "QuotaList": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "DestinationKey": _STR,
                    "Enabled": {"type": "boolean"},
                    "Quota": {"type": "integer"},
                },
            },
        },
        "LastBackupDate": {
            "type": "integer",
            "description": "Epoch ms of the newest job's start; 0 when none.",
        },
        "Online": {
            "type": "boolean",
            "description": "A job of the user is running, or its agent polled lately "
            "(within 2 x the poll interval + 30 s).",
        },
        "BackupSetIdList": {
            "type": "array",
            "items": _STR,
            "description": "IDs of the user's backup sets, as strings.",
        },
    },
}


#: Seconds beyond two poll intervals an agent counts as online after its poll (§14).
ONLINE_SLACK = 30.0


def online_since(state: ServerState, at_ms: int) -> int:
    """The oldest poll (epoch ms) that still makes a user ``Online`` at ``at_ms``: 2 ×
    ``agent_poll_interval`` + :data:`ONLINE_SLACK` seconds before it (cbs-api.md §14)."""
    return at_ms - int((2 * state.agent_poll_interval + ONLINE_SLACK) * 1000)


def user_objects(
    conn: Connection, found: Sequence[BackupUser], *, seen_since_ms: int | None = None
) -> list[dict[str, Any]]:
    """The CBS user object of each user (keys in the module docstring; cbs-api.md §7), with
    five queries whatever the number of users. ``seen_since_ms`` (epoch ms): an agent that
    polled since then makes its user ``Online`` (:func:`online_since`); ``None``: only a
    running job does."""
    ids = [u.id for u in found]
    held = storage.held_bytes(conn, ids)
    stored = job_queries.stored_bytes(conn, ids)
    last = job_queries.last_backup_ms(conn, ids)
    online = job_queries.online_user_ids(conn, ids, seen_since_ms=seen_since_ms)
    set_ids = users.backup_set_ids(conn, ids)
    return [
        {
            "LoginName": u.login_name,
            "Owner": u.owner,
            "Alias": u.alias,
            "Email": u.email,
            "ClientType": u.client_type,
            "Status": u.status,
            "DataSize": held[u.id] if u.id in held else u.data_size + stored.get(u.id, 0),
            "Quota": u.quota,
            "QuotaList": [{"DestinationKey": "OBS", "Enabled": u.quota > 0, "Quota": u.quota}],
            "LastBackupDate": int(last.get(u.id) or 0),
            "Online": u.id in online,
            "BackupSetIdList": [str(s) for s in set_ids[u.id]],
        }
        for u in found
    ]


def _list_users(params: Params, caller: Caller, state: ServerState) -> Response:
    search = params.str_or_empty("searchStr")
    reseller = params.str_or_empty("reseller")
    with state.db.read() as conn:
        found = users.list_backup_users(
            conn, search=search, owner=reseller or None, scope=caller.scope
        )
        objects = user_objects(conn, found, seen_since_ms=online_since(state, now_ms()))
    return ok(objects, key="User")


@cbs_call(
    "ListUsers",
    params=(_SEARCH, _RESELLER),
    summary="The backup users the caller sees, by login name, under the top-level key User "
    "(not Data) (cbs-api.md §7). A reseller sees only its own users.",
    answer={"type": "array", "items": _USER_SCHEMA},
    v2=True,
    payload_key="User",
)
def list_users(params: Params, caller: Caller, state: ServerState) -> Response:
    return _list_users(params, caller, state)


@cbs_call(
    "GetUser",
    params=(LOGIN, OWNER),
    summary="One backup user, the same object as in ListUsers (cbs-api.md §7).",
    answer=_USER_SCHEMA,
    v2=True,
)
def get_user(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        obj = user_objects(conn, [user], seen_since_ms=online_since(state, now_ms()))[0]
    return ok(obj)


@cbs_call(
    "AuthUser",
    params=(LOGIN, OWNER, _PASSWORD),
    summary='Check a backup user\'s password: {"Status":"OK"}, or "Incorrect '
    'username/password" for any failure alike (unknown user, wrong password, disabled, '
    "Owner mismatch, outside the caller's scope) (cbs-api.md §7).",
)
def auth_user(params: Params, caller: Caller, state: ServerState) -> Response:
    login = params.required_str("LoginName")
    password = params.required_str("Password")
    owner = params.str_or_empty("Owner")
    authenticate_backup_user(
        state.db, state.auth_cache, login, password, owner=owner, scope=caller.scope
    )
    return ok()


@cbs_call(
    "AuthSystemUser",
    params=(),
    summary='Check SysUser/SysPwd: {"Status":"OK"}, or "Incorrect system username/'
    'password" (cbs-api.md §2, §7).',
)
def auth_system_user(params: Params, caller: Caller, state: ServerState) -> Response:
    # the credentials were checked before the handler runs (routes.py)
    return ok()
