"""The Gmail API and Microsoft Graph adapters of the Transport port: one message, one request.

- Gmail API `users.messages.send` [N18]: the bytes as they are, base64url in `{"raw": ...}`;
  a message whose JSON body would be over 5 MB goes to the media upload endpoint instead
  (`/upload/gmail/v1/users/me/messages/send?uploadType=media`, `message/rfc822`), whose
  limit is 35 MiB (the discovery document's maxSize; Google's upload guide: simple upload
  "for example, 5 MB or less"). Answers 200 with the sent message's id.
- Graph `POST /me/sendMail` [N4]: the MIME base64-encoded, `Content-Type: text/plain`;
  202 means accepted for delivery (not delivered: Exchange's limits still apply).

Both send to every address in To, Cc and Bcc: the bytes handed over carry one Bcc field for
the recipients To and Cc do not name (domain/api_mail.py), never the stored bytes. A message
the API cannot carry to exactly its pending recipients (its headers name someone already
delivered or never meant, or it is over the API's limits) is not sent: it bounces with the
reason (a `554 5.6.0 mailvia: ...` reply), so no one gets it twice.

Side effects: HTTPS requests to the providers (see mail_api.py).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mailvia.domain.api_mail import DEFAULT_LIMITS, ApiLimits, as_sent, refusal
from mailvia.domain.channel import Channel, TransportKind
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope
from mailvia.domain.probe import Step
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from mailvia.transport.mail_api import ApiClients, error_result, http_reply
from mailvia.transport.observe import NO_OBSERVER, Observer
from mailvia.transport.pool import scrubbed
from mailvia.transport.smtp_errors import NO_CREDENTIALS

if TYPE_CHECKING:
    import httpx


GMAIL_JSON_MAX = 5 * 1024 * 1024  # bytes of a JSON body; larger messages use media upload
GMAIL_SEND = "/gmail/v1/users/me/messages/send"
GMAIL_UPLOAD = "/upload/gmail/v1/users/me/messages/send"
GRAPH_SEND = "/me/sendMail"


class MailApiTransport:
    """Sends through a mailbox provider's HTTP API (channels with transport `gmail_api` or
    `graph`); `credentials.password` is the access token."""

    def __init__(
        self,
        *,
        gmail_url: str,
        graph_url: str,
        limits: Mapping[TransportKind, ApiLimits] = DEFAULT_LIMITS,
        clients: ApiClients | None = None,
    ) -> None:
        self.urls = {TransportKind.GMAIL_API: gmail_url, TransportKind.GRAPH: graph_url}
        self.limits = limits
        self.clients = clients or ApiClients()

    async def send(
        self,
        channel: Channel,
        credentials: Credentials | None,
        envelope: Envelope,
        content: bytes,
        observer: Observer = NO_OBSERVER,
    ) -> TransactionResult:
        """One request. Never raises for a delivery failure (see mail_api.py's table)."""
        kind = channel.transport
        reason = refusal(kind, self.limits[kind], recipients=envelope.rcpt_to, content=content)
        if reason is not None:
            return TransactionResult(Stage.API, Reply(554, "5.6.0", f"mailvia: {reason}"))
        if credentials is None or not credentials.password:
            return TransactionResult(Stage.AUTH, NO_CREDENTIALS)
        observer.begin(Step.MESSAGE)
        sent = as_sent(content, envelope.rcpt_to)
        try:
            response = await self._post(channel, credentials.password, sent)
        except Exception as error:
            observer.failed(error)
            failed = error_result(error)
            if failed is None:
                raise
            return failed
        reply = http_reply(response)
        return scrubbed(TransactionResult(Stage.API, reply), credentials)

    async def _post(self, channel: Channel, token: str, sent: bytes) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"}
        base = self.urls[channel.transport]
        if channel.transport is TransportKind.GRAPH:
            headers = {**auth, "Content-Type": "text/plain"}
            return await self.clients.post(
                channel, base, GRAPH_SEND, content=base64.b64encode(sent), headers=headers
            )
        raw = base64.urlsafe_b64encode(sent)
        if len(raw) + 16 <= GMAIL_JSON_MAX:
            body = b'{"raw": "' + raw + b'"}'
            headers = {**auth, "Content-Type": "application/json"}
            return await self.clients.post(channel, base, GMAIL_SEND, content=body, headers=headers)
        headers = {**auth, "Content-Type": "message/rfc822"}
        return await self.clients.post(
            channel, base, GMAIL_UPLOAD, params={"uploadType": "media"}, content=sent,
            headers=headers,
        )  # fmt: skip

    async def forget(self, channel_id: str) -> None:
        await self.clients.forget(channel_id)

    def narrow(self, channel_id: str, width: int) -> None:
        """Nothing to narrow: an API's 421 ("misdirected request") does not cut concurrency."""

    async def aclose(self) -> None:
        await self.clients.aclose()


__all__ = ["GMAIL_JSON_MAX", "MailApiTransport"]
