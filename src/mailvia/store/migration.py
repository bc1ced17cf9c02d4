"""Running the Alembic migrations in code (no alembic.ini): `migrate(url)` upgrades to head."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from mailvia.store.engine import create_engine, map_error

MIGRATIONS = Path(__file__).parent / "migrations"
# Two processes starting at once must not both create the schema (SQLite: the write lock).
_MIGRATION_LOCK = 0x6D61696C76696100


def alembic_config() -> Config:
    """An Alembic configuration pointing at the package's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(url: str) -> None:
    """Create or upgrade the schema at `url` to the latest revision, in one transaction;
    a no-op when it is current. Raises StoreUnavailable when the database cannot be used."""
    engine = create_engine(url)
    config = alembic_config()
    try:
        with engine.execution_options(mailvia_write=True).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise map_error(exc, conflict="the schema changed underneath", missing="") from None
    finally:
        engine.dispose()
