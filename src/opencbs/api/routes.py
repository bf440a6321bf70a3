"""Mounting the registered CBS calls on the app, with their OpenAPI documentation."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from opencbs.api import envelope
from opencbs.api.auth import authenticate_system
from opencbs.api.cbs import CALLS, CbsCall
from opencbs.api.params import MAX_BODY, Params, read_params
from opencbs.api.state import ServerState, state_of
from opencbs.errors import MethodNotAllowed, OpenCBSError, UnknownApi

PREFIX = "/obs/api/json"


def _serve(call: CbsCall, params: Params, state: ServerState) -> Response:
    """Authenticate, then run the call: one trip to the threadpool per request."""
    caller = authenticate_system(
        state.db,
        state.auth_cache,
        _credential(params.values.get("SysUser")),
        _credential(params.values.get("SysPwd")),
    )
    return call.handler(params, caller, state)


def _endpoint(call: CbsCall) -> Any:
    async def endpoint(request: Request) -> Response:
        state = state_of(request)
        try:
            params = await read_params(request)
            return await run_in_threadpool(_serve, call, params, state)
        except OpenCBSError as exc:
            return envelope.error(exc)
        except ClientDisconnect:
            return Response(status_code=499)  # the client left mid-body: nobody to answer
        except Exception as exc:  # noqa: BLE001 - the one place that answers the unexpected
            return envelope.internal_error(exc)

    endpoint.__name__ = call.name
    return endpoint


def _credential(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _param_schema(call: CbsCall) -> dict[str, Any]:
    props = {
        p.name: {
            "type": p.type if p.type != "boolean" else "string",
            "description": p.description
            + (
                ' JSON true/false, "true"/"false" in any case, Y/N or 1/0.'
                if p.type == "boolean"
                else ""
            ),
        }
        for p in call.params
    }
    return {
        "type": "object",
        "properties": props,
        "required": [p.name for p in call.params if p.required],
        "additionalProperties": True,
    }


#: The CBS error envelope (cbs-api.md §3).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Status": {"type": "string", "enum": ["Error"]},
        "Message": {"type": "string"},
        "ExptType": {"type": "string"},
    },
    "required": ["Status", "Message", "ExptType"],
}


def _answer_schema(call: CbsCall) -> dict[str, Any]:
    """The 200 answer: the success envelope with the call's payload, or the error envelope. The
    outer ``"type": "object"`` replaces the ``"string"`` FastAPI gives a plain ``Response``
    (``openapi_extra`` is merged into it key by key)."""
    ok_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"Status": {"type": "string", "enum": ["OK"]}},
        "required": ["Status"],
    }
    if call.answer:
        ok_schema["properties"][call.payload_key] = call.answer
    return {"type": "object", "oneOf": [ok_schema, ERROR_SCHEMA]}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {envelope.JSON_CONTENT_TYPE: {"schema": ERROR_SCHEMA}},
    }


def _answers(call: CbsCall) -> dict[str, Any]:
    """Every status a CBS call answers (application errors are HTTP 200, cbs-api.md §3)."""
    return {
        "200": {
            "description": "The CBS envelope: success, or an application error (cbs-api.md §3).",
            "content": {envelope.JSON_CONTENT_TYPE: {"schema": _answer_schema(call)}},
        },
        "413": _error(f"The body is larger than {MAX_BODY} bytes (read no further)."),
        "429": _error(
            "Too many password checks at once: try again after Retry-After seconds "
            '("[Error] Too many login attempts, try again later").'
        ),
        "500": _error("An internal error; its reference is in the server's log."),
    }


def _openapi(call: CbsCall, method: str) -> dict[str, Any]:
    schema = _param_schema(call)
    answer = _answers(call)
    if method == "GET":
        return {
            "parameters": [
                {
                    "name": p.name,
                    "in": "query",
                    "required": p.required,
                    "description": p.description,
                    "schema": {"type": "string"},
                }
                for p in call.params
            ],
            "responses": answer,
        }
    return {
        "requestBody": {
            "required": True,
            "description": "A JSON object whatever the Content-Type says (application/json, "
            "text/plain or none), or a form (cbs-api.md §1).",
            "content": {
                "application/json": {"schema": schema},
                "text/plain": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        },
        "responses": answer,
    }


def mount_cbs(app: FastAPI) -> None:
    """Serve every registered call under ``/obs/api/json/`` and answer unknown names with the
    404 envelope (cbs-api.md §1, §3)."""
    for call in CALLS.values():
        paths = [f"{PREFIX}/{call.name}.do"]
        if call.v2:
            paths.append(f"{PREFIX}/2/{call.name}.do")
        for path in paths:
            for method in ("POST", "GET"):
                version = "v2" if "/2/" in path else "v1"
                app.add_api_route(
                    path,
                    _endpoint(call),
                    methods=[method],
                    summary=call.summary,
                    operation_id=f"{call.name}_{version}_{method.lower()}",
                    tags=["CBS JSON API"],
                    openapi_extra=_openapi(call, method),
                    response_class=envelope.CBSResponse,
                    include_in_schema=True,
                )

    served = {f"{call.name}.do" for call in CALLS.values()} | {
        f"2/{call.name}.do" for call in CALLS.values() if call.v2
    }

    async def unknown(request: Request) -> Response:
        name = request.path_params.get("name", "")
        shown = name.rsplit("/", 1)[-1] or name
        if name in served:  # a known call, asked with PUT, DELETE or PATCH
            answer = envelope.error(MethodNotAllowed(request.method, shown))
            answer.headers["Allow"] = "GET, POST"
            return answer
        return envelope.error(UnknownApi(shown))

    app.add_api_route(
        PREFIX + "/{name:path}",
        unknown,
        methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"],
        include_in_schema=False,
    )
