"""The database connection: engine setup, SQLite pragmas and locking, one transaction per call,
and the mapping of driver errors to domain errors (the only place that sees them)."""

from __future__ import annotations

import logging
import select
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)

from mailvia.domain.errors import Conflict, MailviaError, NotFound, StoreUnavailable
from mailvia.store.writer_queue import WriterQueue

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_WRITE = "mailvia_write"


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from pysqlite so that our own BEGIN (below) is used.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front, so a claim's read and update are one atomic step
    # across processes, and a reader never has to upgrade its lock (which could fail at once).
    immediate = bool(conn.get_execution_options().get(_WRITE))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# The BEGIN that `Database` sends itself on SQLite, first in each of its transactions.
_BEGIN_WRITE = "BEGIN IMMEDIATE"
_BEGIN_READ = "BEGIN"


def _still_open(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection is checked out only if the server has not hung up on it.

    An idle connection has nothing to read; one the server closed (a restart, an idle timeout,
    pg_terminate_backend) has its FATAL notice or end of file waiting. A look at the socket,
    with no round trip: SQLAlchemy's pre-ping would send a `SELECT 1` and wait for it before
    every transaction. Raising DisconnectionError makes the pool replace the connection."""
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the connection is closed")
    try:
        look = select.poll()  # not select.select: a descriptor above 1023 is fine here
        look.register(dbapi_connection.fileno(), select.POLLIN)
        waiting = look.poll(0)
    except (OSError, ValueError):
        raise DisconnectionError("the connection's socket is gone") from None
    if waiting:
        raise DisconnectionError("the server closed the connection")


def create_engine(url: str, *, begin_listener: bool = True) -> Engine:
    """An engine for `url` (SQLite or `postgresql+psycopg`). Raises StoreUnavailable for a URL
    it cannot use; does not connect.

    On SQLite pysqlite's own transaction control is taken away, and each transaction's BEGIN
    (BEGIN IMMEDIATE with the `mailvia_write` option) is sent by a `begin` listener; without
    it (`begin_listener=False`: `Database`, which sends its own) the engine has no listener
    at all. Any listener makes SQLAlchemy dispatch its events (before and after each statement,
    each commit, each checkout) on every statement: a quarter of a single POST's store work
    (docs/benchmarks.md, branch `perf1`)."""
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = sa.create_engine(parsed)
            event.listen(engine, "connect", _sqlite_connect)
            if begin_listener:
                event.listen(engine, "begin", _sqlite_begin)
            return engine
        engine = sa.create_engine(parsed, connect_args={"connect_timeout": 5})
        event.listen(engine, "checkout", _still_open)
        return engine
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise StoreUnavailable(f"cannot use the database URL: {exc}") from None


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(unparsable URL)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_foreign_key(exc: IntegrityError) -> bool:
    orig = exc.orig
    if isinstance(orig, sqlite3.IntegrityError):
        return "FOREIGN KEY" in str(orig)
    return getattr(orig, "sqlstate", None) == "23503"


def map_error(exc: SQLAlchemyError, *, conflict: str, missing: str) -> MailviaError:
    """The domain error for a driver error: a broken constraint is Conflict (or NotFound when a
    referenced row is missing); anything else means the store cannot be used right now."""
    if isinstance(exc, IntegrityError):
        if _is_foreign_key(exc):
            return NotFound(missing)
        return Conflict(conflict)
    cause: BaseException = getattr(exc, "orig", None) or exc
    return StoreUnavailable(f"the database is unavailable: {_first_line(cause)}")


def binary_rows(
    conn: Connection, sql: str, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """The rows of one query (driver SQL, with `params` for its `%(name)s`) on PostgreSQL,
    with psycopg asked for them in binary: a `bytea` comes as its bytes, not hex text the
    server encodes and psycopg decodes (a claim's 200 contents of 6 KB: 1.0 ms of the store
    process's CPU against 3.4 ms, and a quarter of the wait). In `conn`'s transaction; the
    driver's errors are raised as SQLAlchemy's, so `Database` maps them as any other."""
    import psycopg  # PostgreSQL's driver: only where its dialect is in use

    driver = conn.connection.dbapi_connection
    try:
        with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
            # SQLAlchemy's listeners see it as any statement (counts, tests, tracing).
            conn.dispatch.before_cursor_execute(conn, cursor, sql, params or (), None, False)
            cursor.execute(sql, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows
    except psycopg.Error as exc:
        lost = bool(driver.broken)  # type: ignore[union-attr]
        if lost:  # as SQLAlchemy does for its own statements: the pool then drops it
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, psycopg.Error, connection_invalidated=lost
        ) from exc


def _writer_queue(engine: Engine) -> WriterQueue | None:
    """A WriterQueue for a SQLite file; none for PostgreSQL, an in-memory database, a URI
    filename, or when the lock file cannot be opened (e.g. a read-only folder: SQLite's own
    busy handler then queues the writers)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if engine.url.query.get("uri") or engine.url.query.get("mode"):
        return None
    try:
        return WriterQueue(Path(database), timeout=BUSY_TIMEOUT_MS / 1000)
    except OSError as exc:
        log.warning("no writer queue for %s (%s): SQLite's busy handler alone", database, exc)
        return None


class Database:
    """An engine plus the rules for using it: `write()` and `read()` each run one transaction,
    committed on success and rolled back on any error, with errors mapped to domain errors."""

    def __init__(self, url: str) -> None:
        self.url = safe_url(url)
        # On SQLite each transaction's BEGIN is sent here (`_begun`), not by a listener.
        self.engine = create_engine(url, begin_listener=False)
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._writer = self.engine.execution_options(**{_WRITE: True})
        self._queue = _writer_queue(self.engine)
        # A read sees one snapshot (a message and its recipients agree). SQLite's BEGIN already
        # does; setting an isolation level there would hand transactions back to pysqlite.
        self._reader = (
            self.engine.execution_options(isolation_level="REPEATABLE READ")
            if self.dialect == "postgresql"
            else self.engine
        )
        # One statement sees one snapshot by itself: on PostgreSQL it needs no BEGIN and no
        # COMMIT (two round trips fewer); SQLite's are calls in this process.
        self._one_statement = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else None
        )
        self._pinned = threading.local()  # this thread's open snapshot(), if any

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _begun(self, conn: Connection, begin: str) -> Connection:
        """A transaction SQLAlchemy has just begun, begun on SQLite too: pysqlite's own
        transaction control is off (`_sqlite_connect`), so its BEGIN is sent here, first in
        the transaction (a writer's takes the write lock up front: `_sqlite_begin`). Its
        COMMIT and ROLLBACK are pysqlite's, as ever."""
        if self._sqlite:
            conn.exec_driver_sql(begin)
        return conn

    @contextmanager
    def write(
        self,
        *,
        conflict: str = "this conflicts with existing data",
        missing: str = "a referenced object does not exist",
        intake: bool = False,
    ) -> Iterator[Connection]:
        """One write transaction (on SQLite it holds the write lock from its first statement).
        `intake`: a message being accepted, its caller waiting: on SQLite it goes before the
        other writers waiting (store/writer_queue.py)."""
        turn = self._queue.turn(intake=intake) if self._queue else nullcontext()
        try:
            with turn, self._writer.begin() as conn:
                yield self._begun(conn, _BEGIN_WRITE)
        except SQLAlchemyError as exc:
            raise map_error(exc, conflict=conflict, missing=missing) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read-only transaction (a consistent snapshot on SQLite); inside `snapshot()`,
        that snapshot's transaction (begun by its first read)."""
        try:
            pinned: Connection | None = getattr(self._pinned, "conn", None)
            opened: ExitStack | None = getattr(self._pinned, "opened", None)
            if pinned is None and opened is not None:
                begun = opened.enter_context(self._reader.begin())
                pinned = self._pinned.conn = self._begun(begun, _BEGIN_READ)
            if pinned is not None:
                yield pinned
                return
            with self._reader.begin() as conn:
                yield self._begun(conn, _BEGIN_READ)
        except SQLAlchemyError as exc:
            raise map_error(exc, conflict="conflict", missing="not found") from None

    @contextmanager
    def read_one(self) -> Iterator[Connection]:
        """For a read of ONE statement, which sees one snapshot by itself: on PostgreSQL in
        autocommit (the statement alone: one round trip, no BEGIN and no COMMIT); elsewhere,
        or inside `snapshot()`, `read()`. Never for two statements that must agree."""
        if self._one_statement is None or getattr(self._pinned, "opened", None) is not None:
            with self.read() as conn:
                yield conn
            return
        with _autocommit(self._one_statement) as conn:
            yield conn

    @contextmanager
    def write_one(self) -> Iterator[Connection]:
        """For a write of ONE statement, atomic by itself: on PostgreSQL in autocommit (the
        statement is its own transaction, committed before its answer comes back: one round
        trip, no BEGIN and no COMMIT); elsewhere `write()`. Statements made in it commit
        one by one: never for two that must commit together."""
        if self._one_statement is None:
            with self.write() as conn:
                yield conn
            return
        with _autocommit(self._one_statement) as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every `read()` of this thread inside it shares one read transaction: a request's
        several lookups (its sender's rights, routes, backlog) pay for one BEGIN and COMMIT,
        and see one consistent state. The transaction begins with the first read (a snapshot
        that reads nothing costs nothing). Writes are not affected (they have their own
        transaction, and are best made after the snapshot ends). Nested: the outer one."""
        if getattr(self._pinned, "opened", None) is not None:
            yield
            return
        try:
            with ExitStack() as opened:
                self._pinned.opened = opened
                try:
                    yield
                finally:
                    self._pinned.opened = self._pinned.conn = None
        except SQLAlchemyError as exc:
            raise map_error(exc, conflict="conflict", missing="not found") from None

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._queue is not None:
            self._queue.close()


@contextmanager
def _autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection of PostgreSQL's autocommit engine (`read_one`, `write_one`), its errors
    mapped as every store call's."""
    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise map_error(exc, conflict="conflict", missing="not found") from None
