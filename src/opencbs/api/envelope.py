"""The CBS envelope (cbs-api.md §1, §3): every answer of the CBS API is one JSON object,
``{"Status":"OK","Data":…}`` or ``{"Status":"Error","Message":…,"ExptType":…}``, HTTP 200 for
application errors. Errors are mapped to the envelope here and nowhere else."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import orjson
from starlette.responses import Response

from opencbs import errors as e

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_DBS = "com.ahsay.obs.core.dbs.DbsException"

#: ExptType of each error class (cbs-api.md §3); the first matching base class wins.
EXPT_TYPES: tuple[tuple[type[e.OpenCBSError], str], ...] = (
    (e.CredentialsRejected, "com.ahsay.obs.core.dbs.c"),
    (e.BackupUserNotFound, "com.ahsay.obs.core.dbs.ai"),
    (e.BodyNotObject, "org.json.JSONException"),
    (e.OpenCBSError, _DBS),
)


class CBSResponse(Response):
    """A JSON answer with the CBS content type, rendered by orjson."""

    media_type = JSON_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate or an unknown type
            text = json.dumps(content, ensure_ascii=False, default=str)
            return text.encode("utf-8", "replace")

    def init_headers(self, headers: Any = None) -> None:
        super().init_headers(headers)
        # Starlette appends charset only for text/*; set ours exactly.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-type"] + [
            (b"content-type", JSON_CONTENT_TYPE.encode())
        ]


def ok(data: Any = None, *, key: str = "Data") -> CBSResponse:
    """Success: ``{"Status":"OK","Data":data}``; ``{"Status":"OK"}`` when ``data`` is None;
    ``key`` puts the payload under another key (ListUsers → ``User``)."""
    body: dict[str, Any] = {"Status": "OK"}
    if data is not None:
        body[key] = data
    return CBSResponse(body)


def expt_type(exc: e.OpenCBSError) -> str:
    """The ``ExptType`` of an error (cbs-api.md §3)."""
    for cls, name in EXPT_TYPES:
        if isinstance(exc, cls):
            return name
    return _DBS


def error(exc: e.OpenCBSError) -> CBSResponse:
    """The error envelope of ``exc``: HTTP 200, but 404 for an unknown call (§3), 405 for a
    wrong method, 429 with ``Retry-After`` for ``ServerBusy`` (too many logins at once)."""
    status = (
        404
        if isinstance(exc, e.UnknownApi)
        else 405
        if isinstance(exc, e.MethodNotAllowed)
        else 429
        if isinstance(exc, e.ServerBusy)
        else 200
    )
    return CBSResponse(
        {"Status": "Error", "Message": exc.message, "ExptType": expt_type(exc)},
        status_code=status,
        headers=retry_headers(exc),
    )


def retry_headers(exc: e.OpenCBSError) -> dict[str, str]:
    """``{"Retry-After": seconds}`` for ``ServerBusy``, else nothing (every API's answer)."""
    if isinstance(exc, e.ServerBusy):
        return {"Retry-After": str(exc.retry_after)}
    return {}


def internal_error(exc: BaseException) -> CBSResponse:
    """HTTP 500 with a reference that is also in the server log; never a traceback (§3)."""
    ref = uuid.uuid4().hex[:12]
    log.error("internal error (reference %s)", ref, exc_info=exc)
    return CBSResponse(
        {
            "Status": "Error",
            "Message": f"[Error] Internal server error (reference {ref})",
            "ExptType": "java.lang.RuntimeException",
        },
        status_code=500,
    )
