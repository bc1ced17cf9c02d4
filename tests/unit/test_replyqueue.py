"""ReplyQueue: every reply wanted is kept in order, whatever the segments; the rest dropped.

Fed by hand through asyncio's protocol calls (no socket), so it also catches an aiosmtplib
upgrade that changes the protocol internals ReplyQueue builds on."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib import SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected

from mailvia.transport.replyqueue import ReplyQueue


class Wire(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def connected() -> tuple[ReplyQueue, Wire]:
    protocol, wire = ReplyQueue(loop=asyncio.get_running_loop()), Wire()
    protocol.connection_made(wire)
    protocol.data_received(b"220 hello\r\n")
    return protocol, wire


async def test_the_greeting_and_single_commands_read_as_with_aiosmtplib() -> None:
    protocol, wire = connected()
    assert (await protocol.read_response(timeout=1)).code == 220
    reading = asyncio.ensure_future(protocol.execute_command(b"EHLO", b"x", timeout=1))
    await asyncio.sleep(0)
    protocol.data_received(b"250-first\r\n250-PIPE")
    await asyncio.sleep(0)  # the read, woken by part of a reply, waits on
    protocol.data_received(b"LINING\r\n250 last\r\n")
    reply = await reading
    assert (reply.code, reply.message) == (250, "first\nPIPELINING\nlast")
    assert wire.written == b"EHLO x\r\n"


async def test_replies_to_a_batch_are_kept_in_order_across_segments() -> None:
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.expect(4)
    protocol.data_received(b"250 mail\r\n550 no")
    protocol.data_received(b" such user\r\n250 rcpt\r\n354 go\r\n")
    codes = [(await protocol.read_response(timeout=1)).code for _ in range(4)]
    assert codes == [250, 550, 250, 354]


async def test_data_nobody_waits_for_is_dropped() -> None:
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.data_received(b"250 stray\r\n")  # between commands
    protocol.expect(1)
    protocol.data_received(b"250 wanted\r\n251 one too many\r\n")
    assert (await protocol.read_response(timeout=1)).message == "wanted"
    protocol.expect(1)
    protocol.data_received(b"252 next\r\n")
    assert (await protocol.read_response(timeout=1)).code == 252


async def test_a_disconnect_comes_after_the_replies_before_it() -> None:
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.expect(3)
    protocol.data_received(b"250 mail\r\n421 4.3.2 bye\r\n")
    protocol.connection_lost(None)
    assert [(await protocol.read_response(timeout=1)).code for _ in range(2)] == [250, 421]
    with pytest.raises(SMTPServerDisconnected):
        await protocol.read_response(timeout=1)
    with pytest.raises(SMTPServerDisconnected):
        await protocol.read_response(timeout=1)


async def test_a_malformed_reply_and_a_late_one_are_errors() -> None:
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.expect(2)
    protocol.data_received(b"250 ok\r\nnonsense\r\n")
    assert (await protocol.read_response(timeout=1)).code == 250
    with pytest.raises(SMTPResponseException):
        await protocol.read_response(timeout=1)
    with pytest.raises(SMTPReadTimeoutError):
        await protocol.read_response(timeout=0.05)


async def test_every_read_is_bounded_by_its_own_timeout_with_one_timer() -> None:
    protocol, _ = connected()
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        scheduled.append(when)
        return call_at(when, *args, **kwargs)  # type: ignore[arg-type]

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        await protocol.read_response(timeout=5)
        for _ in range(10):  # replies that come in time: the first read's timer serves all
            protocol.expect(1)
            reading = asyncio.ensure_future(protocol.read_response(timeout=5))
            await asyncio.sleep(0)
            protocol.data_received(b"250 ok\r\n")
            assert (await reading).code == 250
        assert len(scheduled) == 1
        started = loop.time()  # a shorter timeout than the timer's: a timer of its own
        protocol.expect(1)
        with pytest.raises(SMTPReadTimeoutError):
            await protocol.read_response(timeout=0.1)
        assert loop.time() - started < 1 and len(scheduled) == 2
        protocol.expect(2)  # a quick read, then a stalled one with a longer timeout: the
        reading = asyncio.ensure_future(protocol.read_response(timeout=0.1))
        await asyncio.sleep(0)
        protocol.data_received(b"250 ok\r\n")
        await reading
        started = loop.time()  # the quick read's timer fires while this one waits: set again
        with pytest.raises(SMTPReadTimeoutError):
            await protocol.read_response(timeout=0.4)
        assert 0.35 < loop.time() - started < 2
    finally:
        del loop.call_at


async def test_a_read_after_the_timer_fired_while_idle_gets_its_reply() -> None:
    """A pooled connection idle past the last read's deadline: the timer fires with no read
    pending, and the next read waits its own timeout (not timed out at once)."""
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.expect(1)
    reading = asyncio.ensure_future(protocol.read_response(timeout=0.05))
    await asyncio.sleep(0)
    protocol.data_received(b"250 ok\r\n")
    await reading
    await asyncio.sleep(0.1)  # idle: the 0.05 read's timer fires meanwhile
    protocol.expect(1)
    asyncio.get_running_loop().call_later(0.02, protocol.data_received, b"251 next\r\n")
    assert (await protocol.read_response(timeout=0.3)).code == 251


async def test_the_connection_lost_while_a_read_waits_cancels_the_timer() -> None:
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.expect(1)
    reading = asyncio.ensure_future(protocol.read_response(timeout=30))
    await asyncio.sleep(0)
    assert protocol._timer is not None
    protocol.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(SMTPServerDisconnected):
        await reading
    assert protocol._timer is None  # not left to hold the protocol for 30 s


async def test_a_read_after_the_connection_closed_sets_no_timer() -> None:
    protocol, _ = connected()
    await protocol.read_response(timeout=1)
    protocol.connection_lost(None)
    with pytest.raises(SMTPServerDisconnected):
        await protocol.read_response(timeout=30)
    assert protocol._timer is None  # not left to hold the protocol for 30 s
