"""Running the Alembic migrations in code (no alembic.ini): `migrate(url)` upgrades to head.

Alembic is imported only when a migration may run: a start on a current schema reads the
`alembic_version` row with plain SQL and compares it with `HEAD` (importing Alembic and its
script directory costs every CLI command a tenth of a second)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from mailvia.domain.errors import StoreUnavailable
from mailvia.store.engine import create_engine, map_error

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest script in migrations/versions, by its number (tests/unit/test_migration_head.py
# checks it is Alembic's own single head): a new migration moves it by being there.
HEAD = max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
# Two processes starting at once must not both create the schema (SQLite: the write lock).
_MIGRATION_LOCK = 0x6D61696C76696100


def alembic_config() -> Config:
    """An Alembic configuration pointing at the package's migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(url: str, *, revision: str = "head", downgrade: bool = False) -> None:
    """Create or upgrade the schema at `url` to the latest revision (or to `revision`; back
    to it with `downgrade`), in one transaction; a no-op when it is current. Raises
    StoreUnavailable when the database cannot be used."""
    if revision == "head" and not downgrade:
        current = current_revision(url)
        if current == HEAD:
            return  # the usual start: nothing to do, and no Alembic to import
        if _numbered(current) and str(current) > HEAD:
            raise StoreUnavailable(
                f"the database's schema is revision {current}, newer than this mailvia's"
                f" ({HEAD}): run the mailvia that made it (a host not yet upgraded?)"
            )
    from alembic import command

    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        # A migration may rebuild a table (SQLite cannot drop a constraint), which its
        # foreign keys would refuse; SQLite can turn them off only outside a transaction.
        event.listen(engine, "connect", _foreign_keys_off)
    config = alembic_config()
    try:
        with engine.execution_options(mailvia_write=True).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            before = _revision(conn)
            (command.downgrade if downgrade else command.upgrade)(config, revision)
            # The check reads every table: seconds with a million messages, so only when a
            # migration ran (a start on a current schema is a no-op).
            if conn.dialect.name == "sqlite" and _revision(conn) != before:
                _check_foreign_keys(conn)
    except SQLAlchemyError as exc:
        raise map_error(exc, conflict="the schema changed underneath", missing="") from None
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The schema revision of the database at `url` (None: no schema yet, or no answer from
    the version table). Raises StoreUnavailable when the database cannot be reached."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            try:
                rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            except SQLAlchemyError:
                return None  # a fresh database: `migrate` creates the schema
            return str(rows[0][0]) if len(rows) == 1 else None  # several: Alembic's to judge
    except SQLAlchemyError as exc:
        raise map_error(exc, conflict="the schema changed underneath", missing="") from None
    finally:
        engine.dispose()


def _numbered(revision: str | None) -> bool:
    """A revision named as ours are (four digits), so comparable with HEAD as text."""
    return revision is not None and revision.isdigit() and len(revision) == len(HEAD)


def _revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys = OFF")


def _check_foreign_keys(conn: sa.Connection) -> None:
    """Refuse to commit a migration that left a row pointing at nothing (SQLite)."""
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
    if broken is not None:
        raise StoreUnavailable(f"a migration broke a foreign key: {tuple(broken)}")
