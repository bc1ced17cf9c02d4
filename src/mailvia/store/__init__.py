"""The outbox's storage: SQLAlchemy Core on SQLite (the default) or PostgreSQL, with Alembic
migrations. `migrate(url)` brings a database to the current schema; `open_store(url)` opens it."""

from __future__ import annotations

from mailvia.store.files import make_private
from mailvia.store.keep import KEEP
from mailvia.store.migration import migrate
from mailvia.store.sqlstore import SqlStore


def open_store(url: str) -> SqlStore:
    """A store on the database at `url` (`sqlite:///path` or `postgresql+psycopg://...`).
    Does not connect or migrate; raises StoreUnavailable for a URL it cannot use."""
    return SqlStore(url)


__all__ = ["KEEP", "SqlStore", "make_private", "migrate", "open_store"]
