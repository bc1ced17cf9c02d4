"""What the Gmail API and Graph adapters share: a pooled HTTP client per channel, its cap on
concurrent requests, and the mapping of HTTP answers and httpx exceptions to replies.

Each channel gets its own `httpx.AsyncClient` (connections reused across messages), at most
`channel.max_connections` requests in flight (Graph allows 4 per mailbox [N5]) and the
channel's timeouts (connect; sending the body as a data block; the answer as the reply to the
final dot); a changed base URL, cap or timeouts makes a new client. The base URLs are the
operator's settings, like the pool relay: the outbound address guard does not apply,
redirects are never followed and proxies from the environment are never used.

Failures are values, mapped here at the edge:

    answer or exception                         reply (Stage.API)
    an HTTP status (2xx included)                HTTP status, no enhanced code,
                                                 "HTTP 429 Too Many Requests: reason: message",
                                                 retry_after from Retry-After (or
                                                 Gmail's "Retry after TIME" in its message)
    connect error or timeout, pool timeout       451 4.4.2 network_failure (not sent)
    write error or timeout                       451 4.4.2 network_failure (not all sent)
    read timeout, connection lost while waiting  451 4.4.2 timeout_after_dot,
      for the answer                             possible_duplicate=True
    anything else                                raised (a bug, not a failure)

The access token travels only in the Authorization header; it is scrubbed from every reply's
text, and never logged.

Side effects: HTTPS requests to the providers' APIs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from mailvia.domain.channel import Channel, Timeouts
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.replies import Reply, Stage, network_failure, timeout_after_dot

if TYPE_CHECKING:
    import httpx


_MAX_TEXT = 500  # characters of the provider's message kept in a reply


@dataclass
class _Client:
    key: tuple[str, int, Timeouts]
    http: httpx.AsyncClient
    slots: asyncio.Semaphore
    busy: int = 0
    retired: bool = False


class ApiClients:
    """One pooled HTTP client per channel (the API adapters' connections)."""

    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def client(self, channel: Channel, base_url: str) -> _Client:
        import httpx

        key = (base_url, channel.max_connections, channel.timeouts)
        found = self._clients.get(channel.id)
        if found is not None and found.key == key:
            return found
        if found is not None:
            self._retire(found)
        limits = httpx.Limits(
            max_connections=channel.max_connections,
            max_keepalive_connections=channel.max_connections,
        )
        made = _Client(
            key,
            httpx.AsyncClient(
                base_url=base_url,
                limits=limits,
                timeout=_timeout(channel.timeouts),
                follow_redirects=False,
                trust_env=False,
            ),
            asyncio.Semaphore(channel.max_connections),
        )
        self._clients[channel.id] = made
        return made

    def _retire(self, client: _Client) -> None:
        """Close a replaced client once its requests are done."""
        client.retired = True
        if client.busy == 0:
            task = asyncio.get_running_loop().create_task(client.http.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def post(
        self, channel: Channel, base_url: str, path: str, **request: Any
    ) -> httpx.Response:
        """One request within the channel's cap; the response is read in full."""
        client = self.client(channel, base_url)
        async with client.slots:
            client.busy += 1
            try:
                return await client.http.post(path, **request)
            finally:
                client.busy -= 1
                if client.retired and client.busy == 0:
                    await client.http.aclose()

    async def forget(self, channel_id: str) -> None:
        found = self._clients.pop(channel_id, None)
        if found is not None and found.busy == 0:
            await found.http.aclose()
        elif found is not None:
            found.retired = True

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.http.aclose()


def _timeout(timeouts: Timeouts) -> httpx.Timeout:
    import httpx

    return httpx.Timeout(
        connect=timeouts.connect,
        write=timeouts.data_block,
        read=timeouts.data_end,
        pool=timeouts.command,
    )


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from an HTTP Retry-After (delay-seconds or an HTTP date); None without one."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# Gmail says when in its message: "User-rate limit exceeded.  Retry after
# 2019-06-05T15:52:30.154Z" (taers232c/GAMADV-XTD3#337; _GMAIL_ERRORS).
_RETRY_AFTER_TEXT = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def _wait_in_text(text: str, now: float | None = None) -> float | None:
    found = _RETRY_AFTER_TEXT.search(text)
    if found is None:
        return None
    try:
        when = datetime.fromisoformat(found.group(1)).replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _reason_and_message(body: bytes) -> str:
    """`reason: message` from a Gmail (`error.errors[0].reason`) or Graph (`error.code`)
    error body; empty when the body says nothing readable."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return ""
    reason = error.get("code") if isinstance(error.get("code"), str) else None
    details = error.get("errors")
    if reason is None and isinstance(details, list) and details and isinstance(details[0], dict):
        found = details[0].get("reason")
        reason = found if isinstance(found, str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    parts = [p for p in (reason, " ".join(str(message).split())) if p]
    return ": ".join(parts)[:_MAX_TEXT]


def http_reply(response: httpx.Response) -> Reply:
    """`HTTP 429 Too Many Requests: ApplicationThrottled: ...` with the provider's wait."""
    try:
        phrase = HTTPStatus(response.status_code).phrase
    except ValueError:
        phrase = ""
    head = f"HTTP {response.status_code} {phrase}".strip()
    said = _reason_and_message(response.content) if response.status_code >= 300 else ""
    text = f"{head}: {said}" if said else head
    wait = retry_after(response.headers)
    if wait is None and response.status_code in (403, 429):
        wait = _wait_in_text(said)
    return Reply(response.status_code, None, text, retry_after=wait)


def error_result(error: Exception) -> TransactionResult | None:
    """The result an httpx exception stands for; None when it is no delivery failure."""
    import httpx

    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return TransactionResult(Stage.API, network_failure("could not connect to the API"))
    if isinstance(error, httpx.WriteError | httpx.WriteTimeout):
        return TransactionResult(Stage.API, network_failure("connection lost while sending"))
    if isinstance(error, httpx.ReadTimeout):
        reply = timeout_after_dot("no answer from the API")
        return TransactionResult(Stage.API, reply, possible_duplicate=True)
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        reply = timeout_after_dot("connection lost waiting for the API")
        return TransactionResult(Stage.API, reply, possible_duplicate=True)
    if isinstance(error, httpx.TransportError):
        return TransactionResult(Stage.API, network_failure("the API could not be reached"))
    return None


__all__ = ["ApiClients", "error_result", "http_reply", "retry_after"]
