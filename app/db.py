"""Database connection: one engine per URL per process, short sessions, and the schema check."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings

# The newest migration in alembic/versions. tests/test_migrations.py keeps them in step.
SCHEMA_REVISION = "0004"


class DatabaseNotReady(RuntimeError):
    """The database cannot serve this pagemill; the message says why and what to do."""


class DatabaseNotMigrated(DatabaseNotReady):
    """The database is missing the schema this code needs."""


class DatabaseUnreachable(DatabaseNotReady):
    """No connection: nothing listens at the host and port, or the database is missing."""


class DatabaseAuthFailed(DatabaseNotReady):
    """The server refused the user or password of PAGEMILL_DATABASE_URL."""


# How servers word a refused login (Postgres: "password authentication failed for user",
# "role ... does not exist", "no password supplied"; MySQL-style "access denied").
_AUTH_REFUSED = ("authentication failed", "no password supplied", "access denied")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while workers write; the busy timeout makes writers queue
    # instead of failing when several worker processes commit at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
# A pooled connection unused this long is checked (SELECT 1) before it is handed out; one
# in steady use is not, which saves a round trip per transaction (pool_pre_ping pings all).
PING_IDLE_SECONDS = 2.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """A connection that sat idle may have been closed by a database restart: test it, and
    on failure make the pool discard it and open a fresh one (DisconnectionError)."""
    checked_in = record.info.get("checked_in")
    if checked_in is not None and time.monotonic() - checked_in < PING_IDLE_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        raise DisconnectionError(f"stale pooled connection: {exc}") from exc


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_size=5, max_overflow=10)
        event.listen(engine, "checkin", _note_checkin)
        event.listen(engine, "checkout", _ping_if_idle)
    _engines.add(engine)
    return engine


def forget_inherited_connections() -> None:
    """In a forked child: drop the pooled connections inherited from the parent without
    closing them (they are the parent's sockets); the child opens its own."""
    for engine in list(_engines):
        engine.dispose(close=False)


def close_connections() -> None:
    """Closes every pooled connection of this process (e.g. before forking workers)."""
    for engine in list(_engines):
        engine.dispose()


def get_engine(settings: Settings | None = None) -> Engine:
    return engine_for((settings or get_settings()).resolved_database_url)


@lru_cache(maxsize=8)
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on error."""
    factory = _session_factory((settings or get_settings()).resolved_database_url)
    with factory() as session, session.begin():
        yield session


def current_revision(engine: Engine) -> str | None:
    """The schema revision, None when the database has no schema; DatabaseUnreachable or
    DatabaseAuthFailed when it cannot be asked at all."""
    try:
        conn = engine.connect()
    except OperationalError as exc:
        raise _connect_error(engine, exc) from None
    with conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):  # no such table
            return None


def _connect_error(engine: Engine, exc: OperationalError) -> DatabaseNotReady:
    """Why a connection failed, in words that name the server but never the password."""
    url = engine.url
    reason = str(exc.orig or exc).strip().splitlines()[0]
    # psycopg: 'connection failed: connection to server at "h", port p failed: FATAL: why'
    reason = reason.rsplit("FATAL:", 1)[-1].rsplit(" failed: ", 1)[-1].strip()
    if url.get_backend_name() == "sqlite":
        return DatabaseUnreachable(
            f"cannot open the database file {url.database}: {reason}; check "
            "PAGEMILL_DATABASE_URL or PAGEMILL_DATA_DIR"
        )
    where = f"{url.host or 'localhost'}:{url.port or 'default port'}"
    if any(marker in reason.lower() for marker in _AUTH_REFUSED) or (
        reason.startswith("role ") and reason.endswith("does not exist")
    ):
        return DatabaseAuthFailed(
            f"the database at {where} refused user {url.username!r} ({reason}): check the "
            "user and password in PAGEMILL_DATABASE_URL"
        )
    return DatabaseUnreachable(
        f"cannot connect to the database {url.database!r} at {where} ({reason}): check "
        "PAGEMILL_DATABASE_URL and that the server is running"
    )


def require_migrated(settings: Settings | None = None) -> None:
    """Refuse to start against a database that lacks the current schema (or cannot be
    reached: DatabaseUnreachable, DatabaseAuthFailed)."""
    settings = settings or get_settings()
    revision = current_revision(get_engine(settings))
    if revision != SCHEMA_REVISION:
        found = f"at revision {revision}" if revision else "not migrated"
        raise DatabaseNotMigrated(
            f"The database {_redact(settings.resolved_database_url)} is {found}; this pagemill "
            f"needs revision {SCHEMA_REVISION}. Run `pagemill migrate` first."
        )


def migrate(settings: Settings | None = None) -> None:
    """Bring the database to the newest schema (alembic upgrade head)."""
    from alembic.config import Config

    from alembic import command

    settings = settings or get_settings()
    get_engine(settings)  # creates the SQLite file's folder
    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    config.attributes["database_url"] = settings.resolved_database_url
    command.upgrade(config, "head")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
