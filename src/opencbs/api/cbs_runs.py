"""``RunBackup.do``: a backup started from the server (cbs-api.md §14).

The call records a run request of the set (``store.run_requests``); the set's unattended agent
(``opencbs agent run``) sees it on its poll, within a second when it long-polls, takes it and
starts the job with mode ``R``. Asking again while a request of the set is pending keeps that
one (``{"Status":"OK"}`` all the same). ``CancelBackup`` true withdraws the pending request;
without one it answers OK and does nothing. It cannot stop a job that runs (the request was
taken already): the vendor's ``CancelBackup`` withdraws a request, it is no "stop" button.

``BackupType`` must be empty (or absent) for a ``FILE`` set: the vendor's types
(``DATABASE``…) belong to other kinds of sets. Roles and scope as UpdateBackupSet: a
``READ_ONLY_API`` system user is refused (``PermissionDenied``), a reseller reaches only its
own users (another's user is "not found", §2). A removed set cannot run (a ``Conflict``).
"""

from __future__ import annotations

from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import (
    LOGIN,
    OWNER,
    SET_ID,
    ParamDoc,
    backup_set,
    backup_user,
    cbs_call,
    require_write,
)
from opencbs.api.envelope import ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.errors import Conflict, ParameterInvalid
from opencbs.store import run_requests
from opencbs.store.util import now_ms

_CALL = "RunBackup"

_CANCEL = ParamDoc(
    "CancelBackup",
    type="boolean",
    description="true: withdraw the set's pending request (none pending: nothing to do). It "
    "cannot stop a job that runs already. Default false: request a backup.",
)
_TYPE = ParamDoc(
    "BackupType",
    description="Empty (or absent) for a FILE backup set, the only kind opencbs has; any other "
    "value is refused.",
)


@cbs_call(
    _CALL,
    params=(LOGIN, OWNER, SET_ID, _CANCEL, _TYPE),
    summary="Start a backup set's backup from the server: its agent takes the request on its "
    'next poll and runs the job with mode R; {"Status":"OK","Data":[]}. CancelBackup true '
    "withdraws a pending request (it cannot stop a running job). Not for READ_ONLY_API "
    "system users (cbs-api.md §14).",
    answer={"type": "array", "items": {}, "description": "Always empty."},
)
def run_backup(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, _CALL)
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    cancel = params.boolean("CancelBackup")
    backup_type = params.str_or_empty("BackupType").strip()
    with state.db.write() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        if backup_type and bset.type == "FILE":
            raise ParameterInvalid("BackupType", backup_type, "must be empty for a FILE backup set")
        if bset.removed:
            raise Conflict(
                f"[Error] Backup set {bset.id} is removed",
                "run a backup set that is not removed (ListBackupSets)",
            )
        if cancel:
            run_requests.cancel(conn, bset)
        else:
            run_requests.request(conn, bset, by=caller.name, at_ms=now_ms())
    if not cancel:
        state.polls.nudge()  # a long-poll of this process answers at once
    return ok([])
