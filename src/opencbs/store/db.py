"""Connections to the database: SQLite (embedded default: WAL, one writer) or PostgreSQL.

``Database.read()`` gives a connection inside one read transaction (a consistent snapshot:
SQLite WAL read transaction, PostgreSQL REPEATABLE READ); ``Database.write()`` gives one inside a
write transaction, serialised on SQLite (one writer, ``BEGIN IMMEDIATE``). SQLAlchemy errors are
translated to ``StoreError`` here.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from opencbs.errors import ConfigError, Conflict, OpenCBSError, StoreError

log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Map ``postgres://`` and ``postgresql://`` to the psycopg 3 driver; keep others.

    Raises ``ConfigError`` for a URL SQLAlchemy cannot parse or a backend we do not support.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"invalid database URL: {url!r}", "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        ) from exc
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ConfigError(f"unsupported database {backend!r}", "use SQLite or PostgreSQL")
    return parsed.render_as_string(hide_password=False)


class Database:
    """One database, with snapshot reads and (on SQLite) serialised writes.

    The connection pool (a file or a server database) keeps ``pool_size`` connections and
    opens up to ``max_overflow`` more at peak; a request that finds none free within
    ``pool_timeout`` seconds raises ``StoreError`` "database busy" (HTTP 503) instead of
    waiting on (settings ``db_pool_size``, ``db_max_overflow``, ``db_pool_timeout``).
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 8,
        max_overflow: int = 8,
        pool_timeout: float = 10.0,
    ) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = threading.Lock() if self.is_sqlite else None
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        if not _in_memory(self.url):
            kwargs["poolclass"] = _BusyPool
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = max_overflow
            kwargs["pool_timeout"] = pool_timeout
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise ConfigError(f"cannot open database: {exc}") from exc
        if self.is_sqlite:
            _make_parent_dir(self.engine)
            _setup_sqlite(self.engine)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in one read transaction: every query sees the same snapshot."""
        try:
            with self.engine.connect() as conn:
                if not self.is_sqlite:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise _translate(exc) from exc

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in one write transaction, committed on success, rolled back on error."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise _translate(exc) from exc
        finally:
            if lock is not None:
                lock.release()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _in_memory(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (one connection per thread, no pool)."""
    parsed = make_url(url)
    database = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in url
    )


class _BusyPool(QueuePool):
    """SQLAlchemy's queue pool whose checkout timeout is the ``StoreError`` "database busy"
    (every connection in use for ``pool_timeout`` seconds), not a raw ``TimeoutError``."""

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except PoolTimeout as exc:
            log.warning("database busy: no free connection within %.0f s", self._timeout)
            raise StoreError(
                "database busy: no free connection, try again later",
                "the server's database connections are all in use; retry, or raise "
                "db_pool_size / db_max_overflow (README: the pool)",
            ) from exc


# SQLAlchemy logs a pool's events ("Pool disposed", checkouts) under the pool class's own name;
# its own pools sit under the logger "sqlalchemy", quiet below WARNING. Keep ours as quiet.
logging.getLogger(f"{_BusyPool.__module__}.{_BusyPool.__name__}").setLevel(logging.WARNING)


def _make_parent_dir(engine: Engine) -> None:
    """Create the folder of a SQLite file, as the data directory is created."""
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder of {database}: {exc.strerror}",
                "check the path in --database-url",
            ) from exc


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's recipe)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def _translate(exc: SQLAlchemyError) -> OpenCBSError:
    """The error a client may see for ``exc``: never the driver's text (it can name tables,
    columns, values and the database's host). That text goes to the server log with a
    reference, and the message names only the reference (issue 11)."""
    if isinstance(exc, IntegrityError):
        return Conflict("the change conflicts with what is stored (it exists already)")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StoreError("the database connection was lost", "check the database server")
    ref = uuid.uuid4().hex[:12]
    text = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    log.error("database error (reference %s): %s: %s", ref, type(exc).__name__, text)
    return StoreError(
        f"the database refused the operation (reference {ref})",
        "try again later; the server's log names the cause under that reference",
    )
