"""Schemathesis against the published OpenAPI document, in-process (issue 11): every operation of
the CBS JSON API and of the agent API, every check schemathesis has (response schema
conformance, status codes, content types, headers, positive and negative data, unsupported
methods, ignored authentication, …), a bounded number of cases per operation.

About half of the cases carry valid credentials (a system user for the CBS API, a backup user
for the agent API, made by the fixture) so that they get past authentication; the others carry
what schemathesis generates. Two expectations are set to what the contracts say, not loosened
for convenience:

- CBS calls answer an application error (a missing or malformed parameter included) with the
  CBS envelope under HTTP 200 (cbs-api.md §3), so 200 is a valid rejection of negative data.
- Agent API input the schema cannot describe (a job finished as ``BS_STILL_RUNNING``) is a 400,
  so 400 is a valid answer to schema-valid data; so is the admin API's documented 400 for an
  unknown lockout kind (its ``kind`` is a free string in the schema).
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from opencbs import security
from opencbs.api.serve import build_app
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import jobs, sets, users
from opencbs.store.db import Database
from opencbs.store.migrate import upgrade
from tests.conftest import ADMIN

ALICE = ("alice", "alice-pw")
EXAMPLES = 12

CONFIG = SchemathesisConfig.from_str(
    """
[[operations]]
include-path-regex = "^/obs/api/json/"
checks.negative_data_rejection.expected-statuses = ["200", "405", "413"]

[[operations]]
include-path-regex = "^/api/agent/v1/"
checks.negative_data_rejection.expected-statuses = ["400", "401", "404", "405", "409", "413", "422"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "429"]

[[operations]]
include-path-regex = "^/api/admin/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "429"]
"""
)


#: The app's state; its database is the fixture's (the document does not depend on it, and
#: schemathesis loads it when this module is imported).
STATE = ServerState(db=Database("sqlite://"), tz=ZoneInfo("UTC"), sweep_interval=3600)


def _without_lifespan(app: ASGIApp) -> ASGIApp:
    """``app`` with its lifespan (the job sweeper) answered but not run: the sweeper is not under
    test here, and it would start on the placeholder database when the document is loaded."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup or shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    return wrapped


schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _without_lifespan(build_app(STATE)), config=CONFIG
)


@pytest.fixture(scope="module", autouse=True)
def _seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A migrated SQLite database with a system user, a backup user, one set with a destination
    and one job, served by ``STATE``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        db = Database(f"sqlite:///{Path(tmp_path_factory.mktemp('st')) / 'opencbs.db'}")
        upgrade(db)
        with db.write() as conn:
            users.add_system_user(conn, ADMIN[0], ADMIN[1], SystemRole.ADMIN)
            user = users.add_backup_user(conn, *ALICE)
            bset = sets.add_set(conn, user.id, "Docs", {"sources": ["/home/alice"]})
            dest = sets.add_destination(
                conn, user.id, bset.id, name="Local", dest_type="LOCAL", settings={"path": "/b"}
            )
            jobs.start_job(conn, sets.get_set(conn, user.id, bset.id), dest.id, tz=STATE.tz)
        STATE.db = db
        yield
        db.dispose()


_turn = itertools.count()
_BASIC = "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
_ADMIN_BASIC = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()


def _with_credentials(case: Any) -> dict[str, str] | None:
    """Every other case gets valid credentials: the system user's in the CBS call's body or
    query (or its ``Authorization`` header for the admin API), the backup user's
    ``Authorization`` header for the agent API."""
    if next(_turn) % 2:
        return None
    if case.path.startswith("/api/admin/"):
        return {"Authorization": _ADMIN_BASIC}
    if not case.path.startswith("/obs/api/json/"):
        return {"Authorization": _BASIC}
    creds = {"SysUser": ADMIN[0], "SysPwd": ADMIN[1]}
    if isinstance(case.body, dict):
        case.body = {**case.body, **creds}
    elif isinstance(case.query, dict):
        case.query = {**case.query, **creds}
    return None


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: Any) -> None:
    case.call_and_validate(headers=_with_credentials(case))


def test_the_document_is_valid_openapi_with_the_real_status_codes() -> None:
    schema.validate()  # the OpenAPI 3.1 meta-schema (schemathesis' own loader)
    document = schema.raw_schema
    for path, item in document["paths"].items():
        if not path.startswith(("/obs/api/json/", "/api/")):
            continue  # /healthz, /readyz: no body, no credentials (api/pages.py documents them)
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"413", "500"} <= codes, (method, path, codes)
            if path.startswith("/obs/api/json/"):
                answer = op["responses"]["200"]["content"]["application/json; charset=utf-8"]
                assert answer["schema"]["type"] == "object", (method, path)  # was "string"
            else:
                assert {"401", "422", "503"} <= codes, (method, path, codes)
                if path.startswith("/api/agent/"):
                    names_one = "{set_id}" in path or "{request_id}" in path
                    assert names_one == ("404" in codes), (method, path, codes)
