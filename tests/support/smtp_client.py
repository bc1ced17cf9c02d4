"""The SMTP transport as the transport tests use it: on loopback, short timeouts, a plain
envelope."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security, Timeouts
from mailvia.domain.message import Envelope
from mailvia.transport import OutboundGuard, SmtpTransport

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
FAST = Timeouts(connect=5, greeting=5, command=5, data_init=5, data_block=5, data_end=5)


def envelope(*rcpt: str) -> Envelope:
    return Envelope("rep@example.test", rcpt or ("a@example.test",))


@asynccontextmanager
async def loopback_transport() -> AsyncIterator[SmtpTransport]:
    smtp = SmtpTransport(guard=OutboundGuard(LOOPBACK), helo_name="mailvia.test")
    try:
        yield smtp
    finally:
        await smtp.aclose()


def relay_channel(port: int, **changes: Any) -> Channel:
    """A team's SMTP relay on 127.0.0.1:`port`, in clear without AUTH unless `changes` say."""
    base = Channel(
        id="ch-1",
        organization_id="org-1",
        name="relay",
        kind=Kind.SMTP,
        host="127.0.0.1",
        port=port,
        security=Security.NONE,
        auth=Auth.NONE,
        scope=Scope.DOMAIN,
        owner=Owner(team_id="team-1"),
        domains=("example.test",),
        timeouts=FAST,
    )
    return replace(base, **changes)
