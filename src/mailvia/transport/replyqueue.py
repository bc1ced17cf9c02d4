"""aiosmtplib's client with a reply reader that keeps every reply: the ground for PIPELINING.

aiosmtplib's `SMTPProtocol` parses one reply per `data_received` and drops data that arrives
while no read is pending, so the replies to commands written together (RFC 2920) would be
lost. `ReplyQueue` keeps, in order, every complete reply the client waits for: `expect(n)`
before writing n commands in one write, then `read_response` n times. A single command works
as before (aiosmtplib marks one reply expected before each write); data nobody waits for is
still dropped, as aiosmtplib drops it, so a stray reply is never paired with a later command.
A disconnect is queued after the replies that came before it, so they are still read.
Each read waits up to its own timeout, but the reads' deadlines share one timer per
connection (`_arrived`), moved only when a read's deadline comes before it: an
`asyncio.timeout` per read cost a timer and a cancel scope per reply.

`Client` is aiosmtplib's `SMTP` over a connected socket, with a `ReplyQueue` as its protocol;
connect, TLS, STARTTLS, EHLO and AUTH stay aiosmtplib's. Written against aiosmtplib 5.1 (its
protocol's buffer, reply parser and `_response_pending` flag; tests/unit/test_replyqueue.py
checks them).

Side effects: network I/O on the socket it is given.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiosmtplib import (
    SMTP,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol


class ReplyQueue(SMTPProtocol):
    """An SMTP client protocol that queues every reply it was told to expect."""

    _wanted = 0  # replies expected and not yet received (a class default: see the setter)

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._replies: deque[SMTPResponse | Exception] = deque()
        self._arrival: asyncio.Future[None] | None = None
        self._deadline: float | None = None  # the pending read's, on the loop's clock
        self._expired = False  # the pending read's deadline has passed
        self._timer: asyncio.TimerHandle | None = None
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    # aiosmtplib sets this before each command it writes (and at connect, for the greeting);
    # here it means "at least one more reply is wanted".
    @property  # type: ignore[override]
    def _response_pending(self) -> bool:
        return self._wanted > 0

    @_response_pending.setter
    def _response_pending(self, pending: bool) -> None:
        if pending and self._wanted == 0:
            self._wanted = 1

    def expect(self, count: int) -> None:
        """Before writing `count` commands in one write: keep that many replies."""
        self._wanted += count

    def data_received(self, data: bytes) -> None:
        if self._wanted == 0 or self.transport is None:
            return  # nobody waits for it
        self._buffer.extend(data)
        try:
            self._take_replies()
        except SMTPResponseException as error:  # malformed or too long: out of step
            del self._buffer[:]
            self._wanted = 0
            self._replies.append(error)
        if self._replies:
            self._wake()

    def _take_replies(self) -> None:
        while self._wanted:
            response = self._read_response_from_buffer()
            if response is None:
                break
            self._wanted -= 1
            self._replies.append(response)
        if not self._wanted:
            del self._buffer[:]  # what follows the last reply wanted: nobody waits for it
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            raise SMTPResponseException(SMTPStatus.invalid_response, "Response too long")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:  # it would keep this protocol until it fired
            self._timer.cancel()
            self._timer = None
        if self._wanted:
            self._replies.append(self._ending(exc))
            self._wanted = 0
        self._wake()
        super().connection_lost(exc)

    def _ending(self, exc: Exception | None) -> SMTPResponse | Exception:
        if self._quit_sent:
            return SMTPResponse(SMTPStatus.closing, "")
        lost = SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        return lost

    def _wake(self) -> None:
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        """The next reply, in the order the commands were written; waits up to `timeout`.
        Raises SMTPServerDisconnected, SMTPReadTimeoutError, or SMTPResponseException for a
        malformed reply."""
        if not self._replies:
            await self._arrived(timeout)
        reply = self._replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _arrived(self, timeout: float | None) -> None:
        """Wait until a reply (or the connection's end) is queued, for up to `timeout`.

        Each read has its own deadline, as with an `asyncio.timeout` around the wait, but the
        deadlines share one timer, moved only when it would fire after the read's deadline:
        a read usually ends long before its timeout, and the next one's deadline is later, so
        the timer scheduled for an earlier read serves it (on firing early, it is scheduled
        again for the read then pending). An `asyncio.timeout` per read was 5.5% of a
        worker's event loop (docs/benchmarks.md, branch `worker`, session 11). The timer is
        set only once the read is about to wait: a read after the connection's end sets none
        (`connection_lost` cancelled the last; a new one would keep this protocol until it
        fired)."""
        deadline: float | None = None
        try:
            while not self._replies:  # woken by part of a reply only: wait on
                if self._expired:
                    raise SMTPReadTimeoutError("Timed out waiting for server response")
                if self.transport is None:
                    raise SMTPServerDisconnected("Connection lost")
                if timeout is not None and deadline is None:  # this read's first wait
                    self._deadline = deadline = self._loop.time() + timeout
                    timer = self._timer
                    if timer is None or timer.when() > deadline:
                        if timer is not None:
                            timer.cancel()
                        self._timer = self._loop.call_at(deadline, self._on_timer)
                self._response_pending = True  # also a read without a write: the greeting
                self._arrival = self._loop.create_future()
                await self._arrival
        finally:
            self._arrival = None
            self._deadline = None
            self._expired = False

    def _on_timer(self) -> None:
        """The shared timer fired: the pending read times out if its deadline is the timer's
        (or earlier); a read with a later deadline gets the timer again for it."""
        fired, self._timer = self._timer, None
        deadline = self._deadline
        if deadline is None or fired is None:
            return  # no read pending: the next read schedules its own
        if deadline <= fired.when():
            self._expired = True
            self._wake()
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)


class Client(SMTP):
    """aiosmtplib's SMTP over the socket it is given (`sock=`), reading with a ReplyQueue."""

    async def _create_connection(self, timeout: float | None) -> SMTPResponse:
        """As aiosmtplib's, for a given socket only, with ReplyQueue as the protocol."""
        if self.loop is None or self.sock is None:
            raise RuntimeError("Client connects over a given socket in a running loop")
        protocol = ReplyQueue(loop=self.loop, connection_lost_callback=self._on_connection_lost)
        context = await self._get_tls_context() if self.use_tls else None
        connect = self.loop.create_connection(
            lambda: protocol,
            sock=self.sock,
            ssl=context,
            server_hostname=self.hostname if context is not None else None,
            ssl_handshake_timeout=timeout if context is not None else None,
        )
        where = f"{self.hostname} on port {self.port}"
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the connection when the cancel
            # of the caller comes as it is made, and the send would go on as if not cancelled.
            async with asyncio.timeout(timeout):
                transport, _ = await connect
        except TimeoutError as exc:
            raise SMTPConnectTimeoutError(f"Timed out connecting to {where}") from exc
        except OSError as exc:
            raise SMTPConnectError(f"Error connecting to {where}: {exc}") from exc
        self.protocol, self.transport = protocol, transport
        return await _greeting(protocol, timeout, where)


async def _greeting(protocol: ReplyQueue, timeout: float | None, where: str) -> SMTPResponse:
    try:
        response = await protocol.read_response(timeout=timeout)
    except SMTPServerDisconnected as exc:
        raise SMTPConnectError(f"Error connecting to {where}: {exc}") from exc
    except SMTPTimeoutError as exc:
        raise SMTPConnectTimeoutError("Timed out waiting for server ready message") from exc
    if response.code != SMTPStatus.ready:
        raise SMTPConnectResponseError(response.code, response.message)
    return response
