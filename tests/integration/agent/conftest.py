"""Fixtures of the agent's integration tests: SQLite only (these test the agent, not the store),
cheap password hashing, and the backup user's AgentClient over the app's TestClient transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from opencbs import security
from opencbs.agent import AgentClient
from opencbs.store import users
from opencbs.store.db import Database
from opencbs.store.migrate import upgrade
from tests.agent_support import USER


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """SQLite only (overrides conftest's parametrised fixture: these tests are of the agent)."""
    database = Database(f"sqlite:///{tmp_path / 'opencbs.db'}")
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its lowest cost: these tests are not about password hashing."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def agent(client: TestClient) -> Iterator[AgentClient]:
    """The backup user ``USER``'s client of the agent API, in process."""
    with client.app.state.opencbs.db.write() as conn:  # type: ignore[attr-defined]
        users.add_backup_user(conn, *USER)
    with AgentClient("http://testserver", *USER, transport=client._transport) as c:
        yield c
