"""POSTing signed events to webhook URLs (the WebhookSender port) with httpx, behind the
outbound address guard.

Each POST resolves the URL's host, checks EVERY address with the guard (one generic refusal),
and connects to a checked address itself: the request goes to the IP, with the `Host` header
and, for https, the TLS server name (SNI and certificate check) of the URL's host, so a second
DNS answer cannot redirect it. Redirects are never followed (a 3xx is a failed attempt),
proxies from the environment are never used, and a POST gets 10 s in all. Connections are
pooled per host name, so a connection verified for one name never carries another's POSTs.

Bodies are signed with `standardwebhooks`: headers `webhook-id`, `webhook-timestamp` and
`webhook-signature`. Failures are results (`WebhookResult.error`), never exceptions; neither
the URL nor the secret is ever logged.

Side effects: DNS queries and HTTP connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mailvia import __version__
from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput, OutboundRefused
from mailvia.outbox.webhook_ports import WebhookResult
from mailvia.transport.guard import REFUSED_MESSAGE, IPAddress, OutboundGuard

if TYPE_CHECKING:
    import httpx


TIMEOUT = 10.0
MAX_ANSWER = 64 * 1024  # bytes of an answer read (so the connection can be reused)
USER_AGENT = f"mailvia/{__version__} (webhooks)"


def signed_headers(
    secret: str, *, message_id: str, timestamp: Instant, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers for `body` sent at `timestamp`."""
    from standardwebhooks import Webhook as Signer

    sent = datetime.fromtimestamp(int(timestamp), UTC)
    signature = Signer(secret).sign(message_id, sent, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature,
    }


def _inside(address: IPAddress, guard: OutboundGuard) -> bool:
    return any(address.version == net.version and address in net for net in guard.allowed)


def url_checker(guard: OutboundGuard) -> Callable[[str], None]:
    """A check for a new webhook's URL (run in a worker thread: it resolves with the system
    resolver). Raises OutboundRefused (the guard's one message) when any address may not be
    reached, InvalidInput when the host does not resolve, or for `http://` to a host outside
    ALLOW_PRIVATE_HOSTS (elsewhere only https: the events carry addresses)."""

    def check(url: str) -> None:
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        try:
            infos = socket.getaddrinfo(
                parts.hostname, parts.port or default, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            raise InvalidInput("url: the host does not resolve") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        guard.check(addresses)
        if parts.scheme == "http" and not all(_inside(x, guard) for x in addresses):
            raise InvalidInput("url: https is required (http only inside ALLOW_PRIVATE_HOSTS)")

    return check


class HttpWebhookSender:
    """The WebhookSender port on httpx. `transport` is for tests."""

    def __init__(
        self,
        *,
        guard: OutboundGuard,
        timeout: float = TIMEOUT,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._guard = guard
        self._timeout = timeout
        self._verify = verify
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def send(
        self, url: str, *, secret: str, message_id: str, timestamp: Instant, body: bytes
    ) -> WebhookResult:
        """POST the signed body; the result has the HTTP status or why there was none."""
        import httpx

        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signed_headers(secret, message_id=message_id, timestamp=timestamp, body=body),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._post(httpx.URL(url), headers, body)
        except OutboundRefused:
            error = REFUSED_MESSAGE
        except (TimeoutError, httpx.TimeoutException):
            error = f"no answer within {self._timeout:g} s"
        except socket.gaierror:
            error = "the host does not resolve"
        except httpx.ConnectError as exc:
            error = _connect_error(exc)
        except OSError:
            error = "could not connect"
        except httpx.HTTPError as exc:  # a broken answer, TLS failures ...
            error = f"the request failed ({type(exc).__name__})"
        return WebhookResult(status, error, time.monotonic() - started)

    async def _post(self, url: httpx.URL, headers: dict[str, str], body: bytes) -> int:
        import httpx

        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._guard.resolve(url.raw_host.decode("ascii"), port)
        self._guard.check(addresses)
        failure: Exception = OSError("no address")
        for address in addresses:
            try:
                return await self._post_to(url, address, headers, body)
            except httpx.ConnectError as exc:
                failure = exc
        raise failure

    async def _post_to(
        self, url: httpx.URL, address: IPAddress, headers: dict[str, str], body: bytes
    ) -> int:
        host = url.raw_host.decode("ascii")
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        client = self._client(host)
        request = client.build_request(
            "POST",
            url.copy_with(host=str(address)),
            headers={**headers, "host": url.netloc.decode("ascii")},
            content=body,
            extensions=extensions,
        )
        response = await client.send(request, stream=True)
        try:
            await _drain(response.aiter_raw(), MAX_ANSWER)
        finally:
            await response.aclose()
        return response.status_code

    def _client(self, host: str) -> httpx.AsyncClient:
        import httpx

        client = self._clients.get(host)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=False,
                verify=self._verify,
                transport=self._transport,
                limits=httpx.Limits(max_connections=10, max_keepalive_connections=4),
            )
            self._clients[host] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _connect_error(exc: BaseException) -> str:
    """Why a connection failed, in words that name no internals."""
    cause: BaseException | None = exc
    for _ in range(10):
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "the TLS certificate was not accepted"
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed"
        cause = cause.__cause__ or cause.__context__
    return "could not connect"


async def _drain(chunks: AsyncIterator[bytes], limit: int) -> None:
    """Read at most `limit` bytes of an answer (the rest is dropped with the connection)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen >= limit:
            return


__all__ = ["HttpWebhookSender", "signed_headers", "url_checker"]
