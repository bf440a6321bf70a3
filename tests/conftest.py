"""Shared fixtures: an isolated environment, a migrated database on SQLite and on PostgreSQL,
the app in-process, and the vendor's example job."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from opencbs.api.app import create_app
from opencbs.api.state import ServerState
from opencbs.model.sets import BackupSetSettings
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import sets, users
from opencbs.store.db import Database
from opencbs.store.migrate import upgrade

POSTGRES_ADMIN_URL = os.environ.get(
    "OPENCBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = os.environ.get("OPENCBS_REQUIRE_POSTGRES", "") not in ("", "0")
UTC = ZoneInfo("UTC")

ADMIN = ("system", "system-secret")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real home, config or data directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    for key in list(os.environ):
        if key.startswith("OPENCBS_") and key not in (
            "OPENCBS_TEST_POSTGRES_URL",
            "OPENCBS_REQUIRE_POSTGRES",
        ):
            monkeypatch.delenv(key)


_pg_reason: str | None = None


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, otherwise why not."""
    global _pg_reason
    if _pg_reason is None:
        try:
            eng = create_engine(POSTGRES_ADMIN_URL)
            with eng.connect() as conn:
                conn.execute(text("select 1"))
            eng.dispose()
            _pg_reason = ""
        except Exception as exc:  # noqa: BLE001
            _pg_reason = (
                f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}"
            )
    return _pg_reason or None


def _new_postgres_db() -> tuple[str, str]:
    name = f"opencbs_test_{secrets.token_hex(6)}"
    eng = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_postgres_db(name: str) -> None:
    eng = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A freshly migrated database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'opencbs.db'}")
        upgrade(database)
        yield database
        database.dispose()
        return
    reason = _postgres_available()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(reason + " (OPENCBS_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    name, url = _new_postgres_db()
    database = Database(url)
    try:
        upgrade(database)
        yield database
    finally:
        database.dispose()
        _drop_postgres_db(name)


@pytest.fixture
def state(db: Database) -> ServerState:
    """Server state over ``db``, times in UTC, with the administrator ``ADMIN``."""
    with db.write() as conn:
        users.add_system_user(conn, ADMIN[0], ADMIN[1], SystemRole.ADMIN)
    return ServerState(db=db, tz=UTC, job_idle_timeout=3600, sweep_interval=3600)


@pytest.fixture
def client(state: ServerState) -> Iterator[TestClient]:
    """The app in-process over real HTTP semantics (Starlette's TestClient)."""
    with TestClient(create_app(state)) as c:
        yield c


@dataclass(frozen=True)
class VendorJob:
    """IDs of the vendor's example job loaded into the store."""

    login_name: str
    set_id: str
    destination_id: str
    job_id: str


VENDOR_EXAMPLE = Path(__file__).parent / "fixtures" / "vendor_example_report.json"


@pytest.fixture
def vendor_job(state: ServerState) -> VendorJob:
    """The example OUTPUT of the vendor's GetBackupJobReport page, stored as a job of backup
    user ``obm``, set 1692320086130, destination -169224967005."""
    import json

    from opencbs.store import report_import

    data = json.loads(VENDOR_EXAMPLE.read_text())["Data"]
    with state.db.write() as conn:
        user = users.add_backup_user(conn, "obm", "obm-password")
        from opencbs.store.schema import backup_sets

        conn.execute(
            backup_sets.insert().values(
                id=1692320086130,
                user_id=user.id,
                name="BackupSet-1",
                type="FILE",
                settings=BackupSetSettings(sources=("C:\\Users\\Administrator",)).as_json(),
                removed=False,
                created_at=1692320086130,
            )
        )
        bset = sets.get_set(conn, user.id, 1692320086130)
        sets.add_destination(
            conn,
            user.id,
            bset.id,
            name="AhsayCBS",
            dest_type="OBS",
            settings={},
            destination_id=-169224967005,
        )
        bset = sets.get_set(conn, user.id, bset.id)
        report_import.import_report(conn, bset, -169224967005, data, tz=state.tz)
    return VendorJob("obm", "1692320086130", "-169224967005", data["ID"])
