"""The server's own pages and the database pool, in-process on real SQLite and PostgreSQL:
``/readyz`` says what is wrong (schema behind, database unreachable, pool busy) as JSON with
503, never a traceback; a request that finds no free pooled connection within
``db_pool_timeout`` is answered "database busy" (503) instead of waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from opencbs.api.app import create_app
from opencbs.api.state import ServerState
from opencbs.errors import StoreError
from opencbs.store import users
from opencbs.store.db import Database
from opencbs.store.migrate import upgrade


def _client(db: Database) -> TestClient:
    # no lifespan (no job sweeper): the pages alone
    return TestClient(create_app(ServerState(db=db, tz=UTC, sweep_interval=3600)))


def test_readyz_ready_on_a_current_schema(db: Database) -> None:
    r = _client(db).get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})


def test_probes_that_ask_with_head_get_200_and_no_body(db: Database) -> None:
    """Load balancers and uptime checks often probe with HEAD; the document keeps one
    operation per path (no duplicate operation IDs)."""
    client = _client(db)
    for path in ("/healthz", "/readyz", "/"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/healthz"]) == {"get"} and set(paths["/readyz"]) == {"get"}


def test_readyz_503_when_the_schema_is_behind(tmp_path: Path) -> None:
    empty = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # never upgraded
    try:
        r = _client(empty).get("/readyz")
    finally:
        empty.dispose()
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert "schema is at revision none" in body["problem"]
    assert "opencbs db upgrade" in body["problem"]


def test_readyz_503_when_the_database_cannot_be_reached() -> None:
    # a PostgreSQL URL on a port where nothing listens: refused at once
    gone = Database("postgresql://nobody@127.0.0.1:9/none", pool_timeout=1)
    try:
        client = _client(gone)
        r = client.get("/readyz")
        health = client.get("/healthz")
    finally:
        gone.dispose()
    assert (r.status_code, r.json()) == (
        503,
        {"status": "unavailable", "problem": "the database cannot be reached"},
    )
    assert (health.status_code, health.json()) == (200, {"status": "ok"})  # liveness only


@contextmanager
def _one_connection_held(url: str) -> Iterator[Database]:
    """A database of pool size 1, no overflow, 0.5 s pool timeout, its connection held by a
    thread inside a read transaction for the duration."""
    small = Database(url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with small.read():
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(30)
        yield small
    finally:
        release.set()
        holder.join(30)
        small.dispose()


def test_a_full_pool_is_database_busy_not_a_hang(db: Database) -> None:
    with _one_connection_held(db.url) as small:
        start = time.monotonic()
        with pytest.raises(StoreError, match="database busy"), small.read():
            pass
        assert time.monotonic() - start < 10  # the 0.5 s pool timeout, generously
        client = _client(small)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "database busy" in ready.json()["problem"]
    with small.read():  # free again once the holder is done
        pass


def test_agent_api_answers_503_when_the_pool_is_busy(db: Database) -> None:
    with db.write() as conn:
        users.add_backup_user(conn, "alice", "alice-pw")
    with _one_connection_held(db.url) as small:
        r = _client(small).get("/api/agent/v1/backup-sets", auth=("alice", "alice-pw"))
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "store" and "database busy" in r.json()["message"]


def test_cbs_call_answers_the_envelope_when_the_pool_is_busy(db: Database) -> None:
    with _one_connection_held(db.url) as small:
        r = _client(small).post(
            "/obs/api/json/AuthSystemUser.do", json={"SysUser": "admin", "SysPwd": "x"}
        )
    assert r.json()["Status"] == "Error", r.text
    assert "database busy" in r.json()["Message"]


def test_pool_settings_reach_the_engine(tmp_path: Path) -> None:
    database = Database(
        f"sqlite:///{tmp_path / 'p.db'}", pool_size=3, max_overflow=2, pool_timeout=7
    )
    try:
        upgrade(database)
        pool = database.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 7)  # type: ignore[attr-defined]
    finally:
        database.dispose()
