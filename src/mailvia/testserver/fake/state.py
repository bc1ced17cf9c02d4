"""What every request of the fake providers shares: options, tokens, keys, faults, the log.

`FakeState` is built once per server; its parts are thread-safe, so tests may call them from
another thread while the server runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailvia.testserver.capture import Capture
from mailvia.testserver.fake import providers
from mailvia.testserver.fake.jwt import SigningKey
from mailvia.testserver.fake.tokens import Consent, TokenStore
from mailvia.testserver.faults import (
    Action,
    FaultBook,
    FaultsFile,
    parse_faults,
    parse_faults_text,
)

GMAIL_MAX_BYTES = 36_700_160  # "Maximum file size: 35MB" (Gmail API messages.send, upload)
GMAIL_JSON_MAX_BYTES = 5 * 1024 * 1024  # a plain JSON request; Google documents no number
GRAPH_MAX_BYTES = 4 * 1024 * 1024  # Graph's request size; see research/providers_2026-12.md


@dataclass(frozen=True)
class ClientApp:
    """An OAuth client the fake knows (`--client PROVIDER=ID:SECRET`)."""

    provider: str
    client_id: str
    client_secret: str


@dataclass(frozen=True, kw_only=True)
class FakeOptions:
    """How the fake providers behave. With no `clients` for a provider, any client id (and any
    or no secret) is accepted. `rotate_refresh_tokens` overrides per provider the default
    (Microsoft rotates, Google does not)."""

    account: str | None = None
    clients: tuple[ClientApp, ...] = ()
    token_lifetime: int = 3600
    rotate_refresh_tokens: dict[str, bool] = field(default_factory=dict)
    retire_rotated_refresh_tokens: bool = False
    gmail_max_bytes: int = GMAIL_MAX_BYTES
    gmail_json_max_bytes: int = GMAIL_JSON_MAX_BYTES
    graph_max_bytes: int = GRAPH_MAX_BYTES
    faults: Sequence[str] = ()
    faults_file: Path | None = None


class RequestLog:
    """Every request to a provider path, in arrival order (the `/_fake/` paths are not kept)."""

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        """Keep `entry`; the request goes on filling it in (status, account, consent...)."""
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        """Copies of the entries so far."""
        with self._lock:
            return [dict(entry) for entry in self._entries]


class FakeState:
    """The shared parts. `origin` is set once the server listens."""

    def __init__(
        self, options: FakeOptions, capture: Capture, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options = options
        self.capture = capture
        self.clock = clock
        self.origin = ""
        self.keys = {"google": SigningKey(), "microsoft": SigningKey()}
        rotate = {"google": False, "microsoft": True, **options.rotate_refresh_tokens}
        self.store = TokenStore(
            clock=clock,
            token_lifetime=options.token_lifetime,
            rotate=rotate,
            retire_rotated=options.retire_rotated_refresh_tokens,
            minters={"microsoft": self._microsoft_access},
        )
        self.book = FaultBook(parse_faults(options.faults))
        self.faults_file = FaultsFile(options.faults_file) if options.faults_file else None
        self.log = RequestLog()
        # Connections held by `stall` faults, closed at stop so that shutdown never waits.
        self.held: set[asyncio.BaseTransport] = set()

    @staticmethod
    def check_faults(options: FakeOptions) -> None:
        """Raise ValueError for a bad fault spec or a faults file that does not parse."""
        parse_faults(options.faults)
        if options.faults_file is not None and options.faults_file.exists():
            parse_faults_text(options.faults_file.read_text(encoding="utf-8"))

    def _microsoft_access(self, consent: Consent, expires_at: float) -> str:
        claims = providers.microsoft_access_claims(consent, now=self.clock(), expires_at=expires_at)
        return self.keys["microsoft"].sign(claims)

    def take_fault(self, stage: str) -> Action | None:
        """The fault for this request at `stage`: the faults file (re-read now) first."""
        if self.faults_file is not None:
            action = self.faults_file.book().take(stage)
            if action is not None:
                return action
        return self.book.take(stage)

    def set_faults(self, specs: Sequence[str]) -> None:
        """Replace the faults given at start (budgets start afresh). Raises ValueError."""
        self.book = FaultBook(parse_faults(specs))

    def clients_of(self, provider: str) -> dict[str, str]:
        """Known client ids of `provider` with their secrets (empty: accept any)."""
        return {
            c.client_id: c.client_secret for c in self.options.clients if c.provider == provider
        }
