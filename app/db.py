"""Database connection: one engine per URL per process, short sessions, and the schema check."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings

# The newest migration in alembic/versions. tests/test_migrations.py keeps them in step.
SCHEMA_REVISION = "0002"


class DatabaseNotMigrated(RuntimeError):
    """The database is missing the schema this code needs."""


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


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
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
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def require_migrated(settings: Settings | None = None) -> None:
    """Refuse to start against a database that lacks the current schema."""
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
