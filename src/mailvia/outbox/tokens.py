"""API tokens: made for a user (shown once; the store keeps only a SHA-256), checked on every
API request and SMTP login, listed and revoked by their own user.

Side effects: rows added and marked revoked.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Protocol

from mailvia.domain.clock import Instant
from mailvia.domain.errors import NotFound, Unauthenticated
from mailvia.domain.ids import make_id
from mailvia.domain.tenancy import User
from mailvia.outbox.records import TokenView

TOKEN_PREFIX = "mv_"


class ApiTokenStore(Protocol):
    """What API tokens need from the store; each method is one transaction."""

    def find_user(self, email: str) -> User | None: ...
    def add_token(
        self, token_id: str, user_id: str, token_hash: str, name: str, now: Instant
    ) -> None: ...
    def user_for_token(self, token_hash: str) -> User | None: ...
    def list_tokens(self, user_id: str) -> list[TokenView]: ...

    def revoke_token(self, token_id: str, now: Instant) -> None:
        """Mark the token revoked (raises NotFound when it is unknown or already revoked)."""
        ...


def hash_token(token: str) -> str:
    """Tokens carry 256 bits of randomness, so a plain SHA-256 is the right hash."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokens:
    """Make, check, list and revoke API tokens."""

    def __init__(self, store: ApiTokenStore) -> None:
        self._store = store

    def create(self, email: str, name: str, now: Instant) -> str:
        """A new token for the user with this login email (raises NotFound); returned once."""
        user = self._store.find_user(email)
        if user is None:
            raise NotFound(f"no user {email}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = make_id("tok", now, os.urandom(10))
        self._store.add_token(token_id, user.id, hash_token(token), name, now)
        return token

    def authenticate(self, token: str) -> User:
        """The token's user; raises Unauthenticated for an unknown or revoked token."""
        user = self._store.user_for_token(hash_token(token)) if token else None
        if user is None:
            raise Unauthenticated("unknown or revoked API token")
        return user

    def of(self, actor: User) -> list[TokenView]:
        """The actor's own tokens (never the token, nor its hash)."""
        return self._store.list_tokens(actor.id)

    def revoke(self, actor: User, token_id: str, now: Instant) -> None:
        """Revoke one of the actor's own tokens. Raises NotFound for anyone else's token, or
        one already revoked."""
        if not any(t.id == token_id for t in self._store.list_tokens(actor.id)):
            raise NotFound("No such token.")
        try:
            self._store.revoke_token(token_id, now)
        except NotFound:
            raise NotFound("That token is already revoked.") from None
