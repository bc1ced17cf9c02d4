"""Sign-in sessions of the setup pages, kept on the server so that they can be ended.

A session is a row named by a random secret (the browser's signed cookie carries the
secret; the store keeps only its SHA-256). Every request checks the row: signing out, a
password change and a removed user end sessions at once, in every process sharing the
store. A session also ends after `idle` seconds without a request and `max_age` seconds
after sign-in. Side effects: rows added, touched (at most once a `touch_every`) and deleted.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol

from mailvia.domain.clock import Instant
from mailvia.domain.tenancy import User


@dataclass(frozen=True)
class StoredSession:
    """A session's row: whose it is, when it began and when it was last used."""

    user: User
    started_at: Instant
    seen_at: Instant


class SessionStore(Protocol):
    """What sessions need from the store; each method is one transaction."""

    def add_session(self, key: str, user_id: str, now: Instant) -> None:
        """Insert a session (raises NotFound for an unknown user)."""
        ...

    def find_session(self, key: str) -> StoredSession | None:
        """The session with its user, or None (none, or its user is gone)."""
        ...

    def touch_session(self, key: str, now: Instant) -> None: ...

    def end_session(self, key: str) -> None:
        """Delete the session (nothing when there is none)."""
        ...

    def end_sessions(self, user_id: str) -> int:
        """Delete every session of the user; returns how many."""
        ...

    def end_stale_sessions(self, *, seen_before: Instant, started_before: Instant) -> int:
        """Delete sessions idle since `seen_before` or begun before `started_before`."""
        ...


@dataclass(frozen=True)
class SessionPolicy:
    """Sessions end `idle` seconds after the last request and `max_age` after sign-in."""

    idle: float = 2 * 3600.0
    max_age: float = 12 * 3600.0
    touch_every: float = 60.0  # a request writes the row at most this often


class Sessions:
    """Start, check and end the pages' sessions."""

    def __init__(self, store: SessionStore, *, policy: SessionPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or SessionPolicy()

    def start(self, user: User, now: Instant) -> str:
        """A new session for `user`; returns its secret (for the cookie only). Also deletes
        every session that has run out."""
        self.store.end_stale_sessions(
            seen_before=now - self.policy.idle, started_before=now - self.policy.max_age
        )
        secret = secrets.token_urlsafe(32)
        self.store.add_session(_key(secret), user.id, now)
        return secret

    def check(self, secret: str, now: Instant) -> User | None:
        """The session's user, or None when it was ended, has run out or never existed."""
        key = _key(secret)
        found = self.store.find_session(key)
        if found is None:
            return None
        if found.seen_at <= now - self.policy.idle or found.started_at <= now - self.policy.max_age:
            self.store.end_session(key)
            return None
        if now - found.seen_at >= self.policy.touch_every:
            self.store.touch_session(key, now)
        return found.user

    def end(self, secret: str) -> None:
        """Sign out: the session ends everywhere at once."""
        self.store.end_session(_key(secret))

    def end_all_for_user(self, user_id: str) -> int:
        """End every session of a user (a password change, a removed user)."""
        return self.store.end_sessions(user_id)


def _key(secret: str) -> str:
    """What the store keeps: a session secret carries 256 bits, so a plain SHA-256 will do."""
    return hashlib.sha256(("mailvia session " + secret).encode()).hexdigest()
