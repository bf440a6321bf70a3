"""The admin API (``/api/admin/v1``): locked accounts and addresses, and unlocking one.

HTTP Basic with a system user of role ``ADMIN``, checked by the same throttled authentication
as the CBS calls (``api/auth.py``); every other caller gets the one 401. Errors are
``{"error", "message", "hint"}`` JSON like the agent API's.

- ``GET /lockouts``: ``{"lockouts": [{"kind", "key", "failures", "locked_until_ms"}]}``, the
  keys locked now (``kind`` ``sysuser``, ``user`` or ``address``; ``locked_until_ms`` epoch
  ms, ``null`` for a system user of status ``LOCKED``, until unlocked).
- ``DELETE /lockouts/{kind}/{key}``: unlock it and forget its failures (logged at WARNING);
  ``{"cleared": {"kind", "key"}}``, 404 when it was neither locked nor counted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from opencbs.api.agent import COMMON_ANSWERS, error_answer
from opencbs.api.auth import Caller, authenticate_system
from opencbs.api.limits import basic_credentials
from opencbs.api.state import state_of
from opencbs.errors import CredentialsRejected, NotFound
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import lockouts
from opencbs.store.util import now_ms

router = APIRouter(prefix="/api/admin/v1", tags=["Admin API"], responses=COMMON_ANSWERS)

_ADMIN_HINT = "the admin API takes a system user of role ADMIN (HTTP Basic)"


def _admin(request: Request) -> Caller:
    """The authenticated ADMIN system user; ``CredentialsRejected`` (401) otherwise."""
    creds = basic_credentials(request.headers.get("Authorization", ""))
    state = state_of(request)
    caller = authenticate_system(
        state.db, state.auth_cache, creds[0] if creds else None, creds[1] if creds else None
    )
    if caller.role is not SystemRole.ADMIN:
        exc = CredentialsRejected()
        exc.hint = _ADMIN_HINT
        raise exc
    return caller


Admin = Annotated[Caller, Depends(_admin)]


@router.get(
    "/lockouts",
    summary="The accounts and client addresses locked now.",
    responses={401: error_answer("No, malformed or wrong credentials, or not an ADMIN.")},
)
def list_lockouts(request: Request, caller: Admin) -> dict[str, Any]:
    state = state_of(request)
    with state.db.read() as conn:
        found = lockouts.list_lockouts(conn, now_ms())
    return {"lockouts": [x.as_json() for x in found]}


@router.delete(
    "/lockouts/{kind}/{key:path}",
    summary="Unlock an account (kind sysuser or user) or a client address (kind address).",
    responses={
        401: error_answer("No, malformed or wrong credentials, or not an ADMIN."),
        404: error_answer("Nothing locked or counted for that key."),
    },
)
def clear_lockout(
    request: Request, caller: Admin, kind: lockouts.LockKind, key: str
) -> dict[str, Any]:
    lock_kind = kind
    state = state_of(request)
    client = request.client.host if request.client else "an unknown address"
    with state.db.write() as conn:
        cleared = lockouts.clear(
            conn, lock_kind, key, by=f"admin {caller.name!r} from {client} (admin API)"
        )
    if not cleared:
        raise NotFound(f"no lockout of {lock_kind.value} {key!r}", "see GET /api/admin/v1/lockouts")
    return {"cleared": {"kind": lock_kind.value, "key": key}}
