"""Request bodies under hostile load (issue 11): the agent API authenticated from its headers
before any byte of a body is read, and every body read by streaming with a byte limit.

``GuardBodies`` is an ASGI middleware in front of every route:

1. A request under ``/api/agent/v1`` is authenticated first, from its ``Authorization`` header
   alone (HTTP Basic, ``opencbs.api.auth.authenticate_backup_user`` in a worker thread). Every
   failure is the one 401 ``{"error": "user_credentials", …}`` answered without reading the
   body; the user is handed to the route in ``scope["state"][USER_KEY]``.
2. The body is then read chunk by chunk, declared (``Content-Length``) or chunked alike, and
   refused as soon as it is over the route's limit (``body_limit``): a 413 with the CBS envelope
   for a CBS call, ``{"error": "body_too_large", "message", "hint"}`` elsewhere. A body within
   the limit is handed to the route whole, so nothing downstream reads past the limit.

Validation (the route's schema) therefore happens after authentication, on a bounded body.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencbs.api import envelope, params
from opencbs.api.auth import authenticate_backup_user
from opencbs.api.state import ServerState
from opencbs.errors import AuthUserRejected, InvalidInput, OpenCBSError
from opencbs.store.users import BackupUser

#: Path prefixes of the two APIs.
AGENT_PREFIX = "/api/agent/v1"
CBS_PREFIX = "/obs/api/json"

#: Byte limit of a CBS call's body (cbs-api.md §1: parameters, never data).
CBS_BODY = params.MAX_BODY
#: Byte limit of an agent API body other than a batch, and of any other route's body.
AGENT_BODY = 1 << 20
#: Byte limit of a batch of report entries (``PUT …/batches/{n}``). Chosen from a measurement
#: (README, "Request bodies"): the worst batch within 4 MiB, parsed, validated and stored, grows
#: the server by well under 64 MiB; the agent splits its batches by this limit and by count.
BATCH_BODY = 4 << 20

#: Where the authenticated backup user is handed to the agent API's routes (``scope["state"]``).
USER_KEY = "opencbs.backup_user"

_BATCH = re.compile(
    r"^/api/agent/v1/backup-sets/[^/]+/destinations/[^/]+/jobs/[^/]+/batches/[^/]+$"
)
#: Longest ``Authorization`` header parameter read (base64 of a login and a password).
_MAX_BASIC = 4096


class BodyTooLarge(InvalidInput):
    """A request body over its route's byte limit (HTTP 413). ``limit`` in bytes."""

    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"[Error] Request body is larger than {limit} bytes",
            f"send at most {limit} bytes"
            + (" (a report's entries: in smaller batches)" if limit == BATCH_BODY else ""),
        )
        self.limit = limit


def body_limit(method: str, path: str) -> int:
    """The byte limit of a request's body: ``BATCH_BODY`` for a batch of report entries,
    ``CBS_BODY`` for a CBS call, ``AGENT_BODY`` for every other request."""
    if method == "PUT" and _BATCH.match(path):
        return BATCH_BODY
    if is_cbs(path):
        return CBS_BODY
    return AGENT_BODY


def is_cbs(path: str) -> bool:
    """Whether ``path`` is under the CBS JSON API (answers are the CBS envelope)."""
    return path == CBS_PREFIX or path.startswith(CBS_PREFIX + "/")


def is_agent(path: str) -> bool:
    """Whether ``path`` is under the agent API (authenticated before its body is read)."""
    return path == AGENT_PREFIX or path.startswith(AGENT_PREFIX + "/")


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(login, password)`` of an HTTP Basic ``Authorization`` header decoded as UTF-8;
    ``None`` for a missing, malformed or oversized one (every failure gets the same answer)."""
    scheme, _, param = header.partition(" ")
    if scheme.lower() != "basic" or len(param) > _MAX_BASIC:
        return None
    try:
        text = b64decode(param.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    login, sep, password = text.partition(":")
    return (login, password) if sep else None


def _authenticate(state: ServerState, header: str, client: str | None) -> BackupUser:
    """The backup user of an ``Authorization`` header. A malformed header is refused without a
    password check; ``client`` (the peer's address) goes to the lockout."""
    creds = basic_credentials(header)
    if creds is None:
        raise AuthUserRejected()
    return authenticate_backup_user(state.db, state.auth_cache, creds[0], creds[1], client=client)


def too_large(exc: BodyTooLarge, path: str) -> Response:
    """The 413 answer: the CBS envelope for a CBS call, the agent API's error JSON otherwise."""
    if is_cbs(path):
        body = {"Status": "Error", "Message": exc.message, "ExptType": envelope.expt_type(exc)}
        return envelope.CBSResponse(body, status_code=413)
    return JSONResponse(
        {"error": exc.code, "message": exc.message, "hint": exc.hint}, status_code=413
    )


class _Gone(Exception):
    """The client disconnected before its body was whole."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's body, read by chunks; raises ``BodyTooLarge`` as soon as a declared
    ``Content-Length`` or the bytes received exceed ``limit`` (bytes), ``_Gone`` when the client
    leaves first. At most ``limit`` bytes (plus one chunk) are ever held."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` whole once, then waits on the client (disconnect)."""
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


class GuardBodies:
    """ASGI middleware: authenticate agent API requests from headers, then read every body by
    streaming with ``body_limit`` (module docstring). ``agent_error`` renders an authentication
    error of the agent API (``OpenCBSError`` → its JSON answer and status)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ServerState,
        agent_error: Callable[[OpenCBSError], Response],
    ) -> None:
        self.app = app
        self.state = state
        self.agent_error = agent_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if is_agent(path):
            header = Headers(scope=scope).get("authorization", "")
            peer = scope.get("client")
            client = str(peer[0]) if peer else None
            try:
                user = await run_in_threadpool(_authenticate, self.state, header, client)
            except OpenCBSError as exc:
                await self.agent_error(exc)(scope, receive, send)
                return
            state: dict[str, Any] = scope.setdefault("state", {})
            state[USER_KEY] = user
        try:
            body = await read_body(scope, receive, body_limit(scope.get("method", ""), path))
        except BodyTooLarge as exc:
            await too_large(exc, path)(scope, receive, send)
            return
        except _Gone:
            return  # nobody to answer
        await self.app(scope, _replay(body, receive), send)
