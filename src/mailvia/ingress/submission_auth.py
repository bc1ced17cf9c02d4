"""The login throttle of SMTP submission: failed logins are slowed, then locked out, counted
per login address and per client address (an IPv6 client by its /64).

In memory, per process; time comes from an injectable clock. No I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

_MAX_KEYS = 10_000  # tracked keys before a sweep of the stale ones
_MAX_LOGIN = 320  # longer logins are counted under their first characters


@dataclass(frozen=True)
class ThrottlePolicy:
    """After `free_failures` failures within `window` seconds every further AUTH reply waits
    `first_delay` seconds, doubling up to `max_delay`; `lockout_failures` failures within the
    window lock the login address or the client out for `lockout` seconds."""

    free_failures: int = 3
    first_delay: float = 1.0
    max_delay: float = 8.0
    lockout_failures: int = 10
    window: float = 15 * 60.0
    lockout: float = 15 * 60.0


@dataclass(frozen=True)
class Verdict:
    """What to do with a login before checking it: refuse it (`locked`), or wait `delay`."""

    locked: bool
    delay: float


@dataclass(frozen=True)
class Attempt:
    """A login being checked; it counts as a failure until it is settled."""

    keys: tuple[str, str]
    at: float


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


def peer_key(host: str) -> str:
    """The client's throttle key: its IPv4 address, or the /64 of its IPv6 address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Counts failed logins; `verdict` before checking one, `begin` when checking it, then
    `failed` or `forget`. Not thread-safe: use it from the event loop only."""

    def __init__(
        self, policy: ThrottlePolicy | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def verdict(self, login: str, peer: str) -> Verdict:
        """Whether a login for `login` from `peer` may be checked now, and after what delay."""
        now = self._clock()
        records = [self._fresh(key, now) for key in _keys(login, peer)]
        failures = max(len(r.failures) for r in records)
        if any(r.locked_until > now for r in records):
            return Verdict(True, 0.0)
        if failures >= self.policy.lockout_failures:  # logins still being checked count too
            return Verdict(True, 0.0)
        if failures < self.policy.free_failures:
            return Verdict(False, 0.0)
        steps = failures - self.policy.free_failures
        delay = min(self.policy.first_delay * 2 ** min(steps, 30), self.policy.max_delay)
        return Verdict(False, delay)

    def begin(self, login: str, peer: str) -> Attempt:
        """Count a login as failed until `forget` says it was not."""
        now = self._clock()
        keys = _keys(login, peer)
        for key in keys:
            self._record(key).failures.append(now)
        return Attempt(keys, now)

    def failed(self, attempt: Attempt) -> bool:
        """The login failed; returns True when this locks the address or the client out."""
        now = self._clock()
        locked = False
        for key in attempt.keys:
            record = self._fresh(key, now)
            if len(record.failures) >= self.policy.lockout_failures:
                record.locked_until = now + self.policy.lockout
                record.failures.clear()
                locked = True
        return locked

    def forget(self, attempt: Attempt, *, succeeded: bool) -> None:
        """The login did not fail (or could not be checked): uncount it. A success also clears
        the login address's earlier failures (the client's stay until they age out)."""
        login_key, peer_key_ = attempt.keys
        if succeeded:
            self._records.pop(login_key, None)
        else:
            _discard(self._records.get(login_key), attempt.at)
        _discard(self._records.get(peer_key_), attempt.at)

    def _record(self, key: str) -> _Record:
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= _MAX_KEYS:
                self._sweep(self._clock())
            record = self._records[key] = _Record()
        return record

    def _fresh(self, key: str, now: float) -> _Record:
        """The key's record without failures older than the window (a blank one if none)."""
        record = self._records.get(key) or _Record()
        while record.failures and record.failures[0] <= now - self.policy.window:
            record.failures.popleft()
        return record

    def _sweep(self, now: float) -> None:
        for key in list(self._records):
            record = self._fresh(key, now)
            if not record.failures and record.locked_until <= now:
                del self._records[key]


class OneAtATime:
    """Logins for one address, and logins from one client, are checked one after another, so
    each failure is counted before the next login is judged: guessing over many parallel
    connections gains nothing, and many good logins at once (a mail app's connections, a
    system's workers) only wait their turn instead of looking like an attack."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}

    @asynccontextmanager
    async def turn(self, login: str, peer: str) -> AsyncIterator[None]:
        keys = _keys(login, peer)  # always the login's first, then the client's: no deadlock
        for key in keys:
            self._holders[key] = self._holders.get(key, 0) + 1
            self._locks.setdefault(key, asyncio.Lock())
        try:
            async with self._locks[keys[0]], self._locks[keys[1]]:
                yield
        finally:
            for key in keys:
                self._holders[key] -= 1
                if not self._holders[key]:
                    del self._holders[key], self._locks[key]


def _keys(login: str, peer: str) -> tuple[str, str]:
    return "login:" + login.strip().lower()[:_MAX_LOGIN], "peer:" + peer_key(peer)


def _discard(record: _Record | None, at: float) -> None:
    if record is not None and at in record.failures:
        record.failures.remove(at)
