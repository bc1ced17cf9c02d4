"""How many connections the submission ports hold at once: in all, and from one client
address (SUBMISSION_MAX_CONNECTIONS, SUBMISSION_MAX_CONNECTIONS_PER_CLIENT). A connection over
either is told TOO_MANY_CONNECTIONS and closed before the greeting, so a flood of
connections cannot take every socket, task and session of the process.

Used on the event loop only (no lock).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from typing import cast

log = logging.getLogger("mailvia.submission")
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections"  # RFC 5321 §3.8, RFC 3463 4.7.0


class ConnectionLimit:
    """`admit` a new connection from a client address (or not), `release` it when it ends."""

    def __init__(self, *, total: int = 500, per_client: int = 50) -> None:
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self._count = 0

    @property
    def held(self) -> int:
        """The connections held now."""
        return self._count

    def admit(self, client: str) -> bool:
        """Hold a place for a connection from `client`, if both caps allow one more."""
        if self._count >= self.total or self._open[client] >= self.per_client:
            return False
        self._open[client] += 1
        self._count += 1
        return True

    def release(self, client: str) -> None:
        """Free the place of an admitted connection from `client`."""
        self._count -= 1
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


def client_of(peer: object) -> str:
    """The client address a connection counts under (an IPv4-mapped IPv6 address as the
    IPv4 one, without a zone); "" when the transport does not tell."""
    if not isinstance(peer, tuple) or not peer:
        return ""
    text = str(peer[0]).partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class Capped(asyncio.Protocol):
    """A protocol (mixed in before it) whose connection is admitted under `connection_limit`,
    or told TOO_MANY_CONNECTIONS and closed: the protocol after it in the MRO then sees
    nothing of that connection. A second `connection_made` (a STARTTLS upgrade) is not
    counted again."""

    client: str | None = None  # the address the connection counts under, once admitted
    refused = False  # over a cap: told so and closed

    @property
    def connection_limit(self) -> ConnectionLimit:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client is None:
            client = client_of(transport.get_extra_info("peername"))
            if not self.connection_limit.admit(client):
                self.refused = True
                log.info("refused a connection from %s: too many connections", client)
                cast(asyncio.WriteTransport, transport).write(
                    f"{TOO_MANY_CONNECTIONS}\r\n".encode()
                )
                transport.close()
                return
            self.client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        try:
            super().connection_lost(error)
        finally:
            if self.client is not None:
                self.connection_limit.release(self.client)
                self.client = None

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else super().eof_received()
