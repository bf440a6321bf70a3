"""The long-polls of one process (``api.poll_hub``), on SQLite and PostgreSQL: the bound on
waiters, closing, and the watcher's cost: one look at the database for every waiting agent
together is two queries, however many wait, and the gathered ``last_seen_ms`` one statement."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from opencbs.api.poll_hub import PollHub
from opencbs.store import polls, run_requests, sets, users
from opencbs.store.db import Database
from opencbs.store.schema import backup_users

T0 = 1_800_000_000_000
AGENTS = 120


@pytest.fixture
def agents(db: Database) -> list[int]:
    """``AGENTS`` backup users with one set each (hashing is not under test: one user's
    password hash is reused)."""
    with db.write() as conn:
        first = users.add_backup_user(conn, "agent-0", "agent-password")
        sets.add_set(conn, first.id, "Docs")
        ids = [first.id]
        for n in range(1, AGENTS):
            uid = T0 + n
            conn.execute(
                backup_users.insert().values(
                    id=uid,
                    login_name=f"agent-{n}",
                    owner="",
                    password_hash=first.password_hash,
                    alias="",
                    email="",
                    client_type="OBM",
                    status="ENABLE",
                    quota=0,
                    data_size=0,
                    created_at=T0,
                )
            )
            sets.add_set(conn, uid, "Docs")
            ids.append(uid)
    return ids


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements sent to ``db`` while the test runs (an executemany counts once)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.engine, "before_cursor_execute", record)


def test_one_look_for_every_waiter_is_two_queries(
    db: Database, agents: list[int], statements: list[str]
) -> None:
    async def scenario() -> tuple[int, int, int, list[bool]]:
        hub = PollHub(limit=1000)
        with db.read() as conn:
            current = polls.generations(conn, agents, "UTC")
        waiters = [hub.enter(uid, current[uid]) for uid in agents]
        assert all(w is not None for w in waiters) and hub.waiting == AGENTS
        statements.clear()
        quiet = await hub.look(db, "UTC")
        cost = len(statements)
        # news for two agents: a run request, a set renamed
        with db.write() as conn:
            bset = sets.list_sets(conn, agents[5])[0]
            run_requests.request(conn, bset, by="system", at_ms=T0)
            sets.update_set(conn, agents[7], sets.list_sets(conn, agents[7])[0].id, name="New")
        woken = await hub.look(db, "UTC")
        return quiet, cost, woken, [w is not None and w.event.is_set() for w in waiters]

    quiet, cost, woken, flags = asyncio.run(scenario())
    assert quiet == 0 and woken == 2
    assert cost == 2, cost  # the generations and the pending requests, for all 120 waiters
    assert [i for i, woken in enumerate(flags) if woken] == [5, 7]


def test_the_bound_and_closing() -> None:
    async def scenario() -> None:
        hub = PollHub(limit=2)
        first = hub.enter(1, "g")
        second = hub.enter(1, "g")
        assert first is not None and second is not None
        assert hub.enter(2, "g") is None  # at the limit
        hub.leave(first)
        hub.leave(first)  # twice is harmless
        third = hub.enter(2, "g")
        assert third is not None and hub.waiting == 2
        hub.close()
        assert second.event.is_set() and third.event.is_set()
        assert hub.enter(3, "g") is None and hub.closed

    asyncio.run(scenario())


def test_last_seen_gathered_and_written_in_one_statement(
    db: Database, agents: list[int], statements: list[str]
) -> None:
    hub = PollHub()
    for uid in agents:
        hub.record_seen(uid, T0)
        hub.record_seen(uid, T0 + 14_000)  # within 15 s: not queued again
    statements.clear()
    asyncio.run(hub.flush_seen(db))
    assert len(statements) == 1
    with db.read() as conn:
        seen = dict(conn.execute(select(backup_users.c.id, backup_users.c.last_seen_ms)).all())
    assert {seen[uid] for uid in agents} == {T0}
    statements.clear()
    asyncio.run(hub.flush_seen(db))
    assert statements == []  # nothing gathered since
    hub.record_seen(agents[0], T0 + 15_000)
    asyncio.run(hub.flush_seen(db))
    with db.read() as conn:
        row = conn.execute(
            select(backup_users.c.last_seen_ms).where(backup_users.c.id == agents[0])
        ).scalar()
    assert row == T0 + 15_000
