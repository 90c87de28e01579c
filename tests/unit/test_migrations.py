"""Schema migrations: alembic is the only way the schema changes, and it matches the models.

Runs against a fresh SQLite file and a fresh real Postgres database (created here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import make_url

from app.db import (
    SCHEMA_REVISION,
    DatabaseNotMigrated,
    DatabaseUnreachable,
    current_revision,
    migrate,
    require_migrated,
)
from app.models import Base
from app.settings import Settings
from tests.support import services

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"api_keys", "batches", "jobs", "pages", "regions", "webhook_deliveries"}


@pytest.fixture(autouse=True)
def restore_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("PAGEMILL_")}
    yield
    services.configure(saved)


def _sqlite_settings(folder: Path) -> Settings:
    services.configure({"PAGEMILL_DATA_DIR": str(folder)})
    return Settings()


def _postgres_settings(url: str) -> Settings:
    services.configure({"PAGEMILL_DATABASE_URL": url, "PAGEMILL_DATA_DIR": "/tmp/pagemill-unset"})
    return Settings()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings pointing at a fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield _sqlite_settings(tmp_path)
        return
    with services.postgres_database() as url:
        yield _postgres_settings(url)
        # Close pooled connections before the database is dropped.
        from app.db import engine_for

        engine_for(url).dispose()


def _engine(settings: Settings) -> Engine:
    return create_engine(settings.resolved_database_url)


def test_schema_revision_is_the_alembic_head() -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [SCHEMA_REVISION]
    # One linear history: every revision but the first has exactly one parent.
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert all(isinstance(r.down_revision, str) for r in revisions[:-1])


def test_require_migrated_refuses_a_fresh_database_then_migrate_fixes_it(
    fresh: Settings,
) -> None:
    with pytest.raises(DatabaseNotMigrated, match=r"`pagemill migrate`") as raised:
        require_migrated(fresh)
    assert "not migrated" in str(raised.value)
    assert SCHEMA_REVISION in str(raised.value)
    migrate(fresh)
    require_migrated(fresh)  # no error now
    engine = _engine(fresh)
    try:
        assert current_revision(engine) == SCHEMA_REVISION
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    finally:
        engine.dispose()
    migrate(fresh)  # again: nothing to do, no error


def test_require_migrated_names_an_old_revision(tmp_path: Path) -> None:
    settings = _sqlite_settings(tmp_path)
    migrate(settings)
    engine = _engine(settings)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    engine.dispose()
    with pytest.raises(DatabaseNotMigrated, match=r"at revision 0000.*pagemill migrate"):
        require_migrated(settings)


def test_the_message_hides_the_database_password() -> None:
    services.ensure_postgres()
    admin = make_url(services.PG_ADMIN_URL)
    url = admin.set(drivername="postgresql+psycopg", password="hunter2", database="no_such_db")
    services.configure({"PAGEMILL_DATABASE_URL": url.render_as_string(hide_password=False)})
    with pytest.raises(DatabaseUnreachable) as raised:
        require_migrated()
    assert "hunter2" not in str(raised.value)
    assert 'database "no_such_db" does not exist' in str(raised.value)


def test_models_match_the_migrated_schema(fresh: Settings) -> None:
    migrate(fresh)
    engine = _engine(fresh)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"the models and the migrations disagree: {diff}"
