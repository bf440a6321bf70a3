"""Alembic migrations, run programmatically (``opencbs db upgrade``; ``serve`` upgrades first).

The same migrations build the schema on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from opencbs.errors import StoreError
from opencbs.store.db import Database

_HERE = Path(__file__).parent


def alembic_config(db: Database) -> Config:
    """An Alembic config pointing at our migrations and at ``db``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["engine"] = db.engine
    return cfg


def upgrade(db: Database, revision: str = "head") -> str:
    """Upgrade the schema to ``revision``; returns the revision now in force.

    Raises ``StoreError`` when the database cannot be reached or refuses the change.
    """
    try:
        command.upgrade(alembic_config(db), revision)
        return current_revision(db) or ""
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot upgrade the database schema: {str(exc).splitlines()[0]}",
            "check --database-url / OPENCBS_DATABASE_URL and that the database is up",
        ) from exc


def current_revision(db: Database) -> str | None:
    """The schema revision of ``db`` (``None`` for an empty database)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(db: Database) -> str:
    """The newest revision this version of opencbs knows."""
    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert head is not None
    return head


def is_current(db: Database) -> bool:
    """Whether ``db`` is at the newest revision."""
    return current_revision(db) == head_revision(db)


def readiness_problem(db: Database) -> str | None:
    """``None`` when ``db`` answers a query and its schema is at this version's head; else
    what is wrong, in words without database internals ("the database cannot be reached",
    "the database schema is at revision X, this server needs Y: run opencbs db upgrade").
    Used by the server's ``/readyz``; never raises for a database that is down or busy."""
    try:
        current = current_revision(db)
    except StoreError as exc:  # "database busy" (every pooled connection in use)
        return exc.message
    except (SQLAlchemyError, OSError):
        return "the database cannot be reached"
    head = head_revision(db)
    if current != head:
        return (
            f"the database schema is at revision {current or 'none'}, this server needs "
            f"{head}: run opencbs db upgrade"
        )
    return None
