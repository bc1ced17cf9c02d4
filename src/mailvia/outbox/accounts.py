"""Signing in to the setup pages: a password checked against its argon2 hash, the password
policy for a new one (`Accounts`), and sessions kept on the server so that they can be ended
(`Sessions`).

A session is a row named by a random secret (the browser's signed cookie carries the
secret; the store keeps only its SHA-256). Every request checks the row: signing out, a
password change and a removed user end sessions at once, in every process sharing the
store. A session also ends after `idle` seconds without a request and `max_age` seconds
after sign-in. Side effects: rows added, touched (at most once a `touch_every`) and deleted;
a password change stores the new hash, clears the must-change flag and ends every session of
its user. Checking and hashing passwords takes tens of milliseconds (argon2): callers on an
event loop run them in a worker thread.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.domain.tenancy import User

MIN_PASSWORD = 12  # characters of a new password


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


class PasswordStore(Protocol):
    """What signing in and changing a password need from the store."""

    def find_user(self, email: str) -> User | None: ...

    def password_hash(self, user_id: str) -> str | None:
        """The user's argon2 hash (None: none set); raises NotFound for an unknown user."""
        ...

    def set_password(
        self, user_id: str, password_hash: str | None, *, must_change_password: bool
    ) -> None: ...


class Accounts:
    """Sign in with a password, and change it under the password policy (the one place that
    says what a new password must be). `verify_password(hash, password)` and
    `hash_password(password)` come from the composition root (argon2)."""

    def __init__(
        self,
        store: PasswordStore,
        sessions: Sessions,
        *,
        verify_password: Callable[[str, str], bool],
        hash_password: Callable[[str], str],
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._verify = verify_password
        self._hash = hash_password

    @cached_property
    def _dummy_hash(self) -> str:
        """Checked for unknown accounts, so a miss takes as long as a wrong password."""
        return self._hash("mailvia: no such account")

    def prepare(self) -> None:
        """Make the dummy hash now: what signs people in calls this at start, so that even
        its first unknown account takes no longer than a wrong password."""
        _ = self._dummy_hash

    def sign_in(self, email: str, password: str) -> User | None:
        """The user whose login email and password these are, or None."""
        user = self._store.find_user(email) if email else None
        stored = self._store.password_hash(user.id) if user else None
        ok = self._verify(stored or self._dummy_hash, password)
        return user if ok and stored is not None else None

    def change_password(
        self, user: User, *, current: str, new: str, again: str, now: Instant
    ) -> str:
        """Check the current password and the policy (at least MIN_PASSWORD characters, typed
        the same twice, not the current one), store the new one and end every session of the
        user; returns the secret of a new session for the browser that changed it. Raises
        InvalidInput saying what is wrong."""
        try:
            stored = self._store.password_hash(user.id)
        except NotFound:
            stored = None
        if stored is None or not self._verify(stored, current):
            raise InvalidInput("The current password is not right.")
        if len(new) < MIN_PASSWORD:
            raise InvalidInput(f"The new password needs at least {MIN_PASSWORD} characters.")
        if new != again:
            raise InvalidInput("The two new passwords differ.")
        if new == current:
            raise InvalidInput("The new password must differ from the current one.")
        self._store.set_password(user.id, self._hash(new), must_change_password=False)
        self._sessions.end_all_for_user(user.id)
        return self._sessions.start(user, now)
