"""Database fixtures: `store_url` runs a test on SQLite (a file in tmp_path) and on PostgreSQL
(`pg_url`: a fresh, empty database per test on the server at MAILVIA_TEST_PG_URL).

`migrated_store_url` and `migrated_pg_url` are the same at the head revision, for tests that
would migrate first thing: a copy of a SQLite file, or a database created from a template
database, each migrated once per session (migrating takes ~0.3 s on SQLite and ~1 s on
PostgreSQL; a copy, milliseconds and ~0.3 s). Tests of the migrations themselves take the
empty ones."""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _server_url() -> sa.URL:
    return sa.make_url(os.environ.get("MAILVIA_TEST_PG_URL", DEFAULT_PG_URL))


@contextmanager
def _new_database(template: str | None = None) -> Iterator[str]:
    """The URL of a new database (empty, or a copy of `template`), dropped at the end."""
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
        copied = f' TEMPLATE "{template}"' if template else ""
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    with _new_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a database migrated to the head revision, once per session (nothing ever
    connects to it again: PostgreSQL copies a database only while no one is connected)."""
    from mailvia.store import migrate

    with _new_database() as url:
        migrate(url)
        yield str(sa.make_url(url).database)


@pytest.fixture
def migrated_pg_url(pg_template: str) -> Iterator[str]:
    """The URL of a new PostgreSQL database at the head revision, dropped after the test."""
    with _new_database(template=pg_template) as url:
        yield url


@functools.cache
def sqlite_template() -> Path:
    """A SQLite file migrated to the head revision, once per process (copy it, never open
    it); removed when the process ends."""
    from mailvia.store import migrate

    folder = Path(tempfile.mkdtemp(prefix="mailvia-migrated-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "mailvia.db"
    migrate(f"sqlite:///{path}")
    leftovers = [p.name for p in folder.iterdir() if p != path]
    assert not leftovers, f"the migrated file is not whole on its own: {leftovers}"
    return path


def migrated_sqlite_file(path: Path) -> Path:
    """`path`, a new copy of the migrated SQLite file, private as the data folder it is in
    (made if missing) would be made at start-up."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template(), path)
    path.chmod(0o600)
    return path


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend: the store's contract holds on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailvia.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=BACKENDS)
def migrated_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`store_url` at the head revision."""
    if request.param == "sqlite":
        return f"sqlite:///{migrated_sqlite_file(tmp_path / 'mailvia.db')}"
    return str(request.getfixturevalue("migrated_pg_url"))
