"""Connections per channel, reused across messages, and `SmtpTransport`, the Transport port.

Each channel has one pool, keyed by a fingerprint of everything a connection depends on
(kind, host, port, security, auth, username, password, CA, connection limit, timeouts), taken
with a per-process secret so no plain hash of a password is kept. When the fingerprint
changes (new password, new host...) the old pool is retired: its idle connections are closed
at once and its busy ones when their transaction ends, so new credentials never ride an old
session. A pool holds at most `channel.max_connections` connections open; more concurrent
sends wait for a free one. Between transactions a reused connection gets RSET; one that
errored or got a 421 is dropped; one idle for `idle_timeout` seconds is closed with QUIT.
When the channel's concurrency is cut (a 421, outbox/concurrency.py), `narrow` closes only
the connections above the new width: idle ones at once, busy ones as their transaction ends
(or when cancelled before it, in RSET or while opening).

Side effects: opens and closes SMTP connections; schedules a timer per pool on the running
loop.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import secrets
import socket

from mailvia.domain.channel import Channel
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope
from mailvia.domain.replies import Reply
from mailvia.outbox.ports import Credentials
from mailvia.transport.guard import OutboundGuard
from mailvia.transport.session import Session, SessionFailed, open_session

IDLE_TIMEOUT = 60.0
_TIMER_SLACK = 0.005  # a timer may fire this much early (the loop's clock resolution)


class _ChannelPool:
    """The connections of one channel under one fingerprint."""

    def __init__(
        self, fingerprint: str, max_connections: int, key: tuple[Channel, Credentials | None]
    ) -> None:
        self.fingerprint = fingerprint
        # The (frozen) channel and credentials the fingerprint was taken of: while a run
        # sends with these very objects, the fingerprint needs no new HMAC.
        self.key = key
        self.slots = asyncio.Semaphore(max_connections)
        self.idle: list[tuple[Session, float]] = []  # and since when (the loop's time)
        # One timer per pool closes the connections idle too long (a timer per connection
        # given back would be made and cancelled for every message).
        self.sweep: asyncio.TimerHandle | None = None
        self.retired = False
        self.busy = 0  # connections being opened or in a transaction
        self.excess = 0  # busy connections to close when their transaction ends (`narrow`)


class SmtpTransport:
    """Hands messages to channels' SMTP servers over pooled connections (the Transport port).

    `guard` vets every address before a connection is opened (channels of kind `pool`, the
    operator's relay, skip it); `helo_name` is the EHLO name (default: this host's FQDN).
    """

    def __init__(
        self,
        *,
        guard: OutboundGuard,
        helo_name: str | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._guard = guard
        self._helo_name = helo_name
        self._idle_timeout = idle_timeout
        self._pools: dict[str, _ChannelPool] = {}
        self._salt = secrets.token_bytes(32)
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def send(
        self,
        channel: Channel,
        credentials: Credentials | None,
        envelope: Envelope,
        content: bytes,
    ) -> TransactionResult:
        """Deliver one message over a pooled connection. Never raises for a delivery failure:
        the result says where the attempt ended and with which replies."""
        pool = self._pool(channel, credentials)
        async with pool.slots:
            pool.busy += 1
            try:
                result = await self._transact(pool, channel, credentials, envelope, content)
            finally:
                pool.busy -= 1
        return scrubbed(result, credentials)

    async def _transact(
        self,
        pool: _ChannelPool,
        channel: Channel,
        credentials: Credentials | None,
        envelope: Envelope,
        content: bytes,
    ) -> TransactionResult:
        try:
            session = await self._lease(pool) or await open_session(
                channel,
                credentials,
                guard=self._guard,
                helo_name=await self._helo(),
                fingerprint=pool.fingerprint,
            )
        except SessionFailed as failed:
            self._left(pool)
            return failed.result
        except BaseException:
            self._left(pool)  # cancelled mid-RSET or while opening: that connection is closed
            raise
        try:
            result = await session.transact(envelope, content)
        except BaseException:
            session.close()  # cancelled or a bug mid-transaction: the state is unknown
            self._left(pool)
            raise
        self._give_back(pool, session)
        return result

    def narrow(self, channel_id: str, width: int) -> None:
        """Keep no more than `width` of the channel's connections open: the idle ones above
        it (least recently used first) are closed now, with QUIT, and busy ones above it as
        their transaction ends; the others stay for reuse. For a cut in the channel's
        concurrency (a 421): the server sees fewer sessions, and no transaction is cut."""
        pool = self._pools.get(channel_id)
        if pool is None:
            return
        over = pool.busy + len(pool.idle) - max(width, 0)
        closing = min(max(over, 0), len(pool.idle))
        for session, _ in pool.idle[:closing]:
            self._quit_later(session)
        del pool.idle[:closing]
        pool.excess = max(over - closing, 0)

    async def forget(self, channel_id: str) -> None:
        """Close the channel's pooled connections (its settings or credentials changed)."""
        pool = self._pools.pop(channel_id, None)
        if pool is not None:
            await _wait(self._retire(pool))

    async def aclose(self) -> None:
        """Close every pooled connection; busy ones close when their transaction ends."""
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        for pool in self._pools.values():
            tasks += self._retire(pool)
        self._pools.clear()
        await _wait([*tasks, *self._closing])

    def _fingerprint(self, channel: Channel, credentials: Credentials | None) -> str:
        parts = (
            channel.kind,
            channel.host,
            str(channel.port),
            channel.security,
            channel.auth,
            channel.username or "",
            credentials.username if credentials else "",
            credentials.password if credentials else "",
            channel.ca_pem or "",
            str(channel.max_connections),
            repr(channel.timeouts),
        )
        data = "\0".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._salt, data, hashlib.sha256).hexdigest()

    def _pool(self, channel: Channel, credentials: Credentials | None) -> _ChannelPool:
        pool = self._pools.get(channel.id)
        if pool is not None and pool.key[0] is channel and pool.key[1] is credentials:
            return pool
        fingerprint = self._fingerprint(channel, credentials)
        if pool is None or pool.fingerprint != fingerprint:
            if pool is not None:
                self._retire(pool)
            pool = _ChannelPool(fingerprint, channel.max_connections, (channel, credentials))
            self._pools[channel.id] = pool
        else:
            pool.key = (channel, credentials)
        return pool

    async def _lease(self, pool: _ChannelPool) -> Session | None:
        """The most recently used idle connection that still works, if any: one whose last
        transaction just ended cleanly is reused as it is; an older one must answer RSET."""
        while pool.idle:
            session, _ = pool.idle.pop()
            try:
                if session.usable and (session.fresh() or await session.reset()):
                    return session
            except BaseException:
                session.close()  # cancelled mid-RSET
                raise
            session.close()
        return None

    def _left(self, pool: _ChannelPool) -> None:
        """A busy connection is gone (closed, or never opened): one fewer to close."""
        pool.excess = max(pool.excess - 1, 0)

    def _give_back(self, pool: _ChannelPool, session: Session) -> None:
        if not session.usable:
            session.close()
            self._left(pool)
        elif pool.retired or self._closed:
            self._quit_later(session)
        elif pool.excess:
            pool.excess -= 1
            self._quit_later(session)  # above the channel's narrowed width
        else:
            loop = asyncio.get_running_loop()
            pool.idle.append((session, loop.time()))
            if pool.sweep is None:
                pool.sweep = loop.call_later(self._idle_timeout, self._sweep, pool)

    def _sweep(self, pool: _ChannelPool) -> None:
        """Close the pool's connections idle for `idle_timeout`; come back when the next
        one will be."""
        loop = asyncio.get_running_loop()
        pool.sweep = None
        due = loop.time() - self._idle_timeout + _TIMER_SLACK
        for session, _ in [(s, at) for s, at in pool.idle if at <= due]:
            self._quit_later(session)
        pool.idle = [(s, at) for s, at in pool.idle if at > due]
        if pool.idle:
            oldest = min(at for _, at in pool.idle)
            pool.sweep = loop.call_at(oldest + self._idle_timeout, self._sweep, pool)

    def _retire(self, pool: _ChannelPool) -> list[asyncio.Task[None]]:
        pool.retired = True
        if pool.sweep is not None:
            pool.sweep.cancel()
            pool.sweep = None
        tasks = [self._quit_later(session) for session, _ in pool.idle]
        pool.idle.clear()
        return tasks

    def _quit_later(self, session: Session) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(session.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def _helo(self) -> str:
        if self._helo_name is None:
            name = await asyncio.to_thread(socket.getfqdn)
            usable = name.isascii() and name.strip() and not any(c.isspace() for c in name)
            self._helo_name = name if usable else "localhost"
        return self._helo_name


async def _wait(tasks: list[asyncio.Task[None]]) -> None:
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def _secret_forms(credentials: Credentials) -> list[str]:
    """The password and the AUTH encodings that carry it (PLAIN, LOGIN, XOAUTH2)."""
    user, password = credentials.username, credentials.password
    encodings = (
        f"\0{user}\0{password}",
        password,
        f"user={user}\x01auth=Bearer {password}\x01\x01",
    )
    forms = [password]
    forms += [base64.b64encode(e.encode("utf-8")).decode("ascii") for e in encodings]
    return [form for form in forms if len(form) >= 4]


def _scrub(reply: Reply, forms: list[str]) -> Reply:
    text = reply.text
    for form in forms:
        text = text.replace(form, "[secret]")
    return reply if text == reply.text else dataclasses.replace(reply, text=text)


def scrubbed(result: TransactionResult, credentials: Credentials | None) -> TransactionResult:
    """`result` with the password (plain or AUTH-encoded) removed from every reply's text."""
    if credentials is None or not credentials.password:
        return result
    forms = _secret_forms(credentials)
    return dataclasses.replace(
        result,
        reply=_scrub(result.reply, forms) if result.reply is not None else None,
        rcpt_replies={a: _scrub(r, forms) for a, r in result.rcpt_replies.items()},
    )
