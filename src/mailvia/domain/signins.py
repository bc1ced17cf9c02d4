"""Failed sign-ins: when a client may try to sign in again, for SMTP AUTH and the sign-in page.

Failures are counted per client address (an IPv6 client by its /64) and per login at that
client, never per login alone: whoever knows an address must not be able to lock its owner
out (API tokens carry 256 bits, so a per-login lockout would protect nothing and hand out a
denial of service). For human passwords (the pages) a login guessed from many clients also
slows down, but only the clients that have already failed for it: a client that has not
failed is never refused the right credential.

After `free` failures of a key within `window` seconds, the next try waits until the last
failure plus `first_delay` seconds, doubling with each further failure up to `max_delay`;
`lockout` failures lock the key out for `lockout_seconds`. A try counts as a failure from
`begin` until it is settled, so tries checked at once cannot overshoot. Pure: the time is a
parameter; callers serialize calls (one event loop).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

_MAX_KEYS = 20_000  # tracked keys before a sweep
_MAX_LOGIN = 320  # longer logins are counted under their first characters


@dataclass(frozen=True)
class Limit:
    """`free` failures before tries are slowed; `lockout` failures lock out (None: never)."""

    free: int
    lockout: int | None = None


@dataclass(frozen=True)
class SignInPolicy:
    """How failures of each key slow and lock out tries. `login` (None: not counted) applies
    only to clients that have failed for that login at least once."""

    client: Limit
    pair: Limit
    login: Limit | None = None
    first_delay: float = 1.0
    max_delay: float = 8.0
    window: float = 15 * 60.0
    lockout_seconds: float = 15 * 60.0


# SMTP AUTH (API tokens): a client slows after 3 failures and is locked out at 10.
SUBMISSION = SignInPolicy(client=Limit(3, 10), pair=Limit(3, 10))
# The sign-in page (human passwords): no lockout, waits doubling up to 15 minutes; 20 per
# client address (people behind one NAT), 5 per account at one client, and 5 per account
# from anywhere for clients that already failed for it.
PAGES = SignInPolicy(client=Limit(20), pair=Limit(5), login=Limit(5), max_delay=15 * 60.0)


@dataclass(frozen=True)
class Verdict:
    """Before checking a try: refuse it (`locked`), or let it wait `wait` seconds first."""

    locked: bool
    wait: float


@dataclass(frozen=True)
class Attempt:
    """A try being checked; it counts as a failure until it is settled."""

    keys: tuple[str, ...]
    at: float


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


def client_key(host: str) -> str:
    """The client's key: its IPv4 address, or the /64 of its IPv6 address."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailedSignIns:
    """The failures of one process's sign-ins. `verdict` before checking a try, `begin` when
    checking it, then `failed` or `forget`."""

    def __init__(self, policy: SignInPolicy) -> None:
        self.policy = policy
        self._records: dict[str, _Record] = {}

    def verdict(self, login: str, client: str, now: float) -> Verdict:
        """Whether `login` may be tried from `client` now, or after how long."""
        wait = 0.0
        for key, limit in self._limits(login, client, now):
            record = self._fresh(key, now)
            count = len(record.failures)
            if record.locked_until > now or (limit.lockout and count >= limit.lockout):
                return Verdict(True, 0.0)
            if count >= limit.free:
                steps = min(count - limit.free, 30)
                delay = min(self.policy.first_delay * 2**steps, self.policy.max_delay)
                wait = max(wait, record.failures[-1] + delay - now)
        return Verdict(False, wait)

    def begin(self, login: str, client: str, now: float) -> Attempt:
        """Count a try as failed until `forget` says it was not."""
        keys = self._keys(login, client)
        for key in keys:
            self._record(key, now).failures.append(now)
        return Attempt(keys, now)

    def failed(self, attempt: Attempt, now: float) -> bool:
        """The try failed (its failure now dates from `now`); True when this locks the client
        (or the login at that client) out."""
        locked = False
        for key, limit in zip(attempt.keys, self._key_limits(), strict=True):
            record = self._record(key, now)
            _discard(record, attempt.at)
            record.failures.append(now)
            fresh = self._fresh(key, now)
            if limit.lockout and len(fresh.failures) >= limit.lockout:
                record.locked_until = now + self.policy.lockout_seconds
                record.failures.clear()
                locked = True
        return locked

    def forget(self, attempt: Attempt, *, succeeded: bool) -> None:
        """The try did not fail (or could not be checked): uncount it. A success also clears
        the login's failures at that client (the client's and the login's own stay)."""
        if succeeded:
            self._records.pop(attempt.keys[1], None)  # the login at this client
        for key in attempt.keys:
            _discard(self._records.get(key), attempt.at)

    def _key_limits(self) -> list[Limit]:
        policy = self.policy
        return [policy.client, policy.pair, *([policy.login] if policy.login else [])]

    def _keys(self, login: str, client: str) -> tuple[str, ...]:
        login = login.strip().lower()[:_MAX_LOGIN]
        peer = client_key(client)
        keys = ("client:" + peer, f"pair:{login}|{peer}")
        return (*keys, "login:" + login) if self.policy.login else keys

    def _limits(self, login: str, client: str, now: float) -> list[tuple[str, Limit]]:
        """The keys that judge this try: the login's own only once this client failed for it."""
        keys = self._keys(login, client)
        pairs = list(zip(keys, self._key_limits(), strict=True))
        if len(pairs) == 3 and not self._fresh(keys[1], now).failures:
            pairs.pop()
        return pairs

    def _record(self, key: str, now: float) -> _Record:
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= _MAX_KEYS:
                self._sweep(now)
            record = self._records[key] = _Record()
        return record

    def _fresh(self, key: str, now: float) -> _Record:
        """The key's record without failures older than the window (a blank one if none)."""
        record = self._records.get(key) or _Record()
        while record.failures and record.failures[0] <= now - self.policy.window:
            record.failures.popleft()
        return record

    def _sweep(self, now: float) -> None:
        """Forget stale keys; when flooded with fresh ones, the half least recently failed."""
        for key in list(self._records):
            record = self._fresh(key, now)
            if not record.failures and record.locked_until <= now:
                del self._records[key]
        if len(self._records) >= _MAX_KEYS:
            by_age = sorted(self._records, key=lambda k: _last(self._records[k]))
            for key in by_age[: len(by_age) // 2]:
                del self._records[key]


def _last(record: _Record) -> float:
    return max(record.failures[-1] if record.failures else 0.0, record.locked_until)


def _discard(record: _Record | None, at: float) -> None:
    if record is not None and at in record.failures:
        record.failures.remove(at)
