"""The pages' sign-in sessions in SQL (the SessionStore port of outbox/accounts.py)."""

from __future__ import annotations

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.outbox.accounts import StoredSession
from mailvia.store.engine import Database
from mailvia.store.tables import users, web_sessions
from mailvia.store.tenancy import user_of


class WebSessionStore:
    """Session methods of the Store. Keys are digests of the cookies' secrets."""

    _db: Database

    def add_session(self, key: str, user_id: str, now: Instant) -> None:
        """Insert a session. Raises NotFound for an unknown user, Conflict for a key in use."""
        with self._db.write(conflict="this session exists", missing="no such user") as conn:
            conn.execute(
                web_sessions.insert().values(key=key, user_id=user_id, started_at=now, seen_at=now)
            )

    def find_session(self, key: str) -> StoredSession | None:
        """The session and its user, or None."""
        query = (
            sa.select(users, web_sessions.c.started_at, web_sessions.c.seen_at)
            .join(web_sessions, web_sessions.c.user_id == users.c.id)
            .where(web_sessions.c.key == key)
        )
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else StoredSession(user_of(row), row.started_at, row.seen_at)

    def touch_session(self, key: str, now: Instant) -> None:
        """Mark the session used now (nothing when it is gone)."""
        with self._db.write() as conn:
            conn.execute(web_sessions.update().where(web_sessions.c.key == key).values(seen_at=now))

    def end_session(self, key: str) -> None:
        """Delete the session (nothing when it is gone)."""
        with self._db.write() as conn:
            conn.execute(web_sessions.delete().where(web_sessions.c.key == key))

    def end_sessions(self, user_id: str) -> int:
        """Delete every session of the user; returns how many."""
        with self._db.write() as conn:
            result = conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))
        return int(result.rowcount)

    def end_stale_sessions(self, *, seen_before: Instant, started_before: Instant) -> int:
        """Delete the sessions idle since `seen_before` or begun before `started_before`."""
        stale = sa.or_(
            web_sessions.c.seen_at <= seen_before, web_sessions.c.started_at <= started_before
        )
        with self._db.write() as conn:
            result = conn.execute(web_sessions.delete().where(stale))
        return int(result.rowcount)
