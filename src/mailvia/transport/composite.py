"""The Transport port as the dispatcher sees it: one `send`, the adapter picked by the
channel's transport (SMTP over pooled connections, the Gmail API, Microsoft Graph)."""

from __future__ import annotations

from mailvia.domain.channel import Channel, TransportKind
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope
from mailvia.outbox.ports import Credentials
from mailvia.transport.apis import MailApiTransport
from mailvia.transport.pool import SmtpTransport


class Transports:
    """Hands each message to its channel's own adapter; forgets and closes them all."""

    def __init__(self, smtp: SmtpTransport, apis: MailApiTransport) -> None:
        self.smtp = smtp
        self.apis = apis

    async def send(
        self,
        channel: Channel,
        credentials: Credentials | None,
        envelope: Envelope,
        content: bytes,
    ) -> TransactionResult:
        if channel.transport is TransportKind.SMTP:
            return await self.smtp.send(channel, credentials, envelope, content)
        return await self.apis.send(channel, credentials, envelope, content)

    async def forget(self, channel_id: str) -> None:
        await self.smtp.forget(channel_id)
        await self.apis.forget(channel_id)

    def narrow(self, channel_id: str, width: int) -> None:
        self.smtp.narrow(channel_id, width)  # an HTTP API has no 421 that cuts concurrency

    async def aclose(self) -> None:
        await self.smtp.aclose()
        await self.apis.aclose()


__all__ = ["Transports"]
