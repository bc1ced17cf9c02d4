"""Database fixtures: `store_url` runs a test on SQLite (a file in tmp_path) and on PostgreSQL
(`pg_url`: a fresh database per test on the server at MAILVIA_TEST_PG_URL)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _server_url() -> sa.URL:
    return sa.make_url(os.environ.get("MAILVIA_TEST_PG_URL", DEFAULT_PG_URL))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    server = _server_url()
    engine = sa.create_engine(
        server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        conn = engine.connect()
    except SQLAlchemyError as exc:
        engine.dispose()
        shown = server.render_as_string(hide_password=True)
        pytest.skip(
            f"PostgreSQL not reachable at {shown}: install the Debian package postgresql "
            f"(or set MAILVIA_TEST_PG_URL) ({type(getattr(exc, 'orig', None) or exc).__name__})"
        )
    name = f"mailvia_t_{secrets.token_hex(6)}"
    try:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend: the store's contract holds on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailvia.db'}"
    return str(request.getfixturevalue("pg_url"))
