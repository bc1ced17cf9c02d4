"""Stopping the submission port (a graceful shutdown): a session between transactions is
told 421 4.3.2 and closed at once; one in a transaction finishes it (250, committed), then
its next MAIL is told 421 4.3.2; and nothing it was not told 250 for is stored."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from typing import Any

from test_submission import BOB, JANE, Rig, add_channel, message, rig  # noqa: F401

SHUTTING_DOWN = (421, b"4.3.2 Service shutting down, try again later")


def logged_in(rig: Rig, port: int) -> smtplib.SMTP:  # noqa: F811
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.ehlo("client.test")
    client.starttls(context=rig.context)
    client.ehlo("client.test")
    client.login(JANE, rig.token)
    return client


async def test_stopping_tells_idle_sessions_and_lets_transactions_finish(rig: Rig) -> None:  # noqa: F811
    add_channel(rig)
    port = await rig.start()
    [server] = rig.servers
    idle, busy = await asyncio.gather(
        asyncio.to_thread(logged_in, rig, port), asyncio.to_thread(logged_in, rig, port)
    )
    try:
        assert (await asyncio.to_thread(busy.mail, JANE))[0] == 250  # a transaction begins
        stopping = asyncio.ensure_future(server.stop(grace=10))
        assert await asyncio.to_thread(idle.getreply) == SHUTTING_DOWN
        assert not stopping.done()  # it waits for the transaction
        assert (await asyncio.to_thread(busy.rcpt, BOB))[0] == 250
        code, text = await asyncio.to_thread(busy.data, message("finished"))
        assert code == 250, text
        assert await asyncio.to_thread(busy.mail, JANE) == SHUTTING_DOWN
        await asyncio.wait_for(stopping, 5)
    finally:
        for client in (idle, busy):
            client.close()
    assert [m.state.value for m in rig.messages()] == ["queued"]
    try:
        smtplib.SMTP("127.0.0.1", port, timeout=2).close()
        connected: Any = True
    except (OSError, ssl.SSLError):
        connected = False
    assert not connected  # no longer listening
